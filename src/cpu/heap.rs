//! glibc's allocator, tuned once when the CPU backend starts, so that a step's large buffers
//! stay in the heap instead of being mapped and unmapped on every step.
//!
//! glibc serves an allocation of 128 KiB or more with its own `mmap` and returns it with
//! `munmap` when freed (the threshold then rises to the largest freed block, up to 32 MiB,
//! but only after each size has been unmapped once), and it trims the heap's free top back to
//! the kernel beyond 128 KiB. A training step allocates and frees activations of megabytes
//! (bert-base at B=8, T=148: 3.6 MB per hidden state, 14.5 MB per intermediate one) in the
//! same order every step, so both return memory that the next step asks for again and then
//! pays for in page faults on fresh, zero-filled pages (`zeros` and the first write of each
//! output in a profile). The backend's own pool (src/cpu/mod.rs) keeps 64 MB of freed buffers;
//! this covers the rest. Set `SOFTPROMPT_HEAP=default` to leave glibc's settings alone (for
//! measuring the difference). Other C libraries and systems: nothing to do.

use crate::error::Result;
use std::sync::OnceLock;

/// Allocations below this come from the heap, not their own mapping: glibc's largest
/// accepted value (half its 64 MiB per-thread heap) on 64-bit systems.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free memory at the heap's top is handed back to the kernel only beyond this: more than a
/// base-size step's activations, so the heap keeps what the next step reuses.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Applies the settings once per process; returns whether glibc accepted them (false on other
/// C libraries, or with `SOFTPROMPT_HEAP=default`).
pub fn tune() -> bool {
    static APPLIED: OnceLock<bool> = OnceLock::new();
    // a bad value is refused at start (env::check); here it counts as unset
    *APPLIED.get_or_init(|| !matches!(from_env(), Ok(Some("default"))) && apply())
}

/// `SOFTPROMPT_HEAP`: `default` keeps glibc's own settings; None when unset.
pub fn from_env() -> Result<Option<&'static str>> {
    crate::env::one_of("SOFTPROMPT_HEAP", &["default"])
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    use std::os::raw::c_int;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // glibc's malloc.h
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    // SAFETY: mallopt only sets the allocator's parameters; it returns 1 on success, 0 when it
    // refuses a value, and is safe to call while other threads allocate.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
