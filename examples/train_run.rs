//! The whole run as `softprompt train` does it: the command line's defaults, dev evaluation,
//! the best prompt kept, checkpoints and metrics.jsonl in OUT_DIR.
//!     cargo run --release --example train_run [MODEL_DIR TRAIN_FILE DEV_FILE OUT_DIR]
use softprompt::prelude::*;

fn main() -> Result<()> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or(default.into());
    let model = Model::open(arg(1, "tests/fixtures/bert_mlm"), Device::Cpu)?;
    let load = |path: String| Dataset::load(path.as_ref(), &DataSpec::default());
    let train = load(arg(2, "tests/bad_inputs/data/train.jsonl"))?;
    let dev = load(arg(3, "tests/bad_inputs/data/dev.jsonl"))?;
    let out = arg(4, "runs/example_train_run");
    let cfg = TrainConfig {
        prompt_len: 8,
        batch_size: 8,
        epochs: 5,
        overwrite: true, // replace an earlier run's files in `out`
        ..TrainConfig::default()
    };
    let task = model.task(&TaskOptions::default(), Some(&train), cfg.prompt_len)?;
    let (train, dev) = (model.encode(&task, &train)?, model.encode(&task, &dev)?);
    let splits = Splits {
        train: &train,
        dev: Some(&dev),
        test: None,
    };
    let (summary, prompt) = model.train(&task, splits, &cfg, &out, &mut |event| {
        if let Event::Eval { metrics, .. } = event {
            println!("dev accuracy {:.4}", metrics.accuracy);
        }
    })?;
    let (best, steps) = (summary.best_step, summary.steps);
    println!(
        "best at step {best} of {steps}; {} rows in {out}",
        prompt.rows()
    );
    Ok(())
}
