//! config.json parsing: the three T5 spellings of the fixtures (Hub t5-small, transformers 5
//! `save_pretrained`, Hub flan-t5) and the BERT folders parse to the values transformers
//! 5.24 uses, including every default a missing key implies; unsupported values are errors
//! that name the key.
//!
//! One test binary, its tests in a module per model family (`t5`, `bert`, `decoder`: BLOOM
//! and the Llama family, their RoPE settings and sliding windows). The helpers they share live
//! here.

#[path = "../common/mod.rs"]
mod common;

mod bert;
mod decoder;
mod t5;

use common::fixture;
use softprompt::internals::config::ModelConfig;
use std::path::Path;

/// Parses `base` with `edit` applied.
fn parse_edited(
    base: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> softprompt::Result<ModelConfig> {
    let path = fixture(base).join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    ModelConfig::parse(&v.to_string(), Path::new("edited/config.json"))
}

/// One config.json edit.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

fn remove(v: &mut serde_json::Value, keys: &[&str]) {
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
    }
}
