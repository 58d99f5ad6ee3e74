//! Evaluation and prediction that a flag stops between batches: Ctrl-C in a long call (the
//! Python package sets the flag from its signal check after each batch).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model::{bind, on_engine, Engine, Model};
use super::prompt::Prompt;
use super::task::Task;
use crate::error::Result;
use crate::train::{self, EvalMetrics, Prediction};
use crate::Encoded;
use std::sync::atomic::{AtomicBool, Ordering};

impl Model {
    /// As [`Model::evaluate`]; `on_batch` hears the rows done after each batch, and once
    /// `stop` is set (from the callback, a signal handler or another thread) the call ends
    /// after the batch under way, returning [`Error::Interrupted`] and no result.
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// let model = Model::open("tests/fixtures/bert_nohead", Device::Cpu)?;
    /// let data = Dataset::from_pairs("mem", [("good film", Some("pos")), ("bad", Some("neg"))]);
    /// let opts = TaskOptions { task: Some(TaskKind::Cls), pooling: Some(Pooling::Mean), ..Default::default() };
    /// let task = model.task(&opts, Some(&data), 4)?;
    /// let prompt = model.new_prompt(&task, 4, &PromptInit::Random { std: 0.5 }, 0)?;
    /// let enc = model.encode(&task, &data)?;
    /// let stop = AtomicBool::new(false);
    /// let mut heard = Vec::new();
    /// let mut on_batch = |done| {
    ///     heard.push(done);
    ///     stop.store(true, Ordering::SeqCst); // Ctrl-C after the first batch
    /// };
    /// let r = model.evaluate_until(&task, &prompt, &enc, 1, &mut on_batch, &stop);
    /// assert!(matches!(r, Err(Error::Interrupted(_))));
    /// assert_eq!(heard, [1]); // one row of two, then it stopped
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    ///
    /// [`Error::Interrupted`]: crate::Error::Interrupted
    pub fn evaluate_until(
        &self,
        task: &Task,
        prompt: &Prompt,
        data: &Encoded,
        batch_size: usize,
        on_batch: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<(EvalMetrics, Vec<Prediction>)> {
        let go_on = &mut go_on(on_batch, stop);
        on_engine!(&self.engine, |be, m| {
            let params = bind(be, m, task, prompt)?;
            train::evaluate_until(be, m, &task.inner, &params, data, batch_size, go_on)
        })
        .map_err(|e| prompt.blame_overflow(e))
    }

    /// As [`Model::predict`], stopped as [`Model::evaluate_until`] is.
    pub fn predict_until(
        &self,
        task: &Task,
        prompt: &Prompt,
        data: &Encoded,
        batch_size: usize,
        on_batch: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<Vec<Prediction>> {
        let go_on = &mut go_on(on_batch, stop);
        on_engine!(&self.engine, |be, m| {
            let params = bind(be, m, task, prompt)?;
            train::predict_until(be, m, &task.inner, &params, data, batch_size, go_on)
        })
        .map_err(|e| prompt.blame_overflow(e))
    }
}

/// The engine's question after each batch: `on_batch` hears the rows done, then the answer is
/// whether `stop` is still unset.
fn go_on<'a>(
    on_batch: &'a mut dyn FnMut(usize),
    stop: &'a AtomicBool,
) -> impl FnMut(usize) -> bool + 'a {
    move |done| {
        on_batch(done);
        !stop.load(Ordering::SeqCst)
    }
}
