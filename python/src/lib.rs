//! softprompt's Python face (`softprompt._native`): the library's API with the GIL released
//! during compute, host arrays as zero-copy numpy, the engine's errors as Python exceptions.
//! The pure-Python package `softprompt` re-exports it with the exception classes.

mod data;
mod errors;
mod interrupt;
mod ints;
mod kw;
mod model;
mod output;
mod parity;
mod paths;
mod prompt;
mod task;
mod threads;
mod train;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // before any call can run the engine's pool, so that a forked child knows it was forked
    softprompt::internals::cpu::threads::watch_fork();
    // the report lines through sys.stdout, not file descriptor 1
    output::install();
    // imported now, not by a call's argument checks (data.rs's mapping test): an import
    // releases the GIL, and Ctrl-C during it raised a bare KeyboardInterrupt before the call
    m.py().import("collections.abc")?;
    // numpy's array API is loaded by the first array made, and rust-numpy panics when that
    // import fails: a Ctrl-C pending as `Model.step` made its first array raised a
    // PanicException (which `except KeyboardInterrupt` misses), and so did a missing numpy.
    // Here a failed import is an ImportError of `import softprompt` (hostile pass 22).
    m.py().import("numpy")?;
    let _ = numpy::PyArray1::<f32>::zeros(m.py(), 0, false);
    m.add_class::<model::PyModel>()?;
    m.add_class::<model::PyStepOutput>()?;
    m.add_class::<task::PyTask>()?;
    m.add_class::<prompt::PyPrompt>()?;
    m.add_class::<data::PyEncoded>()?;
    m.add_function(wrap_pyfunction!(parity::parity, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
