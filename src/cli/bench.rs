use softprompt::backend::Backend;
use softprompt::bench::{self, Workload};
use softprompt::device::{with_backend, DeviceKind, WithBackend};

#[derive(clap::Args)]
pub struct Args {
    /// bert-base, bert-large, t5-base, t5-large, t5-xl or t5-xxl (random frozen weights)
    #[arg(long)]
    preset: String,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Real tokens per row (the prompt comes on top)
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// T5 decoder length
    #[arg(long, default_value_t = 8)]
    target_len: usize,
    /// Prompt rows P
    #[arg(long, default_value_t = 20)]
    prompt: usize,
    /// cpu, cuda or emu (a build with --features emu; for checks, not timing)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// none (keep nonlinear state) or layer (keep layer inputs, recompute in backward)
    #[arg(long, default_value = "none")]
    recompute: String,
    /// BERT objective: pet or mlm
    #[arg(long, default_value = "pet")]
    objective: String,
    /// Timed steps (the median is reported)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

struct Job<'a> {
    preset: &'a str,
    w: Workload,
    steps: usize,
    warmup: usize,
    tol: f64,
}

impl WithBackend for Job<'_> {
    type Output = serde_json::Value;
    fn run<B: Backend>(self, be: B) -> softprompt::Result<Self::Output> {
        bench::run(&be, self.preset, &self.w, self.steps, self.warmup, self.tol)
    }
}

pub fn run(args: Args) -> i32 {
    let parsed = args
        .recompute
        .parse()
        .and_then(|r| args.device.parse::<DeviceKind>().map(|d| (r, d)));
    let (recompute, kind) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let w = Workload {
        batch: args.batch,
        seq: args.seq,
        target_len: args.target_len,
        prompt: args.prompt,
        recompute,
        objective: args.objective.clone(),
    };
    let job = Job {
        preset: &args.preset,
        w,
        steps: args.steps,
        warmup: args.warmup,
        tol: kind.default_tol(),
    };
    let result = with_backend(kind, job);
    match result {
        Ok(report) if args.json => {
            println!("{report}");
            0
        }
        Ok(r) => {
            println!(
                "{} on {}: {:.1} ms/step, {:.0} tokens/s, {:.3} TFLOP/s, {:.1} MB held for backward, {:.1} MB peak ({:.1} MB weights)",
                args.preset,
                r["device"].as_str().unwrap_or("?"),
                r["step_ms"].as_f64().unwrap_or(0.0),
                r["tokens_per_s"].as_f64().unwrap_or(0.0),
                r["tflops"].as_f64().unwrap_or(0.0),
                r["saved_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["peak_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["weights_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
