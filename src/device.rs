//! Device selection for the commands: `--device cpu | cuda | emu` and `--precision bf16 |
//! f32 | mixed` (the build of the kernels, and so the storage of weights and activations, on
//! cuda and emu), dispatched generically so each command writes its body once against
//! `Backend`.
//!
//! `cuda` without a GPU fails with "no CUDA device: ..." (nothing panics: libcuda's presence
//! is checked before any context is made), and `emu` in a build without the `emu` feature
//! says how to rebuild.

pub use crate::backend::DeviceKind;
use crate::backend::{Backend, Precision};
use crate::cpu::CpuBackend;
/// The CPU backend's GEMM paths (`--gemm`) and SIMD sets, for the commands and the ceiling
/// benchmark: the one door to them outside `cpu/`.
pub use crate::cpu::{gemm_path, simd};
use crate::cuda::CudaBackend;
use crate::error::Result;

/// The float64 CPU backend: the reference that `bench` checks an engine against before
/// timing it (gradient checks run the same op code in double precision).
pub fn reference_f64() -> impl Backend {
    CpuBackend::<f64>::new()
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
pub(crate) fn emu_backend(precision: Precision) -> Result<CudaBackend> {
    CudaBackend::emu_with(precision)
}

#[cfg(not(feature = "emu"))]
pub(crate) fn emu_backend(_precision: Precision) -> Result<CudaBackend> {
    Err(crate::error::Error::Device(
        "the emu device (CUDA kernels run on the CPU emulator) is not in this build: rebuild \
         with `cargo build --release --features emu`"
            .into(),
    ))
}

/// The CPU's model name (Linux: /proc/cpuinfo), with its vendor, family and model numbers.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    match field("model name") {
        Some(name) => format!(
            "{name} ({}, family {}, model {})",
            field("vendor_id").unwrap_or_default(),
            field("cpu family").unwrap_or_default(),
            field("model\t").unwrap_or_default()
        ),
        None => std::env::consts::ARCH.to_string(),
    }
}
