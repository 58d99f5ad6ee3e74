//! What defines a task, independent of the tokenizer: its kind, template, labels and their
//! words, and how it predicts; `task.json` holds it next to a prompt. Also `--verbalizer`
//! parsing.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::data_formats::repeated_key;
use crate::error::{Error, Result};
use crate::models::heads::Pooling;
use serde_json::{json, Value};
use std::path::Path;

pub const TEXT_SLOT: &str = "{text}";
pub const MASK_SLOT: &str = "[MASK]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Pet,
    Cls,
    Seq2Seq,
    /// decoder-only LMs (BLOOM, Llama): the target text follows the filled template
    Causal,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Pet => "pet",
            TaskKind::Cls => "cls",
            TaskKind::Seq2Seq => "seq2seq",
            TaskKind::Causal => "causal",
        }
    }

    /// Whether the task has target texts (per label, or free): `seq2seq` and `causal`.
    pub fn has_targets(self) -> bool {
        matches!(self, TaskKind::Seq2Seq | TaskKind::Causal)
    }

    /// PEFT's task_type for adapter_config.json. `pet` and `cls` prompts say
    /// FEATURE_EXTRACTION: PEFT then loads them onto any BERT (BertForMaskedLM for `pet`,
    /// BertModel for `cls`) without asking for a classifier of its own; the `cls` head is in
    /// head.safetensors.
    pub fn peft_task_type(self) -> &'static str {
        match self {
            TaskKind::Pet | TaskKind::Cls => "FEATURE_EXTRACTION",
            TaskKind::Seq2Seq => "SEQ_2_SEQ_LM",
            TaskKind::Causal => "CAUSAL_LM",
        }
    }
}

/// Whether an adapter's PEFT `task_type` (`found`) fits a model whose tasks this engine saves
/// as `ours` (`TaskKind::peft_task_type`): the same, FEATURE_EXTRACTION (PEFT's bare base
/// model, any model), or on BERT (ours FEATURE_EXTRACTION) PEFT's classifier types. A
/// SEQ_2_SEQ_LM adapter on a decoder (PEFT refuses it) does not fit, nor a name PEFT lacks.
pub fn peft_task_type_fits(found: &str, ours: &str) -> bool {
    found == ours
        || found == "FEATURE_EXTRACTION"
        || (ours == "FEATURE_EXTRACTION"
            && matches!(found, "SEQ_CLS" | "TOKEN_CLS" | "QUESTION_ANS"))
}

impl std::str::FromStr for TaskKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pet" => Ok(TaskKind::Pet),
            "cls" => Ok(TaskKind::Cls),
            "seq2seq" => Ok(TaskKind::Seq2Seq),
            "causal" => Ok(TaskKind::Causal),
            _ => Err(Error::arg(
                "--task",
                format!("\"{s}\": expected pet, cls, seq2seq or causal"),
            )),
        }
    }
}

/// How `seq2seq` and `causal` predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// score every label's target text, pick the most likely
    Rank,
    /// generate token by token, taking the most likely each time
    Greedy,
}

impl std::str::FromStr for Decode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rank" => Ok(Decode::Rank),
            "greedy" => Ok(Decode::Greedy),
            _ => Err(Error::arg(
                "--decode",
                format!("\"{s}\": expected rank or greedy"),
            )),
        }
    }
}

/// What `causal` appends to each target text (and so where generation stops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetEnd {
    /// the model's end-of-sequence token (config.json's first `eos_token_id`); generation
    /// stops at any of the model's end-of-sequence tokens
    #[default]
    Eos,
    /// the tokenizer's pad token, as PEFT's causal-LM guide appends `tokenizer.pad_token_id`
    /// (and counts it in the loss); generation stops at it, as the guide's
    /// `generate(eos_token_id=pad)` does
    Pad,
    /// nothing: the target text alone; generation stops at the model's end-of-sequence tokens
    /// or after max_target_len tokens
    None,
}

impl TargetEnd {
    pub fn name(self) -> &'static str {
        match self {
            TargetEnd::Eos => "eos",
            TargetEnd::Pad => "pad",
            TargetEnd::None => "none",
        }
    }
}

impl std::str::FromStr for TargetEnd {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "eos" => Ok(TargetEnd::Eos),
            "pad" => Ok(TargetEnd::Pad),
            "none" => Ok(TargetEnd::None),
            _ => Err(Error::arg(
                "--target-end",
                format!("\"{s}\": expected eos, pad or none"),
            )),
        }
    }
}

/// Everything that defines a task, independent of the tokenizer; saved as `task.json` next
/// to a prompt so that `eval` and `predict` need no task flags.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub kind: TaskKind,
    /// `{text}` with optional words around it; for `pet` also exactly one `[MASK]`
    pub template: String,
    /// class names in score order; empty with free targets
    pub labels: Vec<String>,
    /// per label: the verbalizer word (`pet`) or the target text (`seq2seq`, `causal`); unused
    /// by `cls`
    pub label_words: Vec<String>,
    pub pooling: Pooling,
    /// `seq2seq`, `causal`: the label field is the target text itself
    pub free_targets: bool,
    /// tokens per row, specials included; longer rows lose the end of their text
    pub max_len: usize,
    /// `seq2seq`, `causal`: tokens per target, the end token included
    pub max_target_len: usize,
    pub decode: Decode,
    /// `causal`: the token after each target (T5's tokenizer always ends targets with </s>)
    pub target_end: TargetEnd,
}

impl TaskSpec {
    /// A spec with the usual defaults: PET's `{text} It was [MASK].`, labels as their own
    /// words, mean pooling, 128 tokens, rank classification.
    pub fn new(kind: TaskKind, labels: &[&str]) -> TaskSpec {
        TaskSpec {
            kind,
            template: if kind == TaskKind::Pet {
                format!("{TEXT_SLOT} It was {MASK_SLOT}.")
            } else {
                TEXT_SLOT.into()
            },
            labels: labels.iter().map(|s| s.to_string()).collect(),
            label_words: if kind == TaskKind::Cls {
                Vec::new()
            } else {
                labels.iter().map(|s| s.to_string()).collect()
            },
            pooling: Pooling::Mean,
            free_targets: false,
            max_len: 128,
            max_target_len: 32,
            decode: Decode::Rank,
            target_end: TargetEnd::Eos,
        }
    }

    /// The `task.json` object. `target_end` is written only when it is not `eos`, so that
    /// the files (and the settings a checkpoint compares) of other runs stay as they were.
    pub fn to_json(&self) -> Value {
        let verbalizer: Vec<Value> = self
            .labels
            .iter()
            .zip(&self.label_words)
            .map(|(l, w)| json!([l, w]))
            .collect();
        let mut v = json!({
            "task": self.kind.name(),
            "template": self.template,
            "labels": self.labels,
            "verbalizer": verbalizer,
            "pooling": self.pooling.name(),
            "free_targets": self.free_targets,
            "max_len": self.max_len,
            "max_target_len": self.max_target_len,
            "decode": match self.decode { Decode::Rank => "rank", Decode::Greedy => "greedy" },
        });
        if let (TargetEnd::Pad | TargetEnd::None, Some(o)) = (self.target_end, v.as_object_mut()) {
            o.insert("target_end".into(), json!(self.target_end.name()));
        }
        v
    }

    /// Reads the object written by `to_json`; `path` is for messages.
    pub fn from_json(v: &Value, path: &Path) -> Result<TaskSpec> {
        // a key that is there with the wrong type says what it holds (not "missing")
        let wrong = |k: &str, what: &str| match v.get(k) {
            None => Error::file(path, format!("missing {what} `{k}`")),
            Some(x) => Error::file(path, format!("`{k}` is {x}: expected {what}")),
        };
        let s = |k: &str| -> Result<String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(String::from)
                .ok_or_else(|| wrong(k, "a string"))
        };
        let n = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| wrong(k, "a non-negative integer"))
        };
        let labels: Vec<String> = v
            .get("labels")
            .and_then(|x| x.as_array())
            .ok_or_else(|| Error::file(path, "missing list `labels`"))?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| Error::file(path, "`labels` must hold strings"))
            })
            .collect::<Result<_>>()?;
        // `to_json` always writes the list (empty for cls), one pair per label in label order:
        // anything else would score with the wrong words, or the label names, without a word
        let pairs = v
            .get("verbalizer")
            .and_then(|x| x.as_array())
            .ok_or_else(|| {
                Error::file(
                    path,
                    "missing list `verbalizer` ([label, word] pairs, one per label; [] for cls)",
                )
            })?;
        let mut label_words = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            match pair.as_array().map(|p| p.as_slice()) {
                Some([Value::String(l), Value::String(w)]) if labels.get(i) == Some(l) => {
                    label_words.push(w.clone())
                }
                Some([Value::String(l), Value::String(_)]) => {
                    return Err(Error::file(
                        path,
                        format!(
                            "`verbalizer` pair {i} is for label {l:?}, but `labels` has {:?} \
                             there: the pairs follow the labels' order",
                            labels.get(i).map_or("nothing", |x| x.as_str())
                        ),
                    ))
                }
                _ => {
                    return Err(Error::file(
                        path,
                        "`verbalizer` must hold [label, word] pairs",
                    ))
                }
            }
        }
        // a bad value names task.json and its key, not the flag that would override it
        let field = |k: &str, e: Error| {
            let msg = match e {
                Error::Arg { msg, .. } => msg,
                other => other.to_string(),
            };
            Error::file(path, format!("`{k}`: {msg}"))
        };
        let at_least = |k: &str, min: usize| -> Result<usize> {
            let x = n(k)?;
            if x < min {
                return Err(Error::file(
                    path,
                    format!("`{k}` is {x}: expected at least {min}"),
                ));
            }
            Ok(x)
        };
        let template = s("template")?;
        if template.matches(TEXT_SLOT).count() != 1 {
            return Err(Error::file(
                path,
                format!("`template` {template:?} must hold {TEXT_SLOT} exactly once"),
            ));
        }
        let kind: TaskKind = s("task")?.parse().map_err(|e| field("task", e))?;
        // what Task::new would blame on --template, named here as task.json's key
        let masks = template.matches(MASK_SLOT).count();
        let want = usize::from(kind == TaskKind::Pet);
        if masks != want {
            return Err(Error::file(
                path,
                format!(
                    "`template` {template:?} holds {MASK_SLOT} {masks} times: expected {want} \
                     for the task {}",
                    kind.name()
                ),
            ));
        }
        if !label_words.is_empty() && label_words.len() != labels.len() {
            return Err(Error::file(
                path,
                format!(
                    "`verbalizer` holds {} pairs for {} labels",
                    label_words.len(),
                    labels.len()
                ),
            ));
        }
        Ok(TaskSpec {
            kind,
            template,
            labels,
            label_words,
            pooling: s("pooling")?.parse().map_err(|e| field("pooling", e))?,
            free_targets: free_targets(v, kind, path)?,
            max_len: at_least("max_len", 2)?,
            max_target_len: at_least("max_target_len", 1)?,
            decode: s("decode")?.parse().map_err(|e| field("decode", e))?,
            target_end: target_end(v, kind, path)?,
        })
    }

    /// Number of classes (0 with free targets).
    pub fn k(&self) -> usize {
        if self.free_targets {
            0
        } else {
            self.labels.len()
        }
    }
}

/// task.json's `free_targets` (absent in older folders: false), only true for a task with
/// targets: a `cls` one was blamed on a --free-targets no one gave (review 18, R18-5).
fn free_targets(v: &Value, kind: TaskKind, path: &Path) -> Result<bool> {
    let Some(x) = v.get("free_targets") else {
        return Ok(false);
    };
    // anything but a bool was read as false
    let free = (x.as_bool()).ok_or_else(|| {
        Error::file(
            path,
            format!("`free_targets` is {x}: expected true or false"),
        )
    })?;
    if free && !kind.has_targets() {
        return Err(Error::file(
            path,
            format!(
                "`free_targets` is true, but the task {} has no targets (only seq2seq and \
                 causal have free targets)",
                kind.name()
            ),
        ));
    }
    Ok(free)
}

/// task.json's `target_end` (absent: eos, as every folder written before it); only `causal`
/// has one.
fn target_end(v: &Value, kind: TaskKind, path: &Path) -> Result<TargetEnd> {
    let Some(x) = v.get("target_end") else {
        return Ok(TargetEnd::Eos);
    };
    let end: TargetEnd = x
        .as_str()
        .ok_or_else(|| Error::file(path, format!("`target_end` is {x}: expected a string")))?
        .parse()
        .map_err(|e| match e {
            Error::Arg { msg, .. } => Error::file(path, format!("`target_end`: {msg}")),
            e => e,
        })?;
    if kind != TaskKind::Causal && end != TargetEnd::Eos {
        return Err(Error::file(
            path,
            format!(
                "`target_end` is for the causal task only, not {}",
                kind.name()
            ),
        ));
    }
    Ok(end)
}

/// A verbalizer gives each label one word: a label given twice was trained on one of its
/// words (the later, in JSON) without a word, or blamed on `--labels`.
pub fn check_unique_labels(pairs: &[(String, String)]) -> Result<()> {
    for (i, (l, w)) in pairs.iter().enumerate() {
        if let Some((_, first)) = pairs.iter().take(i).find(|(x, _)| x == l) {
            return Err(twice(&format!(
                "the label {l:?} is given twice (words {first:?} and {w:?})"
            )));
        }
    }
    Ok(())
}

/// `[["label", "word"], ...]`, the verbalizer as task.json writes it.
fn json_pairs(s: &str) -> Result<Vec<(String, String)>> {
    const FORM: &str = "[[label, word], ...], as task.json writes it";
    let v: Vec<Value> = serde_json::from_str(s).map_err(|e| {
        Error::arg(
            "--verbalizer",
            format!("not a valid JSON array of label, word pairs ({FORM}): {e}"),
        )
    })?;
    let pair = |(i, p): (usize, &Value)| match p.as_array().map(Vec::as_slice) {
        Some([Value::String(l), Value::String(w)]) => Ok((l.clone(), w.clone())),
        _ => Err(Error::arg(
            "--verbalizer",
            format!("item {i} holds {p}: expected a pair of strings, label and word ({FORM})"),
        )),
    };
    v.iter().enumerate().map(pair).collect()
}

fn twice(what: &str) -> Error {
    Error::arg("--verbalizer", format!("{what}: give each label one word"))
}

/// Parses `--verbalizer`: `label=word,label=word`, or, when words hold commas, a JSON object
/// `{"label": "word"}` or task.json's own form, a JSON array `[["label", "word"], ...]`.
/// Keeps the order given.
pub fn parse_verbalizer(s: &str) -> Result<Vec<(String, String)>> {
    let pairs = parse_pairs(s)?;
    check_unique_labels(&pairs)?;
    Ok(pairs)
}

fn parse_pairs(s: &str) -> Result<Vec<(String, String)>> {
    let s = s.trim();
    // task.json's [[label, word], ...]; a label that starts with a bracket ("[pos]=great")
    // stays a label=word pair
    let json_array =
        (s.strip_prefix('[')).is_some_and(|rest| rest.trim_start().starts_with(['[', ']', '"']));
    if json_array {
        return json_pairs(s);
    }
    if s.starts_with('{') {
        let v: serde_json::Map<String, Value> = serde_json::from_str(s)
            .map_err(|e| Error::arg("--verbalizer", format!("not a valid JSON object: {e}")))?;
        // serde_json keeps the last of a repeated key
        if let Some(k) = repeated_key(s) {
            return Err(twice(&format!("the label {k:?} is given twice")));
        }
        // serde_json's map is sorted; recover the order of appearance from the text
        let mut pairs: Vec<(usize, String, String)> = v
            .iter()
            .map(|(k, w)| {
                let pos = s
                    .find(&serde_json::to_string(k).unwrap_or_default())
                    .unwrap_or(usize::MAX);
                let word = w.as_str().ok_or_else(|| {
                    Error::arg(
                        "--verbalizer",
                        format!("label {k:?}: the word must be a string, got {w}"),
                    )
                })?;
                Ok((pos, k.clone(), word.to_string()))
            })
            .collect::<Result<_>>()?;
        pairs.sort();
        return Ok(pairs.into_iter().map(|(_, k, w)| (k, w)).collect());
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((l, w)) if !l.trim().is_empty() && !w.trim().is_empty() => {
                Ok((l.trim().to_string(), w.trim().to_string()))
            }
            _ => Err(Error::arg(
                "--verbalizer",
                format!("\"{pair}\": expected label=word, e.g. positive=great,negative=terrible"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// task.json's array form, and a label that starts with a bracket as a label=word pair.
    #[test]
    fn verbalizer_forms() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(l, w)| (l.to_string(), w.to_string()))
                .collect()
        };
        let json = super::parse_verbalizer(r#"[["pos", "good"], ["neg", "bad"]]"#).unwrap();
        assert_eq!(json, pairs(&[("pos", "good"), ("neg", "bad")]));
        let bracketed = super::parse_verbalizer("[pos]=great,[neg]=awful").unwrap();
        assert_eq!(bracketed, pairs(&[("[pos]", "great"), ("[neg]", "awful")]));
    }
}
