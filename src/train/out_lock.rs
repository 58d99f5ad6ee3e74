//! A folder's lock (`.softprompt.lock`): held alone by the run or the save writing into the
//! folder, with the holder's pid inside so that another can name it; a run holds the folder
//! itself too, so that removing its lock file lets no second run in; and, without locking,
//! who holds it now (`folder_writer`, read from /proc/locks).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::outdir::LOCK_FILE;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// An exclusive lock on an output folder, held until dropped (the system releases it when the
/// process ends, SIGKILL included).
#[derive(Debug)]
pub struct OutLock {
    _file: File,
    /// the folder, locked as well (`lock_folder`)
    _folder: Option<File>,
    pub path: PathBuf,
}

impl OutLock {
    /// Locks `dir` (created if missing), or fails at once naming the pid of the run that
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<OutLock> {
        // a lock file its holder unlinked (an emptied task folder goes with it) between this
        // open and this lock locks nothing a later run sees: open it again (review 21)
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::acquire_once(dir)? {
                (lock, true) => return Ok(lock),
                (lock, false) if tries >= 3 => return Ok(lock),
                _ => {}
            }
        }
    }

    /// `acquire`'s one try, and whether the file it locked is still the folder's lock file.
    fn acquire_once(dir: &Path) -> Result<(OutLock, bool)> {
        // by its components: std's create_dir_all gives up on a trailing `.` (`x/./`, x
        // missing: "No such file or directory")
        let whole: PathBuf = dir.components().collect();
        let unwritable = |e| Error::io_doing(dir, "`out` cannot be written into", e);
        std::fs::create_dir_all(whole).map_err(unwritable)?;
        let path = dir.join(LOCK_FILE);
        let mut file = open_lock_file(&path, true).map_err(|e| match is_link(&e) {
            true => Error::file(
                &path,
                "is a symbolic link: a folder's lock file is an ordinary file that its run \
                 writes its pid into (the link's target would be written over): remove the link",
            ),
            false => unwritable(e),
        })?;
        let who = match lock_and_sign(&mut file, &path)? {
            Ok(()) => match lock_folder(dir)? {
                Ok(folder) => {
                    let linked = still_linked(&file, &path);
                    let lock = OutLock {
                        _file: file,
                        _folder: folder,
                        path,
                    };
                    return Ok((lock, linked));
                }
                // the run holding the folder lost its lock file (hostile pass 32, F5): the
                // new one this run made and signed names no one
                Err(pid) => {
                    let _ = file.set_len(0);
                    let pid = pid.map_or(String::new(), |p| format!(" (pid {p})"));
                    return Err(Error::in_use(
                        dir,
                        format!(
                            "another softprompt run{pid} is writing into this folder, whose \
                             lock file ({}) was removed while it ran: wait for it to end, or \
                             train into another `out`",
                            path.display()
                        ),
                    ));
                }
            },
            // the lock is per open file: this process's own run, in another thread or
            // through another handle, is refused as well
            Err(Holder(Some(pid))) if pid == std::process::id() => format!(
                "another run in this process (pid {pid}: another thread, or a run not yet \
                 dropped)"
            ),
            // a process the run forked holds the lock it inherited, and outlives the run
            // (hostile pass 21, F6): the pid named would send a user looking for nothing
            Err(Holder(Some(pid)))
                if cfg!(target_os = "linux") && !Path::new(&format!("/proc/{pid}")).exists() =>
            {
                format!(
                    "a process that the run of pid {pid} (no longer running) started, and \
                     which inherited its lock,"
                )
            }
            Err(Holder(Some(pid))) => format!("another softprompt run (pid {pid})"),
            Err(Holder(None)) => "another softprompt run (its pid is not written yet)".into(),
        };
        Err(Error::in_use(
            dir,
            format!(
                "{who} is writing into this folder (it holds {}): wait for it to end, or train \
                 into another `out`",
                path.display()
            ),
        ))
    }
}

/// The lock file at `path` opened to read and write (`create`: made where missing), never
/// through a symbolic link: a link there had its target emptied and signed with the run's
/// pid, a file outside the folder (hostile pass 32, F3).
pub(super) fn open_lock_file(path: &Path, create: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(create)
        .truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    options.open(path)
}

/// Whether `open_lock_file` failed on a symbolic link.
fn is_link(e: &std::io::Error) -> bool {
    cfg!(unix) && e.raw_os_error() == Some(libc::ELOOP)
}

/// The folder `dir` itself locked (flock on the open folder) beside its lock file, or the
/// pid of the process holding it (None: not known): a run whose lock file was removed while
/// it ran (by hand, a cleaner of hidden or old files) still holds the folder, and a second
/// run, which made and locked a new lock file, took the folder beneath it, removed its files
/// and mixed its metrics lines with its own (hostile pass 32, F5). A holder of this process
/// is waited for as `lock_and_sign` waits (a child it spawned shares the open folder until it
/// runs its program). A folder this process may write into but not read (mode 333) cannot
/// be opened to lock: its lock file alone guards it, as before (verification 28, V3).
#[cfg(unix)]
pub(super) fn lock_folder(dir: &Path) -> Result<std::result::Result<Option<File>, Option<u32>>> {
    let folder = match File::open(dir) {
        Ok(folder) => folder,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(Ok(None)),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let start = std::time::Instant::now();
    loop {
        match folder.try_lock() {
            Ok(()) => return Ok(Ok(Some(folder))),
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::metadata(dir).ok().and_then(|m| flock_holder(&m));
                if holder == Some(std::process::id()) && start.elapsed() < OWN_LINGER {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                return Ok(Err(holder));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(dir, e)),
        }
    }
}

#[cfg(not(unix))]
pub(super) fn lock_folder(_dir: &Path) -> Result<std::result::Result<Option<File>, Option<u32>>> {
    Ok(Ok(None))
}

/// Whether the open `file` is still the file at `path` (not unlinked or replaced since).
#[cfg(unix)]
pub(super) fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(super) fn still_linked(_: &File, _: &Path) -> bool {
    true
}

/// Who holds a run's lock file that this process could not lock: a run (or a save into the
/// folder), with the pid it wrote (None: not yet).
pub(super) struct Holder(pub(super) Option<u32>);

/// `file` (a lock file open to read and write) locked, with this process's pid written into
/// it; or, where another holds it, who does.
pub(super) fn lock_and_sign(
    file: &mut File,
    path: &Path,
) -> Result<std::result::Result<(), Holder>> {
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => {
                let pid = std::process::id().to_string();
                (|| -> std::io::Result<()> {
                    file.set_len(0)?;
                    file.rewind()?;
                    file.write_all(pid.as_bytes())?;
                    file.sync_all()
                })()
                .map_err(|e| Error::io(path, e))?;
                return Ok(Ok(()));
            }
            Err(TryLockError::WouldBlock) => match Holder(holder_pid(file)) {
                Holder(Some(pid)) if pid == std::process::id() && start.elapsed() < OWN_LINGER => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                // a holder that locked a moment ago writes its pid next: named, not "not
                // written yet", when two start at once (hostile pass 30, F5)
                Holder(None) if start.elapsed() < PID_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                held => return Ok(Err(held)),
            },
            Err(TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
}

/// A lock this process let go of lingers while a child process it spawned meanwhile, from
/// any thread, has not yet run its program: until then the child shares the open file, and
/// its lock (a test harness's child, a host program's subprocess). A run of this process
/// that finished a moment before was named as "another run in this process" holding the
/// folder; a holder of this process is named after this long.
const OWN_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a lock without its holder's pid yet is read again for the pid.
const PID_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// The pid the holder of a lock file wrote into it (None: not written yet).
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut holder = String::new();
    // from the start: `lock_and_sign` asks again while this process's own lock lingers
    let _ = file.rewind();
    let _ = file.read_to_string(&mut holder);
    holder.trim().parse::<u32>().ok()
}

/// The pid of the process writing into the folder `dir` now: a run training into it, or a
/// save, which hold its `.softprompt.lock`. Read from /proc/locks, so looking takes no lock
/// (a shared lock taken to look would refuse a run starting at that moment). None when no
/// process holds it, off Linux, or where /proc/locks names the file otherwise (some file
/// systems). `softprompt serve --prompts` leaves such a folder out.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("sp_writer_doc_{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// assert_eq!(softprompt::folder_writer(&dir), None);
/// ```
pub fn folder_writer(dir: &Path) -> Option<u32> {
    // the lock file's holder, else the folder's: a run whose lock file was removed
    let held = |p: &Path| std::fs::metadata(p).ok().and_then(|m| flock_holder(&m));
    held(&dir.join(LOCK_FILE)).or_else(|| held(dir))
}

/// The pid of the process holding an exclusive flock on the file of `meta`, from /proc/locks
/// (None: none, off Linux, or named otherwise there).
fn flock_holder(meta: &std::fs::Metadata) -> Option<u32> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let id = lock_id(meta)?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1245 fe:00:6136251 0 EOF" (a waiter's line: "1: -> FLOCK")
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, at, ..] if *at == id => pid.parse().ok(),
            _ => None,
        }
    })
}

/// A file as /proc/locks names it: the device's major and minor number in hex, then the
/// inode.
#[cfg(unix)]
fn lock_id(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    // glibc's encoding of a device number (gnu_dev_major, gnu_dev_minor)
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Some(format!("{major:02x}:{minor:02x}:{}", meta.ino()))
}

#[cfg(not(unix))]
fn lock_id(_meta: &std::fs::Metadata) -> Option<String> {
    None
}
