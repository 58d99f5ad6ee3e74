//! What the multi-task tests (`multitask.rs`, `multitask_methods.rs`) share: the committed
//! sample rows, a fresh temp folder, and the short run every comparison trains.

use softprompt::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The committed sample split `f` (train.jsonl 24 rows, dev.jsonl 8).
pub fn data(f: &str) -> Dataset {
    let path = format!("tests/bad_inputs/data/{f}");
    Dataset::load(path.as_ref(), &DataSpec::default()).unwrap()
}

/// A fresh (absent) folder `sp_<group>_<name>_<pid>` under the system temp dir.
pub fn tmp(group: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sp_{group}_{name}_{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// 6 AdamW steps (lr 0.1) of batches of 5, 4 prompt rows, dev evaluated every 2 steps, one
/// thread.
pub fn cfg() -> TrainConfig {
    TrainConfig {
        prompt_len: 4,
        batch_size: 5,
        max_steps: Some(6),
        eval_every: 2,
        save_every: 0,
        log_every: 1,
        threads: 1,
        optim: OptimConfig::adamw(0.1, 0.01),
        ..Default::default()
    }
}

/// `jobs` trained into `out` and stopped after step `step`: the run must end interrupted,
/// its checkpoint written.
pub fn stop_after(model: &Model, jobs: &[MultiTask<'_>], cfg: &TrainConfig, out: &Path, step: u64) {
    let stop = AtomicBool::new(false);
    let on_event = &mut |_: &str, ev: &Event| {
        if matches!(ev, Event::Step(s) if s.step == step) {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let err = (model.train_multi_until(jobs, cfg, out, on_event, &stop)).unwrap_err();
    assert!(matches!(err, Error::Interrupted(_)), "{err}");
}

/// The corpus' training rows, each with a `task` field: `a` and `b` alternating.
pub fn tagged_rows() -> String {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    let text = std::fs::read_to_string(corpus).expect("train.jsonl");
    let rows = text.lines().enumerate().map(|(i, l)| {
        let t = if i % 2 == 0 { "a" } else { "b" };
        format!(
            "{}, \"task\": \"{t}\"}}",
            l.trim_end().trim_end_matches('}')
        )
    });
    rows.collect::<Vec<_>>().join("\n") + "\n"
}

/// The tagged rows as `tagged.jsonl` under `dir`.
pub fn tagged_file(dir: &super::ScratchDir) -> PathBuf {
    let train = dir.path().join("tagged.jsonl");
    std::fs::write(&train, tagged_rows()).expect("write");
    train
}

/// A two-step multi-task PET command over `train` (rows tagged by `task`) into `out`: the
/// single-task one's flags, with `--task-field task`.
pub fn multi_args(train: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = super::tiny_pet_train_args(&super::fixture("bert_mlm"), out);
    args[4] = train.to_str().expect("a UTF-8 path").to_string();
    let tasks = ["--format", "jsonl", "--task-field", "task"];
    args.extend(tasks.iter().chain(extra).map(|a| a.to_string()));
    args
}
