//! The trainable state and one batch's loss and gradient: the task chooses the objective, the
//! model runs its one training step.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::{Batch, LabelUse};
use super::model::Model;
use super::spec::TaskKind;
use super::task::{job, Job, Task};
use crate::backend::{Backend, DType, IGNORE_INDEX};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::cls_head::{ClsHead, HostClsHead};
use crate::models::{Objective, PrefixSpec, Recompute, TokenBatch, Tuning};

/// The trainable state: the prompt (P, d) on the backend, and the `cls` head. Under prefix
/// tuning (`prefix` set) `prompt` is the prefix table (P, N·2·Hkv·D), `d` its width, and no
/// row enters the input.
pub struct Params<B: Backend> {
    pub prompt: B::Buf,
    pub p: usize,
    pub d: usize,
    pub head: Option<ClsHead<B>>,
    /// prefix tuning: where the table's blocks go
    pub prefix: Option<PrefixSpec>,
}

impl<B: Backend> Params<B> {
    /// The rows in front of the input tokens: P for a prompt, none for a prefix.
    pub fn input_rows(&self) -> usize {
        match self.prefix {
            Some(_) => 0,
            None => self.p,
        }
    }
}

/// Gradients of `Params`: the prompt's is added into (zero it first), the head's replaced by
/// each step's.
pub struct Grads<B: Backend> {
    pub prompt: B::Buf,
    pub head: Option<ClsHead<B>>,
}

impl<B: Backend> Grads<B> {
    pub fn zeros(be: &B, params: &Params<B>) -> Result<Grads<B>> {
        Ok(Grads {
            prompt: be.zeros(DType::F32, params.p * params.d)?,
            head: params
                .head
                .as_ref()
                .map(|h| ClsHead::zeros(be, h.k, h.c))
                .transpose()?,
        })
    }
}

impl Task {
    /// A fresh `cls` head (zeros: plain softmax regression at the start), None for other tasks.
    pub fn new_head(&self, d: usize) -> Option<HostClsHead> {
        (self.spec.kind == TaskKind::Cls).then(|| HostClsHead::zeros(self.spec.labels.len(), d))
    }

    /// Forward and backward of one batch: returns the mean loss, adds d loss / d prompt into
    /// `grads.prompt` and writes the head's gradients.
    pub fn loss_and_grad<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        grads: &mut Grads<B>,
        batch: &Batch,
        recompute: Recompute,
    ) -> Result<f64> {
        let joined;
        let (tokens, objective) = match job(self.spec.kind, model)? {
            Job::Pet(_) => {
                check_batch_labels(self, &batch.labels)?;
                let objective = Objective::Pet {
                    mask_positions: &batch.mask_pos,
                    verbalizer_ids: &self.verbalizer_ids,
                    labels: &batch.labels,
                };
                (&batch.tokens, objective)
            }
            Job::Cls(_) => {
                check_batch_labels(self, &batch.labels)?;
                let objective = Objective::Cls {
                    head: cls_head(params)?,
                    pooling: self.spec.pooling,
                    labels: &batch.labels,
                };
                (&batch.tokens, objective)
            }
            Job::Seq2Seq(_) => {
                check_batch_targets(self, batch)?;
                let objective = Objective::Seq2Seq {
                    labels: &batch.targets,
                    l: batch.l,
                };
                (&batch.tokens, objective)
            }
            Job::Causal(_) => {
                check_batch_targets(self, batch)?;
                joined = joined_batch(batch, self.pad_id);
                (&joined.0, Objective::Causal { labels: &joined.1 })
            }
        };
        let mut acct = MemoryAccountant::new();
        let (dprompt, prompt) = (&mut grads.prompt, &params.prompt);
        let tuning = Tuning::of(params.p, params.prefix);
        let out = model.net.train_step(
            be, &mut acct, dprompt, prompt, tokens, tuning, &objective, recompute, None,
        )?;
        if out.head_grads.is_some() {
            grads.head = out.head_grads;
        }
        Ok(out.loss)
    }
}

/// `causal`: each row's tokens followed by its target, and the labels on the target.
fn joined_batch(batch: &Batch, pad: i32) -> (TokenBatch, Vec<i32>) {
    super::causal::joined(&batch.tokens, &batch.targets, batch.l, pad)
}

/// Every row of a `seq2seq` or `causal` batch has a target (its first target token set: a
/// row's target is right-padded with -100): a batch made by hand reaches the step without
/// `Task::check_labels` on its rows, and a row without was left out of the loss.
fn check_batch_targets(task: &Task, batch: &Batch) -> Result<()> {
    (0..batch.tokens.b).try_for_each(|b| {
        let first = batch.targets.get(b * batch.l).copied();
        let has = first.is_some_and(|t| t != IGNORE_INDEX);
        task.check_target(b, has, LabelUse::Step)
    })
}

/// Every row of a `pet` or `cls` batch has a label of `task` (B labels, -100 for none): a
/// batch made by hand reaches the step without `Task::check_labels` on its rows.
fn check_batch_labels(task: &Task, labels: &[i32]) -> Result<()> {
    (labels.iter().enumerate())
        .try_for_each(|(b, &l)| task.check_label(b, usize::try_from(l).ok(), LabelUse::Step))
}

/// `cls`: the trained classifier head.
pub(super) fn cls_head<B: Backend>(params: &Params<B>) -> Result<&ClsHead<B>> {
    params
        .head
        .as_ref()
        .ok_or_else(|| Error::arg("--task cls", "the classifier head is missing"))
}
