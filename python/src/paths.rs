//! Paths from Python, read in one place: `os.fspath` then `os.fsencode`, as `open()` reads
//! them. PyO3's own `PathBuf` extraction panicked (a `PanicException`, which `except
//! Exception` does not catch) on a str holding a lone surrogate; here that str raises the
//! `UnicodeEncodeError` `open()` raises, and a surrogate-escaped name (`os.fsdecode` of
//! bytes that are not UTF-8) is the file of those bytes.

use crate::ints::repr;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::path::PathBuf;

/// A path argument for `from_py_with`: a str, bytes or `os.PathLike` (PyO3 puts the
/// argument's name before a TypeError's message).
pub fn path(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let py = obj.py();
    let os = py.import("os")?;
    let fspath = os.call_method1("fspath", (obj,)).map_err(|e| {
        // an os.PathLike's own __fspath__ failed: its error, as open() raises it
        if obj.hasattr("__fspath__").unwrap_or(false) {
            return e;
        }
        PyTypeError::new_err(format!(
            "got {}: expected a path (a str or an os.PathLike such as pathlib.Path)",
            repr(obj)
        ))
    })?;
    // a str with a lone surrogate: UnicodeEncodeError, as open() raises
    let encoded = os.call_method1("fsencode", (fspath,))?;
    let bytes = encoded.cast::<PyBytes>()?.as_bytes().to_vec();
    // as open() refuses it (the name was cut at the byte, or shown with a space)
    if bytes.contains(&0) {
        return Err(PyValueError::new_err("embedded null byte"));
    }
    Ok(os_path(bytes))
}

/// `obj` as a path when it is one (a str, bytes or `os.PathLike`), else None: what a data
/// argument holds, a file or rows.
pub fn path_if_any(obj: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    let is_path = obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyBytes>()
        || obj.hasattr("__fspath__")?;
    is_path.then(|| path(obj)).transpose()
}

#[cfg(unix)]
fn os_path(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// Elsewhere `os.fsencode` gives UTF-8 (Windows' file system encoding since Python 3.6).
#[cfg(not(unix))]
fn os_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}
