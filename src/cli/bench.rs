use super::common::WorkloadArgs;
use softprompt::internals::backend::Backend;
use softprompt::internals::bench::{self, Workload};
use softprompt::internals::device::{with_backend, WithBackend};

#[derive(clap::Args)]
#[command(
    after_help = "Before timing, a 2-layer copy of the preset is stepped on the device and on \
the float64 CPU reference and compared (loss and the trained gradient; in bf16, a gradient \
miss alone is retried on the float32 build of the same device); a wrong engine is not timed. \
SOFTPROMPT_BENCH_CHECK=warn times it anyway and records the miss in the JSON's `check`."
)]
pub struct Args {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Timed steps (the median is reported)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
    /// Measure this machine's ceiling instead of a step: the float32 FMA peak and every GEMM
    /// path of this build on the preset's frozen-weight products (CPU). Times no step: the
    /// step's flags are refused with it rather than ignored.
    #[arg(long, conflicts_with_all = ["steps", "warmup", "recompute", "gemm", "device", "precision", "method"])]
    ceiling: bool,
}

struct Job<'a> {
    preset: &'a str,
    w: Workload,
    steps: usize,
    warmup: usize,
}

impl WithBackend for Job<'_> {
    type Output = serde_json::Value;
    fn run<B: Backend>(self, be: B) -> softprompt::Result<Self::Output> {
        bench::run(&be, self.preset, &self.w, self.steps, self.warmup)
    }
}

pub fn run(args: Args) -> i32 {
    let parsed = args.workload.parse().and_then(|x| match args.steps {
        // a median of no step would be a time never measured
        0 => Err(softprompt::Error::arg(
            "--steps",
            "is 0: expected at least 1 timed step",
        )),
        _ => Ok(x),
    });
    let (kind, w) = match parsed {
        Ok(x) => x,
        Err(e) => {
            errln!("error: {e}");
            return 2;
        }
    };
    if args.ceiling {
        return match softprompt::internals::ceiling::run(&args.workload.preset, &w, 3) {
            Ok(r) if args.json => {
                outln!("{r}");
                0
            }
            Ok(r) => {
                out!("{}", softprompt::internals::ceiling::text(&r));
                0
            }
            Err(e) => super::common::fail(e),
        };
    }
    let job = Job {
        preset: &args.workload.preset,
        w,
        steps: args.steps,
        warmup: args.warmup,
    };
    let result = with_backend(kind, job);
    match result {
        Ok(report) if args.json => {
            outln!("{report}");
            0
        }
        Ok(r) => {
            outln!(
                "{} {} on {} (GEMM {}): {:.1} ms/step, {:.0} tokens/s, {:.3} TFLOP/s, {:.1} MB held for backward, {:.1} MB peak ({:.1} MB weights)",
                args.workload.preset,
                method_label(&r),
                r["device"].as_str().unwrap_or("?"),
                r["cpu_kernels"].as_str().unwrap_or("-"),
                r["step_ms"].as_f64().unwrap_or(0.0),
                r["tokens_per_s"].as_f64().unwrap_or(0.0),
                r["tflops"].as_f64().unwrap_or(0.0),
                r["saved_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["peak_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["weights_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            );
            0
        }
        // a bad flag or a missing device is the user's (2), a failed run is 1
        Err(e) => super::common::fail(e),
    }
}

/// "prompt tuning", "p-tuning (mlp)", "prefix tuning (peft placement, projection)": the
/// method of a report, for its text line.
fn method_label(r: &serde_json::Value) -> String {
    let s = &r["method_settings"];
    match r["method"].as_str() {
        Some("prefix") => format!(
            "prefix tuning ({} placement{})",
            s["prefix_placement"].as_str().unwrap_or("?"),
            if s["prefix_projection"].as_bool() == Some(true) {
                ", projection"
            } else {
                ""
            }
        ),
        Some("p-tuning") => format!(
            "p-tuning ({})",
            s["encoder_reparameterization_type"]
                .as_str()
                .unwrap_or("?")
                .to_lowercase()
        ),
        _ => "prompt tuning".into(),
    }
}
