//! Mixed batches of T5 `seq2seq` and decoder-only `causal` jobs (`mixed.rs` is the rest):
//! rows read their own prompt, of their own length, from one table (K, P, C) as BERT's do.
//! T5: the encoder row is [its P_b prompt rows, its tokens, P - P_b padding rows], the
//! padding masked in the encoder and in the decoder's cross-attention, so the relative
//! position bias sees what the prompt's own batch sees. Decoders keep PEFT's CAUSAL_LM
//! placement per row: [its P_b prompt rows, its tokens (and target) at positions P_b.., right
//! padding], so RoPE positions and ALiBi read each row as its own batch does.
//! Prediction is rank classification: in round k every row scores its own job's k-th label
//! target (rows whose job has fewer labels sit the round out), one encoder pass per batch on
//! T5; a decoder runs the rows once and every round's targets in one batch against their keys
//! and values (`Decoder::rank_prefill`). Training splits the LM loss by job (`split_by_job`): each job's mean over its own
//! target tokens, so each prompt's gradient is its own batch's.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::Batch;
use super::causal::joined;
use super::decode::{encoder_once, Prediction};
use super::mixed::{predict_chunks, row_lens, Group, JobStep};
use super::mixed_grads::SplitGrads;
use super::mixed_prefix::PrefixStack;
use super::model::Model;
use super::task::Task;
use crate::backend::{Backend, IGNORE_INDEX};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::decoder::Decoder;
use crate::models::lm_head::{split_by_job, LossRows};
use crate::models::t5::{self, T5};
use crate::models::{MixedPrompts, Recompute};

/// `seq2seq` jobs in mixed batches: each row's label scores (rank classification) and class,
/// the encoder run once per batch.
pub(super) fn predict_t5<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &T5<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let table = gr.table(be, gr.lens().0, m.cfg.d_model)?;
    let stack = PrefixStack::of(be, gr)?;
    let (mut acct, mut enc_out) = (MemoryAccountant::new(), None);
    predict_ranked(be, model, gr, batch_size, |r| {
        if r.index == 0 {
            enc_out = None; // a new batch
        }
        let tokens = &r.batch.tokens;
        let inp = t5::upload_inputs(be, &m.cfg, tokens, r.p, r.targets, r.l)?;
        let mut inp = inp.with_prompts(be, r.mix, tokens)?;
        if let Some(st) = &stack {
            inp = inp.with_prefix(be, &m.cfg, st.inputs(be, model, r.mix.idx)?)?;
        }
        let enc = encoder_once(&mut enc_out, be, m, &mut acct, &table, &inp)?;
        let (dec_out, _acts) = m.decoder_fwd(be, &mut acct, enc, &inp, Recompute::Layer, None)?;
        let n = tokens.b * r.l;
        let losses = m.lm_row_losses(be, &dec_out, r.targets, n)?;
        Ok(((0..n as i32).collect(), losses, r.l))
    })
}

/// `causal` jobs in mixed batches: each row's label scores (rank classification) and class,
/// the rows run once per batch (`Decoder::rank_prefill`: each row behind its own prompt or
/// prefix), then every row's label targets in one batch against their keys and values.
pub(super) fn predict_causal<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Decoder<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let p = gr.lens().0;
    let table = gr.table(be, p, m.cfg.hidden_size)?;
    let stack = PrefixStack::of(be, gr)?;
    let mut acct = MemoryAccountant::new();
    ranked_chunks(be, model, gr, batch_size, |batch, mix, tasks, sums| {
        let (targets, rounds, l) = all_targets(tasks, sums.rounds());
        let pre = (stack.as_ref())
            .map(|st| st.inputs(be, model, mix.idx))
            .transpose()?;
        let mut prefill = m.rank_prefill(be, &table, &batch.tokens, p, Some(mix), pre)?;
        let (rows, losses) = m.rank_losses(be, &mut acct, &mut prefill, &targets, rounds, l)?;
        for (&r, &loss) in rows.iter().zip(&losses) {
            let (bi, round) = (r as usize / rounds.max(1), r as usize % rounds.max(1));
            sums.add(round, &[bi as i32], &[loss], 1);
        }
        Ok(())
    })
}

/// Every round's targets (B, R, L), -100 padded: row b's job's label targets in order (none
/// past its job's count); and R, L.
fn all_targets(tasks: &[&Task], rounds: usize) -> (Vec<i32>, usize, usize) {
    let each: Vec<(Vec<i32>, usize)> = (0..rounds).map(|i| round_targets(tasks, i)).collect();
    let l = each.iter().map(|(_, l)| *l).max().unwrap_or(1);
    let mut out = vec![IGNORE_INDEX; tasks.len() * rounds * l];
    for (i, (targets, li)) in each.iter().enumerate() {
        for (bi, row) in targets.chunks((*li).max(1)).enumerate() {
            let at = (bi * rounds + i) * l;
            if let Some(dst) = out.get_mut(at..at + row.len()) {
                dst.copy_from_slice(row);
            }
        }
    }
    (out, rounds, l)
}

/// One round of rank scoring over one batch: its rows' prompts in the table of P rows, and
/// the round's targets (B, L), -100 padded (`round_targets`).
struct Round<'r> {
    batch: &'r Batch,
    mix: &'r MixedPrompts<'r>,
    p: usize,
    /// the label index every row scores this round
    index: usize,
    targets: &'r [i32],
    l: usize,
}

/// Rank classification of `gr`'s rows in mixed batches: in round k every row scores its own
/// job's k-th label target (rows whose job has fewer labels sit the round out); `losses`
/// gives the round's target-token losses at flat rows (row r in batch row r / width), as
/// (rows, losses, width), and each row's score is minus its sum.
fn predict_ranked<B: Backend>(
    be: &B,
    model: &Model<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
    mut losses: impl FnMut(&Round) -> Result<(Vec<i32>, Vec<f32>, usize)>,
) -> Result<Vec<Prediction>> {
    let p = gr.lens().0;
    ranked_chunks(be, model, gr, batch_size, |batch, mix, tasks, sums| {
        for index in 0..sums.rounds() {
            let (targets, l) = round_targets(tasks, index);
            let targets = &targets;
            let r = Round {
                batch,
                mix,
                p,
                index,
                targets,
                l,
            };
            let (rows, row_losses, width) = losses(&r)?;
            sums.add(index, &rows, &row_losses, width);
        }
        Ok(())
    })
}

/// `gr`'s rows in mixed batches, `score` adding each batch's target losses into each row's
/// sums (it gets the batch, its rows' prompts, their tasks), each row then classified.
fn ranked_chunks<B: Backend>(
    be: &B,
    model: &Model<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
    mut score: impl FnMut(&Batch, &MixedPrompts, &[&Task], &mut Sums) -> Result<()>,
) -> Result<Vec<Prediction>> {
    let (job_lens, k) = (gr.lens().1, gr.group.len());
    predict_chunks(be, model, gr, batch_size, label_len(gr)?, |batch, idx| {
        let lens = row_lens(idx, job_lens.as_deref());
        let mix = MixedPrompts {
            idx,
            k,
            lens: lens.as_deref(),
        };
        let tasks = gr.row_tasks(idx)?;
        let mut sums = Sums::new(&tasks);
        score(batch, &mix, &tasks, &mut sums)?;
        sums.classified(&tasks)
    })
}

/// The longest label target of the group's jobs (the decoder positions rank scoring needs).
fn label_len<B: Backend>(gr: &Group<'_, '_, B>) -> Result<usize> {
    let mut longest = 0;
    for k in 0..gr.group.len() {
        let (task, _) = gr.job(k)?;
        longest = (task.label_targets.iter().map(Vec::len)).fold(longest, usize::max);
    }
    Ok(longest)
}

/// Round `round`'s targets (B, L), -100 padded: row b's job's label target of that index,
/// none for a row whose job has fewer labels; and L (at least 1).
fn round_targets(tasks: &[&Task], round: usize) -> (Vec<i32>, usize) {
    let target = |t: &Task| t.label_targets.get(round).cloned().unwrap_or_default();
    let l = tasks
        .iter()
        .map(|t| target(t).len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = vec![IGNORE_INDEX; tasks.len() * l];
    for (row, task) in out.chunks_mut(l).zip(tasks) {
        let tg = target(task);
        if let Some(dst) = row.get_mut(..tg.len()) {
            dst.copy_from_slice(&tg);
        }
    }
    (out, l)
}

/// Each batch row's summed target losses, one a label of its job (B, K_b), in f64.
struct Sums(Vec<Vec<f64>>);

impl Sums {
    fn new(tasks: &[&Task]) -> Sums {
        Sums(
            tasks
                .iter()
                .map(|t| vec![0.0; t.spec.labels.len()])
                .collect(),
        )
    }

    /// The rounds: the most labels of any row's job.
    fn rounds(&self) -> usize {
        self.0.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Adds round `round`'s `losses` at flat `rows` (row r in batch row r / `width`) into
    /// each row's sum for that label, in row order (as a prompt's own batch sums them).
    fn add(&mut self, round: usize, rows: &[i32], losses: &[f32], width: usize) {
        for (&r, &loss) in rows.iter().zip(losses) {
            let sum = (self.0.get_mut(r as usize / width.max(1))).and_then(|s| s.get_mut(round));
            if let Some(sum) = sum {
                *sum += loss as f64;
            }
        }
    }

    /// Each row's prediction: its job's class over the scores, minus the sums.
    fn classified(&self, tasks: &[&Task]) -> Result<Vec<Option<Prediction>>> {
        (self.0.iter().zip(tasks).enumerate())
            .map(|(bi, (sums, task))| {
                let scores: Vec<f32> = sums.iter().map(|&s| -s as f32).collect();
                let pred = task
                    .classified(&scores)
                    .map_err(|e| e.overflow_at(|_, j| (bi, j)))?;
                Ok(pred.into_iter().next())
            })
            .collect()
    }
}

/// The rows of `gr` in one batch, its table, and each row's prompt layout.
struct StepBatch<B: Backend> {
    batch: Batch,
    table: B::Buf,
    /// the prefix jobs' stack, whose gradient the step fills beside the table's
    stack: Option<PrefixStack<B>>,
    p: usize,
    c: usize,
    lens: Option<Vec<usize>>,
    /// the tasks' kind, which errors name
    kind: &'static str,
}

impl<B: Backend> StepBatch<B> {
    fn new(be: &B, gr: &Group<'_, '_, B>, c: usize, kind: &'static str) -> Result<Self> {
        let (first, _) = gr.job(0)?;
        let (p, job_lens) = gr.lens();
        let all: Vec<u32> = (0..gr.rows.enc.rows.len() as u32).collect();
        // every task of one model pads alike: the first one builds the batch
        let batch = first.batch_of_jobs(&gr.rows.enc, &all)?;
        if batch.l == 0 {
            return Err(no_targets(kind));
        }
        Ok(StepBatch {
            batch,
            table: gr.table(be, p, c)?,
            stack: PrefixStack::of(be, gr)?,
            p,
            c,
            lens: row_lens(&gr.rows.slot, job_lens.as_deref()),
            kind,
        })
    }

    fn mix<'s>(&'s self, gr: &'s Group<'_, '_, B>) -> MixedPrompts<'s> {
        MixedPrompts {
            idx: &gr.rows.slot,
            k: gr.group.len(),
            lens: self.lens.as_deref(),
        }
    }

    /// `step` (the accountant, the gradients to add into: the prompt table's (K, P, C) when
    /// a job has prompt rows, the prefix stack's (K·L, N·2·Hkv·D) when a job has a prefix)
    /// with the jobs' loss `parts` checked, then each job's numbers into `out`.
    fn run(
        &self,
        be: &B,
        gr: &Group<'_, '_, B>,
        parts: &[LossRows],
        out: &mut [JobStep<B>],
        step: impl FnOnce(
            &mut MemoryAccountant,
            Option<&mut B::Buf>,
            Option<&mut B::Buf>,
        ) -> Result<Vec<f64>>,
    ) -> Result<()> {
        check_parts(gr, parts, self.kind)?;
        let mut grads = SplitGrads::zeros(be, gr, self.p, self.c, self.stack.as_ref())?;
        let (dtable, dstack) = (grads.dtable.as_mut(), grads.dstack.as_mut());
        let losses = step(&mut MemoryAccountant::new(), dtable, dstack)?;
        grads.finish(be, gr, &losses, out)
    }
}

/// The mixed step of `seq2seq` jobs: one pass of both stacks, each job's mean LM loss over
/// its own decoder rows.
pub(super) fn step_t5<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &T5<B>,
    gr: &Group<'_, '_, B>,
    recompute: Recompute,
    out: &mut [JobStep<B>],
) -> Result<()> {
    let sb = StepBatch::new(be, gr, m.cfg.d_model, "seq2seq")?;
    let (tokens, targets, l) = (&sb.batch.tokens, &sb.batch.targets, sb.batch.l);
    let inp = t5::upload_inputs(be, &m.cfg, tokens, sb.p, targets, l)?;
    let mut inp = inp.with_prompts(be, &sb.mix(gr), tokens)?;
    if let Some(st) = &sb.stack {
        inp = inp.with_prefix(be, &m.cfg, st.inputs(be, model, &gr.rows.slot)?)?;
    }
    let flat: Vec<i32> = (0..(tokens.b * l) as i32).collect();
    let parts = split_by_job(&flat, targets, l, &gr.rows.slot, gr.group.len());
    sb.run(be, gr, &parts, out, |acct, dtable, dstack| {
        m.train_step_parts(be, acct, dtable, dstack, &sb.table, &inp, &parts, recompute)
    })
}

/// The mixed step of `causal` jobs: each row's tokens and target (PEFT's rows), one pass of
/// the stack, each job's mean LM loss over its own target tokens.
pub(super) fn step_causal<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Decoder<B>,
    gr: &Group<'_, '_, B>,
    recompute: Recompute,
    out: &mut [JobStep<B>],
) -> Result<()> {
    let sb = StepBatch::new(be, gr, m.cfg.hidden_size, "causal")?;
    let pad = gr.job(0)?.0.pad_id;
    let b = &sb.batch;
    let (tokens, labels) = joined(&b.tokens, &b.targets, b.l, pad);
    let mut inp = m.upload_mixed_inputs(be, &tokens, sb.p, Some(&labels), Some(&sb.mix(gr)))?;
    if let Some(st) = &sb.stack {
        let pre = st.inputs(be, model, &gr.rows.slot)?;
        inp = m.with_mixed_prefix(be, inp, pre, &st.row_lens(&gr.rows.slot))?;
    }
    let (k, s) = (gr.group.len(), inp.s());
    let parts = split_by_job(&inp.rows, &inp.targets, s, &gr.rows.slot, k);
    sb.run(be, gr, &parts, out, |acct, dtable, dstack| {
        m.train_step_parts(be, acct, dtable, dstack, &sb.table, &inp, &parts, recompute)
    })
}

/// A job with rows in the batch but no target token among them (`step_mixed` refuses each
/// row without a target first: a backstop).
fn check_parts<B: Backend>(gr: &Group<'_, '_, B>, parts: &[LossRows], kind: &str) -> Result<()> {
    for (k, part) in parts.iter().enumerate() {
        let has_rows = gr.rows.slot.contains(&(k as i32));
        if has_rows && part.targets.iter().all(|&t| t == IGNORE_INDEX) {
            return Err(no_targets(kind));
        }
    }
    Ok(())
}

fn no_targets(kind: &str) -> Error {
    let msg = format!("training needs targets: the batch's {kind} rows have none");
    Error::arg("targets", msg)
}
