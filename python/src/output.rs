//! The engine's standard output (a run's report lines: the optimizer, what trains, dev
//! results, the resume warnings) through Python's `sys.stdout`: written to file descriptor 1,
//! it went past `contextlib.redirect_stdout`, a notebook's cell and `%%capture`, and into a
//! service's line protocol. The engine runs with the GIL released, so it queues each line;
//! the queue is written, with the GIL held, where a call checks for Ctrl-C between its parts
//! (`Interrupt::check`) and when it returns (`errors::unwound`): a `sys.stdout` whose `write`
//! runs Python code, and with it a signal handler, raises through the call as Ctrl-C does.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use std::io::Write;
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
/// as it comes); with no `sys.stdout` (None: `pythonw`) it is dropped. A KeyboardInterrupt
/// or SystemExit raised during the write (a signal handler the write ran) is raised; a
/// `sys.stdout` that fails otherwise (closed, or a stream that refuses text) is passed by:
/// the rest goes to file descriptor 1, as before, rather than fail the call over a report.
pub fn flush(py: Python<'_>) -> PyResult<()> {
    let lines = match PENDING.lock() {
        Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
        _ => return Ok(()),
    };
    let mut done = 0;
    // the train bar hidden meanwhile: a line written to sys.stdout on the terminal landed on
    // it (review 11, R11-2); flush runs between the engine's parts, never inside its writes
    let written = softprompt::internals::stdout::with_bar_hidden(|| -> PyResult<()> {
        let out = py.import("sys")?.getattr("stdout")?;
        if out.is_none() {
            done = lines.len();
            return Ok(());
        }
        for line in &lines {
            out.call_method1("write", (line,))?;
            done += 1;
        }
        out.call_method0("flush").map(|_| ())
    });
    match written {
        Ok(()) => Ok(()),
        Err(e)
            if e.is_instance_of::<PyKeyboardInterrupt>(py)
                || e.is_instance_of::<PySystemExit>(py) =>
        {
            Err(e)
        }
        Err(_) => {
            let mut fd1 = std::io::stdout().lock();
            for line in lines.iter().skip(done) {
                let _ = fd1.write_all(line.as_bytes());
            }
            let _ = fd1.flush();
            Ok(())
        }
    }
}
