//! adapter_config.json's keys of the wrong JSON type, from the library and the command line.

use super::{copy_prompt, pet_args, run_bounded};
use crate::common::{refused, ScratchDir};

/// adapter_config.json keys of the wrong JSON type were read as absent (a `token_dim` of
/// "48" checked nothing, `num_transformer_submodules` "x" read as 1), and a `peft_type` that
/// is not a string was named as "": each is refused naming the file, the key, the value as
/// found and the type expected.
#[test]
fn adapter_config_keys_of_the_wrong_type_are_refused() {
    use serde_json::json;
    use softprompt::internals::prompt::PromptTable;
    let dir = ScratchDir::new("adapter_types");
    let prompt = copy_prompt(&dir);
    let path = prompt.join("adapter_config.json");
    let good = std::fs::read_to_string(&path).expect("adapter_config.json");
    PromptTable::load_peft(&prompt).expect("the fixture's adapter");
    let cases = [
        (
            "num_transformer_submodules",
            json!("x"),
            "`num_transformer_submodules` is \"x\": expected a non-negative integer",
        ),
        (
            "token_dim",
            json!("48"),
            "`token_dim` is \"48\": expected a non-negative integer",
        ),
        (
            "token_dim",
            json!(48.5),
            "`token_dim` is 48.5: expected a non-negative integer",
        ),
        (
            "num_layers",
            json!(-2),
            "`num_layers` is -2: expected a non-negative integer",
        ),
        (
            "num_virtual_tokens",
            json!("5"),
            "`num_virtual_tokens` is \"5\": expected a positive integer",
        ),
        (
            "num_virtual_tokens",
            json!(-5),
            "`num_virtual_tokens` is -5: expected a positive integer",
        ),
        (
            "prompt_tuning_init",
            json!(5),
            "`prompt_tuning_init` is 5: expected a string",
        ),
        (
            "task_type",
            json!(["SEQ_CLS"]),
            "`task_type` is [\"SEQ_CLS\"]: expected a string",
        ),
        (
            "prefix_projection",
            json!("yes"),
            "`prefix_projection` is \"yes\": expected true or false",
        ),
        (
            "encoder_hidden_size",
            json!("64"),
            "`encoder_hidden_size` is \"64\": expected a non-negative integer",
        ),
        // the value as found, not "" (a number read as no string at all)
        (
            "peft_type",
            json!(5),
            "peft_type is 5: expected \"PROMPT_TUNING\"",
        ),
        ("peft_type", json!(null), "peft_type is null: expected"),
    ];
    for (key, value, want) in cases {
        let mut cfg: serde_json::Value = serde_json::from_str(&good).expect("JSON");
        cfg[key] = value.clone();
        std::fs::write(&path, cfg.to_string()).expect("write adapter_config.json");
        let err = match PromptTable::load_peft(&prompt) {
            Ok(_) => panic!("{key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("adapter_config.json") && err.contains(want),
            "{key} {value}: {err}"
        );
    }
    // and from the command line: exit 2, the same words
    let model = dir.copy_model("bert_mlm", "model");
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\":\"a good film\"}\n").expect("data");
    let mut cfg: serde_json::Value = serde_json::from_str(&good).expect("JSON");
    cfg["token_dim"] = json!("48");
    std::fs::write(&path, cfg.to_string()).expect("write adapter_config.json");
    let out = run_bounded(&pet_args("predict", &prompt, &model, &data));
    refused(
        &out,
        &[
            "adapter_config.json",
            "`token_dim` is \"48\": expected a non-negative integer",
        ],
    );
}
