//! The keys a saved prompt's task.json records beside the task (`checkpoint::save_prompt_dir`'s
//! `extra`), checked against each other and the adapter files when the folder is read.
// The loaders never panic on what a user hands them: no unwrap, no expect, no unchecked
// indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model_id::{ModelId, FINGERPRINT_KEY};
use crate::error::{Error, Result};
use crate::prompt::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use serde_json::Value;
use std::path::Path;

/// The keys task.json records beside the task (`save_prompt_dir`'s `extra`): a value of the
/// wrong type was skipped without a word (a non-string `arch` turned its check off), and a
/// `num_virtual_tokens` other than the adapter's rows means the files are not of one run.
pub(crate) fn check_record(
    v: &Value,
    path: &Path,
    p: usize,
    peft_type: Option<&str>,
) -> Result<()> {
    let bad = |k: &str, x: &Value, want: &str| {
        Error::file(path, format!("`{k}` is {x}: expected {want}"))
    };
    for k in ["step", "seed", "num_virtual_tokens"] {
        if let Some(x) = v.get(k).filter(|x| x.as_u64().is_none()) {
            return Err(bad(k, x, "a non-negative integer"));
        }
    }
    for k in [
        "arch",
        "model",
        "model_path",
        "model_from_prompt",
        super::checkpoint::SAVE_KEY,
    ] {
        if let Some(x) = v.get(k).filter(|x| !x.is_string()) {
            return Err(bad(k, x, "a string"));
        }
    }
    let fingerprint = v.get(FINGERPRINT_KEY);
    let hex = |x: &Value| {
        x.as_str()
            .and_then(|h| ModelId::from_hex(h, Default::default()))
    };
    if let Some(x) = fingerprint.filter(|x| hex(x).is_none()) {
        return Err(bad(
            FINGERPRINT_KEY,
            x,
            "16 hex digits (the model's fingerprint)",
        ));
    }
    check_method(v, path, peft_type)?;
    // a placement read by no one was printed by `inspect` as if it were one
    let placement = v.get("prefix_placement");
    if let Some(x) = placement.filter(|x| !matches!(x.as_str(), Some("papers" | "peft"))) {
        return Err(bad("prefix_placement", x, "\"papers\" or \"peft\""));
    }
    let accuracy = v.get("dev_accuracy").filter(|x| !x.is_null());
    if let Some(x) = accuracy.filter(|x| !x.as_f64().is_some_and(|a| (0.0..=1.0).contains(&a))) {
        return Err(bad("dev_accuracy", x, "null or a number from 0 to 1"));
    }
    match v.get("num_virtual_tokens").and_then(Value::as_u64) {
        Some(n) if n != p as u64 => Err(Error::file(
            path,
            format!(
                "`num_virtual_tokens` is {n}, but the adapter ({ADAPTER_CONFIG}, \
                 {ADAPTER_WEIGHTS}) has {p}: the files are not of one run"
            ),
        )),
        _ => Ok(()),
    }
}

/// task.json's `method` (written for prefix tuning; absent: the adapter's) names one of the
/// methods, and the one adapter_config.json's `peft_type` holds: a mismatch was read as
/// whatever the adapter said, and an unknown method without a word.
fn check_method(v: &Value, path: &Path, peft_type: Option<&str>) -> Result<()> {
    const METHODS: [(&str, &str); 3] = [
        ("prompt", "PROMPT_TUNING"),
        ("p-tuning", "P_TUNING"),
        ("prefix", "PREFIX_TUNING"),
    ];
    let Some(x) = v.get("method") else {
        return Ok(());
    };
    let Some(&(method, peft)) = METHODS.iter().find(|(m, _)| x.as_str() == Some(*m)) else {
        return Err(Error::file(
            path,
            format!("`method` is {x}: expected \"prompt\", \"p-tuning\" or \"prefix\""),
        ));
    };
    match (
        peft_type,
        METHODS.iter().find(|(_, t)| Some(*t) == peft_type),
    ) {
        (Some(t), Some((want, _))) if t != peft => Err(Error::file(
            path,
            format!(
                "`method` is \"{method}\", but {ADAPTER_CONFIG}'s `peft_type` is \"{t}\": \
                 expected \"{want}\" (or no `method`); the files are not of one run"
            ),
        )),
        _ => Ok(()),
    }
}
