//! The `cls` head's file, head.safetensors: its tensors, and the labels and the task its
//! metadata records, so that a folder copied out without task.json scores as its own does.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::prompt_dir::SAVE_KEY;
use super::spec::{TaskKind, TaskSpec};
use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::prompt::PromptTable;
use crate::weights::TensorFile;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The key of the label names, a JSON list in the order of the head's rows, in
/// head.safetensors' metadata: a folder without task.json (copied out as PEFT's) was scored
/// with the data's sorted labels, the rows of a head trained in another order swapped.
pub const LABELS_KEY: &str = "softprompt_labels";

/// The key of the task, task.json's task fields (template, pooling, max_len, ...), in
/// head.safetensors' metadata: a `cls` folder copied out without task.json was scored with
/// the default template and pooling, not the ones its head was trained under (hostile pass
/// 23, F1).
pub const HEAD_TASK_KEY: &str = "softprompt_task";

/// A head read back: the head, the labels in the order of its rows and the `cls` task its
/// metadata records (None where a head saved earlier records none).
pub(super) type ReadHead = (Option<HostClsHead>, Option<Vec<String>>, Option<TaskSpec>);

/// head.safetensors of a prompt folder holding `prompt`: the head, and the labels and the
/// `cls` task its metadata records.
pub(super) fn read_head(head_path: &Path, prompt: &PromptTable) -> Result<ReadHead> {
    let f = TensorFile::read(head_path)?;
    let w = f.float("weight")?;
    let b = f.float("bias")?;
    let (k, c) = match w.shape.as_slice() {
        [k, c] => (*k, *c),
        s => {
            return Err(Error::file(
                head_path,
                format!("`weight` has shape {s:?}: expected [labels, d]"),
            ))
        }
    };
    // a prefix table's row holds every layer's keys and values: the head reads the
    // model's width, PEFT's token_dim (a prefix cls run wrote a head its own load refused)
    let cfg = prompt.layout.config.as_ref();
    let prefix = cfg.and_then(|c| c.get("peft_type")) == Some(&Value::from("PREFIX_TUNING"));
    let token_dim = cfg.and_then(|c| c.get("token_dim")).and_then(Value::as_u64);
    let d = match (prefix, token_dim) {
        (true, Some(td)) => td as usize,
        _ => prompt.d,
    };
    if c != d {
        return Err(Error::file(
            head_path,
            format!("`weight` has shape [{k}, {c}]: expected [labels, {d}], the model's width"),
        ));
    }
    if b.data.len() != k {
        return Err(Error::file(
            head_path,
            format!(
                "`bias` has {} values, but `weight` has {k} rows (one per label)",
                b.data.len()
            ),
        ));
    }
    let labels = head_labels(head_path, &f.metadata, k)?;
    let task = head_task(head_path, &f.metadata, labels.as_deref())?;
    let head = HostClsHead {
        k,
        c,
        weight: w.data.clone(),
        bias: b.data.clone(),
    };
    Ok((Some(head), labels, task))
}

/// The label names head.safetensors' metadata records (`LABELS_KEY`), in the order of its
/// `k` rows; None for a head saved without them (an earlier softprompt's, or made by hand).
fn head_labels(
    path: &Path,
    meta: &HashMap<String, String>,
    k: usize,
) -> Result<Option<Vec<String>>> {
    let Some(text) = meta.get(LABELS_KEY) else {
        return Ok(None);
    };
    let bad = |why: String| {
        Error::file(
            path,
            format!("`{LABELS_KEY}` in its metadata is {text:?}: {why}"),
        )
    };
    let labels: Vec<String> = serde_json::from_str(text)
        .map_err(|e| bad(format!("expected a JSON list of the label names ({e})")))?;
    if labels.len() != k {
        let n = labels.len();
        return Err(bad(format!(
            "{n} names, but `weight` has {k} rows (one per label)"
        )));
    }
    let twice = (labels.iter().enumerate()).find(|(i, l)| labels.iter().take(*i).any(|x| x == *l));
    if let Some((_, l)) = twice {
        return Err(bad(format!("the label {l:?} is named twice")));
    }
    Ok(Some(labels))
}

/// The `cls` task head.safetensors' metadata records (`HEAD_TASK_KEY`), which must be of
/// the labels it names (`labels`, in the order of its rows); None for a head saved without
/// it (an earlier softprompt's, or made by hand).
fn head_task(
    path: &Path,
    meta: &HashMap<String, String>,
    labels: Option<&[String]>,
) -> Result<Option<TaskSpec>> {
    let Some(text) = meta.get(HEAD_TASK_KEY) else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Error::file(
            path,
            format!("`{HEAD_TASK_KEY}` in its metadata is {text:?}: {why}"),
        )
    };
    let v: Value = serde_json::from_str(text).map_err(|e| {
        bad(&format!(
            "expected a JSON object, task.json's task fields ({e})"
        ))
    })?;
    // task.json's words, said of this key (they read as of a broken tensor file; review 18)
    let spec = TaskSpec::from_json(&v, path).map_err(|e| match e {
        Error::File { msg, .. } => bad(&msg),
        e => e,
    })?;
    if labels.is_none() {
        return Err(bad(&format!(
            "a task without `{LABELS_KEY}`, the names of the head's rows, beside it"
        )));
    }
    if spec.kind != TaskKind::Cls || Some(spec.labels.as_slice()) != labels {
        return Err(bad(&format!(
            "expected the cls task of the labels `{LABELS_KEY}` names"
        )));
    }
    Ok(Some(spec))
}

/// head.safetensors' metadata: the save stamp, and when `spec` is the `cls` task the head
/// was trained for, the labels in the order of the head's rows and the task itself.
pub(super) fn head_metadata(
    stamp: &str,
    spec: &TaskSpec,
    head: &HostClsHead,
) -> HashMap<String, String> {
    let mut meta = HashMap::from([(SAVE_KEY.to_string(), stamp.to_string())]);
    if spec.kind == TaskKind::Cls && spec.labels.len() == head.k {
        meta.insert(LABELS_KEY.to_string(), json!(spec.labels).to_string());
        meta.insert(HEAD_TASK_KEY.to_string(), spec.to_json().to_string());
    }
    meta
}
