//! The CPU thread pool, sized once per process as `--threads` sizes it (0: all cores). The
//! count shapes float32 sums, so a run matches the command line's only with the same count.

use crate::errors::arg;
use pyo3::prelude::*;

/// More threads than this is a typo (the command line's bound).
const MAX_THREADS: usize = 1024;

pub fn setup(threads: usize) -> PyResult<()> {
    if threads > MAX_THREADS {
        return Err(arg(
            "--threads",
            format!("{threads} is out of range: expected 0 (all cores) to {MAX_THREADS}"),
        ));
    }
    if threads == 0 || threads == rayon::current_num_threads() {
        return Ok(());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| {
            arg(
                "--threads",
                format!(
                    "{e}: the pool already runs {} threads in this process",
                    rayon::current_num_threads()
                ),
            )
        })
}
