//! What a prompt folder missing one of its files is told to do, by whose folder it is: a
//! run's (resume it), a save's cut short (save again), or neither (copy it back).

use super::checkpoint::{CHECKPOINT_FILE, TASK_FILE};
use super::prompt_dir::SAVE_KEY;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Whether `dir` holds the task.json of a `Model::save_prompt`: a save stamp and no training
/// `step` (a run's export records its step). It is renamed in first, so such a folder
/// missing another file of the save is a save cut short (review 14, R14-3), not PEFT's; a
/// run's folder copied out without its checkpoint is told to copy the file back (review 16).
fn saved_by_save_prompt(dir: &Path) -> bool {
    // read as every JSON file of a folder is: a FIFO there hung, /dev/zero ran out of memory
    // (review 19, R19-3)
    let text = crate::fsutil::read_json_text(&dir.join(TASK_FILE)).unwrap_or_default();
    let v: Option<Value> = serde_json::from_str(&text).ok();
    v.is_some_and(|v| v.get(SAVE_KEY).is_some_and(Value::is_string) && v.get("step").is_none())
}

/// Whose a prompt folder's files are, for the advice a folder refused as incomplete or
/// mixed gets: a run or save writing into it now (its pid), a run's (resumed, it writes the
/// folder again), a `Model::save_prompt`'s, or neither (copied from elsewhere).
pub enum Origin {
    Live(u32),
    Run,
    Save,
    Copied,
}

impl Origin {
    pub fn of(dir: &Path) -> Origin {
        if let Some(pid) = super::outdir::folder_writer(dir) {
            Origin::Live(pid)
        } else if in_a_run(dir) {
            Origin::Run
        } else if saved_by_save_prompt(dir) {
            Origin::Save
        } else {
            Origin::Copied
        }
    }
}

/// The advice for a folder a run or a save (`pid`) is writing into now: a read between two
/// of its files; resuming it is refused while it runs (review 18, R18-6; review 19, R19-5).
pub fn live_advice(dir: &Path, pid: u32) -> String {
    format!(
        "a softprompt run or save (pid {pid}) is writing into {} now: read it again once that \
         ends",
        dir.display()
    )
}

/// Where the run file `name` missing from `dir` is there hidden, as a killed `--overwrite`
/// leaves it (`.NAME.removed-PID`): how to get it back. A read does not put it back (a run
/// into the folder does, under its lock); the folder was called no prompt folder, or told to
/// save again (review 26).
pub fn hidden_copy_advice(dir: &Path, name: &str) -> Option<String> {
    let hidden = super::out_aside::hidden_copy(dir, name)?;
    Some(format!(
        "is missing, and {} is the earlier copy that a `train` run with --overwrite, killed part \
         way, left hidden: the run puts it back when started again into its --out (--resume \
         goes on with it), or rename it back",
        hidden.display()
    ))
}

/// The refusal of `file`, missing from the prompt folder `dir` (`why`: what it holds): a
/// folder being written now is `Error::Folder` InUse naming the folder (Python's
/// FolderInUse, serve's 409), as a missing adapter_config.json was; a cls head missing
/// there was a bad file (review 24, F3). Else the file, with `missing_file_advice`.
pub fn missing_file(dir: &Path, file: &Path, why: &str) -> crate::error::Error {
    use crate::error::Error;
    match Origin::of(dir) {
        Origin::Live(pid) => Error::in_use(
            dir,
            format!(
                "{} is missing: {why}; {}",
                file.display(),
                live_advice(dir, pid)
            ),
        ),
        _ => {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let advice = hidden_copy_advice(dir, name);
            let advice = advice
                .unwrap_or_else(|| format!("is missing: {why}; {}", missing_file_advice(dir)));
            Error::file(file, advice)
        }
    }
}

/// The advice for a saved prompt's folder missing one of its files (the head, the adapter,
/// its config), whose save may have been cut short: wait for the run writing it, resume the
/// run that owns it, save the prompt again where task.json says `Model::save_prompt` wrote
/// it, else copy it back.
pub fn missing_file_advice(dir: &Path) -> String {
    match Origin::of(dir) {
        Origin::Live(pid) => live_advice(dir, pid),
        Origin::Run => "resume the run (train ... --resume) to write it".into(),
        Origin::Save => "a save was stopped before it wrote this file (its task.json carries \
                         the save's stamp), or the file was removed since; save the prompt \
                         again"
            .into(),
        Origin::Copied => "copy it back from the run's --out folder, or train again".into(),
    }
}

/// Whether `dir` is a training run's `--out`, or a task's folder in a multi-task run's:
/// beside its checkpoint the run writes the folder again on `--resume`, where a folder a
/// kill left half-written gets that advice (not "copy it back", nor "save it again").
fn in_a_run(dir: &Path) -> bool {
    dir.join(CHECKPOINT_FILE).is_file() || a_runs_task_folder(dir)
}

/// Whether `dir` is a task's folder of the multi-task run whose `--out` holds it: the
/// parent's checkpoint is a multi-task one that names the task. Any folder beside a
/// checkpoint was told to resume a run that never writes it (review 14, R14-8).
fn a_runs_task_folder(dir: &Path) -> bool {
    task_of_a_run(dir).is_some()
}

/// The multi-task run `dir` is a task folder of: the run's `--out` (the parent, whose
/// checkpoint names the task) and the task's name.
pub(super) fn task_of_a_run(dir: &Path) -> Option<(PathBuf, String)> {
    let dir = dir.canonicalize().ok()?;
    let (parent, name) = (dir.parent()?, dir.file_name()?.to_str()?);
    let tasks = super::multitask_ckpt::task_names(&parent.join(CHECKPOINT_FILE))?;
    tasks
        .iter()
        .any(|t| t == name)
        .then(|| (parent.to_path_buf(), name.to_string()))
}
