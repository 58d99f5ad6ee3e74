//! Files a user keeps are written to a temporary name in the same folder, synced, then
//! renamed over the final name, so a killed run leaves either the old file or the new one.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `name` is one folder's name, safe to join under a parent: letters, digits, `-`, `_` and
/// `.`, and not `.` or `..` (which name the parent, or its parent). A task of
/// [`crate::Model::train_multi`] is saved in a folder of its name, which must pass this;
/// `softprompt serve` holds its prompt names to it too (they go into URLs and metrics).
///
/// ```
/// assert!(softprompt::is_folder_name("sst2-v1.0_b"));
/// assert!(!softprompt::is_folder_name("..") && !softprompt::is_folder_name("a/b"));
/// ```
pub fn is_folder_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && (name.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The most bytes a JSON file of settings (config.json, adapter_config.json, task.json, a
/// shard index) or a tokenizer.json is read to: far above any real one (a large
/// vocabulary's tokenizer.json is tens of MB), far below what would exhaust memory.
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// At most `cap` bytes of `path`: a FIFO, or a link to a device such as /dev/zero, was read
/// until memory ran out. Past the cap, an error naming the file and the cap; `raise` says
/// what would raise it, when anything does.
pub fn read_capped(path: &Path, cap: u64, raise: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_capped_from(file, path, cap, raise)
}

/// `read_capped` on a file already opened (`path` names it in messages).
fn read_capped_from(file: std::fs::File, path: &Path, cap: u64, raise: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    // an ordinary file says its size: refused before a byte is read
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if size <= cap {
        (file.take(cap.saturating_add(1)))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
    }
    if size > cap || bytes.len() as u64 > cap {
        return Err(Error::file(
            path,
            format!("holds more than {cap} bytes, the most this file is read to{raise}"),
        ));
    }
    Ok(bytes)
}

/// The most bytes a data file or stream (or a tensor file that is not an ordinary file) is
/// read to unless `SOFTPROMPT_MAX_STREAM_BYTES` says otherwise: far above any data set this
/// engine trains on, below what would exhaust memory.
pub const MAX_STREAM_BYTES: u64 = 4_000_000_000;

/// The variable that overrides `MAX_STREAM_BYTES`.
pub const MAX_STREAM_BYTES_VAR: &str = "SOFTPROMPT_MAX_STREAM_BYTES";

/// The bound on a stream's bytes: `SOFTPROMPT_MAX_STREAM_BYTES` when set (a positive
/// integer), else `MAX_STREAM_BYTES`.
pub fn max_stream_bytes() -> Result<u64> {
    let cap = crate::env::parse(MAX_STREAM_BYTES_VAR, "a positive number of bytes", |s| {
        s.trim().parse::<u64>().ok().filter(|&n| n > 0)
    })?;
    Ok(cap.unwrap_or(MAX_STREAM_BYTES))
}

/// A data file, FIFO or stream, read to `max_stream_bytes`.
pub fn read_stream(path: &Path) -> Result<Vec<u8>> {
    let raise = format!(" (set {MAX_STREAM_BYTES_VAR} to raise it)");
    read_capped(path, max_stream_bytes()?, &raise)
}

/// A file of a model or prompt folder, opened for reading, which must be an ordinary file
/// (or a link to one): opening a FIFO blocks until a writer appears (a server's engine, and
/// every request after the load, waited for ever), and a device such as /dev/zero never ends.
/// The open does not wait (O_NONBLOCK) and the check is on the opened handle, so a file
/// swapped for a FIFO between a check and the open cannot block either; the caller reads
/// that same handle (O_NONBLOCK changes nothing for an ordinary file).
pub fn open_ordinary(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(file);
    }
    Err(Error::file(
        path,
        "is not an ordinary file (a FIFO, device or folder): a model or prompt folder's files \
         are read whole, so each must be an ordinary file or a link to one",
    ))
}

/// A tensor file of a model or prompt folder, whole (its size is its bound: model weights
/// are many GB); anything but an ordinary file is refused before a byte is read.
/// `read_head` reads the file's head (the open file, and its length) and refuses a head that
/// does not account for the length before the rest is read; what it read is kept. A length
/// past what this process may allocate is refused too (a 1 TB sparse file aborted the
/// process in the allocation; hostile pass 34, F0).
pub fn read_tensor_file(
    path: &Path,
    read_head: impl FnOnce(&mut std::fs::File, u64) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_ordinary(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = read_head(&mut file, size)?;
    crate::memory::check_host_room(path, "its tensors", u128::from(size))?;
    bytes.reserve(
        usize::try_from(size)
            .unwrap_or(0)
            .saturating_sub(bytes.len()),
    );
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// A JSON file of a model or prompt folder: an ordinary file (checked on the opened handle),
/// its text read to `MAX_JSON_BYTES`.
pub fn read_json_text(path: &Path) -> Result<String> {
    let file = open_ordinary(path)?;
    let bytes = read_capped_from(file, path, MAX_JSON_BYTES, "")?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        Error::file(path, format!("not valid UTF-8 (at byte {at})"))
    })
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // one name per write, not per process: two threads writing one file at once renamed
    // each other's temporary file away ("No such file or directory")
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

thread_local! {
    /// The renames `write_together` holds back on this thread: (temporary file, its name).
    static STAGED: RefCell<Option<Vec<(PathBuf, PathBuf)>>> = const { RefCell::new(None) };
}

/// Runs `write`, whose `write_atomic`s (on this thread) write and sync their temporary files,
/// then renames them into place one after another: a set of files stamped as one save (a
/// prompt folder's adapter, config, head and task.json) is replaced in the time of a few
/// renames, not of writing them all. A kill between two files' writes left a folder of two
/// saves, which loading refuses (hostile pass 21, F1). A call inside another joins it.
pub fn write_together(write: impl FnOnce() -> Result<()>) -> Result<()> {
    if STAGED.with(|s| s.borrow().is_some()) {
        return write();
    }
    STAGED.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let _staging = Staging;
    let written = write();
    let staged = STAGED.with(|s| s.borrow_mut().take()).unwrap_or_default();
    let mut renamed = 0;
    let result = written.and_then(|()| {
        for (tmp, path) in &staged {
            std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
            renamed += 1;
        }
        Ok(())
    });
    for (tmp, _) in staged.iter().skip(renamed) {
        let _ = std::fs::remove_file(tmp);
    }
    let mut dirs: Vec<&Path> = staged.iter().filter_map(|(_, p)| p.parent()).collect();
    dirs.dedup();
    dirs.into_iter().for_each(sync_dir);
    result
}

/// Ends this thread's staging however `write_together` ends, a panic that a host catches
/// included: left on, every later write of the thread stayed a temporary file (review 13).
struct Staging;

impl Drop for Staging {
    fn drop(&mut self) {
        let staged = STAGED.with(|s| s.borrow_mut().take());
        for (tmp, _) in staged.into_iter().flatten() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Syncs the folder `dir` ("" for the current one): a rename is durable only then.
fn sync_dir(dir: &Path) {
    if dir.as_os_str().is_empty() {
        return;
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = temp_name(path);
    remove_stale_temps(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        let staged = STAGED.with(|s| match s.borrow_mut().as_mut() {
            Some(staged) => {
                staged.push((tmp.clone(), path.to_path_buf()));
                true
            }
            None => false,
        });
        if !staged {
            std::fs::rename(&tmp, path)?;
            sync_dir(path.parent().unwrap_or(Path::new("")));
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Removes what earlier writers of `path` killed mid-write left: `.{name}.{pid}.tmp` files
/// whose process no longer runs. Linux only (a process is alive while /proc/{pid} exists);
/// anything unreadable is left alone.
fn remove_stale_temps(path: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            // `{pid}-{n}`, or `{pid}` as earlier builds named it
            .and_then(|pid| pid.split('-').next()?.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether `a` and `b` name the same existing file (through links and relative paths too).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn write_json_atomic(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path, format!("cannot serialize JSON: {e}")))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside `write_together` the files keep their old contents until every write is done;
    /// then all are renamed in. A failed write leaves every file as it was and no temporary.
    #[test]
    fn files_written_together_change_together() {
        let dir = std::env::temp_dir().join(format!("sp_together_{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        write_atomic(&a, b"old a").unwrap();
        write_atomic(&b, b"old b").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        write_together(|| {
            write_atomic(&a, b"new a")?;
            assert_eq!(read(&a), "old a", "renamed before the set was written");
            write_together(|| write_atomic(&b, b"new b"))?;
            assert_eq!(read(&b), "old b", "a nested call renamed on its own");
            Ok(())
        })
        .unwrap();
        assert_eq!((read(&a), read(&b)), ("new a".into(), "new b".into()));
        let failed = write_together(|| {
            write_atomic(&a, b"newer a")?;
            Err(Error::Device("the second write failed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(read(&a), "new a");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"], "a temporary file was left");
        // a panic inside (caught, as Python catches one): staging ends with it
        let caught = std::panic::catch_unwind(|| {
            let _ = write_together(|| {
                write_atomic(&a, b"panicked a")?;
                panic!("inside");
            });
        });
        assert!(caught.is_err());
        let temps = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(temps, 2, "the panicked write's temporary file was left");
        write_atomic(&b, b"after").unwrap();
        assert_eq!((read(&a), read(&b)), ("new a".into(), "after".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A path that a writer keeps swapping between an ordinary file and a FIFO (a link
    /// renamed over it, each way in turn): a stat then an open of the path blocked for ever
    /// once the swap fell between the two. Every read now ends at once, read or refused, and
    /// a link to an ordinary file still reads.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_swapped_for_a_fifo_never_blocks_a_read() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let dir = std::env::temp_dir().join(format!("softprompt-fifo-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join("real.json");
        std::fs::write(&real, b"{}").unwrap();
        let fifo = dir.join("pipe");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let path = dir.join("config.json");
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert_eq!(read_json_text(&path).unwrap(), "{}");
        let no_head = |_: &mut std::fs::File, _| Ok(Vec::new());
        assert_eq!(read_tensor_file(&path, no_head).unwrap(), b"{}");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, path, real, fifo) = (stop.clone(), path.clone(), real.clone(), fifo.clone());
            let tmp = dir.join("swap.tmp");
            std::thread::spawn(move || {
                for i in 0usize.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = std::fs::remove_file(&tmp);
                    let target = if i % 2 == 0 { &fifo } else { &real };
                    std::os::unix::fs::symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, &path).unwrap();
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || {
                let (mut read, mut refused) = (0, 0);
                let start = Instant::now();
                for i in 0usize.. {
                    let t = start.elapsed();
                    if t > Duration::from_secs(10)
                        || (t > Duration::from_secs(2) && read * refused > 0)
                    {
                        break;
                    }
                    let got = match i % 2 {
                        0 => read_json_text(&path).map(String::into_bytes),
                        _ => read_tensor_file(&path, |_, _| Ok(Vec::new())),
                    };
                    match got {
                        Ok(bytes) => {
                            assert_eq!(bytes, b"{}");
                            read += 1;
                        }
                        Err(e) => {
                            assert!(e.to_string().contains("is not an ordinary file"), "{e}");
                            refused += 1;
                        }
                    }
                }
                tx.send((read, refused)).unwrap();
            })
        };
        let got = rx.recv_timeout(Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        if got.is_err() {
            // a reader blocked in open(2): a writer lets it go, so that the test can end
            use std::os::unix::fs::OpenOptionsExt;
            let _ = (std::fs::OpenOptions::new().write(true))
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo);
        }
        reader.join().unwrap();
        swapper.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let (read, refused) = got.expect("a read of the swapped path blocked");
        assert!(read > 0 && refused > 0, "read {read}, refused {refused}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_write_removes_temps_of_dead_writers_only() {
        let dir = std::env::temp_dir().join(format!("softprompt-fsutil-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.json");
        // pid 4194304 is above Linux's largest (2^22), so never a running process
        let dead = dir.join(".out.json.4194304.tmp");
        let alive = dir.join(format!(
            ".out.json.{}.tmp",
            std::os::unix::process::parent_id()
        ));
        let other = dir.join(".other.json.4194304.tmp");
        for f in [&dead, &alive, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert!(!dead.exists(), "the dead writer's temp is gone");
        assert!(alive.exists(), "a running writer's temp stays");
        assert!(other.exists(), "another file's temp stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
