//! config.json's keys: values the weights do not hold, or that would make every score NaN
//! or every target fail, refused at load naming the key; a pad token past the vocabulary only
//! pads.

use super::{run_bounded, s};
use crate::common::{self, fixture, refused, ScratchDir};
use softprompt::prelude::*;
use std::path::Path;

/// Sets `key` of `dir`/config.json to `value`.
fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).expect("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).expect("write config.json");
}

/// A layer count of 10^9 that the weights do not hold sized a Vec of 864 GB before the
/// first missing layer was found (BLOOM, Llama, Qwen2, T5: "memory allocation of
/// 864000000000 bytes failed", an abort): now the first missing layer is named, as BERT does.
#[test]
fn a_layer_count_past_the_weights_names_the_first_missing_layer() {
    let dir = ScratchDir::new("layer_count");
    for (fixture, key, missing) in [
        (
            "bloom",
            "n_layer",
            "`h.2.self_attention.query_key_value.weight`",
        ),
        (
            "llama",
            "num_hidden_layers",
            "`model.layers.2.input_layernorm.weight`",
        ),
        (
            "qwen2",
            "num_hidden_layers",
            "`model.layers.2.input_layernorm.weight`",
        ),
        ("t5_flan", "num_layers", "`encoder.block.3."),
        ("t5_flan", "num_decoder_layers", "`decoder.block.2."),
    ] {
        let model = dir.copy_model(fixture, &format!("{fixture}_{key}"));
        set_config(&model, key, 1_000_000_000u64.into());
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{fixture} with {key} 1e9 loaded"),
            Err(e) => e.to_string(),
        };
        for want in [missing, "missing from", "model.safetensors"] {
            assert!(err.contains(want), "{fixture} {key}: {err}");
        }
    }
}

/// A norm epsilon of 0 or below (or NaN) made every score NaN for Llama, Qwen2 and BLOOM
/// (predict printed null scores, eval accuracy 0.5, exit 0): refused at load naming
/// config.json's key, as BERT and T5 do.
#[test]
fn a_norm_epsilon_that_is_not_small_and_positive_is_refused() {
    let dir = ScratchDir::new("norm_eps");
    for (fixture, key) in [
        ("llama", "rms_norm_eps"),
        ("qwen2", "rms_norm_eps"),
        ("bloom", "layer_norm_epsilon"),
    ] {
        for (i, eps) in [serde_json::json!(-1.0), serde_json::json!(0.0)]
            .into_iter()
            .enumerate()
        {
            let model = dir.copy_model(fixture, &format!("{fixture}_{i}"));
            set_config(&model, key, eps.clone());
            let err = match Model::open(&model, Device::Cpu) {
                Ok(_) => panic!("{fixture} with {key} {eps} loaded"),
                Err(e) => e.to_string(),
            };
            let want = format!("`{key}` must be a small positive number (such as 1e-12), got");
            for want in ["config.json", &want] {
                assert!(err.contains(want), "{fixture} {key} {eps}: {err}");
            }
        }
    }
}

/// RoPE settings that were read as no scaling, silently: a `rope_scaling` that is a string,
/// a list or an object naming no type, and a `rope_theta` or linear factor of 0 or below.
/// Each is refused naming config.json and the key (a config holding both `rope_scaling` and
/// `rope_parameters` reads the first, as transformers does: config_parsing/decoder.rs).
#[test]
fn rope_settings_that_were_dropped_are_refused() {
    use serde_json::json;
    let dir = ScratchDir::new("rope");
    let cases = [
        (
            "llama",
            "rope_scaling",
            json!("linear"),
            "`rope_scaling` is \"linear\": expected an object",
        ),
        (
            "llama",
            "rope_scaling",
            json!([1, 2]),
            "`rope_scaling` is [1,2]: expected an object",
        ),
        (
            "llama",
            "rope_scaling",
            json!({"factor": 8.0}),
            "`rope_scaling` has no `rope_type`",
        ),
        (
            "llama",
            "rope_theta",
            json!(0),
            "`rope_theta` must be a positive number, got 0",
        ),
        (
            "llama",
            "rope_theta",
            json!(-1),
            "`rope_theta` must be a positive number, got -1",
        ),
        (
            "llama",
            "rope_scaling",
            json!({"rope_type": "linear", "factor": -2.0}),
            "`rope_scaling.factor` must be a positive number, got -2",
        ),
    ];
    for (i, (fixture, key, value, want)) in cases.into_iter().enumerate() {
        let model = dir.copy_model(fixture, &format!("{fixture}_{i}"));
        set_config(&model, key, value.clone());
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{fixture} with {key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("config.json") && err.contains(want),
            "{key} {value}: {err}"
        );
    }
    // the fixtures' own settings still load: llama3 scaling, Qwen2's rope_parameters
    for name in ["llama", "qwen2"] {
        Model::open(fixture(name), Device::Cpu).expect(name);
    }
}

/// A decoder's end token past its vocabulary was accepted at load, then every target it
/// ended failed as "tensor `labels`: label 304 ... is outside 0..304", with no word of
/// config.json: now refused at load naming config.json, the key, the value and vocab_size,
/// as BERT and T5 do. (A pad token past it only pads: see the test below.)
#[test]
fn a_decoder_token_id_past_the_vocabulary_is_refused_at_load() {
    use serde_json::json;
    let dir = ScratchDir::new("decoder_token_ids");
    // every decoder fixture has vocab_size 304
    for (i, (fixture, key, value, shown)) in [
        ("llama", "eos_token_id", json!(304), "304"),
        ("llama", "eos_token_id", json!([1, 400]), "400"),
        ("qwen2", "eos_token_id", json!(1000), "1000"),
        ("bloom", "eos_token_id", json!(304), "304"),
    ]
    .into_iter()
    .enumerate()
    {
        let model = dir.copy_model(fixture, &format!("{fixture}_{i}"));
        set_config(&model, key, value.clone());
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{fixture} with {key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        let want = format!("`{key}` is {shown}, outside the vocabulary (vocab_size 304)");
        for want in ["config.json", &want] {
            assert!(err.contains(want), "{fixture} {key} {value}: {err}");
        }
    }
    // the last id of the vocabulary is one
    let model = dir.copy_model("llama", "llama_last");
    set_config(&model, "eos_token_id", json!(303));
    Model::open(&model, Device::Cpu).expect("eos_token_id 303 of 304");
}

/// A decoder's `pad_token_id` of vocab_size or more (a pad token added to the tokenizer
/// without resizing the embeddings) loaded before the end-token check above, which then
/// refused it too. It is accepted: padding only fills positions the key mask hides, with an
/// id within the table (it failed as "tensor `input_ids`: id 304" at the first padded batch),
/// so a run on such a config trains the prompt a config without a pad token trains, bit for
/// bit. `--target-end pad`, which makes the pad token a target, refuses it, naming the key,
/// the id and vocab_size.
#[test]
fn a_decoder_pad_token_past_the_vocabulary_only_pads() {
    use serde_json::json;
    let dir = ScratchDir::new("decoder_pad_past_vocab");
    // rows of 4 to 9 words, so that every batch pads
    let rows: Vec<String> = (0..8)
        .map(|i| {
            let text = vec!["the order was late"; 1 + i % 3].join(" and ");
            let label = ["complaint", "no complaint"][i % 2];
            json!({"text": text, "label": label}).to_string()
        })
        .collect();
    let data = dir.path().join("rows.jsonl");
    std::fs::write(&data, rows.join("\n")).expect("data");
    let train = |model: &Path, out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["train", "--model", s(model), "--train", s(&data), "--out"];
        args.extend([
            s(&out),
            "--task",
            "causal",
            "--prompt-len",
            "3",
            "--batch-size",
            "4",
        ]);
        args.extend(["--max-steps", "2", "--no-progress", "--threads", "1"]);
        args.extend(extra);
        (run_bounded(&args), out)
    };
    // the Llama fixture has no pad_token_id (padding with 0), vocab_size 304
    let plain = dir.copy_model("llama", "llama_plain");
    let past = dir.copy_model("llama", "llama_pad_304");
    set_config(&past, "pad_token_id", json!(304));
    let bloom = dir.copy_model("bloom", "bloom_pad_305");
    set_config(&bloom, "pad_token_id", json!(305));
    Model::open(&bloom, Device::Cpu).expect("BLOOM with pad_token_id 305 of 304");
    let table = |out: &Path| {
        let (t, _) = common::read_raw(&out.join("adapter_model.safetensors"));
        t["prompt_embeddings"].as_f32()
    };
    let (run, want) = train(&plain, "plain", &[]);
    common::stdout_ok(&run);
    let (run, got) = train(&past, "past", &[]);
    common::stdout_ok(&run);
    assert_eq!(table(&got), table(&want));
    let (run, _) = train(&past, "pad_end", &["--target-end", "pad"]);
    let config = format!("`pad_token_id` in {}", s(&past.join("config.json")));
    refused(
        &run,
        &[
            "invalid argument --target-end",
            &config,
            "is id 304, outside the vocabulary (vocab_size 304",
        ],
    );
}
