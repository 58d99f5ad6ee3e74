//! The CPU's setup for a process: the environment checked, the thread pool sized, then the
//! GEMM path chosen. Asking rayon for its count builds the pool at its default size, so
//! nothing asks before the pool is sized: MKL takes rayon's count at its first product, not
//! when it loads (cpu/cblas.rs; a load that asked made every later `--threads` or
//! `Model(threads=N)` fail, "the global thread pool has already been initialized"). The
//! count shapes float32 sums, so runs match only with the same count.

use super::gemm_path;
use crate::error::{Error, Result};

/// More threads than this is a typo, and spawning them would hang the machine.
pub const MAX_THREADS: usize = 1024;

/// What a thread count may be, for errors.
const RANGE: &str = "0 (all cores) to 1024";

/// The variables rayon sizes its pool from when `--threads` is 0 (`RAYON_RS_NUM_CPUS` is its
/// older name): a count `--threads` would refuse is refused naming the variable, and so is a
/// value rayon would silently ignore.
const RAYON_VARS: [&str; 2] = ["RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"];

/// The thread count the environment asks rayon for, or None when neither variable is set.
pub fn from_env() -> Result<Option<usize>> {
    let mut asked = None;
    for var in RAYON_VARS {
        let n = crate::env::parse(var, &format!("a thread count, {RANGE}"), |s| {
            s.parse::<usize>().ok().filter(|&n| n <= MAX_THREADS)
        })?;
        asked = asked.or(n);
    }
    Ok(asked)
}

/// Sizes the process's one pool at `threads` (0: as `RAYON_NUM_THREADS` says, else all
/// cores, when first used). A pool already running that count is fine; another is refused.
pub fn size_pool(threads: usize) -> Result<()> {
    if threads > MAX_THREADS {
        return Err(Error::arg(
            "--threads",
            format!("{threads} is out of range: expected {RANGE}"),
        ));
    }
    from_env()?;
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
        Err(_) => Err(Error::arg(
            "--threads",
            format!(
                "{threads}: this process's thread pool already runs {} threads (a process \
                 has one pool, sized by the first Model; give that count, or 0)",
                rayon::current_num_threads()
            ),
        )),
    }
}

/// The CPU's setup (`--threads`, `--gemm`): every environment variable checked
/// (env::check), the pool sized, then the GEMM path chosen.
pub fn setup(threads: usize, gemm: Option<&str>) -> Result<()> {
    crate::env::check()?;
    size_pool(threads)?;
    gemm_path::choose(gemm)
}
