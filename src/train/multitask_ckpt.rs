//! A multi-task run's checkpoint: ONE file (`checkpoint.safetensors`, written atomically)
//! holding every task's part as a single-task checkpoint holds it: the tensors under a
//! `<task>/` prefix (`en/prompt`, `en/opt.prompt.m`, `en/best.prompt`, a P-tuning task's
//! `fr/encoder.*` and `fr/best.encoder.*`, ...) and, in the
//! metadata, the run's step, the task names in order and each task's `TrainState` (its step,
//! plan, RNG, best, patience and hashed settings). A run killed at any moment leaves the
//! previous checkpoint or the new one, never one task's state of one step beside another's of
//! the next.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{
    check_checksum, state_from_json, write_checkpoint, Checkpoint, TrainState,
};
use crate::error::{Error, Result};
use crate::weights::TensorFile;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A checkpoint's named tensors (shape, values).
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub(crate) const META_KEY: &str = "softprompt_multitask_checkpoint";
pub const MULTITASK_FORMAT: u32 = 1;

/// The metadata: the run's step and each task's state, in the run's order.
#[derive(Serialize)]
struct Meta {
    format: u32,
    step: u64,
    tasks: Vec<(String, TrainState)>,
}

/// Every task's checkpoint, in the run's order.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiCheckpoint {
    /// steps taken by the run
    pub step: u64,
    /// (name, that task's checkpoint with its tensors' names unprefixed)
    pub tasks: Vec<(String, Checkpoint)>,
}

/// The task names of the multi-task checkpoint `path`, read from its header alone; None
/// for a file that is not one (missing, unreadable, a single-task run's).
pub fn task_names(path: &Path) -> Option<Vec<String>> {
    let meta = super::prompt_dir::header_metadata(path)?;
    let run: serde_json::Value = serde_json::from_str(meta.get(META_KEY)?.as_str()?).ok()?;
    // each task is [name, state]
    let tasks = run.get("tasks")?.as_array()?.iter();
    Some(
        tasks
            .filter_map(|t| t.get(0)?.as_str().map(String::from))
            .collect(),
    )
}

impl MultiCheckpoint {
    /// Writes `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = Meta {
            format: MULTITASK_FORMAT,
            step: self.step,
            tasks: (self.tasks.iter())
                .map(|(n, ck)| (n.clone(), ck.state.clone()))
                .collect(),
        };
        let names: Vec<(String, &Vec<usize>, &[f32])> = (self.tasks.iter())
            .flat_map(|(n, ck)| {
                (ck.tensors.iter()).map(move |(k, (s, d))| (format!("{n}/{k}"), s, d.as_slice()))
            })
            .collect();
        let views: Vec<(&str, Vec<usize>, &[f32])> = (names.iter())
            .map(|(k, s, d)| (k.as_str(), s.to_vec(), *d))
            .collect();
        write_checkpoint(path, META_KEY, &meta, &views)
    }

    /// Reads `path`, refusing one whose tensors or state do not match its checksum.
    pub fn load(path: &Path) -> Result<MultiCheckpoint> {
        let file = TensorFile::read(path).map_err(super::outdir::unresumable)?;
        let meta = file.metadata.get(META_KEY).ok_or_else(|| {
            let what = match file.metadata.contains_key("softprompt_checkpoint") {
                true => "a single-task run's checkpoint: resume it without the tasks",
                false => "not a softprompt multi-task checkpoint",
            };
            Error::file(path, format!("{what} (no `{META_KEY}` metadata)"))
        })?;
        check_checksum(path, &file, meta).map_err(super::outdir::unresumable)?;
        let meta = read_meta(path, meta)?;
        let mut tensors: BTreeMap<String, Tensors> = BTreeMap::new();
        for (k, t) in file.floats {
            let (task, name) = k.split_once('/').ok_or_else(|| {
                Error::file(
                    path,
                    format!("tensor `{k}` names no task (`<task>/<name>`)"),
                )
            })?;
            (tensors.entry(task.to_string()).or_default()).insert(name.into(), (t.shape, t.data));
        }
        let tasks = (meta.tasks.into_iter())
            .map(|(n, state)| {
                let tensors = tensors.remove(&n).unwrap_or_default();
                (n, Checkpoint { state, tensors })
            })
            .collect();
        Ok(MultiCheckpoint {
            step: meta.step,
            tasks,
        })
    }

    /// The checkpoint's tasks must be `names`, in that order.
    pub fn check_names(&self, path: &Path, names: &[&str]) -> Result<()> {
        let had: Vec<&str> = self.tasks.iter().map(|(n, _)| n.as_str()).collect();
        if had == names {
            return Ok(());
        }
        Err(Error::file(
            path,
            format!(
                "the checkpoint trains the tasks {had:?}, this run {names:?}: resume with the \
                 same tasks in the same order, or train into a new `out`"
            ),
        ))
    }

    /// Task `name`'s checkpoint, taken out.
    pub fn take(&mut self, path: &Path, name: &str) -> Result<Checkpoint> {
        let i = (self.tasks.iter().position(|(n, _)| n == name))
            .ok_or_else(|| Error::file(path, format!("holds no task `{name}`")))?;
        Ok(self.tasks.remove(i).1)
    }
}

/// The metadata as it was saved: each task's state as JSON, checked by `state_from_json`.
#[derive(Deserialize)]
struct RawMeta {
    format: Value,
    step: Value,
    tasks: Vec<(String, Value)>,
}

/// The metadata, each number named when it is not one (a task's `step` of -1 was "invalid
/// value: integer -1, expected u64"), and the run's step checked against its tasks' (the
/// run's is the most any task took: an edited one was ignored).
fn read_meta(path: &Path, text: &str) -> Result<Meta> {
    let raw: RawMeta = serde_json::from_str(text)
        .map_err(|e| Error::file(path, format!("unreadable checkpoint state: {e}")))?;
    let count = |k: &str, x: &Value| {
        x.as_u64().ok_or_else(|| {
            Error::file(
                path,
                format!("the run's `{k}` is {x}: expected a non-negative integer"),
            )
        })
    };
    let (format, step) = (count("format", &raw.format)?, count("step", &raw.step)?);
    if format != u64::from(MULTITASK_FORMAT) {
        return Err(Error::file(path, format!("checkpoint format {format} is not {MULTITASK_FORMAT}: retrain, or use the softprompt that wrote it")));
    }
    let tasks = (raw.tasks.into_iter())
        .map(|(n, v)| {
            let state = state_from_json(path, v, &format!("task `{n}`'s state's"))?;
            Ok((n, state))
        })
        .collect::<Result<Vec<_>>>()?;
    let most = tasks.iter().map(|(_, t)| t.step).max().unwrap_or(0);
    if step != most {
        let steps: Vec<String> = (tasks.iter())
            .map(|(n, t)| format!("{n} {}", t.step))
            .collect();
        return Err(Error::file(
            path,
            format!(
                "the run's `step` is {step}, but its tasks took {} steps at most ({}): the \
                 checkpoint was edited or is corrupt; train into a new `out`",
                most,
                steps.join(", ")
            ),
        ));
    }
    Ok(Meta {
        format: MULTITASK_FORMAT,
        step,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::weights::write_safetensors;
    use serde_json::json;

    /// A flipped bit in one task's tensor resumed with exit 0 and other numbers: the
    /// checksum of the whole file refuses it, naming the file.
    #[test]
    fn a_flipped_bit_in_a_multitask_checkpoint_is_refused() {
        let dir = std::env::temp_dir().join(format!("sp_mtck_sum_{}", std::process::id()));
        let path = dir.join("checkpoint.safetensors");
        let state: TrainState = serde_json::from_value(json!({
            "format": 1, "step": 1, "epoch": 1, "plan": [[0]], "pos": 1, "rng": Rng::new(1),
            "best": null, "best_test": null, "best_step": 0, "evals_since_best": 0,
            "done": false, "config_hash": "", "config": {}, "threads": 1
        }))
        .unwrap();
        let task = |x: f32| Checkpoint {
            state: state.clone(),
            tensors: BTreeMap::from([("prompt".to_string(), (vec![2], vec![x, 0.5]))]),
        };
        let ck = MultiCheckpoint {
            step: 1,
            tasks: vec![("b".into(), task(1.0)), ("a".into(), task(-2.0))],
        };
        ck.save(&path).unwrap();
        assert_eq!(MultiCheckpoint::load(&path).unwrap(), ck);
        let file = TensorFile::read(&path).unwrap();
        let mut a = file.floats["a/prompt"].data.clone();
        a[0] = f32::from_bits(a[0].to_bits() ^ (1 << 29));
        let b = &file.floats["b/prompt"].data;
        let views = [("a/prompt", vec![2], &a[..]), ("b/prompt", vec![2], &b[..])];
        write_safetensors(&path, &views, Some(file.metadata.clone())).unwrap();
        let err = MultiCheckpoint::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains("corrupt or was edited"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
