//! The earlier run's files an `--overwrite` removes, all or none (`Staged`: each moved aside
//! under a hidden name first), and those a killed `--overwrite` left hidden, put back by the
//! next run into the folder (`recover_aside`).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::outdir::{hold_if_locked, task_folders, OutLock, LOCK_FILE, RUN_FILES};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Files moved out of the way all or none: each renamed to a hidden name beside it, and all
/// renamed back where one cannot be (a folder that cannot be written into, another user's
/// file in a sticky folder, an append-only or immutable file). An `--overwrite` stopped part
/// way had removed the earlier run's checkpoint and prompt first, and a probe file made to
/// try the folders proved neither the files' removal nor stayed away after a kill
/// (reviews 21 to 23). Dropped before `remove`, the files go back.
pub(super) struct Staged(Vec<(PathBuf, PathBuf)>);

impl Staged {
    /// `files` that exist, each moved aside, or none (the error names the one that could
    /// not be).
    pub(super) fn aside(files: &[PathBuf]) -> Result<Staged> {
        let mut staged = Staged(Vec::new());
        for f in files {
            let moved = staged.0.iter().any(|(from, _)| from == f);
            let Some(name) = f
                .file_name()
                .filter(|_| !moved && f.symlink_metadata().is_ok())
            else {
                continue;
            };
            let aside = aside_name(f, &name.to_string_lossy());
            if let Err(e) = std::fs::rename(f, &aside) {
                // `staged`, dropped, moves the others back
                return Err(Error::io_doing(
                    f,
                    "cannot be removed, so the earlier run's files are not replaced (nothing \
                     was removed)",
                    e,
                ));
            }
            staged.0.push((f.clone(), aside));
        }
        Ok(staged)
    }

    /// The files moved aside removed for good; one that cannot be stays hidden, the run
    /// going on (its name no run reads; the next run in the folder puts it back,
    /// `recover_aside`).
    pub(super) fn remove(mut self) {
        // the checkpoint, staged first, goes last: a kill in between leaves it hidden, and
        // the next run finds the task folders through it (put back) and puts their files
        // back too; removed first, their hidden files stayed for good (hostile pass 32, F1)
        for (_, aside) in self.0.drain(..).rev() {
            let _ = std::fs::remove_file(&aside);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (f, aside) in self.0.drain(..).rev() {
            let _ = std::fs::rename(&aside, f);
        }
    }
}

/// The hidden name `Staged` moves `file` (named `name`) aside to: `.NAME.removed-PID`, with
/// `-N` where that is taken (a process of the same pid left it, pid 1 in a container: it was
/// replaced, or a folder of that name failed the rename; review 24, F4).
fn aside_name(file: &Path, name: &str) -> PathBuf {
    let stem = format!(".{name}{ASIDE_MARK}{}", std::process::id());
    let free = |p: &PathBuf| p.symlink_metadata().is_err();
    (0..)
        .map(|n| match n {
            0 => file.with_file_name(&stem),
            n => file.with_file_name(format!("{stem}-{n}")),
        })
        .find(free)
        .unwrap_or_else(|| file.with_file_name(stem))
}

/// What `aside_name` puts between the file's name and the pid.
const ASIDE_MARK: &str = ".removed-";

/// Files an `--overwrite` killed part way left moved aside (`Staged`) in `dir`, and in the
/// task folders its checkpoint names, put back where nothing has taken their place since (a
/// run writes none before its `--overwrite` is done; `put_back_aside`): the earlier run's
/// checkpoint was left hidden, a resume found none, and a fresh run named the files left
/// beside it (review 24, F1). Files put back are an interrupted
/// `--overwrite`'s: a fresh run refuses them as it did before it, unless asked again.
/// Done under `dir`'s lock (a live `--overwrite` holds it), before a run looks at `dir`;
/// a task folder another run holds now is left alone.
/// The files put back, for the command line to name (a recovery was silent; review 26).
pub fn recover_aside(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.join(LOCK_FILE).is_file() {
        return Ok(Vec::new());
    }
    let lock = OutLock::acquire(dir)?;
    let mut back = put_back_aside(dir);
    for task in task_folders(dir) {
        if let Ok(Some(held)) = hold_if_locked(&task) {
            back.extend(put_back_aside(&task));
            drop(held);
        }
    }
    drop(lock);
    Ok(back)
}

/// `recover_aside` for the one folder `dir`: of the hidden files of one run file, the newest
/// goes back where nothing has its name; the others, and any whose name is taken, stay as
/// they are (a user's own file of that shape was removed, or a folder of it put in the run
/// file's place; review 25). The files put back.
fn put_back_aside(dir: &Path) -> Vec<PathBuf> {
    let mut back = Vec::new();
    for (name, aside) in newest_aside(dir) {
        let file = dir.join(name);
        if file.symlink_metadata().is_err() && std::fs::rename(&aside, &file).is_ok() {
            back.push(file);
        }
    }
    back
}

/// The newest hidden copy (a rename keeps the file's time) of each run file in `dir`.
fn newest_aside(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut newest: Vec<(&'static str, std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let hidden = entry.file_name();
        let Some(name) = hidden.to_str().and_then(aside_of) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let time = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        match newest.iter_mut().find(|(n, _, _)| *n == name) {
            _ if !meta.is_file() => {}
            Some(held) if held.1 >= time => {}
            Some(held) => *held = (name, time, entry.path()),
            None => newest.push((name, time, entry.path())),
        }
    }
    newest.into_iter().map(|(n, _, p)| (n, p)).collect()
}

/// The hidden copy of the run file `name` that a killed `--overwrite` left in `dir`, for the
/// advice of a command that reads the folder and finds the file missing (it puts nothing
/// back: only a run into the folder does, under its lock).
pub fn hidden_copy(dir: &Path, name: &str) -> Option<PathBuf> {
    (newest_aside(dir).into_iter())
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p)
}

/// The run file `hidden` (`.NAME.removed-PID[-N]`) was moved aside from, where it is one.
fn aside_of(hidden: &str) -> Option<&'static str> {
    let (name, tail) = hidden.strip_prefix('.')?.rsplit_once(ASIDE_MARK)?;
    let pid_and_n = tail
        .split('-')
        .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let name = RUN_FILES.into_iter().find(|f| *f == name)?;
    pid_and_n.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::ADAPTER_WEIGHTS;
    use crate::train::checkpoint::{CHECKPOINT_FILE, METRICS_FILE};

    /// Files are removed all or none: where one cannot be moved aside (a file in /proc,
    /// which nothing can rename, root or not), those moved before it are back under their
    /// names; else all go, leaving nothing hidden (reviews 21 to 23: an --overwrite refused
    /// part way had removed the earlier run's files).
    #[test]
    fn files_go_all_or_none() {
        let dir = std::env::temp_dir().join(format!("sp_staged_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (
            dir.join("checkpoint.safetensors"),
            dir.join("metrics.jsonl"),
        );
        std::fs::write(&a, "ck").unwrap();
        std::fs::write(&b, "m").unwrap();
        let names = || {
            let mut n: Vec<String> = (std::fs::read_dir(&dir).unwrap().flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        #[cfg(target_os = "linux")]
        {
            let stuck = PathBuf::from("/proc/self/status");
            let err = Staged::aside(&[a.clone(), b.clone(), stuck]).err().unwrap();
            assert!(err.to_string().contains("nothing was removed"), "{err}");
            assert_eq!(names(), ["checkpoint.safetensors", "metrics.jsonl"]);
            assert_eq!(std::fs::read(&a).unwrap(), b"ck");
        }
        Staged::aside(&[a.clone(), dir.join("gone.json"), b.clone(), a.clone()])
            .unwrap()
            .remove();
        assert_eq!(names(), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What an `--overwrite` killed part way left moved aside goes back where nothing took
    /// its place (review 24, F1), the newest of two; a name taken is not reused (F4); a
    /// hidden file whose name is taken, a user's hidden file of another shape, and a folder
    /// of that shape stay (review 25).
    #[test]
    fn files_left_aside_are_put_back() {
        let dir = std::env::temp_dir().join(format!("sp_aside_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ck, metrics) = (dir.join(CHECKPOINT_FILE), dir.join(METRICS_FILE));
        std::fs::write(&ck, "ck").unwrap();
        std::fs::write(&metrics, "new").unwrap();
        // a folder where the first hidden name goes: the next one is taken
        let first = aside_name(&ck, CHECKPOINT_FILE);
        std::fs::create_dir(&first).unwrap();
        let staged = Staged::aside(std::slice::from_ref(&ck)).unwrap();
        let hidden = staged.0[0].1.clone();
        assert_eq!(hidden, PathBuf::from(format!("{}-1", first.display())));
        std::mem::forget(staged); // killed: nothing moves it back
        std::fs::remove_dir(&first).unwrap();
        // an older copy of the checkpoint, hidden by an earlier kill
        let older = dir.join(format!(".{CHECKPOINT_FILE}.removed-5"));
        std::fs::write(&older, "older").unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&older)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let old_metrics = dir.join(format!(".{METRICS_FILE}.removed-7-2"));
        std::fs::write(&old_metrics, "old").unwrap();
        let users = [".metrics.jsonl.removed-x", ".notes.removed-7"];
        for u in users {
            std::fs::write(dir.join(u), "mine").unwrap();
        }
        let folder = dir.join(format!(".{ADAPTER_WEIGHTS}.removed-3"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "").unwrap();
        recover_aside(&dir).unwrap();
        assert_eq!(std::fs::read(&ck).unwrap(), b"ck");
        assert_eq!(std::fs::read(&metrics).unwrap(), b"new");
        assert!(!hidden.exists());
        assert_eq!(std::fs::read(&older).unwrap(), b"older");
        assert_eq!(std::fs::read(&old_metrics).unwrap(), b"old");
        assert!(users.iter().all(|u| dir.join(u).exists()));
        assert!(folder.is_dir() && !dir.join(ADAPTER_WEIGHTS).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
