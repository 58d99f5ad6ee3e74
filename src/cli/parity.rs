use softprompt::backend::Backend;
use softprompt::config::ModelConfig;
use softprompt::cpu::activation::Act;
use softprompt::device::{with_backend, DeviceKind, WithBackend};
use softprompt::parity::{self, ParityReport};
use softprompt::reference::Reference;
use std::path::{Path, PathBuf};

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
    /// Weights and activations on cuda and emu: bf16; f32 (the float32 build of every kernel
    /// and float32 GEMMs: the whole CUDA path checked at float32's 1e-4); mixed (bf16
    /// weights, float32 activations, GEMMs on bf16 tensor cores with split operands: what
    /// ReLU models need to hold 2e-2, see kernels/PRECISION.md); or auto: mixed for a model
    /// whose feed-forward uses ReLU, bf16 otherwise
    #[arg(long, default_value = "auto")]
    precision: String,
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

/// `--precision auto`: a bf16 forward pass rounds pre-activations near zero to the other side
/// of a ReLU and flips its mask, which moves the prompt gradient by several percent
/// (kernels/PRECISION.md); with bf16 weights, only float32 activations (the mixed build)
/// keep the masks where PyTorch's float32 reference puts them. A config that cannot be read
/// picks bf16 here and is reported by the parity run itself.
fn resolve_precision(precision: &str, model: &Path) -> String {
    if precision != "auto" {
        return precision.to_string();
    }
    match ModelConfig::load(model).map(|c| c.activation()) {
        Ok(Act::Relu) => "mixed".into(),
        _ => "bf16".into(),
    }
}

pub fn run(args: Args) -> i32 {
    let precision = resolve_precision(&args.precision, &args.model);
    let prepared = DeviceKind::parse(&args.device, &precision)
        .and_then(|kind| Reference::read(&args.reference).map(|r| (kind, r)));
    let (kind, reference) = match prepared {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
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
            println!(
                "reference {} ({}, {}, P = {}) on {device}",
                args.reference.display(),
                reference.arch,
                reference.objective.name(),
                reference.p()
            );
            print!("{}", report.table());
            if report.passed() {
                println!("PASS");
                0
            } else {
                println!("FAIL");
                1
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
