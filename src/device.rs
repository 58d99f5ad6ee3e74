//! Device selection for the commands: `--device cpu | cuda | emu` and `--precision bf16 |
//! f32 | mixed` (the build of the kernels, and so the storage of weights and activations, on
//! cuda and emu), dispatched generically so each command writes its body once against
//! `Backend`.
//!
//! `cuda` without a GPU fails with "no CUDA device: ..." (nothing panics: libcuda's presence
//! is checked before any context is made), and `emu` in a build without the `emu` feature
//! says how to rebuild.

use crate::backend::{Backend, Precision};
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::error::{Error, Result};

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

/// `--precision`: the build of the kernels on cuda and emu (backend.rs `Precision`).
pub fn parse_precision(s: &str) -> Result<Precision> {
    match s {
        "bf16" => Ok(Precision::Bf16),
        "f32" | "fp32" | "float32" => Ok(Precision::F32),
        "mixed" => Ok(Precision::Mixed),
        other => Err(Error::arg(
            "--precision",
            format!("\"{other}\": expected bf16, f32 or mixed"),
        )),
    }
}

impl DeviceKind {
    /// `--device` and `--precision` together. The CPU always computes in float32, so it
    /// takes either.
    pub fn parse(device: &str, precision: &str) -> Result<DeviceKind> {
        let precision = parse_precision(precision)?;
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

    /// The parity tolerance that fits the device (reference-format.md): 1e-4 in float32, 2e-2
    /// with bf16 weights (the bf16 and mixed builds).
    pub fn default_tol(self) -> f64 {
        match self.precision() {
            Precision::F32 => 1e-4,
            Precision::Bf16 | Precision::Mixed => 2e-2,
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
        DeviceKind::Cuda(n, precision) => job.run(CudaBackend::cuda_with(n, precision)?),
        DeviceKind::Emu(precision) => job.run(emu_backend(precision)?),
    }
}

#[cfg(feature = "emu")]
fn emu_backend(precision: Precision) -> Result<CudaBackend> {
    CudaBackend::emu_with(precision)
}

#[cfg(not(feature = "emu"))]
fn emu_backend(_precision: Precision) -> Result<CudaBackend> {
    Err(Error::Device(
        "the emu device (CUDA kernels run on the CPU emulator) is not in this build: rebuild \
         with `cargo build --release --features emu`"
            .into(),
    ))
}
