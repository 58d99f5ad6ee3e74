use softprompt::bench::{self, BenchModel, Preset, Workload};
use softprompt::profile::Profiler;
use softprompt::CpuBackend;

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
    /// cpu or cuda
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "none")]
    recompute: String,
    #[arg(long, default_value = "pet")]
    objective: String,
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
        match args.device.as_str() {
            "cpu" => {
                let be = Profiler::new(CpuBackend::<f32>::new());
                let model = BenchModel::random(&be, &preset, 1)?;
                let batch = bench::bench_batch(&preset, &w, 3);
                bench::step(&be, &model, &batch, &w)?;
                be.reset();
                bench::step(&be, &model, &batch, &w)?;
                Ok(be.table())
            }
            other => Err(softprompt::Error::arg(
                "--device",
                format!("\"{other}\": expected cpu or cuda"),
            )),
        }
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
