//! Encoding, evaluation, prediction and generation that a flag stops between their parts
//! (chunks of rows, batches, tokens): Ctrl-C in a long call (the Python package sets the flag
//! from its signal check after each part).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checks::{bind, check_model, check_rows};
use super::model::{cannot_generate, on_engine, Engine, Generation, Model};
use super::prompt::Prompt;
use super::task::Task;
use crate::error::{Error, GoOn, Result};
use crate::models::decoder::{GenerateOptions, PromptPlacement};
use crate::train::data::{Dataset, Example};
use crate::train::{self, EvalMetrics, Prediction};
use crate::Encoded;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

impl Model {
    /// As [`Model::evaluate`]; `on_batch` hears the rows done after each batch, and once
    /// `stop` is set (from the callback, a signal handler or another thread) the call ends
    /// after the batch under way, returning [`Error::Interrupted`] and no result. A stop set
    /// during the last batch comes too late to save anything: the result is returned.
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
        let preds = self.predictions(task, prompt, data, batch_size, go_on, true)?;
        Ok((train::eval::scores(&task.inner, data, &preds), preds))
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
        self.predictions(task, prompt, data, batch_size, go_on, false)
    }

    /// The body of [`Model::evaluate_until`] and [`Model::predict_until`]: every row's
    /// prediction, after the checks of the prompt, the rows and, when `labelled` (evaluation),
    /// that some row has a label; an overflow named after the prompt.
    fn predictions(
        &self,
        task: &Task,
        prompt: &Prompt,
        data: &Encoded,
        batch_size: usize,
        go_on: GoOn<'_>,
        labelled: bool,
    ) -> Result<Vec<Prediction>> {
        crate::cpu::threads::enter_compute()?;
        on_engine!(&self.engine, |be, m| {
            let params = bind(be, m, task, prompt)?;
            // before the rows' own bound, which counts no target (its advice did not run)
            let longest = data.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
            train::eval::check_causal_room(m, &task.inner, prompt.rows(), longest)?;
            check_rows(&data.rows, task, prompt.rows(), m, "data")?;
            if labelled {
                train::eval::check_labelled(&task.inner, data)?;
            }
            train::predict_until(be, m, &task.inner, &params, data, batch_size, go_on)
        })
        .map_err(|e| prompt.named_overflow(e))
    }

    /// As [`Model::encode`], stopped as [`Model::evaluate_until`] is: `on_rows` hears the
    /// rows encoded after each chunk of them.
    pub fn encode_until(
        &self,
        task: &Task,
        data: &Dataset,
        on_rows: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<Encoded> {
        crate::cpu::threads::enter_compute()?;
        let go_on = &mut go_on(on_rows, stop);
        on_engine!(&self.engine, |_be, m| {
            // the kind first: a task of another kind of model gets the command line's advice
            task.inner.check_model(m)?;
            check_model(task, m)?;
            task.inner.encode_until(&m.tokenizer, data, go_on)
        })
    }

    /// As [`Model::generate`], stopped as [`Model::evaluate_until`] is: `on_token` hears the
    /// tokens each row of the batch under way (64 texts) has generated after each step.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_until(
        &self,
        task: &Task,
        prompt: &Prompt,
        texts: &[String],
        max_new_tokens: usize,
        placement: PromptPlacement,
        on_token: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<Vec<Generation>> {
        crate::cpu::threads::enter_compute()?;
        // 0 would answer empty texts as if the model had stopped at once
        if max_new_tokens == 0 {
            return Err(Error::arg(
                "--max-new-tokens",
                "is 0: expected at least 1 new token",
            ));
        }
        let data = Dataset {
            path: PathBuf::from("the texts"),
            examples: (texts.iter().enumerate())
                .map(|(i, t)| Example {
                    text: t.clone(),
                    label: None,
                    line: i + 1,
                })
                .collect(),
        };
        let go_on = &mut go_on(on_token, stop);
        on_engine!(&self.engine, |be, m| {
            let decoder = (m.net.decoder()).ok_or_else(|| cannot_generate(m.arch_name()))?;
            check_model(task, m)?;
            let enc = task.inner.encode(&m.tokenizer, &data)?;
            let rows: Vec<Vec<i32>> = enc.rows.iter().map(|r| r.ids.clone()).collect();
            let opts = GenerateOptions {
                max_new_tokens,
                stop: task.inner.stop_ids(&decoder.cfg)?,
                placement,
                keep_logits: false,
            };
            let params = bind(be, m, task, prompt)?;
            // in batches: one batch of every text held a KV cache for each of them (16,000
            // texts took 3.7 GB on a 2-layer model; hostile pass 19)
            let (mut ids, mut logprob) = (Vec::new(), Vec::new());
            for (k, batch) in rows.chunks(GENERATE_BATCH).enumerate() {
                // asked between batches too: a caller that checks for Ctrl-C there (Python)
                // was never asked under max_new_tokens 1, however many batches
                if k > 0 && !go_on(max_new_tokens) {
                    return Err(Error::Interrupted(format!(
                        "interrupted after {} of {} texts: nothing is returned",
                        ids.len(),
                        rows.len()
                    )));
                }
                let g = train::causal::generate_with(be, m, decoder, &params, batch, &opts, go_on)
                    .map_err(|e| prompt.named_overflow(e))?;
                ids.extend(g.ids);
                logprob.extend(g.logprob);
            }
            (ids.into_iter().zip(logprob).zip(&enc.rows))
                .map(|((ids, logprob), row)| {
                    // the stop token that ended a row ends its text, and is no part of it
                    let text = match ids.split_last() {
                        Some((last, body)) if opts.stop.contains(last) => body,
                        _ => &ids,
                    };
                    Ok(Generation {
                        text: m.tokenizer.decode(text, true)?,
                        ids,
                        logprob,
                        truncated: row.truncated,
                    })
                })
                .collect()
        })
    }
}

/// The texts `generate` runs in each left-padded batch (each row's tokens are the ones it
/// gets alone, whatever the batch).
const GENERATE_BATCH: usize = 64;

/// The stop flag of the calls that take none (`Model::evaluate` and the others beside each
/// `_until` form): nothing sets it.
pub(super) static NEVER: AtomicBool = AtomicBool::new(false);

/// The engine's question after each part (a batch, a chunk of rows, a token): `on_part` hears
/// the count done, then the answer is whether `stop` is still unset.
pub(super) fn go_on<'a>(
    on_part: &'a mut dyn FnMut(usize),
    stop: &'a AtomicBool,
) -> impl FnMut(usize) -> bool + 'a {
    move |done| {
        on_part(done);
        !stop.load(Ordering::SeqCst)
    }
}
