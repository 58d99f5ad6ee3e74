//! Files of a model or prompt folder that are not ordinary files, and a folder without a
//! tokenizer.json as `inspect` describes it.

use super::{copy_prompt, make_fifo, pet_args, run_bounded, s};
use crate::common::{fixture, refused, ScratchDir};

/// A file of a model or prompt folder that is a FIFO blocked `predict` for ever (opening it
/// waits for a writer): now refused before it is opened, naming it.
#[test]
fn a_fifo_in_a_model_or_prompt_folder_is_refused() {
    let dir = ScratchDir::new("fifo_files");
    let model = dir.copy_model("bert_mlm", "model");
    let prompt = copy_prompt(&dir);
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\":\"a good film\"}\n").expect("data");
    let args = pet_args("predict", &prompt, &model, &data);
    // the copies work as they are
    let out = run_bounded(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (folder, file) in [
        (&prompt, "adapter_model.safetensors"),
        (&prompt, "adapter_config.json"),
        (&model, "config.json"),
        (&model, "model.safetensors"),
        (&model, "tokenizer.json"),
    ] {
        let path = folder.join(file);
        let kept = std::fs::read(&path).expect("read");
        make_fifo(&path);
        let out = run_bounded(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{file} as a FIFO was not refused"
        );
        refused(&out, &[file, "is not an ordinary file"]);
        std::fs::remove_file(&path).expect("remove the FIFO");
        std::fs::write(&path, kept).expect("restore");
    }
}

/// `inspect` describes what a model folder holds (exit 0), and a folder without a
/// tokenizer.json is one that train, eval and predict refuse: it says so, naming the file it
/// looked for, where it said nothing of the tokenizer (or only an error's words). A folder
/// with one names its vocabulary.
#[test]
fn inspect_says_when_there_is_no_tokenizer() {
    let dir = ScratchDir::new("inspect_no_tokenizer");
    let model = dir.copy_model("bert_mlm", "bert_no_tokenizer");
    std::fs::remove_file(model.join("tokenizer.json")).expect("remove tokenizer.json");
    let out = run_bounded(&["inspect", s(&model)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let want = format!(
        "tokenizer: none found (looked for {};",
        s(&model.join("tokenizer.json"))
    );
    assert!(stdout.contains(&want), "{stdout}");
    let out = run_bounded(&["inspect", s(&fixture("bert_mlm"))]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("tokenizer.json: "), "{stdout}");
    assert!(!stdout.contains("none found"), "{stdout}");
}
