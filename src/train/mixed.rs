//! Many prompts, one frozen model: prediction over rows of several jobs (each a task and its
//! prompt), batches mixing jobs. The jobs' prompts sit in one table on the device (K, P, C),
//! each row reads its own (`embedding_fwd`'s prompt index), and each row is scored by its own
//! job's verbalizer or `cls` head. BERT's `pet` and `cls` jobs mix, those of one prompt length
//! together (rows of prompts of other lengths go in other batches, so no row sees padding);
//! `seq2seq` and `causal` jobs are predicted one job at a time.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::decode::{encoder_hidden, Prediction};
use super::encode::{Encoded, Row};
use super::eval::predict_all;
use super::model::Model;
use super::step::Params;
use super::task::{job, Job, Task};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::models::bert::{self, Bert};
use std::collections::BTreeMap;
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
    if let Some((i, (j, _))) = rows.iter().enumerate().find(|(_, (j, _))| *j >= jobs.len()) {
        return Err(Error::arg(
            "rows",
            format!("row {i} names job {j} but there are {} jobs", jobs.len()),
        ));
    }
    let mut out: Vec<Option<Prediction>> = vec![None; rows.len()];
    for group in groups(model, jobs) {
        let members: Vec<usize> = (0..rows.len())
            .filter(|&i| rows.get(i).is_some_and(|(j, _)| group.contains(j)))
            .collect();
        if members.is_empty() {
            continue;
        }
        let enc = Encoded {
            path: PathBuf::from("the mixed rows"),
            rows: (members.iter())
                .filter_map(|&i| rows.get(i).map(|r| r.1.clone()))
                .collect(),
            truncated: 0,
            truncated_targets: 0,
        };
        let preds = match mixable(model, jobs, &group) {
            Some(m) => {
                let job_of: Vec<usize> = (members.iter())
                    .filter_map(|&i| rows.get(i).map(|r| r.0))
                    .collect();
                predict_group(be, model, m, jobs, &group, &enc, &job_of, batch_size)?
            }
            None => {
                let (task, params) = one_job(jobs, &group)?;
                predict_all(be, model, task, params, &enc, batch_size)?
            }
        };
        for (&i, p) in members.iter().zip(preds) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(p);
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The jobs that share batches: BERT `pet`/`cls` jobs by prompt length, every other job alone.
fn groups<B: Backend>(model: &Model<B>, jobs: &[MixJob<'_, B>]) -> Vec<Vec<usize>> {
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut alone = Vec::new();
    for (j, (_, params)) in jobs.iter().enumerate() {
        match mixable(model, jobs, &[j]) {
            Some(_) => by_len.entry(params.p).or_default().push(j),
            None => alone.push(vec![j]),
        }
    }
    by_len.into_values().chain(alone).collect()
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

/// The rows of `enc` (whose jobs `job_of` names, all in `group`, one prompt length), sorted
/// by length into batches that mix jobs: one encoder pass per batch over the table of the
/// group's prompts, then each job's rows scored by that job.
#[allow(clippy::too_many_arguments)]
fn predict_group<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Bert<B>,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    enc: &Encoded,
    job_of: &[usize],
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let (first, p0) = one_job(jobs, group)?;
    let p = p0.p;
    let mut table = Vec::new();
    for (_, params) in group.iter().filter_map(|&j| jobs.get(j)) {
        table.extend(be.download(&params.prompt)?);
    }
    let table = be.upload(DType::F32, &table)?;
    let longest = enc.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let rows = batch_size.min(enc.rows.len());
    model.check_step_memory(be, rows, p + longest, 0, "--batch-size")?;
    // the slot of each row's job in the table
    let slot: Vec<i32> = (job_of.iter())
        .map(|j| group.iter().position(|g| g == j).unwrap_or(0) as i32)
        .collect();
    let mut order: Vec<u32> = (0..enc.rows.len() as u32).collect();
    order.sort_by_key(|&i| enc.rows.get(i as usize).map_or(0, |r| r.ids.len()));
    let mut out: Vec<Option<Prediction>> = vec![None; enc.rows.len()];
    for chunk in order.chunks(batch_size) {
        // every task of one model pads alike: the first one builds the batch
        let batch = first.batch(enc, chunk)?;
        let idx: Vec<i32> = (chunk.iter())
            .map(|&i| slot.get(i as usize).copied().unwrap_or(0))
            .collect();
        let inp = bert::upload_inputs(be, &m.cfg, &batch.tokens, p)?.with_prompt_index(
            be,
            &idx,
            group.len(),
        )?;
        let hidden = encoder_hidden(be, m, &table, &inp)?;
        for (k, (task, params)) in group.iter().filter_map(|&j| jobs.get(j)).enumerate() {
            let mine: Vec<usize> = (0..chunk.len())
                .filter(|&r| idx.get(r) == Some(&(k as i32)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let scores = task.class_scores_of(be, m, params, &batch, &hidden, &mine)?;
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
