//! Many prompts, one frozen model: prediction and the training step over rows of several jobs
//! (each a task and its prompt), batches mixing jobs. The jobs' prompts sit in one table on the
//! device (K, P, C), each row reads its own (`embedding_fwd`'s prompt index), and each row is
//! scored by its own job. Prompt lengths may differ: the table is padded to the longest prompt
//! P, and when lengths differ row b is [its P_b prompt rows, its tokens from position P_b on,
//! P - P_b masked padding rows] (`embedding_fwd`'s prompt lengths), so each row computes what
//! its prompt's own batch computes. Every family mixes: BERT's `pet` and `cls` jobs (here: the
//! verbalizer or `cls` head per job; `bert::upload_rows`), T5's `seq2seq` and the
//! decoder-only models' `causal` jobs (`mixed_lm.rs`: rank classification with each row's own
//! label targets, the LM loss split per job; `T5Inputs::with_prompts`,
//! `Decoder::upload_mixed_inputs`, PEFT's CAUSAL_LM placement kept per row). Greedy decoding
//! (free targets, `--decode greedy`) mixes jobs too, in batches of its own
//! (`mixed_greedy.rs`: T5's encoder once over the table, then every row's decoding together;
//! a decoder's generation left-padded with each row's prompt, or prefix, right before its
//! tokens; prefix jobs too). The step runs the same way:
//! one forward over the table, each job's loss and head gradient on its own rows, one backward
//! whose table gradient (K, P, C) holds every prompt's (`prompt_grad_bwd` sums each prompt's
//! rows). Prefix-tuning jobs share that batch on every family (`mixed_prefix.rs`): the same
//! backward fills their stack's gradient too, and each job takes its slice
//! (`mixed_grads.rs`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::{Batch, LabelUse};
use super::decode::{Prediction, RowLayout};
use super::encode::{Encoded, Row};
use super::eval::predict_until;
use super::mixed_grads::SplitGrads;
use super::mixed_greedy;
use super::mixed_groups::{by_prompt_len, decodes_greedily, group_lens, mixable, one_job, Mix};
use super::mixed_lm;
use super::mixed_prefix::PrefixStack;
use super::model::Model;
use super::spec::TaskKind;
use super::step::{cls_head, Grads, Params};
use super::task::Task;
use crate::backend::{Backend, DType};
use crate::error::{BatchSetting, Error, GoOn, Result};
use crate::memory::MemoryAccountant;
use crate::models::bert::{self, Bert, HeadRows, Tail};
use crate::models::cls_head::ClsHead;
use crate::models::heads::{self, Decoder};
use crate::models::Recompute;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;

/// What messages call the rows of a mixed call (a data error's path).
pub(crate) const ROWS: &str = "the mixed rows";

/// One job: a task and its prompt (and head) on the device.
pub type MixJob<'a, B> = (&'a Task, &'a Params<B>);

/// Every row's prediction, in input order; `rows` name their job (an index into `jobs`).
/// Batches of at most `batch_size` rows mix the jobs that can share one (see the module).
pub fn predict_mixed<B: Backend>(
    be: &B,
    model: &Model<B>,
    jobs: &[MixJob<'_, B>],
    rows: &[(usize, Row)],
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    predict_mixed_until(be, model, jobs, rows, batch_size, &mut |_| true)
}

/// As [`predict_mixed`], asking `go_on` with the rows predicted so far after each batch,
/// whatever its group.
pub fn predict_mixed_until<B: Backend>(
    be: &B,
    model: &Model<B>,
    jobs: &[MixJob<'_, B>],
    rows: &[(usize, Row)],
    batch_size: usize,
    go_on: GoOn<'_>,
) -> Result<Vec<Prediction>> {
    if batch_size == 0 {
        return Err(Error::arg("batch_size", "is 0: expected at least 1"));
    }
    check_rows(jobs.len(), rows)?;
    let told = Told {
        done: Cell::new(0),
        total: rows.len(),
        go_on: RefCell::new(go_on),
        stop: Cell::new(false),
    };
    let tell = |rows: usize| told.batch(rows);
    let mut out: Vec<Option<Prediction>> = vec![None; rows.len()];
    for group in by_prompt_len(model, jobs, rows, Some(batch_size), false) {
        let Some(g) = GroupRows::new(rows, &group) else {
            continue;
        };
        let mix = mixable(model, jobs, &group, false);
        let gr = Group {
            jobs,
            group: &group,
            rows: &g,
            bert: matches!(mix, Some(Mix::Bert(_))),
            told: Some(&tell),
        };
        let greedy = decodes_greedily(jobs, &group);
        let preds = match mix {
            Some(Mix::T5(m)) if greedy => mixed_greedy::predict_t5(be, model, m, &gr, batch_size)?,
            Some(Mix::Causal(m)) if greedy => {
                mixed_greedy::predict_causal(be, model, m, &gr, batch_size)?
            }
            Some(Mix::Bert(m)) => predict_group(be, model, m, &gr, batch_size)?,
            Some(Mix::T5(m)) => mixed_lm::predict_t5(be, model, m, &gr, batch_size)?,
            Some(Mix::Causal(m)) => mixed_lm::predict_causal(be, model, m, &gr, batch_size)?,
            None => {
                let (task, params) = one_job(jobs, &group)?;
                let before = told.done.get();
                let last = Cell::new(0);
                let go_on = &mut |done: usize| {
                    last.set(done);
                    told.ask(before + done)
                };
                let preds = predict_until(be, model, task, params, &g.enc, batch_size, go_on);
                let preds = preds.map_err(|e| match e {
                    Error::Interrupted(_) => {
                        told.done.set(before + last.get());
                        told.interrupted()
                    }
                    e => g.overflow_at(e, &group, |r| (r, 0)),
                })?;
                told.done.set(before + g.enc.rows.len());
                // a stop heard during the group's last batch ends the call, if rows remain
                told.stop_here()?;
                preds
            }
        };
        for (&i, p) in g.members.iter().zip(preds) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(p);
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Every row names one of the `n` jobs, else an error naming the first that does not.
fn check_rows(n: usize, rows: &[(usize, Row)]) -> Result<()> {
    match rows.iter().enumerate().find(|(_, (j, _))| *j >= n) {
        Some((i, (j, _))) => Err(Error::arg(
            "rows",
            format!("row {i} names job {j} but there are {n} jobs"),
        )),
        None => Ok(()),
    }
}

/// The rows of one group of jobs, in input order.
pub(super) struct GroupRows {
    /// (R) each row's index in the caller's rows
    members: Vec<usize>,
    /// (R) the rows
    pub enc: Encoded,
    /// (R) each row's slot in the group's prompt table (its job's place in the group)
    pub slot: Vec<i32>,
}

/// A group of jobs that share batches, and its rows.
pub(super) struct Group<'g, 'a, B: Backend> {
    pub jobs: &'g [MixJob<'a, B>],
    /// the jobs (indices into `jobs`), in the table's order
    pub group: &'g [usize],
    pub rows: &'g GroupRows,
    /// BERT jobs: a prefix job's tokens sit behind hidden front rows (`front_rows`)
    pub bert: bool,
    /// prediction: told the rows done after each batch (the step has none)
    pub told: Option<&'g dyn Fn(usize) -> Result<()>>,
}

/// The rows predicted so far over every group of a call, its `go_on`, and whether its last
/// answer was to stop.
pub(super) struct Told<'a> {
    done: Cell<usize>,
    total: usize,
    go_on: RefCell<GoOn<'a>>,
    stop: Cell<bool>,
}

impl Told<'_> {
    /// `rows` more done: asks `go_on` (an interruption ends the call while rows remain).
    fn batch(&self, rows: usize) -> Result<()> {
        self.done.set(self.done.get() + rows);
        crate::error::ask(
            &mut |done| self.ask(done),
            self.done.get(),
            self.total,
            "rows",
        )
    }

    /// `go_on`'s answer for `done` rows of the call.
    fn ask(&self, done: usize) -> bool {
        let go = match self.go_on.try_borrow_mut() {
            Ok(mut go_on) => go_on(done),
            Err(_) => true,
        };
        self.stop.set(!go);
        go
    }

    /// The interruption, in the call's counts, when the last answer was to stop and rows
    /// remain (a group predicted alone ends at its own last batch without asking again).
    fn stop_here(&self) -> Result<()> {
        match self.stop.get() && self.done.get() < self.total {
            true => Err(self.interrupted()),
            false => Ok(()),
        }
    }

    /// The call interrupted after the rows done so far (a group's own counts said "3 of 4").
    fn interrupted(&self) -> Error {
        let (done, total) = (self.done.get(), self.total);
        Error::Interrupted(format!(
            "interrupted after {done} of {total} rows: nothing is returned"
        ))
    }
}

impl<'a, B: Backend> Group<'_, 'a, B> {
    /// The group's k-th job.
    pub fn job(&self, k: usize) -> Result<MixJob<'a, B>> {
        (self.group.get(k).and_then(|&j| self.jobs.get(j)).copied())
            .ok_or_else(|| Error::arg("jobs", format!("job {k} of the group is missing")))
    }

    /// The task of each of `idx`'s rows (B): slot idx[b] of the group.
    pub fn row_tasks(&self, idx: &[i32]) -> Result<Vec<&'a Task>> {
        idx.iter().map(|&k| Ok(self.job(k as usize)?.0)).collect()
    }

    /// The table's P (the longest prompt) and each job's length when they differ.
    pub fn lens(&self) -> (usize, Option<Vec<usize>>) {
        group_lens(self.jobs, self.group, self.bert)
    }

    /// The group's prompts as one table (K, P, C) on the device (a prefix job's rows zero).
    pub fn table(&self, be: &B, p: usize, c: usize) -> Result<B::Buf> {
        prompt_table(be, self.jobs, self.group, p, c)
    }
}

impl GroupRows {
    /// An `Overflow` of the group's row (its index in `enc`) said of the caller's rows and
    /// jobs: `place` gives the row's index in `enc` and its slot in `group`.
    fn overflow_at(
        &self,
        e: Error,
        group: &[usize],
        place: impl FnOnce(usize) -> (usize, usize),
    ) -> Error {
        e.overflow_at(|r, _| {
            let (i, slot) = place(r);
            let row = self.members.get(i).copied().unwrap_or(i);
            (row, group.get(slot).copied().unwrap_or(slot))
        })
    }

    /// None when no row belongs to `group`.
    fn new(rows: &[(usize, Row)], group: &[usize]) -> Option<GroupRows> {
        let mut g = GroupRows {
            members: Vec::new(),
            enc: Encoded {
                path: PathBuf::from(ROWS),
                rows: Vec::new(),
                truncated: 0,
                truncated_targets: 0,
            },
            slot: Vec::new(),
        };
        for (i, (j, row)) in rows.iter().enumerate() {
            if let Some(k) = group.iter().position(|g| g == j) {
                g.members.push(i);
                g.enc.rows.push(row.clone());
                g.slot.push(k as i32);
            }
        }
        (!g.members.is_empty()).then_some(g)
    }
}

/// The prompts of `group` stacked into one table (K, P, C) on the device, in group order,
/// each padded with zero rows to the longest prompt's P (a prefix job's front rows zero).
fn prompt_table<B: Backend>(
    be: &B,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    p: usize,
    c: usize,
) -> Result<B::Buf> {
    let mut table = Vec::with_capacity(group.len() * p * c);
    for (_, params) in group.iter().filter_map(|&j| jobs.get(j)) {
        let end = table.len() + p * c;
        if params.prefix.is_none() {
            table.extend(be.download(&params.prompt)?);
        }
        table.resize(end, 0.0);
    }
    be.upload(DType::F32, &table)
}

/// The batch `tokens` on the device for the group's table: row b reads prompt `slot[b]` of
/// `k`, and, with `job_lens` (each job's prompt length), its own prompt's length of rows.
/// Returns the inputs and each row's prompt length (B) when they differ.
fn group_inputs<B: Backend>(
    be: &B,
    m: &Bert<B>,
    batch: &Batch,
    slot: &[i32],
    k: usize,
    p: usize,
    job_lens: Option<&[usize]>,
) -> Result<(bert::BertInputs<B>, Option<Vec<usize>>)> {
    let lens: Option<Vec<usize>> = job_lens.map(|job_lens| {
        (slot.iter())
            .map(|&s| job_lens.get(s as usize).copied().unwrap_or(p))
            .collect()
    });
    // each row checked against the position table behind its own prompt's P_b, not the
    // table's P: the batch's P + T may run past it (#17)
    let inp = bert::upload_rows(be, &m.cfg, &batch.tokens, p, lens.as_deref())?;
    Ok((inp.with_prompt_index(be, slot, k)?, lens))
}

/// The rows of `g` (all of `group`'s jobs), sorted by length into batches that mix jobs: one
/// encoder pass per batch over the table of the group's prompts, then each job's rows scored
/// by that job.
fn predict_group<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Bert<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let (p, job_lens) = gr.lens();
    let table = gr.table(be, p, m.cfg.hidden_size)?;
    let k = gr.group.len();
    let stack = PrefixStack::of(be, gr)?;
    predict_chunks(be, model, gr, batch_size, 0, |batch, idx| {
        let (inp, lens) = group_inputs(be, m, batch, idx, k, p, job_lens.as_deref())?;
        let inp = match &stack {
            Some(st) => st.bert_inputs(be, model, inp, idx, lens.as_deref())?,
            None => inp,
        };
        let lay = RowLayout {
            p,
            lens: lens.as_deref(),
        };
        let tail = read_tail(be, gr, &lay, batch, &inp, idx)?;
        let (hidden, tail) = m.encoder_hidden_at(be, &table, &inp, tail)?;
        let at = HeadRows::new(tail.as_ref(), inp.t());
        let mut out = vec![None; idx.len()];
        for kj in 0..k {
            let mine = rows_of(idx, kj);
            if mine.is_empty() {
                continue;
            }
            let (task, params) = gr.job(kj)?;
            let hid = (&hidden, &at);
            let scores = task.class_scores_of(be, m, params, &lay, batch, hid, &mine)?;
            let preds = task.classified(&scores).map_err(|e| {
                // scores of the rows `mine`: their rows in the batch
                e.overflow_at(|r, job| (mine.get(r).copied().unwrap_or(r), job))
            })?;
            for (&r, pred) in mine.iter().zip(preds) {
                if let Some(at) = out.get_mut(r) {
                    *at = Some(pred);
                }
            }
        }
        Ok(out)
    })
}

/// The last layer's rows for a batch of `gr`'s BERT jobs whose rows read prompt `idx` (B):
/// those each row's own job's head reads (None: every row).
fn read_tail<B: Backend>(
    be: &B,
    gr: &Group<'_, '_, B>,
    lay: &RowLayout,
    batch: &Batch,
    inp: &bert::BertInputs<B>,
    idx: &[i32],
) -> Result<Option<Tail<B>>> {
    let mut read = Vec::new();
    for kj in 0..gr.group.len() {
        let mine = rows_of(idx, kj);
        if !mine.is_empty() {
            read.extend(gr.job(kj)?.0.read_rows(lay, batch, &mine)?);
        }
    }
    Tail::covering(be, &read, inp.b, inp.t())
}

/// The rows of `gr`, sorted by length into batches of at most `batch_size` that mix its jobs
/// (the memory checked for `target` decoder or target positions); `score` predicts each
/// batch row (in batch order) from the batch and each row's slot in the table (B). Returns
/// the predictions in the rows' order.
pub(super) fn predict_chunks<B: Backend>(
    be: &B,
    model: &Model<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
    target: usize,
    mut score: impl FnMut(&Batch, &[i32]) -> Result<Vec<Option<Prediction>>>,
) -> Result<Vec<Prediction>> {
    let (first, _) = gr.job(0)?;
    let (p, _) = gr.lens();
    let (enc, slot) = (&gr.rows.enc, &gr.rows.slot);
    let longest = enc.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let target = (enc.rows.iter().map(|r| r.target.len()).max()).map_or(target, |t| t.max(target));
    let rows = batch_size.min(enc.rows.len());
    model.check_forward_memory(be, rows, p + longest, target, BatchSetting::Call)?;
    let mut order: Vec<u32> = (0..enc.rows.len() as u32).collect();
    order.sort_by_key(|&i| enc.rows.get(i as usize).map_or(0, |r| r.ids.len()));
    let mut out: Vec<Option<Prediction>> = vec![None; enc.rows.len()];
    for chunk in order.chunks(batch_size) {
        // every task of one model pads alike: the first one builds the batch
        let batch = first.batch_of_jobs(enc, chunk)?;
        let idx: Vec<i32> = (chunk.iter())
            .map(|&i| slot.get(i as usize).copied().unwrap_or(0))
            .collect();
        let preds = score(&batch, &idx).map_err(|e| {
            // batch row r is the group's row chunk[r], of the job in its slot
            let at = |r: usize| chunk.get(r).map_or(0, |&i| i as usize);
            let slot = |r: usize| idx.get(r).map_or(0, |&s| s as usize);
            gr.rows.overflow_at(e, gr.group, |r| (at(r), slot(r)))
        })?;
        for (&i, pred) in chunk.iter().zip(preds) {
            if let Some(at) = out.get_mut(i as usize) {
                *at = pred;
            }
        }
        if let Some(tell) = gr.told {
            tell(chunk.len())?;
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The batch rows whose prompt index `idx` (B) is `k`.
pub(super) fn rows_of(idx: &[i32], k: usize) -> Vec<usize> {
    (0..idx.len())
        .filter(|&r| idx.get(r) == Some(&(k as i32)))
        .collect()
}

/// Each row's prompt length (B) from its slot `idx` (B) and each job's `job_lens`, when
/// they differ.
pub(super) fn row_lens(idx: &[i32], job_lens: Option<&[usize]>) -> Option<Vec<usize>> {
    let job_lens = job_lens?;
    Some(
        (idx.iter())
            .map(|&s| job_lens.get(s as usize).copied().unwrap_or(0))
            .collect(),
    )
}

/// One job's part of a mixed training step.
pub struct JobStep<B: Backend> {
    /// the mean loss over the job's rows (0 when the batch holds none)
    pub loss: f64,
    /// d loss / d prompt (P, C) and the `cls` head's gradients, of that mean loss
    pub grads: Grads<B>,
    /// real tokens in the job's rows (inputs and targets)
    pub tokens: usize,
}

/// One training step over `rows` (one batch) that name their job: each job's mean loss over
/// its own rows and its gradients, as `Task::loss_and_grad` gives on those rows alone. The
/// rows of every job run as one batch (BERT `pet`/`cls`, T5 `seq2seq` or decoder-only
/// `causal`): one forward over the table of their prompts, each job's loss (its verbalizer or
/// `cls` head, or the LM head over its own targets) on its rows, one backward whose table
/// gradient holds every prompt's. Each job's loss is its own rows' mean, not weighted by its
/// share of the batch: a prompt's gradient comes from its own rows only, so the batch-mean
/// loss would give job j's prompt `R_j / B` times this gradient and nothing else.
pub fn step_mixed<B: Backend>(
    be: &B,
    model: &Model<B>,
    jobs: &[MixJob<'_, B>],
    rows: &[(usize, Row)],
    recompute: Recompute,
) -> Result<Vec<JobStep<B>>> {
    if rows.is_empty() {
        return Err(Error::arg(
            "rows",
            "is empty: a step needs at least one row",
        ));
    }
    check_rows(jobs.len(), rows)?;
    for (i, (j, row)) in rows.iter().enumerate() {
        if let Some((task, _)) = jobs.get(*j) {
            let usage = LabelUse::MixedStep { job: *j };
            task.check_label(i, row.label, usage)?;
            task.check_target(i, !row.target.is_empty(), usage)?;
        }
    }
    let mut out = (jobs.iter())
        .map(|(_, params)| {
            Ok(JobStep {
                loss: 0.0,
                grads: Grads::zeros(be, params)?,
                tokens: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for group in by_prompt_len(model, jobs, rows, None, true) {
        let Some(g) = GroupRows::new(rows, &group) else {
            continue;
        };
        let mix = mixable(model, jobs, &group, true);
        let gr = Group {
            jobs,
            group: &group,
            rows: &g,
            bert: matches!(mix, Some(Mix::Bert(_))),
            told: None,
        };
        // one batch of every row of the group, as `Model::step` checks its own
        let (p, _) = gr.lens();
        model.check_batch_memory(be, &g.enc.rows, p, BatchSetting::Rows)?;
        match mix {
            Some(Mix::Bert(m)) => step_group(be, model, m, &gr, recompute, &mut out)?,
            Some(Mix::T5(m)) => mixed_lm::step_t5(be, model, m, &gr, recompute, &mut out)?,
            Some(Mix::Causal(m)) => mixed_lm::step_causal(be, model, m, &gr, recompute, &mut out)?,
            None => {
                let (task, params) = one_job(jobs, &group)?;
                let all: Vec<u32> = (0..g.enc.rows.len() as u32).collect();
                let batch = task.batch(&g.enc, &all)?;
                let slot = job_slot(&mut out, &group, 0)?;
                slot.loss =
                    task.loss_and_grad(be, model, params, &mut slot.grads, &batch, recompute)?;
                slot.tokens = batch.real_tokens;
            }
        }
    }
    Ok(out)
}

/// The step state of the `k`-th job of `group`.
pub(super) fn job_slot<'o, B: Backend>(
    out: &'o mut [JobStep<B>],
    group: &[usize],
    k: usize,
) -> Result<&'o mut JobStep<B>> {
    (group.get(k).and_then(|&j| out.get_mut(j)))
        .ok_or_else(|| Error::arg("jobs", format!("job {k} of the group is missing")))
}

/// The mixed step of one group (BERT `pet`/`cls` jobs) on all its rows.
fn step_group<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Bert<B>,
    gr: &Group<'_, '_, B>,
    recompute: Recompute,
    out: &mut [JobStep<B>],
) -> Result<()> {
    let (first, _) = gr.job(0)?;
    let (c, k, g) = (m.cfg.hidden_size, gr.group.len(), gr.rows);
    let (p, job_lens) = gr.lens();
    let table = gr.table(be, p, c)?;
    let all: Vec<u32> = (0..g.enc.rows.len() as u32).collect();
    // every task of one model pads alike: the first one builds the batch
    let batch = first.batch_of_jobs(&g.enc, &all)?;
    let (inp, lens) = group_inputs(be, m, &batch, &g.slot, k, p, job_lens.as_deref())?;
    let stack = PrefixStack::of(be, gr)?;
    let inp = match &stack {
        Some(st) => st.bert_inputs(be, model, inp, &g.slot, lens.as_deref())?,
        None => inp,
    };
    let lay = RowLayout {
        p,
        lens: lens.as_deref(),
    };
    let mut acct = MemoryAccountant::new();
    // the last layer at the rows the heads read only
    let tail = read_tail(be, gr, &lay, &batch, &inp, &g.slot)?;
    let (hidden, acts) = m.encoder_fwd_at(be, &mut acct, &table, &inp, recompute, None, tail)?;
    let at = HeadRows::new(acts.tail(), inp.t());
    let mut dhidden = be.zeros(be.act_dtype(), be.len(&hidden))?; // (B, S, C)
    let mut losses = vec![0.0; k];
    for (kj, loss) in losses.iter_mut().enumerate() {
        let mine = rows_of(&g.slot, kj);
        if mine.is_empty() {
            continue;
        }
        let (task, params) = gr.job(kj)?;
        let hid = (&hidden, &at);
        let (l, dhead) =
            task.head_fwd_bwd(be, m, params, &lay, &batch, hid, &mine, &mut dhidden)?;
        *loss = l;
        if dhead.is_some() {
            job_slot(out, gr.group, kj)?.grads.head = dhead;
        }
    }
    drop(hidden);
    let mut grads = SplitGrads::zeros(be, gr, p, c, stack.as_ref())?;
    let (dtable, dstack) = (grads.dtable.as_mut(), grads.dstack.as_mut());
    m.encoder_bwd_split(be, &mut acct, dtable, dstack, dhidden, acts, &inp)?;
    grads.finish(be, gr, &losses, out)
}

impl Task {
    /// `pet` and `cls`: the mean loss of the batch rows `rows` (R) from the encoder's `hidden`
    /// (B, S, C), the rows of (B, P+T) where `at` says, scored by this task's verbalizer or
    /// head, whatever prompt each row read (its tokens where `lay` puts them); d loss /
    /// d hidden added into `dhidden` (B, S, C) at those rows, and the head's gradients.
    #[allow(clippy::too_many_arguments)]
    fn head_fwd_bwd<B: Backend>(
        &self,
        be: &B,
        m: &Bert<B>,
        params: &Params<B>,
        lay: &RowLayout,
        batch: &Batch,
        (hidden, at): (&B::Buf, &HeadRows<'_, B>),
        rows: &[usize],
        dhidden: &mut B::Buf,
    ) -> Result<(f64, Option<ClsHead<B>>)> {
        let (t, s, c) = (batch.tokens.t, at.s(), m.cfg.hidden_size);
        let labels: Vec<i32> = rows
            .iter()
            .filter_map(|&r| batch.labels.get(r).copied())
            .collect();
        // every row's label was checked against its own job's task (`step_mixed`)
        if self.spec.kind == TaskKind::Pet {
            let picked = at.rows(&lay.mask_rows(batch, rows)?)?;
            let decoder = Decoder::Rows(&self.verbalizer_ids);
            let h = heads::mlm_head_fwd_bwd(be, m, hidden, &picked, &labels, decoder, false)?;
            be.add_inplace(dhidden, &h.dhidden, be.len(dhidden))?;
            return Ok((h.loss, None));
        }
        // the job's rows gathered (R, S, C), its head on them, their gradient scattered back
        let (r, width) = (rows.len(), s * c);
        let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let idx = be.upload_i32(&idx)?;
        // gather_rows writes it whole
        let mut mine = be.output(be.act_dtype(), r * width)?;
        be.gather_rows(&mut mine, hidden, &idx, r, width)?;
        // (B, S) every row's pooling weights at the hidden rows, then (R, S) the job's
        let all: Vec<usize> = (0..batch.tokens.b).collect();
        let w = lay.pool_weights(&batch.tokens.mask, &all, t, self.spec.pooling);
        let w = at.pick("pool weights", w)?;
        let w: Vec<f32> = (rows.iter())
            .flat_map(|&r| w.get(r * s..(r + 1) * s).unwrap_or_default())
            .copied()
            .collect();
        let pool_w = be.upload(be.act_dtype(), &w)?;
        let h = cls_head(params)?.fwd_bwd(be, &mine, &pool_w, &labels, r, s)?;
        be.scatter_rows_bwd(dhidden, &h.dhidden, &idx, r, width)?;
        Ok((h.loss, Some(h.dhead)))
    }
}
