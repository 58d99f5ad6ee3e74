//! What a prompt folder missing one of its files is told to do, by whose folder it is: a
//! run's (resume it), a save's cut short (save again), or neither (copy it back).

use super::checkpoint::{CHECKPOINT_FILE, TASK_FILE};
use super::prompt_dir::SAVE_KEY;
use serde_json::Value;
use std::path::Path;

/// Whether `dir` holds the task.json of a `Model::save_prompt`: a save stamp and no training
/// `step` (a run's export records its step). It is renamed in first, so such a folder
/// missing another file of the save is a save cut short (review 14, R14-3), not PEFT's; a
/// run's folder copied out without its checkpoint is told to copy the file back (review 16).
pub fn saved_by_save_prompt(dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join(TASK_FILE)).unwrap_or_default();
    let v: Option<Value> = serde_json::from_str(&text).ok();
    v.is_some_and(|v| v.get(SAVE_KEY).is_some_and(Value::is_string) && v.get("step").is_none())
}

/// The advice for a saved prompt's folder missing one of its files (the head, the adapter,
/// its config), whose save may have been cut short: resume the run that owns it, save the
/// prompt again where task.json says `Model::save_prompt` wrote it, else copy it back.
pub fn missing_file_advice(dir: &Path) -> &'static str {
    if in_a_run(dir) {
        "resume the run (train ... --resume) to write it"
    } else if saved_by_save_prompt(dir) {
        "a save was stopped before it wrote this file (its task.json carries the save's \
         stamp), or the file was removed since; save the prompt again"
    } else {
        "copy it back from the run's --out folder, or train again"
    }
}

/// Whether `dir` is a training run's `--out`, or a task's folder in a multi-task run's:
/// beside its checkpoint the run writes the folder again on `--resume`, where a folder a
/// kill left half-written gets that advice (not "copy it back", nor "save it again").
pub fn in_a_run(dir: &Path) -> bool {
    dir.join(CHECKPOINT_FILE).is_file() || a_runs_task_folder(dir)
}

/// Whether `dir` is a task's folder of the multi-task run whose `--out` holds it: the
/// parent's checkpoint is a multi-task one that names the task. Any folder beside a
/// checkpoint was told to resume a run that never writes it (review 14, R14-8).
fn a_runs_task_folder(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return false;
    };
    let tasks = super::multitask_ckpt::task_names(&parent.join(CHECKPOINT_FILE));
    tasks.is_some_and(|ts| ts.iter().any(|t| t == name))
}
