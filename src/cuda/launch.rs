//! Kernel arguments packed once, as cuLaunchKernel takes them: one slot per parameter holding
//! its value, and an array of pointers to the slots. The emulator's `emu_launch_<kernel>`
//! takes the very same array, so `cuda` and `emu` run the same launcher code.
//!
//! Each slot is 8 bytes; a 4-byte parameter (int, float) lives in its low bytes (x86-64 and
//! the GPU are little-endian). The kernel signature above each launcher says which is which.

use crate::error::{Error, Result};
use std::ffi::c_void;

#[derive(Default)]
pub struct Args {
    slots: Vec<u64>,
}

impl Args {
    pub fn new() -> Self {
        Args::default()
    }
    /// A device pointer (0 for a null optional input).
    pub fn ptr(mut self, p: u64) -> Self {
        self.slots.push(p);
        self
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.slots.push(v as u32 as u64);
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.slots.push(v as u64);
        self
    }
    pub fn f32(mut self, v: f32) -> Self {
        self.slots.push(v.to_bits() as u64);
        self
    }
    pub fn f64(mut self, v: f64) -> Self {
        self.slots.push(v.to_bits());
        self
    }
    /// Pointers to the slots; valid while `self` is neither moved nor changed.
    pub fn pointers(&mut self) -> Vec<*mut c_void> {
        self.slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect()
    }
}

/// A launch configuration: grid, block, dynamic shared memory bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cfg {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
}

impl Cfg {
    pub fn linear(grid: u32, block: u32) -> Cfg {
        Cfg {
            grid: [grid.max(1), 1, 1],
            block: [block, 1, 1],
            smem: 0,
        }
    }
}

/// Threads per block for one row of `c` elements handled 8 at a time: a multiple of 32
/// between 32 and 256, so short rows do not leave most threads idle.
pub fn row_threads(c: usize) -> u32 {
    let want = c.div_ceil(8).div_ceil(32) * 32;
    want.clamp(32, 256) as u32
}

/// Blocks of 256 threads for a grid-stride loop over `work` items, at most 1024: about one
/// wave of resident threads on an H200 (132 SMs x 2048), the loop covers the rest.
pub fn stride_blocks(work: usize) -> u32 {
    work.div_ceil(256).clamp(1, 1024) as u32
}

pub const STRIDE_THREADS: u32 = 256;

/// A size as the kernels' `int`, or an error naming it.
pub fn int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::shape(what, format!("at most {} (a kernel int)", i32::MAX), v))
}

/// A grid dimension (at most 2^31 - 1 blocks in x).
pub fn grid_x(what: &str, v: usize) -> Result<u32> {
    if v == 0 || v > i32::MAX as usize {
        return Err(Error::shape(what, "1 ..= 2^31-1 blocks", v));
    }
    Ok(v as u32)
}
