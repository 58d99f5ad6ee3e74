//! Device selection for the commands: `--device cpu | cuda | emu`, dispatched generically so
//! each command writes its body once against `Backend`.
//!
//! `cuda` without a GPU fails with "no CUDA device: ..." (nothing panics: libcuda's presence
//! is checked before any context is made), and `emu` in a build without the `emu` feature
//! says how to rebuild.

use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// GPU ordinal
    Cuda(usize),
    Emu,
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0)),
            "emu" => Ok(DeviceKind::Emu),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceKind::Cuda(n)),
                _ => Err(Error::arg(
                    "--device",
                    format!("\"{other}\": expected cpu, cuda, cuda:N or emu"),
                )),
            },
        }
    }
}

impl DeviceKind {
    /// The parity tolerance that fits the device's storage type: float32 on the CPU, bf16
    /// weights and activations elsewhere.
    pub fn default_tol(self) -> f64 {
        match self {
            DeviceKind::Cpu => 1e-4,
            _ => 2e-2,
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
        DeviceKind::Cuda(n) => job.run(CudaBackend::cuda(n)?),
        DeviceKind::Emu => job.run(emu_backend()?),
    }
}

#[cfg(feature = "emu")]
fn emu_backend() -> Result<CudaBackend> {
    CudaBackend::emu()
}

#[cfg(not(feature = "emu"))]
fn emu_backend() -> Result<CudaBackend> {
    Err(Error::Device(
        "the emu device (CUDA kernels run on the CPU emulator) is not in this build: rebuild \
         with `cargo build --release --features emu`"
            .into(),
    ))
}
