//! The CUDA backend: hand-written kernels (kernels/*.cu) compiled by NVRTC at start-up,
//! GEMMs through cuBLAS, and the `emu` device that runs the very same launchers and kernels
//! on the host through the CPU emulator (kernels/emu) for tests.
//!
//! Dtypes (see backend.rs): weights (`weight_dtype()`) and activations (`act_dtype()`) are
//! bf16 in the default build; `cuda_with`/`emu_with(Precision::F32)` runs the float32 build
//! of every kernel (both float32), `Precision::Mixed` the mixed build (bf16 weights, float32
//! activations). The prompt, its gradient, the optimizer state, norm statistics, attention
//! log-sum-exps, logits and losses are float32; ids, masks and labels are I32. Every kernel
//! accumulates in float32.
//! An op given another dtype combination than the models use returns an error naming it.
//!
//! I32 buffers are never written by a kernel, so each keeps a host mirror of its values: the
//! launchers check indices (token ids, row indices, labels) on the host before any launch,
//! exactly as the CPU backend does, without a device round trip.
//!
//! Each op family has its launchers in `src/cuda/<op>.rs`, next to `kernels/<op>.cu` and the
//! reference `src/cpu/<op>.rs`, with the same names and argument order.

pub mod activation;
pub mod attention;
pub mod copy_rows;
pub mod device;
pub mod elementwise;
pub mod embedding;
#[cfg(feature = "emu")]
mod emu;
pub mod gemm;
mod gpu;
pub mod head;
pub mod kernels;
pub mod launch;
pub mod layernorm;
pub mod loss;
pub mod matmul;
pub mod nvrtc;
pub mod optimizer;
pub mod rmsnorm;
pub mod rope;
pub mod rows;
mod timing;

#[cfg(test)]
mod emu_rewrite_tests;

use crate::backend::{DType, DeviceKind, KernelTime, MemStats, Precision, Storage};
use crate::error::{Error, Result};
use device::{DevMem, Device};
use std::sync::Arc;

/// A buffer on the device: `len` elements of `dtype` at `storage.ptr`.
pub struct CudaBuf {
    storage: DevMem,
    len: usize,
    dtype: DType,
    /// the values of an I32 buffer, kept on the host for index checks
    host_i32: Option<Vec<i32>>,
}

impl CudaBuf {
    pub fn ptr(&self) -> u64 {
        self.storage.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// The device pointer of `buf`, after checking its dtype and that it holds at least `len`.
pub(crate) fn arg(buf: &CudaBuf, what: &str, dtype: DType, len: usize) -> Result<u64> {
    if buf.dtype != dtype {
        return Err(Error::tensor(
            what,
            format!(
                "expected {dtype:?} on the CUDA backend, got {:?}",
                buf.dtype
            ),
        ));
    }
    if buf.len < len {
        return Err(Error::shape(what, format!(">= {len} elements"), buf.len));
    }
    Ok(buf.ptr())
}

/// As `arg`, 0 (a null pointer for the kernel) when absent.
pub(crate) fn opt_arg(buf: Option<&CudaBuf>, what: &str, dtype: DType, len: usize) -> Result<u64> {
    buf.map_or(Ok(0), |b| arg(b, what, dtype, len))
}

/// The host mirror of an I32 buffer's first `len` values, and its device pointer.
pub(crate) fn ints<'a>(buf: &'a CudaBuf, what: &str, len: usize) -> Result<(&'a [i32], u64)> {
    let ptr = arg(buf, what, DType::I32, len)?;
    let host = buf
        .host_i32
        .as_ref()
        .ok_or_else(|| Error::tensor(what, "I32 buffer without its host copy"))?;
    Ok((&host[..len], ptr))
}

/// "BF16 or F32", or "F32" where activations are float32: what a buffer that may be either
/// the activations' type or float32 accepts.
pub(crate) fn store_or_f32(store: DType) -> &'static str {
    if store == DType::F32 {
        "F32"
    } else {
        "BF16 or F32"
    }
}

pub struct CudaBackend {
    pub(crate) dev: Arc<Device>,
    /// the last mixed batch's prefix rows on the device (`attention::RowsCache`; boxed: the
    /// backend stays small beside the CPU one in `api::Engine`)
    attn_rows: Box<attention::RowsCache>,
    /// the bf16 build's attention forward, bwd_dq and bwd_dkdv kernels (`SOFTPROMPT_ATTN_FWD`,
    /// `SOFTPROMPT_ATTN_BWD_DQ`, `SOFTPROMPT_ATTN_BWD_DKDV`, or `with_attention_kernels`)
    attn_fwd: attention::AttnKernel,
    attn_bwd_dq: attention::AttnKernel,
    attn_bwd_dkdv: attention::AttnKernel,
}

/// Ok when a GPU can be used (driver, device, NVRTC and cuBLAS present); else the reason,
/// starting "no CUDA device" when there is none. Starts nothing.
pub fn probe_cuda() -> Result<()> {
    gpu::probe(0)
}

impl CudaBackend {
    /// GPU `ordinal`: fails with a clear message when there is no driver or device, and when
    /// a kernel does not compile (naming the .cu file and NVRTC's log).
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Self::cuda_with(ordinal, Precision::Bf16)
    }

    /// GPU `ordinal` running the kernels' `precision` build: `Bf16` (the engine); `F32`, float32
    /// everywhere, for exact checks of the whole CUDA path against float32 references (twice
    /// the memory, no tensor cores); or `Mixed`, bf16 weights and float32 activations.
    pub fn cuda_with(ordinal: usize, precision: Precision) -> Result<Self> {
        Ok(CudaBackend {
            dev: Device::cuda(ordinal, precision)?,
            attn_rows: Default::default(),
            attn_fwd: attention::AttnKernel::from_env(attention::AttnKernel::FWD_ENV)?,
            attn_bwd_dq: attention::AttnKernel::from_env(attention::AttnKernel::BWD_DQ_ENV)?,
            attn_bwd_dkdv: attention::AttnKernel::from_env(attention::AttnKernel::BWD_DKDV_ENV)?,
        })
    }

    /// The emulator: host memory, the same launchers and kernels, run on the CPU.
    #[cfg(feature = "emu")]
    pub fn emu() -> Result<Self> {
        Self::emu_with(Precision::Bf16)
    }

    /// The emulator running the kernels' `precision` build (see `cuda_with`).
    #[cfg(feature = "emu")]
    pub fn emu_with(precision: Precision) -> Result<Self> {
        Ok(CudaBackend {
            dev: Device::emu(precision)?,
            attn_rows: Default::default(),
            attn_fwd: attention::AttnKernel::from_env(attention::AttnKernel::FWD_ENV)?,
            attn_bwd_dq: attention::AttnKernel::from_env(attention::AttnKernel::BWD_DQ_ENV)?,
            attn_bwd_dkdv: attention::AttnKernel::from_env(attention::AttnKernel::BWD_DKDV_ENV)?,
        })
    }

    /// The same backend with the bf16 build's attention forward, `attention_bwd_dq` and
    /// `attention_bwd_dkdv` set (overriding `SOFTPROMPT_ATTN_FWD`, `SOFTPROMPT_ATTN_BWD_DQ` and
    /// `SOFTPROMPT_ATTN_BWD_DKDV`): for tests and benchmarks of both sets in one process.
    pub fn with_attention_kernels(
        mut self,
        fwd: attention::AttnKernel,
        bwd_dq: attention::AttnKernel,
        bwd_dkdv: attention::AttnKernel,
    ) -> Self {
        self.attn_fwd = fwd;
        self.attn_bwd_dq = bwd_dq;
        self.attn_bwd_dkdv = bwd_dkdv;
        self
    }

    /// The storage type of activations (`act_dtype`).
    pub(crate) fn store(&self) -> DType {
        self.dev.store()
    }

    /// The storage type of frozen weights (`weight_dtype`).
    pub(crate) fn weights(&self) -> DType {
        self.dev.weights()
    }

    /// Which build of the kernels runs.
    pub fn precision(&self) -> Precision {
        self.dev.precision
    }

    /// (kernel name, launches so far) for every kernel.
    pub fn launch_counts(&self) -> Vec<(&'static str, usize)> {
        self.dev.launch_counts()
    }

    fn alloc(&self, dtype: DType, len: usize) -> Result<CudaBuf> {
        let storage = self.dev.alloc(len * dtype.size())?;
        Ok(CudaBuf {
            storage,
            len,
            dtype,
            host_i32: (dtype == DType::I32).then(|| vec![0; len]),
        })
    }
}

/// Host f32 values as the bytes of `dtype`.
fn encode(dtype: DType, data: &[f32]) -> Vec<u8> {
    match dtype {
        DType::BF16 => data
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        _ => bytemuck::cast_slice(data).to_vec(),
    }
}

fn decode(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

impl Storage for CudaBackend {
    type Buf = CudaBuf;

    fn name(&self) -> String {
        match self.dev.precision {
            Precision::Bf16 => self.dev.name(),
            Precision::F32 => format!("{} (float32 build)", self.dev.name()),
            Precision::Mixed => format!("{} (mixed build)", self.dev.name()),
        }
    }
    fn device(&self) -> DeviceKind {
        self.dev.device_kind()
    }
    fn act_dtype(&self) -> DType {
        self.dev.store()
    }
    fn weight_dtype(&self) -> DType {
        self.dev.weights()
    }
    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }
    fn dtype(&self, buf: &CudaBuf) -> DType {
        buf.dtype
    }
    fn buf_id(&self, buf: &CudaBuf) -> usize {
        // a zero-length buffer has no address; its struct's address is unique while it lives
        if buf.storage.ptr == 0 {
            buf as *const CudaBuf as usize
        } else {
            buf.storage.ptr as usize
        }
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<CudaBuf> {
        let buf = self.alloc(dtype, len)?;
        // SAFETY: the whole allocation just made.
        unsafe { self.dev.memset0(buf.ptr(), buf.storage.bytes)? };
        Ok(buf)
    }
    fn output(&self, dtype: DType, len: usize) -> Result<CudaBuf> {
        self.alloc(dtype, len)
    }
    fn upload(&self, dtype: DType, data: &[f32]) -> Result<CudaBuf> {
        if dtype == DType::I32 {
            return Err(Error::tensor(
                "upload",
                "float data cannot be uploaded as I32",
            ));
        }
        let buf = self.alloc(dtype, data.len())?;
        // SAFETY: the bytes fill exactly the allocation just made.
        unsafe { self.dev.htod(buf.ptr(), &encode(dtype, data))? };
        Ok(buf)
    }
    fn upload_i32(&self, data: &[i32]) -> Result<CudaBuf> {
        let mut buf = self.alloc(DType::I32, data.len())?;
        // SAFETY: as upload.
        unsafe { self.dev.htod(buf.ptr(), bytemuck::cast_slice(data))? };
        buf.host_i32 = Some(data.to_vec());
        Ok(buf)
    }
    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        if let Some(h) = &buf.host_i32 {
            return Ok(h.iter().map(|&x| x as f32).collect());
        }
        let mut bytes = vec![0u8; buf.storage.bytes];
        // SAFETY: the whole allocation.
        unsafe { self.dev.dtoh(&mut bytes, buf.ptr())? };
        Ok(decode(buf.dtype, &bytes))
    }
    fn copy(&self, dst: &mut CudaBuf, src: &CudaBuf) -> Result<()> {
        if dst.len != src.len || dst.dtype != src.dtype {
            return Err(Error::shape(
                "copy",
                format!("{} elements of {:?}", dst.len, dst.dtype),
                format!("{} elements of {:?}", src.len, src.dtype),
            ));
        }
        // SAFETY: both allocations hold exactly these bytes.
        unsafe { self.dev.dtod(dst.ptr(), src.ptr(), src.storage.bytes)? };
        dst.host_i32 = src.host_i32.clone();
        Ok(())
    }
    fn memory(&self) -> MemStats {
        MemStats {
            live_bytes: self.dev.live_bytes(),
            peak_bytes: self.dev.peak_bytes(),
        }
    }
    fn reset_peak(&self) {
        self.dev.reset_peak()
    }
    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }
    fn kernel_profile_start(&self) -> Result<()> {
        self.dev.profile_start()
    }
    fn kernel_profile_stop(&self) -> Result<Vec<KernelTime>> {
        self.dev.profile_stop()
    }
}
