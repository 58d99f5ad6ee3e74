use softprompt::backend::Backend;
use softprompt::bench::{self, BenchModel, Preset, Workload};
use softprompt::device::{with_backend, DeviceKind, WithBackend};
use softprompt::profile::Profiler;

#[derive(clap::Args)]
pub struct Args {
    /// bert-base, bert-large, t5-base, t5-large, t5-xl or t5-xxl (random frozen weights)
    #[arg(long)]
    preset: String,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    #[arg(long, default_value_t = 8)]
    target_len: usize,
    #[arg(long, default_value_t = 20)]
    prompt: usize,
    /// cpu, cuda or emu (a build with --features emu)
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "none")]
    recompute: String,
    #[arg(long, default_value = "pet")]
    objective: String,
}

struct Job {
    preset: Preset,
    w: Workload,
}

impl WithBackend for Job {
    type Output = String;
    fn run<B: Backend>(self, inner: B) -> softprompt::Result<String> {
        let be = Profiler::new(inner);
        let model = BenchModel::random(&be, &self.preset, 1)?;
        let batch = bench::bench_batch(&self.preset, &self.w, 3);
        bench::step(&be, &model, &batch, &self.w)?;
        be.reset();
        bench::step(&be, &model, &batch, &self.w)?;
        Ok(be.table())
    }
}

/// One warm-up step, then one profiled step; prints the per-op table.
pub fn run(args: Args) -> i32 {
    let result = (|| {
        let w = Workload {
            batch: args.batch,
            seq: args.seq,
            target_len: args.target_len,
            prompt: args.prompt,
            recompute: args.recompute.parse()?,
            objective: args.objective.clone(),
        };
        let preset = Preset::by_name(&args.preset)?;
        let kind: DeviceKind = args.device.parse()?;
        with_backend(kind, Job { preset, w })
    })();
    match result {
        Ok(table) => {
            print!("{table}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
