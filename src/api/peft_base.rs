//! A PEFT folder (no task.json) records its model only in adapter_config.json: PEFT's
//! `base_model_name_or_path` and `task_type`. A llama adapter ran on a mistral (or bloom) of
//! the same width, and a SEQ_2_SEQ_LM adapter on a decoder, without a word; PEFT itself only
//! warns about another base model, so these are warnings too.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::prompt::ADAPTER_CONFIG;
use crate::train::spec::peft_task_type_fits;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The model types this engine reads, longest first where one holds another ("qwen2" is
/// looked for before any shorter name), to read a family off a hub name such as
/// "meta-llama/Llama-3.2-1B".
const FAMILIES: [&str; 6] = ["mistral", "qwen2", "llama", "bloom", "bert", "t5"];

/// Where PEFT's `base` may be on this machine: as is, or next to the prompt folder `here` or
/// a folder above it (what `Prompt::model_dir` tries, in its order).
pub(super) fn base_dirs(base: &str, here: &Path) -> Vec<PathBuf> {
    let mut tries = vec![PathBuf::from(base)];
    let mut dir = Some(here);
    while let Some(d) = dir {
        tries.push(d.join(base));
        dir = d.parent();
    }
    tries
}

/// The `model_type` of the model folder `dir`'s config.json, if it has one.
fn model_type(dir: &Path) -> Option<String> {
    let text = crate::fsutil::read_json_text(&dir.join("config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(v.get("model_type")?.as_str()?.to_string())
}

/// The family a model name reads as (`FAMILIES`), None when it names none.
fn family_in_name(name: &str) -> Option<&'static str> {
    let last = name.rsplit('/').next().unwrap_or(name).to_lowercase();
    FAMILIES.into_iter().find(|f| last.contains(f))
}

/// The warnings for a PEFT folder `here` (adapter config `cfg`, no task.json) run on the model
/// in `model_dir`, of architecture `arch`: its base model of another family (its config.json
/// where the folder exists here, else the family its name reads as), and a task_type that
/// this model cannot be (`peft_task_type_fits`).
pub(super) fn warnings(cfg: &Value, here: &Path, model_dir: &Path, arch: &str) -> Vec<String> {
    let path = here.join(ADAPTER_CONFIG);
    let mut out = Vec::new();
    let ours = model_type(model_dir).unwrap_or_else(|| arch.to_string());
    if let Some(base) = cfg.get("base_model_name_or_path").and_then(Value::as_str) {
        let found = base_dirs(base, here).iter().find_map(|d| model_type(d));
        let theirs = found.or_else(|| {
            // a hub name: only when it names another family and not this one
            let name = base.to_lowercase();
            family_in_name(base)
                .filter(|_| !name.contains(&ours))
                .map(str::to_string)
        });
        if let Some(theirs) = theirs.filter(|t| *t != ours) {
            out.push(format!(
                "{}: `base_model_name_or_path` is {base:?}, a {theirs} model, but {} is a \
                 {ours} model: an adapter of another model means nothing on this one, even of \
                 the same width (PEFT warns likewise)",
                path.display(),
                model_dir.display()
            ));
        }
    }
    let engine_type = match arch {
        "bert" => "FEATURE_EXTRACTION",
        "t5" => "SEQ_2_SEQ_LM",
        _ => "CAUSAL_LM",
    };
    if let Some(t) = cfg.get("task_type").and_then(Value::as_str) {
        if !peft_task_type_fits(t, engine_type) {
            out.push(format!(
                "{}: `task_type` is {t:?}, which a {arch} model here is not (expected \
                 {engine_type}): the prompt runs as this model's task, and a save writes \
                 {engine_type}",
                path.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hub names read as their family, the longest name first; others read as none.
    #[test]
    fn families_are_read_off_hub_names() {
        assert_eq!(family_in_name("meta-llama/Llama-3.2-1B"), Some("llama"));
        assert_eq!(family_in_name("mistralai/Mistral-7B-v0.1"), Some("mistral"));
        assert_eq!(family_in_name("Qwen/Qwen2.5-0.5B"), Some("qwen2"));
        assert_eq!(family_in_name("google/flan-t5-base"), Some("t5"));
        assert_eq!(family_in_name("gpt2"), None);
    }
}
