//! The whole training run, as `softprompt train` does it, with an event callback.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model::{on_engine, Engine, Model};
use super::prompt::Prompt;
use super::task::Task;
use crate::error::Result;
use crate::train::checkpoint::CHECKPOINT_FILE;
use crate::train::encode::Encoded;
use crate::train::{Event, Summary, TrainConfig, Trainer};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The encoded splits of a run: `train`, and optionally `dev` (evaluated as the run goes;
/// the best prompt is kept) and `test` (evaluated with dev, reported only, and with the kept
/// prompt at the end).
#[derive(Clone, Copy, Debug)]
pub struct Splits<'a> {
    pub train: &'a Encoded,
    pub dev: Option<&'a Encoded>,
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
    /// [`ConsoleProgress`]: crate::ConsoleProgress
    pub fn train(
        &self,
        task: &Task,
        splits: Splits<'_>,
        cfg: &TrainConfig,
        out: impl AsRef<Path>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(Summary, Prompt)> {
        let never = AtomicBool::new(false);
        self.train_until(task, splits, cfg, out, on_event, &never)
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
        let out = out.as_ref();
        let resume = cfg.resume && out.join(CHECKPOINT_FILE).exists();
        let summary = on_engine!(&self.engine, |be, m| {
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
