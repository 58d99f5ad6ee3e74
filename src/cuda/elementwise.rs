//! Launchers of kernels/elementwise.cu (reference: src/cpu/elementwise.rs). bf16 buffers
//! (activations) use the 8-wide kernels; float32 buffers (the prompt gradient) the `_f32`
//! ones. `add_inplace` adds; the others overwrite.

use super::device::Device;
use super::kernels::{k, KernelId};
use super::launch::{stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, CudaBuf};
use crate::backend::DType;
use crate::error::{Error, Result};

fn cfg(items: usize) -> Cfg {
    Cfg::linear(stride_blocks(items), STRIDE_THREADS)
}

// extern "C" __global__ void add_fwd(act_t* out, const act_t* a, const act_t* b, long long n);
/// out (N) = a + b, bf16.
pub fn add_fwd(dev: &Device, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, n: usize) -> Result<()> {
    let store = dev.store();
    let args = Args::new()
        .ptr(arg(out, "add out", store, n)?)
        .ptr(arg(a, "add a", store, n)?)
        .ptr(arg(b, "add b", store, n)?)
        .i64(n as i64);
    if n == 0 {
        return Ok(());
    }
    dev.launch(k::ADD_FWD, cfg(n.div_ceil(8)), args)
}

// extern "C" __global__ void add_inplace(act_t* acc, const act_t* a, long long n);
// extern "C" __global__ void add_inplace_f32(float* acc, const float* a, long long n);
/// acc (N) += a, bf16 or float32 (both the same dtype).
pub fn add_inplace(dev: &Device, acc: &mut CudaBuf, a: &CudaBuf, n: usize) -> Result<()> {
    let dt = acc.dtype();
    let (kernel, items) = pick(dev, dt, "add acc", k::ADD_INPLACE, k::ADD_INPLACE_F32, n)?;
    let args = Args::new()
        .ptr(arg(acc, "add acc", dt, n)?)
        .ptr(arg(a, "add a", dt, n)?)
        .i64(n as i64);
    if n == 0 {
        return Ok(());
    }
    dev.launch(kernel, cfg(items), args)
}

// extern "C" __global__ void scale_inplace(act_t* x, float s, long long n);
// extern "C" __global__ void scale_inplace_f32(float* x, float s, long long n);
/// x (N) *= s, bf16 or float32.
pub fn scale_inplace(dev: &Device, x: &mut CudaBuf, s: f64, n: usize) -> Result<()> {
    let dt = x.dtype();
    let (kernel, items) = pick(
        dev,
        dt,
        "scale x",
        k::SCALE_INPLACE,
        k::SCALE_INPLACE_F32,
        n,
    )?;
    let args = Args::new()
        .ptr(arg(x, "scale x", dt, n)?)
        .f32(s as f32)
        .i64(n as i64);
    if n == 0 {
        return Ok(());
    }
    dev.launch(kernel, cfg(items), args)
}

/// The storage-typed kernel (8 elements per thread) for buffers of the device's storage type,
/// the `_f32` one (one element per thread) for other float32 buffers (the prompt gradient).
fn pick(
    dev: &Device,
    dt: DType,
    what: &str,
    store_kernel: KernelId,
    f32_kernel: KernelId,
    n: usize,
) -> Result<(KernelId, usize)> {
    if dt == dev.store() {
        Ok((store_kernel, n.div_ceil(8)))
    } else if dt == DType::F32 {
        Ok((f32_kernel, n))
    } else {
        Err(Error::tensor(
            what,
            format!("expected {}, got {dt:?}", super::store_or_f32(dev.store())),
        ))
    }
}
