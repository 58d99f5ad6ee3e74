//! A training run over the committed sample sentences (train 24 rows, dev 8) through the API,
//! for the tests of the training methods (`ptuning.rs`, `prefix_train.rs`).

use super::fixture;
use softprompt::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

/// The committed sample sentences (train 24 rows, dev 8).
pub fn sample(split: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/bad_inputs/data/{split}.jsonl"))
}

/// A run of `cfg` on fixture `model` over the sample (train as the test split too, so that
/// the kept prompt's score on 24 rows is reported); returns the summary and every step's
/// loss. `stop_after` stops it.
pub fn run_on_sample(
    model: &str,
    out: &Path,
    cfg: &TrainConfig,
    stop_after: Option<u64>,
) -> Result<(Summary, Vec<f64>)> {
    run_on_sample_on(Device::Cpu, model, out, cfg, stop_after)
}

/// `run_on_sample` on `device`.
pub fn run_on_sample_on(
    device: Device,
    model: &str,
    out: &Path,
    cfg: &TrainConfig,
    stop_after: Option<u64>,
) -> Result<(Summary, Vec<f64>)> {
    let model = Model::open(fixture(model), device)?;
    let train = Dataset::load(&sample("train"), &DataSpec::default())?;
    let dev = Dataset::load(&sample("dev"), &DataSpec::default())?;
    let task = model.task(&TaskOptions::default(), Some(&train), cfg.prompt_len)?;
    let (train, dev) = (model.encode(&task, &train)?, model.encode(&task, &dev)?);
    let splits = Splits {
        train: &train,
        dev: Some(&dev),
        test: Some(&train),
    };
    let stop = AtomicBool::new(false);
    let mut losses = Vec::new();
    let mut on_event = |ev: &Event| {
        if let Event::Step(s) = ev {
            losses.push(s.loss);
            if stop_after.is_some_and(|n| s.step >= n) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    let (summary, _) = model.train_until(&task, splits, cfg, out, &mut on_event, &stop)?;
    Ok((summary, losses))
}

/// `cfg` on `model` run whole into `whole`, and into `parts` stopped after step 7 and resumed
/// (`cfg` with `resume`, returned): the resumed run ends at `cfg.max_steps` with the whole
/// run's losses after step 7, and its `files` equal the whole run's byte for byte.
pub fn assert_resumes_bit_identically(
    model: &str,
    (whole, parts): (&Path, &Path),
    cfg: &TrainConfig,
    files: &[&str],
) -> TrainConfig {
    let (_, all) = run_on_sample(model, whole, cfg, None).unwrap();
    let err = run_on_sample(model, parts, cfg, Some(7)).unwrap_err();
    assert!(matches!(err, Error::Interrupted(_)), "{model}: {err}");
    let resume = TrainConfig {
        resume: true,
        ..cfg.clone()
    };
    let (summary, rest) = run_on_sample(model, parts, &resume, None).unwrap();
    assert_eq!(Some(summary.steps), cfg.max_steps, "{model}");
    assert_eq!(rest, all[7..], "{model}: {}", parts.display());
    for f in files {
        assert_eq!(file(whole, f), file(parts, f), "{model}: {f}");
    }
    resume
}

/// A resume of the run in `parts` with `cfg` is refused as one of other settings, naming `key`.
pub fn assert_resume_refused(model: &str, parts: &Path, cfg: &TrainConfig, key: &str) {
    let err = run_on_sample(model, parts, cfg, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other settings") && err.contains(key),
        "{key}: {err}"
    );
}

pub fn file(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The command line's binary, run with `args`.
pub fn softprompt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(args)
        .output()
        .unwrap()
}

/// Each `train` run on bert_mlm over the sample with the flags of a case fails before
/// anything is written, its error naming the case's flag.
pub fn assert_refused_before_writing(scratch: &str, cases: &[(&[&str], &str)]) {
    let dir = super::ScratchDir::new(scratch);
    let out = dir.path();
    let s = |p: &Path| p.display().to_string();
    let (model, train, dir) = (s(&fixture("bert_mlm")), s(&sample("train")), s(out));
    let base = [
        "train",
        "--model",
        &model,
        "--train",
        &train,
        "--out",
        &dir,
        "--max-steps",
        "1",
        "--prompt-len",
        "2",
    ];
    for &(extra, flag) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let o = softprompt(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?}");
        assert!(err.contains(flag), "{extra:?}: {err}");
        assert!(!out.join("adapter_model.safetensors").exists(), "{extra:?}");
    }
}
