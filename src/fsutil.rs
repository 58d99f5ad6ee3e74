//! Files a user keeps are written to a temporary name in the same folder, synced, then
//! renamed over the final name, so a killed run leaves either the old file or the new one.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
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
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // the rename itself is durable only once the folder is synced
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
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
            .and_then(|pid| pid.parse::<u32>().ok());
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
