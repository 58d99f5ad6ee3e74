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

/// `inspect` said "LM head tied to shared.weight" of a T5 folder without `lm_head.weight`
/// whose config.json says `tie_word_embeddings: false` (and the decoders' line said "tied to
/// the input embeddings" likewise): it now says there is no head, as config.json unties it and
/// train, eval and predict refuse the folder. The stored and the tied heads are named as before.
#[test]
fn inspect_names_an_untied_missing_head() {
    let dir = ScratchDir::new("inspect_untied_head");
    let no_head = "no lm_head.weight, and config.json says tie_word_embeddings: false: no LM \
                   head (train, eval and predict refuse this folder)";
    for (fixture_dir, tied) in [
        ("t5_flan", "LM head tied to shared.weight (task seq2seq)"),
        (
            "llama",
            "LM head tied to the input embeddings (task causal)",
        ),
    ] {
        let model = dir.copy_model(fixture_dir, fixture_dir);
        let inspect = |model: &std::path::Path| {
            let out = run_bounded(&["inspect", s(model)]);
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert_eq!(out.status.code(), Some(0), "{stdout}");
            stdout
        };
        let stored = format!(
            "untied lm_head (task {})",
            if fixture_dir == "llama" {
                "causal"
            } else {
                "seq2seq"
            }
        );
        assert!(inspect(&model).contains(&stored), "{fixture_dir}");
        crate::common::edit_safetensors(&model.join("model.safetensors"), |t| {
            t.remove("lm_head.weight").expect("lm_head.weight");
        });
        let out = inspect(&model);
        assert!(out.contains(no_head) && !out.contains("tied to"), "{out}");
        let path = model.join("config.json");
        let text = std::fs::read_to_string(&path).expect("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        cfg["tie_word_embeddings"] = true.into();
        std::fs::write(&path, cfg.to_string()).expect("write config.json");
        assert!(inspect(&model).contains(tied), "{fixture_dir}");
    }
}
