//! Launchers of kernels/elementwise.cu (reference: src/cpu/elementwise.rs). bf16 buffers
//! (activations) use the 8-wide kernels; float32 buffers (the prompt gradient) the `_f32`
//! ones. `add_inplace` adds; the others overwrite; `sum_squares` reduces to one scalar.

use super::device::Device;
use super::kernels::{k, KernelId};
use super::launch::{stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, CudaBackend, CudaBuf};
use crate::backend::{DType, ElementwiseOps};
use crate::error::{Error, Result};

fn cfg(items: usize) -> Cfg {
    Cfg::linear(stride_blocks(items), STRIDE_THREADS)
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

impl ElementwiseOps for CudaBackend {
    // extern "C" __global__ void add_fwd(act_t* out, const act_t* a, const act_t* b, long long n);
    /// out (N) = a + b, bf16.
    fn add_fwd(&self, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, n: usize) -> Result<()> {
        let dev = &self.dev;
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
    fn add_inplace(&self, acc: &mut CudaBuf, a: &CudaBuf, n: usize) -> Result<()> {
        let dev = &self.dev;
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
    fn scale_inplace(&self, x: &mut CudaBuf, s: f64, n: usize) -> Result<()> {
        let dev = &self.dev;
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

    // extern "C" __global__ void sum_squares_f32(double* out, const float* x, long long n);
    /// Σ x² over x (N) F32, reduced in double by one block in a fixed order (deterministic),
    /// and the 8-byte result copied back.
    fn sum_squares(&self, x: &CudaBuf, n: usize) -> Result<f64> {
        let x_ptr = arg(x, "sum_squares x", DType::F32, n)?;
        if n == 0 {
            return Ok(0.0);
        }
        // two F32 slots hold the one double the kernel writes
        let out = self.alloc(DType::F32, 2)?;
        let args = Args::new().ptr(out.ptr()).ptr(x_ptr).i64(n as i64);
        self.dev
            .launch(k::SUM_SQUARES_F32, Cfg::linear(1, 1024), args)?;
        let mut bytes = [0u8; 8];
        // SAFETY: `out` holds exactly these 8 bytes.
        unsafe { self.dev.dtoh(&mut bytes, out.ptr())? };
        Ok(f64::from_le_bytes(bytes))
    }
}
