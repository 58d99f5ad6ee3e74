use softprompt::internals::backend::Backend;
use softprompt::internals::cpu;
use softprompt::internals::device::{with_backend, DeviceKind, WithBackend};
use softprompt::internals::parity::{self, ParityReport};
use softprompt::internals::reference::Reference;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, model.safetensors)
    #[arg(long)]
    model: PathBuf,
    /// Reference file written by scripts/torch_reference.py (format 1)
    #[arg(long)]
    reference: PathBuf,
    /// cpu, emu (a build with --features emu) or cuda
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weights and activations on cuda and emu: mixed (bf16 weights, float32 activations,
    /// GEMMs on bf16 tensor cores with split operands: the engine that reproduces float32
    /// references, ReLU and deep models included); bf16 (the bf16 engine, whose prompt
    /// gradient moves by several percent on ReLU and deep models, kernels/PRECISION.md); or
    /// f32 (float32 kernels and GEMMs: the whole CUDA path checked at float32's 1e-4). The CPU
    /// computes in float32 (it warns when given another). Default: mixed
    #[arg(long)]
    precision: Option<String>,
    /// Relative L2 tolerance (default 1e-4 in float32, on the CPU or with --precision f32;
    /// 2e-2 with bf16 weights, --precision bf16 or mixed, on cuda/emu)
    #[arg(long)]
    tol: Option<f64>,
}

struct Job<'a> {
    model: &'a std::path::Path,
    reference: &'a Reference,
    tol: f64,
}

impl WithBackend for Job<'_> {
    type Output = (String, ParityReport);
    fn run<B: Backend>(self, be: B) -> softprompt::Result<Self::Output> {
        Ok((
            be.name(),
            parity::run(&be, self.model, self.reference, self.tol)?,
        ))
    }
}

pub fn run(args: Args) -> i32 {
    // the environment checked and the GEMM path chosen as every command does: a
    // SOFTPROMPT_GEMM that does not load ran the gemm crate and passed
    let prepared = softprompt::internals::cpu::threads::setup(0, None)
        .and_then(|()| {
            DeviceKind::parse(&args.device, args.precision.as_deref().unwrap_or("mixed"))
        })
        .inspect(|&kind| super::common::warn_cpu_precision(kind, args.precision.as_deref()))
        .and_then(|kind| Reference::read(&args.reference).map(|r| (kind, r)));
    let (kind, reference) = match prepared {
        Ok(x) => x,
        Err(e) => {
            errln!("error: {e}");
            return 2;
        }
    };
    let job = Job {
        model: &args.model,
        reference: &reference,
        tol: args.tol.unwrap_or(kind.default_tol()),
    };
    match with_backend(kind, job) {
        Ok((device, report)) => {
            // on the CPU, the kernels that ran (the GEMM path and the row ops' ISA)
            let kernels = match kind {
                DeviceKind::Cpu => format!(" ({})", cpu::gemm_path::kernels_id()),
                _ => String::new(),
            };
            outln!(
                "reference {} ({}, {}, P = {}, {}) on {device}{kernels}",
                args.reference.display(),
                reference.arch,
                reference.objective.name(),
                reference.p(),
                reference.method_label()
            );
            out!("{}", report.table());
            if report.passed() {
                outln!("PASS");
                0
            } else {
                outln!("FAIL");
                1
            }
        }
        Err(e) => {
            errln!("error: {e}");
            2
        }
    }
}
