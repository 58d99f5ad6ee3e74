use softprompt::parity;
use softprompt::reference::Reference;
use softprompt::CpuBackend;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, model.safetensors)
    #[arg(long)]
    model: PathBuf,
    /// Reference file written by scripts/torch_reference.py (format 1)
    #[arg(long)]
    reference: PathBuf,
    /// cpu, emu or cuda
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Relative L2 tolerance (default 1e-4 in float32, 2e-2 in bf16)
    #[arg(long)]
    tol: Option<f64>,
}

pub fn run(args: Args) -> i32 {
    let reference = match Reference::read(&args.reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let result = match args.device.as_str() {
        "cpu" => parity::run(
            &CpuBackend::<f32>::new(),
            &args.model,
            &reference,
            args.tol.unwrap_or(1e-4),
        ),
        other => Err(softprompt::Error::arg(
            "--device",
            format!("\"{other}\": expected cpu, emu or cuda"),
        )),
    };
    match result {
        Ok(report) => {
            println!(
                "reference {} ({}, {}, P = {})",
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
