//! A prompt folder held while the API saves into it (`Model::save_prompt`): its files are
//! replaced one by one (each atomically), so a second save into the same folder at once left
//! a folder of two saves' files, and a save into the `out` of a training run under way
//! replaced the run's prompt beneath it. Both are refused while a save holds the folder; the
//! folder above is not looked at (a multi-task run locks each task folder: a save into a
//! folder inside a live single-task run's `out` was refused as if that run wrote it; review
//! 21, R21-3).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::out_lock::{lock_and_sign, lock_folder, open_lock_file, still_linked, Holder};
use super::outdir::LOCK_FILE;
use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The folders this process is saving into (absolute; resolved through links where they
/// exist).
static SAVING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Held for one save; dropping it frees the folder.
#[derive(Debug)]
pub struct SaveLock {
    key: PathBuf,
    /// the folder's lock file, where a training run left one: locked for the save (none is
    /// created: a saved prompt's folder holds only its own files)
    _run_lock: Option<File>,
    /// the folder itself, where it exists: a run holds it beside its lock file
    _folder: Option<File>,
}

impl SaveLock {
    /// Holds `dir` for a save, or refuses naming who writes into it.
    pub fn acquire(dir: &Path) -> Result<SaveLock> {
        let key = folder_key(dir);
        {
            let mut saving = SAVING.lock().unwrap_or_else(|p| p.into_inner());
            if saving.contains(&key) {
                return Err(Error::in_use(
                    dir,
                    "another save in this process (another thread) is writing into this \
                     folder: wait for it to end, or save into another folder",
                ));
            }
            saving.push(key.clone());
        }
        let mut held = SaveLock {
            key: key.clone(),
            _run_lock: None,
            _folder: None,
        };
        // the folder's own lock, held alone and signed as a run signs it (a run starting now
        // names this process), from the resolved key: `.` and its own name are one folder,
        // and a link or `..` leads to the folder that is really written
        held._run_lock = lock_run_file(&key, dir)?;
        match hold_folder(&key, dir) {
            Ok(folder) => held._folder = folder,
            Err(e) => {
                // the lock file signed a moment ago names no one, as a refused run leaves it
                if let Some(file) = &held._run_lock {
                    let _ = file.set_len(0);
                }
                return Err(e);
            }
        }
        Ok(held)
    }
}

impl SaveLock {
    /// Holds the folder `dir` too where it did not exist when the save was acquired (the save
    /// has made it since), or refuses naming who holds it.
    pub fn hold_made(&mut self, dir: &Path) -> Result<()> {
        if self._folder.is_none() {
            self._folder = hold_folder(&folder_key(dir), dir)?;
        }
        Ok(())
    }
}

impl Drop for SaveLock {
    fn drop(&mut self) {
        let mut saving = SAVING.lock().unwrap_or_else(|p| p.into_inner());
        saving.retain(|k| *k != self.key);
    }
}

/// `dir` as one name for one folder, whether it exists yet or not: resolved, or its parent
/// resolved and its name joined (a save creates it), else made absolute.
fn folder_key(dir: &Path) -> PathBuf {
    let in_parent = || {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()?;
        Some(parent.join(dir.file_name()?))
    };
    (std::fs::canonicalize(dir).ok())
        .or_else(in_parent)
        .or_else(|| std::path::absolute(dir).ok())
        .unwrap_or_else(|| dir.to_path_buf())
}

/// The run lock file in `folder`, locked and signed, where there is one; a training run
/// holding it refuses the save into `dir`, naming its pid.
fn lock_run_file(folder: &Path, dir: &Path) -> Result<Option<File>> {
    // a lock file its run unlinked between this open and this lock guards nothing a run
    // started later opens: open it again, as `OutLock::acquire` does (review 22, #7)
    let mut tries = 0;
    loop {
        tries += 1;
        match lock_run_file_once(folder, dir)? {
            Some((file, false)) if tries < 3 => drop(file),
            locked => return Ok(locked.map(|(file, _)| file)),
        }
    }
}

/// The existing folder `folder` held as a run holds it: a run whose lock file was removed
/// while it ran still holds its folder, and a save went in beneath it (verification 28, V4).
fn hold_folder(folder: &Path, dir: &Path) -> Result<Option<File>> {
    if !folder.is_dir() {
        return Ok(None);
    }
    match lock_folder(folder)? {
        Ok(held) => Ok(held),
        Err(pid) => {
            let who = pid.map_or("a softprompt run or save".into(), |p| {
                format!("a softprompt run or save (pid {p})")
            });
            Err(Error::in_use(
                dir,
                format!(
                    "{who} holds this folder (a run whose lock file, {}, was removed while it \
                     ran, or a save of another process): wait for it to end, or save into \
                     another folder",
                    folder.join(LOCK_FILE).display()
                ),
            ))
        }
    }
}

/// `lock_run_file`'s one try, and whether the file it locked is still the folder's lock file.
fn lock_run_file_once(folder: &Path, dir: &Path) -> Result<Option<(File, bool)>> {
    let path = folder.join(LOCK_FILE);
    // none there, or not ours to open (a link: its target is not written over): no run has
    // written here that could write now
    let Ok(mut file) = open_lock_file(&path, false) else {
        return Ok(None);
    };
    let who = match lock_and_sign(&mut file, &path)? {
        Ok(()) => {
            let linked = still_linked(&file, &path);
            return Ok(Some((file, linked)));
        }
        Err(Holder(Some(pid))) => format!("a training run (pid {pid})"),
        Err(Holder(None)) => "a training run".to_string(),
    };
    Err(Error::in_use(
        dir,
        format!(
            "{who} is writing into this folder (it holds {}): wait for it to end, or save into \
             another folder",
            path.display()
        ),
    ))
}
