//! Standard output that a reader who stops reading (`softprompt train ... | head`) cannot
//! turn into a panic: Rust ignores SIGPIPE, so `println!` panics on the broken pipe, which
//! killed a training run whose banner was piped to `head`. After a broken pipe nothing more
//! is written and the command goes on: its results are files.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` (and a newline when `newline`) to stdout; a write that fails (the reader
/// is gone) ends stdout for the rest of the process, silently.
pub fn write(text: std::fmt::Arguments<'_>, newline: bool) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(text)
        .and_then(|()| match newline {
            true => out.write_all(b"\n"),
            false => Ok(()),
        })
        .and_then(|()| out.flush());
    if written.is_err() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}
