//! The whole training run, as `softprompt train` does it, with an event callback.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checks::{check_model, check_rows};
use super::model::{on_engine, Engine, Model};
use super::prompt::Prompt;
use super::task::Task;
use super::until::NEVER;
use crate::error::Result;
use crate::train::checkpoint::CHECKPOINT_FILE;
use crate::train::encode::Encoded;
use crate::train::{Event, Summary, TrainConfig, Trainer};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The encoded splits of a run ([`Model::encode`] makes each).
#[derive(Clone, Copy, Debug)]
pub struct Splits<'a> {
    /// the rows trained on
    pub train: &'a Encoded,
    /// evaluated every `eval_every` steps (or each epoch); the best prompt is kept
    pub dev: Option<&'a Encoded>,
    /// evaluated with dev (reported only) and with the kept prompt at the end
    pub test: Option<&'a Encoded>,
}

impl Model {
    /// Trains a prompt for `task` on `splits` as `softprompt train` does: bucketed
    /// deterministic batches, the schedule, clipping, evaluation on dev, the best prompt kept,
    /// early stopping, metrics.jsonl and atomic checkpoints in `out` (locked while the run
    /// lives); with `cfg.resume`, continues the checkpoint in `out` bit for bit. `on_event`
    /// hears every step, evaluation, save and early stop ([`ConsoleProgress`] prints them as
    /// the command line does). Returns the summary and the kept prompt (as saved in `out`).
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let model = Model::open("tests/fixtures/bert_mlm", Device::Cpu)?;
    /// let load = |f: &str| Dataset::load(format!("tests/bad_inputs/data/{f}").as_ref(), &DataSpec::default());
    /// let (train, dev) = (load("train.jsonl")?, load("dev.jsonl")?);
    /// let cfg = TrainConfig { prompt_len: 4, max_steps: Some(4), eval_every: 2, ..Default::default() };
    /// let task = model.task(&TaskOptions::default(), Some(&train), cfg.prompt_len)?;
    /// let (train, dev) = (model.encode(&task, &train)?, model.encode(&task, &dev)?);
    /// let out = std::env::temp_dir().join(format!("sp_doc_train_{}", std::process::id()));
    /// let mut evals = 0;
    /// let splits = Splits { train: &train, dev: Some(&dev), test: None };
    /// let (summary, kept) = model.train(&task, splits, &cfg, &out, &mut |ev| {
    ///     if let Event::Eval { .. } = ev { evals += 1 }
    /// })?;
    /// assert_eq!((summary.steps, evals), (4, 2));
    /// assert_eq!(kept, Prompt::load(&out)?); // the best prompt, saved in PEFT's layout
    /// # std::fs::remove_dir_all(&out).ok();
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    ///
    /// [`ConsoleProgress`]: crate::ConsoleProgress
    pub fn train(
        &self,
        task: &Task,
        splits: Splits<'_>,
        cfg: &TrainConfig,
        out: impl AsRef<Path>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(Summary, Prompt)> {
        self.train_until(task, splits, cfg, out, on_event, &NEVER)
    }

    /// As [`Model::train`], and once `stop` is set (from the callback, a signal handler or
    /// another thread), the run ends after the step under way with its checkpoint written,
    /// returning [`Error::Interrupted`]; `cfg.resume` continues it.
    ///
    /// [`Error::Interrupted`]: crate::Error::Interrupted
    pub fn train_until(
        &self,
        task: &Task,
        splits: Splits<'_>,
        cfg: &TrainConfig,
        out: impl AsRef<Path>,
        on_event: &mut dyn FnMut(&Event),
        stop: &AtomicBool,
    ) -> Result<(Summary, Prompt)> {
        crate::cpu::threads::enter_compute()?;
        let out = out.as_ref();
        // an overwrite killed part way left the files it had moved aside hidden
        crate::train::outdir::recover_aside(out)?;
        let resume = cfg.resume && out.join(CHECKPOINT_FILE).exists();
        let summary = on_engine!(&self.engine, |be, m| {
            check_model(task, m)?;
            check_prompt_len(task, cfg.prompt_len, "cfg.prompt_len", m)?;
            check_splits(&splits, task, cfg.prompt_len, m)?;
            let (inner, cfg) = (&task.inner, cfg.clone());
            let (train, dev, test) = (splits.train, splits.dev, splits.test);
            let mut trainer = if resume {
                Trainer::resume(be, m, inner, train, dev, test, cfg, out)?
            } else {
                Trainer::new(be, m, inner, train, dev, test, cfg, out)?
            };
            trainer.run_until(on_event, stop)?
        });
        Ok((summary, Prompt::load(out)?))
    }
}

/// Every split's rows were encoded by `model` for `task`'s settings (or made by hand) and fit
/// its lengths next to a prompt of `p` rows, each named by its field.
pub(super) fn check_splits<B: crate::Backend>(
    splits: &Splits<'_>,
    task: &Task,
    p: usize,
    model: &crate::train::Model<B>,
) -> Result<()> {
    let named = [
        ("splits.train", Some(splits.train)),
        ("splits.dev", splits.dev),
        ("splits.test", splits.test),
    ];
    for (flag, enc) in named {
        if let Some(enc) = enc {
            check_rows(&enc.rows, task, p, model, flag)?;
        }
    }
    Ok(())
}

/// A prompt of `p` rows (the API's `field`) beside the task's max_len fits the model's
/// positions. The trainer's own check says "use --max-len ...", which an API user never set:
/// `Model::task` sized max_len for the prompt length it was given, not this one.
pub(super) fn check_prompt_len<B: crate::Backend>(
    task: &Task,
    p: usize,
    field: &str,
    model: &crate::train::Model<B>,
) -> Result<()> {
    if p == 0 {
        return Err(crate::Error::arg(
            field,
            "is 0: expected at least 1 prompt row",
        ));
    }
    let n = task.inner.spec.max_len;
    let (limit, what) = model.position_limit();
    if p.saturating_add(n) <= limit {
        return Ok(());
    }
    Err(crate::Error::arg(
        field,
        format!(
            "is {p}, but the task's rows hold up to {n} tokens (its max_len, which \
             Model::task sets from the prompt length it is given): they need {} positions, \
             and {what} holds {limit}: make the task with Model::task(.., {p}), or train a \
             prompt of {} rows or less",
            crate::error::sum_text(&[p, n]),
            limit.saturating_sub(n)
        ),
    ))
}
