//! The output folder of a training run: an exclusive lock while a run writes into it, with
//! the holder's pid inside so that a second run can name it, and what an earlier run left
//! there, so that nothing a user has is replaced without being asked.
//! Its refusals name what an API user set (`out`, `cfg.overwrite`, `cfg.resume`); the command
//! line words them with its flags (`cli::common::as_flags`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{Checkpoint, CHECKPOINT_FILE, HEAD_FILE, METRICS_FILE, TASK_FILE};
use super::multitask_ckpt::MultiCheckpoint;
use super::ptuning::ENCODER_FILE;
use crate::error::{Error, Result};
use crate::prompt::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use std::path::{Path, PathBuf};

pub use super::out_aside::hidden_copy as hidden_run_file;
pub use super::out_aside::recover_aside;
use super::out_aside::Staged;
pub use super::out_lock::{folder_writer, OutLock};

/// The lock file inside the output folder. It stays after a run (removing it would let a
/// third run lock a new file while a second still holds the old one).
pub const LOCK_FILE: &str = ".softprompt.lock";

/// The files a run writes into a prompt's folder: a single-task run's output folder, and each
/// task's folder (`--out/NAME/`) of a multi-task run.
pub const PROMPT_FILES: [&str; 5] = [
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    TASK_FILE,
    HEAD_FILE,
    ENCODER_FILE,
];

/// The files a run writes into its output folder (a single-task run all of them, a
/// multi-task run the checkpoint and metrics), and with the `PROMPT_FILES` of an earlier
/// run's task folders (and these files in the new tasks' folders: an earlier single-task
/// run's there) the only ones `--overwrite` removes.
pub const RUN_FILES: [&str; 7] = [
    CHECKPOINT_FILE,
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    TASK_FILE,
    HEAD_FILE,
    ENCODER_FILE,
    METRICS_FILE,
];

/// Which kind of run wrote a checkpoint, as its header says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunKind {
    SingleTask,
    MultiTask,
}

/// The kind of run whose checkpoint `dir` holds, read from the header alone; None without
/// one, or one whose header says neither.
pub fn checkpoint_kind(dir: &Path) -> Option<RunKind> {
    let meta = super::prompt_dir::header_metadata(&dir.join(CHECKPOINT_FILE))?;
    if meta.get(super::multitask_ckpt::META_KEY).is_some() {
        Some(RunKind::MultiTask)
    } else {
        (meta.get(super::checkpoint::META_KEY).is_some()).then_some(RunKind::SingleTask)
    }
}

/// What an earlier run left in `dir`: None when it holds none of `RUN_FILES`, else a
/// description ("an interrupted run (checkpoint at step 40)", "a finished multi-task run
/// (step 6; tasks a, b)", or the files).
pub fn existing_run(dir: &Path) -> Option<String> {
    // an empty metrics.jsonl is all a run stopped before its first checkpoint (a full disk)
    // leaves: nothing to keep, and it refused both a fresh run and --resume (hostile pass 25)
    let empty =
        |f: &str| f == METRICS_FILE && std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() == 0);
    let present: Vec<&str> = RUN_FILES
        .into_iter()
        .filter(|f| dir.join(f).exists() && !empty(f))
        .collect();
    if present.is_empty() {
        return None;
    }
    let ck = dir.join(CHECKPOINT_FILE);
    // a multi-task run's task folder was "the files of a run" (review 19, R19-1)
    if let Some((run, name)) = super::prompt_advice::task_of_a_run(dir).filter(|_| !ck.exists()) {
        let run = run.display();
        return Some(format!(
            "task `{name}`'s prompt of the multi-task run in {run}"
        ));
    }
    // a checkpoint neither reader takes is named as such (review 19, R19-4)
    let unread = if dir.join(CHECKPOINT_FILE).exists() {
        ", its checkpoint unreadable"
    } else {
        ""
    };
    let files = || format!("the files of a run ({}{unread})", present.join(", "));
    let ended = |done: bool| if done { "a finished" } else { "an interrupted" };
    // a multi-task run's was "the files of a run" (hostile pass 25, F7)
    if checkpoint_kind(dir) == Some(RunKind::MultiTask) {
        return Some(match MultiCheckpoint::load(&ck) {
            Ok(c) => {
                let done = c.tasks.iter().all(|(_, t)| t.state.done);
                let names: Vec<&str> = c.tasks.iter().map(|(n, _)| n.as_str()).collect();
                let (what, step) = (ended(done), c.step);
                format!(
                    "{what} multi-task run (step {step}; tasks {})",
                    names.join(", ")
                )
            }
            Err(_) => files(),
        });
    }
    Some(match Checkpoint::load(&ck) {
        Ok(c) if c.state.done => format!("a finished run (step {})", c.state.step),
        Ok(c) => format!("an interrupted run (checkpoint at step {})", c.state.step),
        Err(_) => files(),
    })
}

/// How a refused fresh run goes on.
const REPLACE_RUN: &str = "set `cfg.overwrite` to replace it, or train into another `out`";

/// The refusal of a fresh run of `kind` in `dir`, which holds `found` (`existing_run`):
/// how to go on. `resume_asked`: the run was asked to resume, and `dir` has no checkpoint.
/// A run of the other kind is not told to resume (a multi-task run into a single-task run's
/// `out` was, and `--resume` was then refused; hostile pass 25, F7).
fn occupied(dir: &Path, found: &str, resume_asked: bool, kind: RunKind) -> Error {
    let replace = REPLACE_RUN;
    let how = match checkpoint_kind(dir) {
        _ if resume_asked => {
            format!("there is no checkpoint.safetensors to resume from: {replace}")
        }
        Some(k) if k == kind => format!(
            "set `cfg.resume` to continue it (a finished run is then only re-scored), {replace}"
        ),
        Some(RunKind::SingleTask) => {
            format!("a single-task run, which a multi-task run does not continue: {replace}")
        }
        Some(RunKind::MultiTask) => format!(
            "resume it as a multi-task run of its tasks (the command line's --task-data or \
             --task-field, or `Model::train_multi`), {replace}"
        ),
        None => replace.to_string(),
    };
    Error::occupied(dir, format!("`out` holds {found}: {how}"))
}

/// Refuses to start a fresh run of `kind` in `dir` when it holds an earlier one, unless
/// `overwrite` says to replace it; then removes every file a run (single- or multi-task)
/// writes there, and only those: `RUN_FILES`, and the `PROMPT_FILES` of the task folders of
/// an earlier multi-task run (a stale encoder or task folder would be read as this run's).
/// `tasks`: a multi-task run's task folders (none for a single-task run), each refused when
/// it holds a saved prompt or an earlier single-task run, unless `overwrite`, then emptied of
/// them. Every refusal comes, and every folder whose files go is locked, before anything is
/// removed: a refused run had already removed the earlier run's files, and a run training
/// into a task folder now lost its prompt (review 18, R18-2). Returns the task folders'
/// locks (`lock_task_folders`), for the run to hold.
pub fn prepare_fresh(
    dir: &Path,
    overwrite: bool,
    kind: RunKind,
    tasks: &[&str],
) -> Result<Vec<OutLock>> {
    if let Some(found) = existing_run(dir).filter(|_| !overwrite) {
        return Err(occupied(dir, &found, false, kind));
    }
    for &name in tasks {
        let checked = check_task_folder(&dir.join(name), overwrite);
        checked.map_err(|e| e.tagged(&format!("task `{name}`")))?;
    }
    let new: Vec<PathBuf> = tasks.iter().map(|n| dir.join(n)).collect();
    // `--overwrite`: every file a run writes, here and in the earlier run's task folders;
    // else an earlier single-task run's checkpoint and metrics in a new task folder, kept
    // beside the new task's prompt, made the folder look like that run's, and resuming it
    // broke the prompt (hostile pass 25, F6)
    let removed = match overwrite {
        true => replaced_files(dir, tasks),
        false => (new.iter())
            .flat_map(|t| RUN_FILES.iter().map(move |f| t.join(f)))
            .collect(),
    };
    check_removable(&removed)?;
    let earlier = if overwrite {
        task_folders(dir)
    } else {
        Vec::new()
    };
    // the folders it empties held before it makes any: a refusal there left the new task
    // folders it had made (review 20, R20-5)
    let mut emptied = Vec::new();
    for task in earlier.iter().filter(|t| !new.contains(t)) {
        emptied.extend(hold_if_locked(task)?);
    }
    // dropped on a refusal below: the folders it made go again
    let held = lock_task_folders(dir, tasks)?;
    Staged::aside(&removed)?.remove();
    for task in earlier.iter().filter(|t| !new.contains(t)) {
        // emptied: the folder was the run's (its lock file too, the run gone, unlinked while
        // held: a run locking it once let go would lose it; review 20, R20-6); a user's file
        // in it keeps it
        remove_if_only_lock(task);
    }
    drop(emptied);
    Ok(held.keep())
}

/// `dir` and its lock file removed, where the folder holds nothing else.
fn remove_if_only_lock(dir: &Path) {
    let mut entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    if entries.all(|e| e.file_name() == LOCK_FILE) {
        let _ = std::fs::remove_file(dir.join(LOCK_FILE));
        let _ = std::fs::remove_dir(dir);
    }
}

/// The task folders `tasks` of the multi-task run in `out`, each locked for the whole run
/// (made where missing): the run held `out`'s lock alone, and a single-task run into a task
/// folder, or a resume over one a single-task run was training in, wrote it in turn with the
/// other (review 19, R19-1). Where one is refused, or the run is refused after
/// (`TaskLocks::keep` not called), the folders made here go again.
pub fn lock_task_folders(out: &Path, tasks: &[&str]) -> Result<TaskLocks> {
    let mut locks = TaskLocks {
        held: Vec::new(),
        made: Vec::new(),
    };
    for &name in tasks {
        let task = out.join(name);
        let missing = !task.exists();
        let lock = OutLock::acquire(&task).map_err(|e| e.tagged(&format!("task `{name}`")))?;
        // made and held only: a folder another process made meanwhile is not removed
        if missing {
            locks.made.push(task);
        }
        locks.held.push(lock);
    }
    Ok(locks)
}

/// A multi-task run's task folders, locked (`lock_task_folders`). Dropped before `keep`, as a
/// refused run drops it, the folders it made are removed while still held (a refused run
/// left them, holding a lock file only; review 21, R21-2).
pub struct TaskLocks {
    held: Vec<OutLock>,
    made: Vec<PathBuf>,
}

impl TaskLocks {
    /// The locks, for a run that starts: the folders it made are its own now.
    pub fn keep(mut self) -> Vec<OutLock> {
        self.made.clear();
        std::mem::take(&mut self.held)
    }
}

impl Drop for TaskLocks {
    fn drop(&mut self) {
        // the locks are dropped after this, with the fields
        self.made.iter().for_each(|m| remove_if_only_lock(m));
    }
}

/// A resumed multi-task run's task folder `dir` holds none of another run's files: a
/// single-task run trained into it (a multi-task run keeps its checkpoint and metrics in
/// `out`), and the resume would write its prompt beside them.
pub fn check_resumed_task_folder(dir: &Path) -> Result<()> {
    match existing_run(dir).filter(|_| holds_a_run(dir)) {
        Some(found) => Err(Error::occupied(
            dir,
            format!(
                "holds {found}, another run's: move it out of the folder (or train that run \
                 into another `out`), then resume"
            ),
        )),
        None => Ok(()),
    }
}

/// Whether `dir` holds a run's own files, its checkpoint or its metrics (a prompt alone is
/// a saved prompt's).
fn holds_a_run(dir: &Path) -> bool {
    [CHECKPOINT_FILE, METRICS_FILE]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// A multi-task run's task folder `dir`: refused when it holds a saved prompt or an earlier
/// single-task run, unless `overwrite` (a run or a save writing into it now is refused by
/// its lock, `lock_task_folders`).
fn check_task_folder(dir: &Path, overwrite: bool) -> Result<()> {
    // a prompt alone is a saved prompt's, below
    if let Some(found) = existing_run(dir).filter(|_| holds_a_run(dir) && !overwrite) {
        return Err(Error::occupied(
            dir,
            format!("holds {found}: {REPLACE_RUN}"),
        ));
    }
    check_prompt_folder(dir, overwrite, REPLACE_RUN)
}

/// `dir`'s lock, where it has a lock file: a run or a save writing into it now refuses
/// (they lock that file). A folder without one is not given one: no process locks it, and
/// an emptied folder is removed.
pub(super) fn hold_if_locked(dir: &Path) -> Result<Option<OutLock>> {
    (dir.join(LOCK_FILE).is_file())
        .then(|| OutLock::acquire(dir))
        .transpose()
}

/// A folder the API saves a prompt into: refused when it holds a saved prompt (any of
/// `PROMPT_FILES`), unless `overwrite`. Nothing is removed before the save: its files replace
/// the old ones one by one, each atomically, so that a reader never finds the folder without
/// a file it had (a `cls` prompt loaded without its head); `remove_unwritten` then removes
/// what the new prompt has not. `how` ends the refusal.
pub fn check_prompt_folder(dir: &Path, overwrite: bool, how: &str) -> Result<()> {
    let present: Vec<&str> = (PROMPT_FILES.into_iter())
        .filter(|f| dir.join(f).exists())
        .collect();
    if present.is_empty() || overwrite {
        return Ok(());
    }
    Err(Error::occupied(
        dir,
        format!("holds a saved prompt ({}): {how}", present.join(", ")),
    ))
}

/// After a save into `dir` that wrote `written`: the other `PROMPT_FILES` an earlier prompt
/// left (a `cls` head, an encoder), which would be read with the new one, removed.
pub fn remove_unwritten(dir: &Path, written: &[&str]) -> Result<()> {
    let stale: Vec<&str> = (PROMPT_FILES.into_iter())
        .filter(|f| !written.contains(f))
        .collect();
    remove_files(dir, &stale)
}

/// Refuses task folders (`out/NAME` for each of `names`) that are not each their own: two
/// that resolve to one folder (a link from one to the other, or names equal to a
/// case-insensitive file system) would have one task's prompt replace the other's without a
/// word, so both tasks and the folder are named; and a task folder that is a symbolic link,
/// which a run would follow into someone else's folder (the run's own, another task's).
pub fn check_task_folders(out: &Path, names: &[&str]) -> Result<()> {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for &name in names {
        let dir = out.join(name);
        let real = resolve(&dir);
        if let Some((_, other)) = seen.iter().find(|(r, _)| *r == real) {
            return Err(Error::file(
                &dir,
                format!(
                    "tasks `{other}` and `{name}` would both write their prompt into {}: each \
                     task needs a folder of its own (remove the link, or rename a task)",
                    real.display()
                ),
            ));
        }
        if dir.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            // a dangling link has no real path: its target as written (hostile pass 25, F5)
            let to = std::fs::read_link(&dir).unwrap_or_else(|_| real.clone());
            return Err(Error::file(
                &dir,
                format!(
                    "task `{name}`'s folder is a symbolic link (to {}): a run writes each \
                     task's prompt into a folder of its own inside `out`; remove the link",
                    to.display()
                ),
            ));
        }
        // a file there failed the export with a bare "File exists" (hostile pass 25, F5)
        if dir.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            return Err(Error::file(
                &dir,
                format!(
                    "task `{name}`'s folder is a file: a run writes each task's prompt into a \
                     folder of its own inside `out`; move the file away"
                ),
            ));
        }
        seen.push((real, name));
    }
    Ok(())
}

/// Refuses a folder where one of `files` (to be removed) goes, before anything is removed:
/// its removal failed after the earlier run's files were gone (review 21, R21-2).
fn check_removable(files: &[PathBuf]) -> Result<()> {
    let folder = files
        .iter()
        .find(|f| f.symlink_metadata().is_ok_and(|m| m.is_dir()));
    match folder {
        Some(f) => Err(Error::file(
            f,
            "is a folder where the run's file of that name goes: move it away (nothing was \
             removed)",
        )),
        None => Ok(()),
    }
}

/// Removes `files` from `dir`, those that exist.
fn remove_files(dir: &Path, files: &[&str]) -> Result<()> {
    for f in files {
        let path = dir.join(f);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// The task folders of the earlier multi-task run in `dir`: those its checkpoint names
/// (folders, not links); none where `dir` holds no multi-task checkpoint. Every folder in
/// `dir` holding a prompt was taken for one, and `--overwrite` emptied a user's copy of a
/// prompt there, or a run's `--out` inside (review 18, R18-1).
pub(super) fn task_folders(dir: &Path) -> Vec<PathBuf> {
    let names = super::multitask_ckpt::task_names(&dir.join(CHECKPOINT_FILE));
    (names.unwrap_or_default().iter())
        .filter(|n| crate::fsutil::is_folder_name(n))
        .map(|n| dir.join(n))
        .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_dir()))
        .collect()
}

/// Every file in `dir` a fresh run of the tasks `tasks` (none: a single-task run) may
/// replace, or `--overwrite` remove: `RUN_FILES`, and the `PROMPT_FILES` of each task's
/// folder and of an earlier run's.
fn replaced_files(dir: &Path, tasks: &[&str]) -> Vec<PathBuf> {
    let earlier =
        (task_folders(dir).into_iter()).flat_map(|t| PROMPT_FILES.iter().map(move |f| t.join(f)));
    // a new task's folder may hold an earlier single-task run, removed whole (review 17)
    let new = (tasks.iter()).flat_map(|t| RUN_FILES.iter().map(move |f| dir.join(t).join(f)));
    RUN_FILES
        .iter()
        .map(|f| dir.join(f))
        .chain(earlier)
        .chain(new)
        .collect()
}

/// Refuses an output folder that holds a model (a `config.json`): a run would write its
/// prompt, task.json and checkpoint among the model's files, and a folder with both
/// `config.json` and `adapter_config.json` is loaded by Transformers as an adapter.
/// `what` names the folder for the message (`--out`).
fn refuse_model_folder(dir: &Path, what: &str) -> Result<()> {
    if dir.join("config.json").is_file() {
        return Err(Error::file(
            dir,
            format!(
                "{what} holds a model (config.json): a prompt would be written among the \
                 model's files; name another folder"
            ),
        ));
    }
    Ok(())
}

/// `dir` names a folder a run or a save may write into (`flag` names the path, `what` the
/// folder): not empty (which wrote into the current folder), not a file, not a dangling
/// link, not a model's folder.
pub fn check_folder(dir: &Path, flag: &str, what: &str) -> Result<()> {
    refuse_empty(dir, flag)?;
    if dir.exists() && !dir.is_dir() {
        return Err(Error::file(dir, format!("{what} is a file: name a folder")));
    }
    refuse_dangling_link(dir, what)?;
    refuse_model_folder(dir, what)
}

/// Refuses an empty folder path (`flag` names it): it wrote into the current folder.
fn refuse_empty(dir: &Path, flag: &str) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::arg(
            flag,
            "is empty: name the folder to write into (an empty path wrote into the current \
             folder)",
        ));
    }
    Ok(())
}

/// Refuses a folder path that is a symbolic link to nothing: creating the folder failed with
/// a bare "File exists (os error 17)" although nothing seemed to be there.
fn refuse_dangling_link(dir: &Path, what: &str) -> Result<()> {
    let dangling = dir.symlink_metadata().is_ok_and(|m| m.is_symlink()) && !dir.exists();
    if dangling {
        let target =
            std::fs::read_link(dir).map_or_else(|_| "?".into(), |t| t.display().to_string());
        return Err(Error::file(
            dir,
            format!(
                "{what} is a dangling symbolic link (to {target}, which does not exist): create \
                 the folder it points to, remove the link, or name another folder"
            ),
        ));
    }
    Ok(())
}

/// Refuses an input (`--train`, `--dev`, `--test`) that is one of the files a single-task
/// run replaces in `dir`, or that `--overwrite` removes there: it would be deleted, or
/// written over.
pub fn check_inputs_kept(dir: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    check_task_inputs_kept(dir, &[], inputs)
}

/// `check_inputs_kept` for a multi-task run of `tasks`: each task's folder in `dir` too.
pub fn check_task_inputs_kept(dir: &Path, tasks: &[&str], inputs: &[(&str, &Path)]) -> Result<()> {
    let replaced = replaced_files(dir, tasks);
    for (flag, input) in inputs {
        let run_file = (replaced.iter()).find(|f| crate::fsutil::same_file(f, input));
        if let Some(f) = run_file {
            return Err(Error::arg(
                *flag,
                format!(
                    "{} is {}, a file of the run in `out` that training replaces: move it out \
                     of `out` first",
                    input.display(),
                    f.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The checks the command line (and Python's `Model.train`) runs before it loads anything, so that a busy or occupied
/// folder fails at once: the lock is free (taken and given back; the trainer takes it for
/// good), and a fresh run (`resume` false, or nothing to resume) would not replace a run
/// without `overwrite`. Returns the files `recover_aside` put back, for the caller to name
/// (`put_back_note`).
pub fn precheck(dir: &Path, resume: bool, overwrite: bool, kind: RunKind) -> Result<Vec<PathBuf>> {
    check_folder(dir, "out", "`out`")?;
    let mut back = Vec::new();
    if dir.is_dir() {
        drop(OutLock::acquire(dir)?);
        back = recover_aside(dir)?;
    }
    let fresh = !(resume && dir.join(CHECKPOINT_FILE).exists());
    match existing_run(dir).filter(|_| fresh && !overwrite) {
        Some(found) => Err(occupied(dir, &found, resume, kind)),
        None => Ok(back),
    }
}

/// A checkpoint `--resume` cannot read (not a safetensors file whole, or failing its
/// checksum), with the way on: it named the fault only (a kill never leaves one
/// half-written, as it is renamed in whole; a full disk or a power loss may; hostile pass
/// 32, F4). A readable checkpoint of the other run kind says how to resume it instead
/// (verification 28, V1).
pub fn unresumable(e: Error) -> Error {
    match e {
        Error::File { path, msg } => Error::File {
            msg: format!(
                "{msg}; the run cannot resume from it: train with --overwrite to start again \
                 (move the folder's prompt out first to keep it), or into another `out`"
            ),
            path,
        },
        e => e,
    }
}

/// What the command line and Python say of a file `recover_aside` put back.
pub fn put_back_note(file: &Path) -> String {
    format!(
        "put back {}, the earlier run's file, which a run with --overwrite killed part way had \
         left hidden",
        file.display()
    )
}
