//! Device selection for the commands: `--device cpu | cuda | emu` and `--precision bf16 |
//! f32` (the storage of weights and activations on cuda and emu), dispatched generically so
//! each command writes its body once against `Backend`.
//!
//! `cuda` without a GPU fails with "no CUDA device: ..." (nothing panics: libcuda's presence
//! is checked before any context is made), and `emu` in a build without the `emu` feature
//! says how to rebuild.

use crate::backend::{Backend, DType};
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// GPU ordinal, and the storage type of weights and activations (BF16, or F32)
    Cuda(usize, DType),
    /// the storage type, as for Cuda
    Emu(DType),
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    /// "cpu", "cuda", "cuda:N" or "emu", storing weights and activations in bf16.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0, DType::BF16)),
            "emu" => Ok(DeviceKind::Emu(DType::BF16)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceKind::Cuda(n, DType::BF16)),
                _ => Err(Error::arg(
                    "--device",
                    format!("\"{other}\": expected cpu, cuda, cuda:N or emu"),
                )),
            },
        }
    }
}

/// `--precision`: the storage type of weights and activations on cuda and emu.
pub fn parse_precision(s: &str) -> Result<DType> {
    match s {
        "bf16" => Ok(DType::BF16),
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        other => Err(Error::arg(
            "--precision",
            format!("\"{other}\": expected bf16 or f32"),
        )),
    }
}

impl DeviceKind {
    /// `--device` and `--precision` together. The CPU always computes in float32, so it
    /// takes either.
    pub fn parse(device: &str, precision: &str) -> Result<DeviceKind> {
        let store = parse_precision(precision)?;
        Ok(match device.parse()? {
            DeviceKind::Cpu => DeviceKind::Cpu,
            DeviceKind::Cuda(n, _) => DeviceKind::Cuda(n, store),
            DeviceKind::Emu(_) => DeviceKind::Emu(store),
        })
    }

    /// The storage type of weights and activations.
    pub fn store(self) -> DType {
        match self {
            DeviceKind::Cpu => DType::F32,
            DeviceKind::Cuda(_, s) | DeviceKind::Emu(s) => s,
        }
    }

    /// The parity tolerance that fits the device's storage type (reference-format.md):
    /// 1e-4 in float32, 2e-2 in bf16.
    pub fn default_tol(self) -> f64 {
        match self.store() {
            DType::BF16 => 2e-2,
            _ => 1e-4,
        }
    }
}

/// What a command runs on any backend (it receives the backend by value, so it can wrap it,
/// as `profile` does).
pub trait WithBackend {
    type Output;
    fn run<B: Backend>(self, be: B) -> Result<Self::Output>;
}

/// Builds the backend `kind` names and runs `job` on it.
pub fn with_backend<J: WithBackend>(kind: DeviceKind, job: J) -> Result<J::Output> {
    match kind {
        DeviceKind::Cpu => job.run(CpuBackend::<f32>::new()),
        DeviceKind::Cuda(n, store) => job.run(CudaBackend::cuda_with(n, store)?),
        DeviceKind::Emu(store) => job.run(emu_backend(store)?),
    }
}

#[cfg(feature = "emu")]
fn emu_backend(store: DType) -> Result<CudaBackend> {
    CudaBackend::emu_with(store)
}

#[cfg(not(feature = "emu"))]
fn emu_backend(_store: DType) -> Result<CudaBackend> {
    Err(Error::Device(
        "the emu device (CUDA kernels run on the CPU emulator) is not in this build: rebuild \
         with `cargo build --release --features emu`"
            .into(),
    ))
}
