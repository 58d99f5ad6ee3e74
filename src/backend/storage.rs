//! Buffers and the device they live on: the storage half of every backend, and the types that
//! describe it. The op families (one trait per stem, beside this file) build on `Storage`.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 => 2,
        }
    }
}

/// How a CUDA device (`cuda`, `emu`) stores frozen weights and activations, and so which build
/// of the kernels it runs (`--precision`; kernels/common.cuh, kernels/PRECISION.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// bf16 weights and activations, tensor cores everywhere: the engine.
    Bf16,
    /// float32 weights and activations, no tensor cores: exact checks of the whole CUDA path.
    F32,
    /// bf16 weights, float32 activations; each GEMM runs twice on bf16 tensor cores (the
    /// activation split into bf16 hi + lo), attention in float32 loops. A forward pass that
    /// accurate keeps ReLU masks where float32 puts them.
    Mixed,
}

impl Precision {
    /// The storage type of frozen weights.
    pub fn weights(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 | Precision::Mixed => DType::BF16,
        }
    }

    /// The storage type of activations and their gradients.
    pub fn acts(self) -> DType {
        match self {
            Precision::Bf16 => DType::BF16,
            Precision::F32 | Precision::Mixed => DType::F32,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    /// `--precision`: "bf16", "f32" (or "fp32", "float32") or "mixed".
    fn from_str(s: &str) -> Result<Precision> {
        match s {
            "bf16" => Ok(Precision::Bf16),
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "mixed" => Ok(Precision::Mixed),
            other => Err(Error::arg(
                "--precision",
                format!("\"{other}\": expected bf16, f32 (or fp32, float32) or mixed"),
            )),
        }
    }
}

/// What kind of device a backend is, and on cuda and emu which build of the kernels it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// GPU ordinal, and the build of the kernels it runs
    Cuda(usize, Precision),
    /// the build of the kernels, as for Cuda
    Emu(Precision),
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    /// "cpu", "cuda", "cuda:N" or "emu", in the bf16 build.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0, Precision::Bf16)),
            "emu" => Ok(DeviceKind::Emu(Precision::Bf16)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceKind::Cuda(n, Precision::Bf16)),
                _ => Err(Error::arg(
                    "--device",
                    format!("\"{other}\": expected cpu, cuda, cuda:N or emu"),
                )),
            },
        }
    }
}

impl DeviceKind {
    /// `--device` and `--precision` together. The CPU always computes in float32, so it
    /// takes either.
    pub fn parse(device: &str, precision: &str) -> Result<DeviceKind> {
        let precision: Precision = precision.parse()?;
        Ok(match device.parse()? {
            DeviceKind::Cpu => DeviceKind::Cpu,
            DeviceKind::Cuda(n, _) => DeviceKind::Cuda(n, precision),
            DeviceKind::Emu(_) => DeviceKind::Emu(precision),
        })
    }

    /// The build of the kernels; the CPU computes in float32, like the float32 build.
    pub fn precision(self) -> Precision {
        match self {
            DeviceKind::Cpu => Precision::F32,
            DeviceKind::Cuda(_, p) | DeviceKind::Emu(p) => p,
        }
    }

    /// A real GPU (kernels run asynchronously, host copies cost a transfer).
    pub fn is_gpu(self) -> bool {
        matches!(self, DeviceKind::Cuda(..))
    }

    /// The parity tolerance that fits the device (reference-format.md): 1e-4 in float32, 2e-2
    /// with bf16 weights (the bf16 and mixed builds).
    pub fn default_tol(self) -> f64 {
        match self.precision() {
            Precision::F32 => 1e-4,
            Precision::Bf16 | Precision::Mixed => 2e-2,
        }
    }
}

/// Bytes the backend's allocator holds now and at its peak since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    pub live_bytes: usize,
    pub peak_bytes: usize,
}

/// Device time of one kernel (or GEMM) summed over a profiled region.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub name: String,
    pub calls: u64,
    pub ms: f64,
}

/// Buffers and the device they live on.
pub trait Storage: Send + Sync {
    type Buf: Send + Sync;

    /// A name for reports: "cpu", "emu", "cuda:0 NVIDIA H200".
    fn name(&self) -> String;
    /// What kind of device this is.
    fn device(&self) -> DeviceKind;
    /// What shapes the last bits of the results besides the device and the thread count: on
    /// the float32 CPU, the GEMM path and the SIMD instruction set ("gemm/avx512",
    /// cpu/gemm_path.rs); empty where nothing does. Printed at start and recorded in
    /// checkpoints, so a resume on other kernels warns.
    fn kernels(&self) -> String {
        String::new()
    }
    /// The storage type of activations.
    fn act_dtype(&self) -> DType;
    /// The storage type of frozen weights. Required, with no default: a wrapper that forgot
    /// to pass it on would upload weights in the activations' type, which only the mixed
    /// build tells apart.
    fn weight_dtype(&self) -> DType;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn dtype(&self, buf: &Self::Buf) -> DType;
    /// A stable identity of the storage, used by the memory accountant's checks.
    fn buf_id(&self, buf: &Self::Buf) -> usize;

    fn zeros(&self, dtype: DType, len: usize) -> Result<Self::Buf>;
    /// A buffer for an op to overwrite whole (a forward op's output): its contents are
    /// unspecified, so nothing is spent zeroing it. Never hand it to a backward op, which adds.
    fn output(&self, dtype: DType, len: usize) -> Result<Self::Buf> {
        self.zeros(dtype, len)
    }
    fn upload(&self, dtype: DType, data: &[f32]) -> Result<Self::Buf>;
    fn upload_i32(&self, data: &[i32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Like `download`, at the backend's full precision (the f64 reference keeps its digits).
    fn download_f64(&self, buf: &Self::Buf) -> Result<Vec<f64>> {
        Ok(self.download(buf)?.into_iter().map(f64::from).collect())
    }
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<()>;
    fn memory(&self) -> MemStats;
    fn reset_peak(&self);
    fn synchronize(&self) -> Result<()>;
    /// Starts timing every kernel launch (CUDA events on a GPU). Backends without kernels
    /// ignore it.
    fn kernel_profile_start(&self) -> Result<()> {
        Ok(())
    }
    /// Ends the region started by `kernel_profile_start`: time per kernel, largest first
    /// (empty where there are no kernels).
    fn kernel_profile_stop(&self) -> Result<Vec<KernelTime>> {
        Ok(Vec::new())
    }
}
