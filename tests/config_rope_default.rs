//! A `llama3` RoPE scaling without `original_max_position_embeddings` was refused; transformers
//! 5.24 loads it with the config's `max_position_embeddings` in its place (else the model
//! type's default), and so does this engine: the inverse frequencies match transformers'.

mod common;

use common::fixture;
use softprompt::internals::backend::rope::rope_inv_freq;
use softprompt::internals::config::{ModelConfig, Positions};
use std::path::Path;

/// The llama fixture's config.json (head_dim 12, theta 1e4, llama3 factor 8, low 1, high 4)
/// without its scaling's `original_max_position_embeddings`, as `model_type`, with
/// `max_position_embeddings` set to `max` (None: left out), and `top`, a top-level
/// `original_max_position_embeddings`, if given.
fn parse(model_type: &str, max: Option<u64>, top: Option<u64>) -> softprompt::Result<ModelConfig> {
    let path = fixture("llama").join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("config")).expect("json");
    let o = v.as_object_mut().expect("object");
    o["rope_scaling"]
        .as_object_mut()
        .expect("rope_scaling")
        .remove("original_max_position_embeddings");
    o.insert("model_type".into(), model_type.into());
    o.remove("max_position_embeddings");
    if let Some(n) = max {
        o.insert("max_position_embeddings".into(), n.into());
    }
    if let Some(n) = top {
        o.insert("original_max_position_embeddings".into(), n.into());
    }
    ModelConfig::parse(&v.to_string(), Path::new("edited/config.json"))
}

/// The inverse frequencies of the config `parse` writes.
fn inv_freq(model_type: &str, max: Option<u64>, top: Option<u64>) -> Vec<f32> {
    let c = match parse(model_type, max, top) {
        Ok(ModelConfig::Llama(c)) => c,
        other => panic!("{model_type} {max:?}: {other:?}"),
    };
    match c.positions {
        Positions::Rope { theta, llama3, .. } => rope_inv_freq(c.head_dim, theta, llama3),
        other => panic!("{other:?}"),
    }
}

/// transformers 5.24's inv_freq for each config, from
/// `ROPE_INIT_FUNCTIONS["llama3"](AutoConfig.from_pretrained(dir), None)[0]` on the configs
/// `inv_freq` writes (the original length it used: 512, then the model types' defaults 2048,
/// 131072 and 32768; with the scaling's own 256 the third frequency is 0.017866388, so each
/// case reads its length). A top-level `original_max_position_embeddings` (1024) is read before
/// the scaling's (transformers reads it when it builds the model, `LlamaForCausalLM(config)`'s
/// `rotary_emb.inv_freq`; verification 29, F2), and before `max_position_embeddings` (512).
#[test]
fn llama3_scaling_without_its_original_length_reads_max_position_embeddings() {
    // (model_type, max_position_embeddings, top-level original length, transformers' inv_freq)
    type Case = (&'static str, Option<u64>, Option<u64>, [f32; 6]);
    let head = [1.0, 0.21544345];
    let llama_512 = [0.043468755, 0.00125, 0.0002693043, 5.801987e-05];
    let cases: [Case; 5] = [
        ("llama", Some(512), None, join(head, llama_512)),
        (
            "llama",
            None,
            None,
            join(head, [0.046415884, 0.007840188, 0.0002693043, 5.801987e-05]),
        ),
        (
            "mistral",
            None,
            None,
            join(head, [0.046415884, 0.01, 0.0021544343, 0.00046415895]),
        ),
        (
            "qwen2",
            None,
            None,
            join(head, [0.046415884, 0.01, 0.0021544343, 0.00025035065]),
        ),
        (
            "llama",
            Some(512),
            Some(1024),
            join(
                head,
                [0.046415884, 0.0030867606, 0.0002693043, 5.801987e-05],
            ),
        ),
    ];
    for (model_type, max, top, want) in cases {
        let got = inv_freq(model_type, max, top);
        // float32 powers on both sides; one rounding apart at most
        let tol = 1e-6;
        let close = (got.iter().zip(&want)).all(|(g, w)| ((g - w) / w).abs() <= tol);
        assert!(
            close && got.len() == want.len(),
            "{model_type} {max:?} {top:?}: {got:?} vs {want:?}"
        );
    }
}

/// The six frequencies: the two highest (no case scales them) and the four that differ.
fn join(head: [f32; 2], tail: [f32; 4]) -> [f32; 6] {
    [head[0], head[1], tail[0], tail[1], tail[2], tail[3]]
}

/// A `max_position_embeddings` of 0 stands in for the original length: refused naming the key.
#[test]
fn a_zero_max_position_embeddings_is_refused_for_the_original_length() {
    let err = parse("llama", Some(0), None).unwrap_err().to_string();
    let want = "config edited/config.json: `max_position_embeddings` must be positive, got 0";
    assert_eq!(err, want);
}

/// A top-level `original_max_position_embeddings` of null was read as absent, though
/// transformers copies it into the scaling and then cannot build the model (verification 30,
/// F4a): refused naming the key.
#[test]
fn a_null_top_level_original_length_is_refused() {
    let path = fixture("llama").join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("config")).expect("json");
    v["original_max_position_embeddings"] = serde_json::Value::Null;
    let err = ModelConfig::parse(&v.to_string(), Path::new("edited/config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`original_max_position_embeddings` (top level) must be a number"),
        "{err}"
    );
}
