//! The engine's standard output (a run's report lines: the optimizer, what trains, dev
//! results, the resume warnings) through Python's `sys.stdout`: written to file descriptor 1,
//! it went past `contextlib.redirect_stdout`, a notebook's cell and `%%capture`, and into a
//! service's line protocol. The engine runs with the GIL released, so it queues each line;
//! the queue is written, with the GIL held, where a call checks for Ctrl-C between its parts
//! (`Interrupt::check`) and when it returns (`errors::unwound`): a `sys.stdout` whose `write`
//! runs Python code, and with it a signal handler, raises through the call as Ctrl-C does.

use pyo3::prelude::*;
use std::sync::Mutex;

/// Lines the engine wrote and Python has not yet been given.
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn queue(text: String) {
    if let Ok(mut pending) = PENDING.lock() {
        pending.push(text);
    }
}

/// From now on, the engine's standard output goes to `sys.stdout`.
pub fn install() {
    softprompt::internals::stdout::set_sink(queue);
}

/// The queued text written to `sys.stdout`, then flushed (a reader of a pipe sees each line
/// as it comes); with no `sys.stdout` (None: `pythonw`, a closed stream) it is dropped.
pub fn flush(py: Python<'_>) -> PyResult<()> {
    let lines = match PENDING.lock() {
        Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
        _ => return Ok(()),
    };
    let out = py.import("sys")?.getattr("stdout")?;
    if out.is_none() {
        return Ok(());
    }
    for line in lines {
        out.call_method1("write", (line,))?;
    }
    out.call_method0("flush")?;
    Ok(())
}
