//! Standard output that a reader who stops reading (`softprompt train ... | head`) cannot
//! turn into a panic: Rust ignores SIGPIPE, so `println!` panics on the broken pipe, which
//! killed a training run whose banner was piped to `head`. After a broken pipe nothing more
//! is written and the command goes on: its results are files. Any other failure (a full
//! disk behind `> file`) is kept for the command line to report (`take_error`).

use indicatif::ProgressBar;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: Mutex<Option<String>> = Mutex::new(None);
/// Where the text goes instead of the process's stdout, when a host set it (`set_sink`).
static SINK: std::sync::OnceLock<fn(String)> = std::sync::OnceLock::new();

/// Sends this process's standard output (a run's report lines) to `sink`, for the rest of
/// the process: the Python package queues it for `sys.stdout`, which a notebook shows and
/// `contextlib.redirect_stdout` takes (file descriptor 1 is neither).
pub fn set_sink(sink: fn(String)) {
    let _ = SINK.set(sink);
}

/// Writes `text` (and a newline when `newline`) to stdout; a write that fails ends stdout
/// for the rest of the process, silently when the reader is gone (a broken pipe), else with
/// the error kept for `take_error`.
pub fn write(text: std::fmt::Arguments<'_>, newline: bool) {
    if let Some(sink) = SINK.get() {
        let mut line = text.to_string();
        if newline {
            line.push('\n');
        }
        return sink(line);
    }
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
    if let Err(e) = written {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            if let Ok(mut failed) = FAILED.lock() {
                failed.get_or_insert(e.to_string());
            }
        }
    }
}

/// Writes `text` and a newline to stderr, whatever becomes of it: `eprintln!` panics when
/// stderr is closed or full, which turned a warning into exit code 101 (`predict ... 2>&1 |
/// head -1`), and killed a server whose `2>&1 | tee log` was ended by Ctrl-C at its
/// shutdown line, before it finished its requests. Stderr is for a reader; one gone ends
/// nothing.
pub fn write_stderr(text: std::fmt::Arguments<'_>) {
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_fmt(text).and_then(|()| err.write_all(b"\n"));
    };
    with_bar_hidden(write)
}

/// `write` with the progress bar drawn on stderr now, if any, hidden: a line written to the
/// terminal meanwhile landed on the bar's line. A finished bar (cleared at its run's end) is
/// not drawn again. `write` must not write through this (the bar's lock is held).
pub fn with_bar_hidden<T>(write: impl FnOnce() -> T) -> T {
    let drawn = BAR
        .lock()
        .ok()
        .and_then(|b| b.as_ref().map(|(_, bar)| bar.clone()));
    match drawn.filter(|bar| !bar.is_finished()) {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// The progress bar drawn on stderr now (a run's steps, `predict`'s rows), if any: a warning
/// written meanwhile (a library's, from inside a batch) landed on the bar's line.
static BAR: Mutex<Option<(u64, ProgressBar)>> = Mutex::new(None);

/// Registers a bar drawn on stderr while this lives: [`write_stderr`] hides it for each line.
pub struct DrawnBar(u64);

impl DrawnBar {
    pub fn new(bar: &ProgressBar) -> DrawnBar {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut drawn) = BAR.lock() {
            *drawn = Some((id, bar.clone()));
        }
        DrawnBar(id)
    }
}

impl Drop for DrawnBar {
    fn drop(&mut self) {
        if let Ok(mut drawn) = BAR.lock() {
            // a bar registered since (another thread's run) stays
            if drawn.as_ref().is_some_and(|(id, _)| *id == self.0) {
                *drawn = None;
            }
        }
    }
}

/// The first failure to write stdout other than a broken pipe, if any (taken once).
pub fn take_error() -> Option<String> {
    FAILED.lock().ok().and_then(|mut f| f.take())
}
