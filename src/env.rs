//! The engine's environment variables, each read one way: unset or empty is "not given", and
//! any other value the variable does not accept is an error naming the variable and what it
//! accepts (a typo never silently runs another configuration). `check` reads every one of
//! them once, so that a command fails at start rather than mid-run.
//!
//! The variables and their readers: `SOFTPROMPT_GEMM` (cpu/gemm_path.rs), `SOFTPROMPT_SIMD`
//! (cpu/simd), `SOFTPROMPT_HOST_MEMORY` (memory.rs), `SOFTPROMPT_HEAP` (cpu/heap.rs),
//! `SOFTPROMPT_MAX_STREAM_BYTES` (fsutil.rs), `RAYON_NUM_THREADS` and `RAYON_RS_NUM_CPUS` (cpu/threads.rs). Paths
//! (`SOFTPROMPT_MKL`, `SOFTPROMPT_CACHE`, `SOFTPROMPT_CUDA_INCLUDE`) are checked where the file
//! is opened; the CUDA ones (`SOFTPROMPT_ATTN_*`, `SOFTPROMPT_SYNC`) where a GPU starts.

use crate::error::{Error, Result};

/// `var` read through `parse`: None when unset or empty, else what `parse` makes of the value,
/// or an error that names `var`, quotes the value and says what was `expected`.
pub fn parse<T>(
    var: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>> {
    let Some(v) = std::env::var_os(var) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    match v.to_str().and_then(parse) {
        Some(t) => Ok(Some(t)),
        None => Err(Error::arg(var, format!("is {v:?}: expected {expected}"))),
    }
}

/// `var` as one of `names` (exactly, case included), or None when unset or empty.
pub fn one_of(var: &str, names: &[&'static str]) -> Result<Option<&'static str>> {
    let expected = format!("one of {}", names.join(", "));
    parse(var, &expected, |s| names.iter().copied().find(|n| *n == s))
}

/// Every variable above, read once: the first bad value's error.
pub fn check() -> Result<()> {
    crate::cpu::gemm_path::from_env()?;
    crate::cpu::simd::from_env()?;
    crate::memory::host_memory_cap()?;
    crate::cpu::heap::from_env()?;
    crate::fsutil::max_stream_bytes()?;
    crate::cpu::threads::from_env()?;
    Ok(())
}
