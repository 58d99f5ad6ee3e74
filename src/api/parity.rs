//! Parity against a PyTorch reference file (`scripts/torch_reference.py`): the engine's loss,
//! prompt gradient and every other tensor the file holds, compared at a tolerance.

use crate::backend::DeviceKind;
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::error::Result;
use crate::parity::{self, ParityReport};
use crate::reference::Reference;
use std::path::Path;

/// Runs the reference file's batch through the model in `model_dir` on `device` and compares
/// every tensor the engine produces with PyTorch's, at `tol` (default: 1e-4 in float32, 2e-2
/// in bf16 and mixed), as `softprompt parity` does. `report.passed()` says whether all did.
/// The environment's variables are checked first, as [`crate::Model::open`] checks them.
///
/// ```
/// let dir = std::path::Path::new("tests/fixtures/bert_mlm");
/// let device = softprompt::Device::Cpu;
/// let report = softprompt::parity(dir, dir.join("ref_pet_text.safetensors"), device, None)?;
/// assert!(report.passed(), "{}", report.table());
/// # Ok::<(), softprompt::Error>(())
/// ```
pub fn parity(
    model_dir: impl AsRef<Path>,
    reference_file: impl AsRef<Path>,
    device: DeviceKind,
    tol: Option<f64>,
) -> Result<ParityReport> {
    crate::cpu::threads::check_process()?;
    let reference = Reference::read(reference_file.as_ref())?;
    let tol = tol.unwrap_or(device.default_tol());
    let dir = model_dir.as_ref();
    match device {
        DeviceKind::Cpu => parity::run(&CpuBackend::<f32>::new(), dir, &reference, tol),
        DeviceKind::Cuda(n, precision) => {
            parity::run(&CudaBackend::cuda_with(n, precision)?, dir, &reference, tol)
        }
        DeviceKind::Emu(precision) => parity::run(
            &crate::device::emu_backend(precision)?,
            dir,
            &reference,
            tol,
        ),
    }
}
