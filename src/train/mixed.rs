//! Many prompts, one frozen model: prediction and the training step over rows of several jobs
//! (each a task and its prompt), batches mixing jobs. The jobs' prompts sit in one table on the device (K, P, C),
//! each row reads its own (`embedding_fwd`'s prompt index), and each row is scored by its own
//! job's verbalizer or `cls` head. BERT's `pet` and `cls` jobs mix whatever their prompt
//! lengths: the table is padded to the longest prompt P, and when lengths differ row b is
//! [its P_b prompt rows, its tokens from position P_b on, P - P_b masked padding rows]
//! (`embedding_fwd`'s prompt lengths, `BertInputs::with_prompt_lens`), so each row computes
//! what its prompt's own batch computes; `seq2seq` and `causal` jobs are predicted one job at
//! a time. The step runs the same way:
//! one encoder forward over the table, each job's loss and head gradient on its own rows, one
//! encoder backward whose table gradient (K, P, C) holds every prompt's (`prompt_grad_bwd`
//! sums each prompt's rows).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::decode::{encoder_hidden, Prediction, RowLayout};
use super::encode::{Batch, Encoded, Row};
use super::eval::predict_all;
use super::model::Model;
use super::spec::TaskKind;
use super::step::{check_labels, cls_head, Grads, Params};
use super::task::{job, Job, Task};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::bert::{self, Bert};
use crate::models::cls_head::ClsHead;
use crate::models::heads::{self, Decoder};
use crate::models::Recompute;
use std::path::PathBuf;

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
    if batch_size == 0 {
        return Err(Error::arg("--batch-size", "is 0: expected at least 1"));
    }
    check_rows(jobs.len(), rows)?;
    let mut out: Vec<Option<Prediction>> = vec![None; rows.len()];
    for group in groups(model, jobs) {
        let Some(g) = GroupRows::new(rows, &group) else {
            continue;
        };
        let preds = match mixable(model, jobs, &group) {
            Some(m) => predict_group(be, model, m, jobs, &group, &g, batch_size)?,
            None => {
                let (task, params) = one_job(jobs, &group)?;
                predict_all(be, model, task, params, &g.enc, batch_size)?
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
struct GroupRows {
    /// (R) each row's index in the caller's rows
    members: Vec<usize>,
    /// (R) the rows
    enc: Encoded,
    /// (R) each row's slot in the group's prompt table (its job's place in the group)
    slot: Vec<i32>,
}

impl GroupRows {
    /// None when no row belongs to `group`.
    fn new(rows: &[(usize, Row)], group: &[usize]) -> Option<GroupRows> {
        let mut g = GroupRows {
            members: Vec::new(),
            enc: Encoded {
                path: PathBuf::from("the mixed rows"),
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
/// each padded with zero rows to the longest prompt's P.
fn prompt_table<B: Backend>(
    be: &B,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    p: usize,
    c: usize,
) -> Result<B::Buf> {
    let mut table = Vec::with_capacity(group.len() * p * c);
    for (_, params) in group.iter().filter_map(|&j| jobs.get(j)) {
        table.extend(be.download(&params.prompt)?);
        table.resize(table.len() + (p - params.p) * c, 0.0);
    }
    be.upload(DType::F32, &table)
}

/// The jobs that share batches: every BERT `pet`/`cls` job together, every other job alone.
fn groups<B: Backend>(model: &Model<B>, jobs: &[MixJob<'_, B>]) -> Vec<Vec<usize>> {
    let (mut mixed, mut alone) = (Vec::new(), Vec::new());
    for j in 0..jobs.len() {
        match mixable(model, jobs, &[j]) {
            Some(_) => mixed.push(j),
            None => alone.push(vec![j]),
        }
    }
    (!mixed.is_empty())
        .then_some(mixed)
        .into_iter()
        .chain(alone)
        .collect()
}

/// The prompt lengths of a group: the longest (the table's P), and each job's (in group
/// order) when they differ; None when all are one length (the layout of a single prompt).
fn group_lens<B: Backend>(jobs: &[MixJob<'_, B>], group: &[usize]) -> (usize, Option<Vec<usize>>) {
    let lens: Vec<usize> = (group.iter().filter_map(|&j| jobs.get(j)))
        .map(|(_, params)| params.p)
        .collect();
    let p = lens.iter().copied().max().unwrap_or(0);
    (p, lens.iter().any(|&l| l != p).then_some(lens))
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
    let inp = bert::upload_inputs(be, &m.cfg, &batch.tokens, p)?.with_prompt_index(be, slot, k)?;
    let Some(job_lens) = job_lens else {
        return Ok((inp, None));
    };
    let lens: Vec<usize> = (slot.iter())
        .map(|&s| job_lens.get(s as usize).copied().unwrap_or(p))
        .collect();
    Ok((inp.with_prompt_lens(be, &lens)?, Some(lens)))
}

/// The BERT model when every job of `group` scores labels from its encoder's hidden states
/// (`pet` or `cls`, no free targets).
fn mixable<'m, B: Backend>(
    model: &'m Model<B>,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
) -> Option<&'m Bert<B>> {
    let mut bert = None;
    for (task, _) in group.iter().filter_map(|&j| jobs.get(j)) {
        match job(task.spec.kind, model) {
            Ok(Job::Pet(m) | Job::Cls(m)) if !task.spec.free_targets => bert = Some(m),
            _ => return None,
        }
    }
    bert
}

fn one_job<'a, B: Backend>(jobs: &[MixJob<'a, B>], group: &[usize]) -> Result<MixJob<'a, B>> {
    (group.first().and_then(|&j| jobs.get(j)).copied())
        .ok_or_else(|| Error::arg("jobs", "an empty group of jobs"))
}

/// The rows of `g` (all of `group`'s jobs), sorted by length into batches that mix jobs: one
/// encoder pass per batch over the table of the group's prompts, then each job's rows scored
/// by that job.
fn predict_group<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Bert<B>,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    g: &GroupRows,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let (first, _) = one_job(jobs, group)?;
    let (p, job_lens) = group_lens(jobs, group);
    let enc = &g.enc;
    let table = prompt_table(be, jobs, group, p, m.cfg.hidden_size)?;
    let longest = enc.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let rows = batch_size.min(enc.rows.len());
    model.check_step_memory(be, rows, p + longest, 0, "--batch-size")?;
    let mut order: Vec<u32> = (0..enc.rows.len() as u32).collect();
    order.sort_by_key(|&i| enc.rows.get(i as usize).map_or(0, |r| r.ids.len()));
    let mut out: Vec<Option<Prediction>> = vec![None; enc.rows.len()];
    for chunk in order.chunks(batch_size) {
        // every task of one model pads alike: the first one builds the batch
        let batch = first.batch(enc, chunk)?;
        let idx: Vec<i32> = (chunk.iter())
            .map(|&i| g.slot.get(i as usize).copied().unwrap_or(0))
            .collect();
        let (inp, lens) = group_inputs(be, m, &batch, &idx, group.len(), p, job_lens.as_deref())?;
        let lay = RowLayout {
            p,
            lens: lens.as_deref(),
        };
        let hidden = encoder_hidden(be, m, &table, &inp)?;
        for (k, (task, params)) in group.iter().filter_map(|&j| jobs.get(j)).enumerate() {
            let mine = rows_of(&idx, k);
            if mine.is_empty() {
                continue;
            }
            let scores = task.class_scores_of(be, m, params, &lay, &batch, &hidden, &mine)?;
            for (&r, pred) in mine.iter().zip(task.classified(&scores)) {
                let at = chunk.get(r).and_then(|&i| out.get_mut(i as usize));
                if let Some(at) = at {
                    *at = Some(pred);
                }
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The batch rows whose prompt index `idx` (B) is `k`.
fn rows_of(idx: &[i32], k: usize) -> Vec<usize> {
    (0..idx.len())
        .filter(|&r| idx.get(r) == Some(&(k as i32)))
        .collect()
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
/// rows of BERT `pet`/`cls` jobs of one prompt length run as one batch: one encoder forward
/// over the table of their prompts, each job's head (verbalizer or `cls` head) on its rows,
/// one encoder backward whose table gradient holds every prompt's. Each job's loss is its own
/// rows' mean, not weighted by its share of the batch: a prompt's gradient comes from its own
/// rows only, so the batch-mean loss would give job j's prompt `R_j / B` times this gradient
/// and nothing else. Other jobs (`seq2seq`, `causal`) step one job at a time.
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
    let mut out = (jobs.iter())
        .map(|(_, params)| {
            Ok(JobStep {
                loss: 0.0,
                grads: Grads::zeros(be, params)?,
                tokens: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for group in groups(model, jobs) {
        let Some(g) = GroupRows::new(rows, &group) else {
            continue;
        };
        match mixable(model, jobs, &group) {
            Some(m) => step_group(be, m, jobs, &group, &g, recompute, &mut out)?,
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
fn job_slot<'o, B: Backend>(
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
    m: &Bert<B>,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    g: &GroupRows,
    recompute: Recompute,
    out: &mut [JobStep<B>],
) -> Result<()> {
    let (first, _) = one_job(jobs, group)?;
    let c = m.cfg.hidden_size;
    let (p, job_lens) = group_lens(jobs, group);
    let table = prompt_table(be, jobs, group, p, c)?;
    let all: Vec<u32> = (0..g.enc.rows.len() as u32).collect();
    // every task of one model pads alike: the first one builds the batch
    let batch = first.batch(&g.enc, &all)?;
    let (inp, lens) = group_inputs(be, m, &batch, &g.slot, group.len(), p, job_lens.as_deref())?;
    let lay = RowLayout {
        p,
        lens: lens.as_deref(),
    };
    let mut acct = MemoryAccountant::new();
    let (hidden, acts) = m.encoder_fwd(be, &mut acct, &table, &inp, recompute, None)?;
    let mut dhidden = be.zeros(be.act_dtype(), be.len(&hidden))?; // (B, P+T, C)
    for (k, (task, params)) in group.iter().filter_map(|&j| jobs.get(j)).enumerate() {
        let mine = rows_of(&g.slot, k);
        if mine.is_empty() {
            continue;
        }
        let slot = job_slot(out, group, k)?;
        let (loss, dhead) =
            task.head_fwd_bwd(be, m, params, &lay, &batch, &hidden, &mine, &mut dhidden)?;
        slot.loss = loss;
        slot.tokens = (mine.iter().filter_map(|&r| g.enc.rows.get(r)))
            .map(|r| r.ids.len() + r.target.len())
            .sum();
        if dhead.is_some() {
            slot.grads.head = dhead;
        }
    }
    drop(hidden);
    let mut dtable = be.zeros(DType::F32, group.len() * p * c)?; // (K, P, C)
    m.encoder_bwd(be, &mut acct, &mut dtable, dhidden, acts, &inp)?;
    let dtable = be.download(&dtable)?;
    // each job's slice of the table's gradient is its prompt's (its grads were zero), less
    // the padding rows of a shorter prompt (which no row reads)
    for (k, grad) in dtable.chunks(p * c).enumerate() {
        let rows = job_lens.as_ref().and_then(|l| l.get(k)).map_or(p, |&l| l);
        let grad = grad.get(..rows * c).unwrap_or_default();
        job_slot(out, group, k)?.grads.prompt = be.upload(DType::F32, grad)?;
    }
    Ok(())
}

impl Task {
    /// `pet` and `cls`: the mean loss of the batch rows `rows` (R) from the encoder's `hidden`
    /// (B, P+T, C), scored by this task's verbalizer or head, whatever prompt each row read
    /// (its tokens where `lay` puts them); d loss / d hidden added into `dhidden` (B, P+T, C)
    /// at those rows, and the head's gradients.
    #[allow(clippy::too_many_arguments)]
    fn head_fwd_bwd<B: Backend>(
        &self,
        be: &B,
        m: &Bert<B>,
        params: &Params<B>,
        lay: &RowLayout,
        batch: &Batch,
        hidden: &B::Buf,
        rows: &[usize],
        dhidden: &mut B::Buf,
    ) -> Result<(f64, Option<ClsHead<B>>)> {
        let (t, p, c) = (batch.tokens.t, lay.p, m.cfg.hidden_size);
        let labels: Vec<i32> = rows
            .iter()
            .filter_map(|&r| batch.labels.get(r).copied())
            .collect();
        check_labels(&labels)?;
        if self.spec.kind == TaskKind::Pet {
            let picked = lay.mask_rows(batch, rows)?;
            let decoder = Decoder::Rows(&self.verbalizer_ids);
            let h = heads::mlm_head_fwd_bwd(be, m, hidden, &picked, &labels, decoder, false)?;
            be.add_inplace(dhidden, &h.dhidden, be.len(dhidden))?;
            return Ok((h.loss, None));
        }
        // the job's rows gathered (R, P+T, C), its head on them, their gradient scattered back
        let (r, width) = (rows.len(), (p + t) * c);
        let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let idx = be.upload_i32(&idx)?;
        let mut mine = be.zeros(be.act_dtype(), r * width)?;
        be.gather_rows(&mut mine, hidden, &idx, r, width)?;
        let mask: Vec<i32> = (rows.iter())
            .flat_map(|&r| {
                batch
                    .tokens
                    .mask
                    .get(r * t..(r + 1) * t)
                    .unwrap_or_default()
            })
            .copied()
            .collect();
        let pool_w = be.upload(
            be.act_dtype(),
            &lay.pool_weights(&mask, rows, t, self.spec.pooling),
        )?;
        let h = cls_head(params)?.fwd_bwd(be, &mine, &pool_w, &labels, r, p + t)?;
        be.scatter_rows_bwd(dhidden, &h.dhidden, &idx, r, width)?;
        Ok((h.loss, Some(h.dhead)))
    }
}
