//! Ctrl-C in a long call. Compute runs with the GIL released, where Python's signal handlers
//! cannot run; the engine calls back on the calling thread after each step (train), batch
//! (evaluate, predict), chunk of rows (encode) or token (generate), and there, with the GIL
//! taken back for a moment, they run: Ctrl-C's raises KeyboardInterrupt. (In a child of
//! fork() whose parent ran the engine, the call runs on the child's own pool: the callbacks
//! come on a pool thread, where the signal handlers do not run, and Ctrl-C is heard when the
//! call returns: `cpu::threads::fork_safe`.) The first error
//! raised sets the engine's stop flag, the call ends after the part under way, and the error
//! is raised with the engine's word on what was kept.

use crate::errors::{to_py, unwound};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use softprompt::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Interrupt {
    /// the engine's stop flag: set once a check met an error
    pub stop: AtomicBool,
    /// the first error a check met
    raised: Mutex<Option<PyErr>>,
}

impl Interrupt {
    /// With the GIL held: Python's signal handlers, then `also` (train's `on_event`); the
    /// first error sets `stop` and is kept for [`Interrupt::run`] to raise.
    /// An interpreter that is shutting down (a daemon thread's call at exit) cannot be
    /// attached to (`Python::attach` panicked with a backtrace): the call stops quietly.
    pub fn check(&self, also: impl FnOnce(Python<'_>) -> PyResult<()>) {
        let attached = Python::try_attach(|py| {
            // the lines the engine wrote first (a signal handler that a Python-level
            // `sys.stdout.write` runs raises here as Ctrl-C does)
            let checked = crate::output::flush(py)
                .and_then(|()| py.check_signals())
                .and_then(|()| also(py));
            if let Err(e) = checked {
                self.stop.store(true, Ordering::SeqCst);
                if let Ok(mut slot) = self.raised.lock() {
                    slot.get_or_insert(e);
                }
            }
        });
        if attached.is_none() {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Runs `f` as `errors::compute` does (the GIL released, a panic caught), `f` calling
    /// [`Interrupt::check`] from the engine's callback: its value, else the error a check
    /// kept (Ctrl-C's KeyboardInterrupt given the engine's message; an exception raised with
    /// words of its own kept as raised, the engine's message added as a note), else the
    /// engine's error.
    pub fn run<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce() -> softprompt::Result<T> + Send,
    {
        let result = unwound(py, f)?;
        let pending = self.raised.lock().ok().and_then(|mut s| s.take());
        match (result, pending) {
            (Ok(v), None) => Ok(v),
            (Err(Error::Interrupted(msg)), Some(e)) => Err(with_word(py, e, &msg)),
            (Err(e), _) => Err(to_py(e)),
            // a signal met after the last step or batch: raised, not lost
            (Ok(_), Some(e)) => Err(e),
        }
    }

    /// [`Interrupt::run`] for a call the engine stops between its parts (batches, chunks of
    /// rows, tokens): `f` gets the callback that checks after each part, and the stop flag.
    pub fn batched<T, F>(py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&mut dyn FnMut(usize), &AtomicBool) -> softprompt::Result<T> + Send,
    {
        let me = Interrupt::default();
        let between = &mut |_| me.check(|_| Ok(()));
        me.run(py, || f(between, &me.stop))
    }
}

/// `e`, the exception that stopped a call, with the engine's word `msg` on what was kept: a
/// KeyboardInterrupt without words (Ctrl-C's) takes `msg` as its own; any other exception is
/// the very one raised (a callback's KeyboardInterrupt("...") was replaced by a new one, its
/// words and traceback lost; hostile pass 24, F5), `msg` added as a note (Python 3.11+).
fn with_word(py: Python<'_>, e: PyErr, msg: &str) -> PyErr {
    let value = e.value(py);
    let wordless = value
        .getattr("args")
        .is_ok_and(|a| a.is_empty().unwrap_or(false));
    if e.is_instance_of::<PyKeyboardInterrupt>(py) && wordless {
        if value.setattr("args", (msg,)).is_err() {
            return PyKeyboardInterrupt::new_err(msg.to_string());
        }
    } else {
        let _ = value.call_method1("add_note", (crate::errors::python_words(msg),));
    }
    e
}
