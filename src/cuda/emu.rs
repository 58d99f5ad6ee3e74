//! The `emu` device: memory on the host, each launch run by the CPU emulator of the CUDA
//! execution model (kernels/emu), through the same argument arrays as `cuda`, in the bf16,
//! float32 or mixed build of the kernels. GEMMs run in the CPU backend's GEMM on float32 copies of
//! the operands, rounded once on the way out where C is bf16.

use super::gemm::Gemm;
use super::kernels::{KernelId, EMU_LAUNCH, EMU_LAUNCH_FLOAT32, EMU_LAUNCH_MIXED};
use super::launch::Cfg;
use crate::backend::{DType, Precision};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_void, CStr};

extern "C" {
    fn emu_last_error() -> *const c_char;
}

/// Runs one launch to completion; a failed launch (divergent barrier, bad warp mask, shared
/// memory overflow, bad configuration) names the kernel and the emulator's message.
pub fn launch(
    k: KernelId,
    precision: Precision,
    cfg: &Cfg,
    args: &mut [*mut c_void],
) -> Result<()> {
    let f = match precision {
        Precision::Bf16 => EMU_LAUNCH[k.0],
        Precision::F32 => EMU_LAUNCH_FLOAT32[k.0],
        Precision::Mixed => EMU_LAUNCH_MIXED[k.0],
    };
    // SAFETY: `args` holds one pointer per kernel parameter, each to a value of the
    // parameter's type (launch.rs); device pointers are live host allocations (DevMem).
    let rc = unsafe {
        f(
            cfg.grid.as_ptr(),
            cfg.block.as_ptr(),
            cfg.smem as usize,
            args.as_mut_ptr(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the emulator returns a NUL-terminated string valid until the next launch.
    let msg = unsafe { CStr::from_ptr(emu_last_error()) }
        .to_string_lossy()
        .into_owned();
    Err(Error::Kernel {
        kernel: format!("{} (kernels/{})", k.name(), k.file()),
        msg: format!("emulated launch failed (status {rc}): {msg}"),
    })
}

/// Reads `n` elements at `addr` as f32.
///
/// SAFETY: `addr` is a live host allocation of at least n elements of `dtype`.
unsafe fn read_f32(addr: u64, n: usize, dtype: DType) -> Vec<f32> {
    match dtype {
        DType::BF16 => std::slice::from_raw_parts(addr as *const half::bf16, n)
            .iter()
            .map(|x| x.to_f32())
            .collect(),
        _ => std::slice::from_raw_parts(addr as *const f32, n).to_vec(),
    }
}

/// SAFETY: as read_f32, and nothing else reads or writes the range meanwhile.
unsafe fn write_f32(addr: u64, data: &[f32], dtype: DType) {
    match dtype {
        DType::BF16 => {
            let dst = std::slice::from_raw_parts_mut(addr as *mut half::bf16, data.len());
            for (d, &s) in dst.iter_mut().zip(data) {
                *d = half::bf16::from_f32(s);
            }
        }
        _ => std::slice::from_raw_parts_mut(addr as *mut f32, data.len()).copy_from_slice(data),
    }
}

/// cuBLAS's column-major GEMM, C = op(A)·op(B) + beta·C, in float32 on the host.
pub fn gemm(g: &Gemm) -> Result<()> {
    let (rows_a, cols_a) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
    let (rows_b, cols_b) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
    let span =
        |rows: usize, cols: usize, ld: usize| if cols == 0 { 0 } else { (cols - 1) * ld + rows };
    // SAFETY: the launcher checked each buffer's length against these spans (gemm.rs).
    unsafe {
        let a = read_f32(g.a, span(rows_a, cols_a, g.lda), g.ab_type);
        let b = read_f32(g.b, span(rows_b, cols_b, g.ldb), g.ab_type);
        // C's columns alone are read (with beta 0 not at all: a fresh allocation holds no
        // values yet) and written: between them (ldc > m, the per-head products of
        // linear_heads_*) lie other elements, left as they are
        let mut c = vec![0.0; span(g.m, g.n, g.ldc)];
        if g.beta != 0.0 {
            for_columns(g, |at, addr| {
                c[at..at + g.m].copy_from_slice(&read_f32(addr, g.m, g.c_type))
            });
        }
        // element (i, l) of op(A) is at i*rs + l*cs
        let (a_rs, a_cs) = if g.trans_a { (g.lda, 1) } else { (1, g.lda) };
        let (b_rs, b_cs) = if g.trans_b { (g.ldb, 1) } else { (1, g.ldb) };
        if g.m > 0 && g.n > 0 {
            gemm::gemm(
                g.m,
                g.n,
                g.k,
                c.as_mut_ptr(),
                g.ldc as isize,
                1,
                g.beta != 0.0,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                g.beta,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        for_columns(g, |at, addr| write_f32(addr, &c[at..at + g.m], g.c_type));
    }
    Ok(())
}

/// Calls `f` with the offset (in elements) and the address of each of C's n columns.
fn for_columns(g: &Gemm, mut f: impl FnMut(usize, u64)) {
    let size = if matches!(g.c_type, DType::BF16) {
        2
    } else {
        4
    };
    for j in 0..g.n {
        let at = j * g.ldc;
        f(at, g.c + (at * size) as u64);
    }
}

/// Host memory aligned like a device allocation (256 bytes), so the kernels' 16-byte vector
/// accesses are as valid here as on the GPU.
pub fn alloc(bytes: usize) -> Result<u64> {
    let layout = layout(bytes)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        return Err(Error::Device(format!(
            "emu: out of host memory allocating {bytes} bytes"
        )));
    }
    Ok(p as u64)
}

/// SAFETY: `ptr` came from `alloc(bytes)` and is freed once.
pub unsafe fn free(ptr: u64, bytes: usize) {
    if let Ok(layout) = layout(bytes) {
        std::alloc::dealloc(ptr as *mut u8, layout);
    }
}

fn layout(bytes: usize) -> Result<std::alloc::Layout> {
    std::alloc::Layout::from_size_align(bytes.max(1), 256)
        .map_err(|e| Error::Device(format!("emu: bad allocation of {bytes} bytes: {e}")))
}
