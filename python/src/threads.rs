//! The CPU thread pool, sized once per process as `--threads` sizes it (0: all cores). The
//! count shapes float32 sums, so a run matches the command line's only with the same count.

use crate::errors::to_py;
use pyo3::prelude::*;

/// `threads=`: the environment checked, the pool sized, then the GEMM path chosen from
/// `SOFTPROMPT_GEMM` (the command line's order: softprompt::internals::cpu::threads).
pub fn setup(threads: usize) -> PyResult<()> {
    softprompt::internals::cpu::threads::setup(threads, None).map_err(to_py)
}
