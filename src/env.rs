//! The engine's environment variables, each read one way: unset or empty is "not given", and
//! any other value the variable does not accept is an error naming the variable and what it
//! accepts (a typo never silently runs another configuration). `check` reads every one of
//! them once, so that a command fails at start rather than mid-run.
//!
//! The variables and their readers: `SOFTPROMPT_GEMM` (cpu/gemm_path.rs), `SOFTPROMPT_SIMD`
//! (cpu/simd), `SOFTPROMPT_HOST_MEMORY` (memory.rs), `SOFTPROMPT_HEAP` (cpu/heap.rs),
//! `SOFTPROMPT_MAX_STREAM_BYTES` (fsutil.rs), `RAYON_NUM_THREADS` and `RAYON_RS_NUM_CPUS`
//! (cpu/threads.rs), and these, read here for the GPU and the tools but checked by every
//! command, so that a typo fails on the CPU too rather than at the next GPU run:
//! `SOFTPROMPT_SYNC` (cuda/device.rs), `SOFTPROMPT_NVTX_DEBUG` (nvtx.rs),
//! `SOFTPROMPT_BENCH_CHECK` (bench_check.rs), `SOFTPROMPT_ATTN_FWD`, `SOFTPROMPT_ATTN_BWD_DQ`
//! and `SOFTPROMPT_ATTN_BWD_DKDV` (cuda/attention.rs; they were checked only where a GPU
//! started). Paths (`SOFTPROMPT_MKL`, `SOFTPROMPT_CACHE`, `SOFTPROMPT_CUDA_INCLUDE`) are
//! checked where the file is opened.

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

/// `var` as a switch: `1` on, `0` (or unset, or empty) off.
fn switch(var: &str) -> Result<bool> {
    Ok(one_of(var, &["0", "1"])? == Some("1"))
}

/// `SOFTPROMPT_SYNC=1`: synchronise after every CUDA launch and name the op that failed.
pub fn sync() -> Result<bool> {
    switch("SOFTPROMPT_SYNC")
}

/// `SOFTPROMPT_NVTX_DEBUG=1`: say on stderr whether an NVTX tool attached, and why not.
pub fn nvtx_debug() -> Result<bool> {
    switch("SOFTPROMPT_NVTX_DEBUG")
}

/// `SOFTPROMPT_BENCH_CHECK=warn`: `bench` times an engine that missed the reference anyway
/// (recording the miss); `error`, the default, refuses to time it.
pub fn bench_check_warns() -> Result<bool> {
    Ok(one_of("SOFTPROMPT_BENCH_CHECK", &["error", "warn"])? == Some("warn"))
}

/// The variables that pick the bf16 build's attention kernels: the forward's, then
/// `attention_bwd_dq`'s and `attention_bwd_dkdv`'s.
pub const ATTN_VARS: [&str; 3] = [
    "SOFTPROMPT_ATTN_FWD",
    "SOFTPROMPT_ATTN_BWD_DQ",
    "SOFTPROMPT_ATTN_BWD_DKDV",
];

/// `var` (one of `ATTN_VARS`) `mma`: the raw mma.sync kernel; `wmma` (or unset, or empty),
/// the default.
pub fn attn_mma(var: &str) -> Result<bool> {
    Ok(one_of(var, &["wmma", "mma"])? == Some("mma"))
}

/// Every variable above, read once: the first bad value's error.
pub fn check() -> Result<()> {
    crate::cpu::gemm_path::from_env()?;
    crate::cpu::simd::check_env()?;
    crate::memory::host_memory_cap()?;
    crate::cpu::heap::from_env()?;
    crate::fsutil::max_stream_bytes()?;
    crate::cpu::threads::from_env()?;
    sync()?;
    nvtx_debug()?;
    bench_check_warns()?;
    ATTN_VARS
        .into_iter()
        .try_for_each(|v| attn_mma(v).map(|_| ()))
}
