//! Many prompts, one frozen model: prediction and the training step over rows that each name
//! their job (a task and its prompt), batches mixing jobs.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checks::{bind, check_row};
use super::model::{on_engine, Engine, Model, StepOutput};
use super::prompt::Prompt;
use super::task::Task;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::train::encode::Row;
use crate::train::model_id::TaskStamp;
use crate::train::room::{self, Placing};
use crate::train::{self, Grads, Prediction};
use std::sync::atomic::AtomicBool;

impl Model {
    /// Every row's prediction, in input order, where each row names the job it belongs to: an
    /// index into `jobs`, each a task with its prompt. Jobs may differ in task (template,
    /// labels, verbalizer, `cls` head) on this one model; encode each row with its own job's
    /// task ([`Model::encode`]). Batches of up to `batch_size` rows mix jobs: the rows of
    /// every job share batches, each row reading its own prompt (of its own length) from a
    /// table on the device and scored by its own job (BERT `pet`, `cls`; T5 `seq2seq` and
    /// decoder-only `causal` by rank classification over its own label targets); prefix-tuning
    /// prompts mix too, each row reading its own prefix in every attention layer. Jobs that
    /// decode greedily (free targets, `--decode greedy`) share batches of their own: T5 rows
    /// decode together after one encoder pass, a decoder's rows generate in one left-padded
    /// batch with the KV cache, each behind its own prompt (a prefix-tuning job's rows behind
    /// their own prefix of the batch's stack) and under its own job's limits. The scores equal those
    /// of [`Model::predict`] on each job's rows alone within 1e-5 relative (the make-up of a
    /// batch changes the last bits), the generated tokens exactly. A row naming no job is an
    /// error naming the row; a row whose scores or logits are not finite numbers is an
    /// [`Error::Overflow`] naming the row, its job and the job's prompt file.
    pub fn predict_mixed(
        &self,
        jobs: &[(&Task, &Prompt)],
        rows: &[(usize, Row)],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        let never = &super::until::NEVER;
        self.predict_mixed_until(jobs, rows, batch_size, &mut |_| {}, never)
    }

    /// As [`Model::predict_mixed`], stopped as [`Model::evaluate_until`] is: `on_batch`
    /// hears the rows done so far, of every job, after each batch.
    pub fn predict_mixed_until(
        &self,
        jobs: &[(&Task, &Prompt)],
        rows: &[(usize, Row)],
        batch_size: usize,
        on_batch: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<Vec<Prediction>> {
        crate::cpu::threads::enter_compute()?;
        let go_on = &mut super::until::go_on(on_batch, stop);
        on_engine!(&self.engine, |be, m| {
            with_jobs(be, m, jobs, rows, Placing::Score, |mixed| {
                train::mixed::predict_mixed_until(be, m, mixed, rows, batch_size, go_on)
            })
        })
    }

    /// One training step's numbers over `rows` (one batch) where each row names its job (an
    /// index into `jobs`, each a task with its prompt): one [`StepOutput`] a job, in the order
    /// of `jobs`, holding that job's mean loss over its own rows, the gradients of its prompt
    /// (and `cls` head), and its rows' real tokens. Nothing is updated: a multi-task loop
    /// applies each job's gradients to its own prompt. The rows of every job run as one batch
    /// (one pass of the model, or one per run of similar prompt lengths where padding every
    /// row to the longest would cost more than a pass; each row reading its own prompt of its
    /// own length; BERT `pet`
    /// and `cls`, T5 `seq2seq` and decoder-only `causal` alike), each job's loss the mean over
    /// its own rows (its own target tokens on T5 and the decoders). Prefix-tuning jobs (their
    /// prefixes stacked, their gradient the prefix table's) share that batch on every family:
    /// one backward gives the prompts' gradients and the prefixes' at once. Each job's output equals
    /// [`Model::step`] on its rows alone within 1e-5 relative. A job's loss is not
    /// weighted by its share of the batch: the batch's mean loss would scale job j's
    /// gradients by its rows over the batch's rows, and change nothing else. A job with no
    /// row in the batch gets loss 0, zero gradients and 0 tokens; an empty batch or a row
    /// naming no job is an error naming the rows.
    pub fn step_mixed(
        &self,
        jobs: &[(&Task, &Prompt)],
        rows: &[(usize, Row)],
    ) -> Result<Vec<StepOutput>> {
        crate::cpu::threads::enter_compute()?;
        let recompute = self.recompute;
        on_engine!(&self.engine, |be, m| {
            m.net.check_recompute(recompute)?;
            let steps = with_jobs(be, m, jobs, rows, Placing::Train, |mixed| {
                train::mixed::step_mixed(be, m, mixed, rows, recompute)
            })?;
            (steps.iter())
                .map(|s| step_output(be, s.loss, &s.grads, s.tokens))
                .collect()
        })
    }
}

/// `f` on the jobs bound to the device: each prompt (and head) checked against its task, and
/// every row made on this model for its job's task, within that task's lengths.
fn with_jobs<B: Backend, T>(
    be: &B,
    m: &train::Model<B>,
    jobs: &[(&Task, &Prompt)],
    rows: &[(usize, Row)],
    placing: Placing,
    f: impl FnOnce(&[train::mixed::MixJob<'_, B>]) -> Result<T>,
) -> Result<T> {
    let params = (jobs.iter())
        .map(|(task, prompt)| bind(be, m, task, prompt))
        .collect::<Result<Vec<_>>>()?;
    // a causal job's targets behind its rows fit the positions, as `predict` checks them
    for (task, prompt) in jobs {
        room::check_room(&task.inner, m, prompt.rows(), placing)?;
    }
    let stamps: Vec<_> = (jobs.iter())
        .map(|(t, _)| TaskStamp::of(&t.inner.spec))
        .collect();
    for (i, (job, row)) in rows.iter().enumerate() {
        // a job past the jobs is refused by the engine's own check, naming the row
        if let (Some((task, prompt)), Some(stamp)) = (jobs.get(*job), stamps.get(*job)) {
            // each row against its own job's task ([MASK] included): a batch is padded by its
            // first job's task
            check_row(row, i, (task, stamp), prompt.rows(), m, "rows")?;
        }
    }
    let mixed: Vec<_> = (jobs.iter().zip(&params))
        .map(|((task, _), params)| (&task.inner, params))
        .collect();
    // a result that is not a finite number names the prompt of its row, as predict's does
    f(&mixed).map_err(|e| match &e {
        Error::Overflow { job, .. } => match jobs.get(*job) {
            Some((_, prompt)) => prompt.named_overflow(e),
            None => e,
        },
        _ => e,
    })
}

/// A step's numbers on the host: the loss, the gradients downloaded, the real tokens.
pub(super) fn step_output<B: Backend>(
    be: &B,
    loss: f64,
    grads: &Grads<B>,
    tokens: usize,
) -> Result<StepOutput> {
    let head_grad = match &grads.head {
        Some(h) => Some(h.download(be)?),
        None => None,
    };
    Ok(StepOutput {
        loss,
        prompt_grad: be.download(&grads.prompt)?,
        head_grad: head_grad.map(|h| (h.weight, h.bias)),
        tokens,
    })
}
