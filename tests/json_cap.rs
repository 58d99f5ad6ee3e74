//! The JSON files of a model or prompt folder are read to `fsutil::MAX_JSON_BYTES` (256 MB):
//! one past it is refused naming the file and the cap, before a byte is read. Since such
//! files must be ordinary ones (a link to /dev/zero is refused as not ordinary), only a file
//! that large on disk reaches the cap: here a sparse one (`File::set_len`), which takes no
//! disk space.

mod common;

use common::{refused, softprompt, ScratchDir};
use softprompt::internals::fsutil::MAX_JSON_BYTES;
use softprompt::prelude::*;
use std::path::Path;

/// Replaces `path` with a sparse file of `MAX_JSON_BYTES + 1` bytes; returns what it held.
fn past_the_cap(path: &Path) -> Vec<u8> {
    let kept = std::fs::read(path).unwrap();
    let file = std::fs::File::create(path).unwrap();
    file.set_len(MAX_JSON_BYTES + 1).unwrap();
    kept
}

/// The message every refusal holds besides the file: the cap in bytes.
fn cap_words() -> String {
    format!("holds more than {MAX_JSON_BYTES} bytes, the most this file is read to")
}

#[test]
fn json_files_past_the_cap_are_refused_naming_the_file_and_the_cap() {
    assert_eq!(MAX_JSON_BYTES, 256 << 20);
    let dir = ScratchDir::new("json_cap");
    let model_dir = dir.copy_model("bert_mlm", "model");
    let model = Model::open(&model_dir, Device::Cpu).unwrap();
    let opts = TaskOptions {
        labels: Some(vec!["negative".into(), "positive".into()]),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 3).unwrap();
    let prompt = (model.new_prompt(&task, 3, &PromptInit::Random { std: 0.5 }, 1)).unwrap();
    let prompt_dir = dir.path().join("prompt");
    model
        .save_prompt(&prompt_dir, &prompt, &task, SaveOptions::default())
        .unwrap();
    drop(model);

    // the model's config.json and tokenizer.json, through the API
    for file in ["config.json", "tokenizer.json"] {
        let path = model_dir.join(file);
        let kept = past_the_cap(&path);
        let err = Model::open(&model_dir, Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{file}: {err}");
        assert!(err.contains(&cap_words()), "{file}: {err}");
        std::fs::write(&path, kept).unwrap();
    }
    // a prompt's adapter_config.json and task.json, through the API
    for file in ["adapter_config.json", "task.json"] {
        let path = prompt_dir.join(file);
        let kept = past_the_cap(&path);
        let err = Prompt::load(&prompt_dir).err().unwrap().to_string();
        assert!(err.contains(&path.display().to_string()), "{file}: {err}");
        assert!(err.contains(&cap_words()), "{file}: {err}");
        std::fs::write(&path, kept).unwrap();
    }
    // and the command line: exit code 2, no panic, the same words
    let config = model_dir.join("config.json");
    past_the_cap(&config);
    let path = config.display().to_string();
    refused(
        &softprompt(&["inspect", model_dir.to_str().unwrap()]),
        &[&path, &cap_words()],
    );
}
