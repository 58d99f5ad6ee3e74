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
    if threads == 0 {
        return Ok(());
    }
    // built first, asked after: `rayon::current_num_threads` builds the pool at its default
    // size, so asking first made every count but that one fail
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == threads => Ok(()),
        Err(_) => Err(arg(
            "--threads",
            format!(
                "{threads}: this process's thread pool already runs {} threads (a process \
                 has one pool, sized by the first Model; give that count, or 0)",
                rayon::current_num_threads()
            ),
        )),
    }
}
