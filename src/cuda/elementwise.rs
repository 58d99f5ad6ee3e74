//! Launchers of kernels/elementwise.cu (reference: src/cpu/elementwise.rs). bf16 buffers
//! (activations) use the 8-wide kernels; float32 buffers (the prompt gradient) the `_f32`
//! ones. `add_inplace` adds; the others overwrite.

use super::device::Device;
use super::kernels::k;
use super::launch::{stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, CudaBuf};
use crate::backend::DType;
use crate::error::{Error, Result};

fn cfg(items: usize) -> Cfg {
    Cfg::linear(stride_blocks(items), STRIDE_THREADS)
}

// extern "C" __global__ void add_fwd(bf16* out, const bf16* a, const bf16* b, long long n);
/// out (N) = a + b, bf16.
pub fn add_fwd(dev: &Device, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, n: usize) -> Result<()> {
    let bf = DType::BF16;
    let args = Args::new()
        .ptr(arg(out, "add out", bf, n)?)
        .ptr(arg(a, "add a", bf, n)?)
        .ptr(arg(b, "add b", bf, n)?)
        .i64(n as i64);
    if n == 0 {
        return Ok(());
    }
    dev.launch(k::ADD_FWD, cfg(n.div_ceil(8)), args)
}

// extern "C" __global__ void add_inplace(bf16* acc, const bf16* a, long long n);
// extern "C" __global__ void add_inplace_f32(float* acc, const float* a, long long n);
/// acc (N) += a, bf16 or float32 (both the same dtype).
pub fn add_inplace(dev: &Device, acc: &mut CudaBuf, a: &CudaBuf, n: usize) -> Result<()> {
    let dt = acc.dtype();
    let (kernel, items) = match dt {
        DType::BF16 => (k::ADD_INPLACE, n.div_ceil(8)),
        DType::F32 => (k::ADD_INPLACE_F32, n),
        other => {
            return Err(Error::tensor(
                "add acc",
                format!("{other:?} is not a float type"),
            ))
        }
    };
    let args = Args::new()
        .ptr(arg(acc, "add acc", dt, n)?)
        .ptr(arg(a, "add a", dt, n)?)
        .i64(n as i64);
    if n == 0 {
        return Ok(());
    }
    dev.launch(kernel, cfg(items), args)
}

// extern "C" __global__ void scale_inplace(bf16* x, float s, long long n);
// extern "C" __global__ void scale_inplace_f32(float* x, float s, long long n);
/// x (N) *= s, bf16 or float32.
pub fn scale_inplace(dev: &Device, x: &mut CudaBuf, s: f64, n: usize) -> Result<()> {
    let dt = x.dtype();
    let (kernel, items) = match dt {
        DType::BF16 => (k::SCALE_INPLACE, n.div_ceil(8)),
        DType::F32 => (k::SCALE_INPLACE_F32, n),
        other => {
            return Err(Error::tensor(
                "scale x",
                format!("{other:?} is not a float type"),
            ))
        }
    };
    let args = Args::new()
        .ptr(arg(x, "scale x", dt, n)?)
        .f32(s as f32)
        .i64(n as i64);
    if n == 0 {
        return Ok(());
    }
    dev.launch(kernel, cfg(items), args)
}
