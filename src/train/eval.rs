//! Evaluation and prediction over a whole encoded file, batched in length order.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::LabelUse;
use super::decode::Prediction;
use super::encode::{Encoded, Row};
use super::metrics::{self, EvalMetrics};
use super::model::Model;
use super::spec::{Decode, TaskKind};
use super::step::Params;
use super::task::Task;
use crate::backend::Backend;
use crate::error::{BatchSetting, Error, Result};
use crate::models::Model as Net;
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::error::GoOn;

/// `e`, when it is an `Overflow` of a row of `enc` (a `split` scored during training), as
/// what diverged: the row's file and line and what was not finite, for the run's divergence
/// message (it said "the prompt: row N" alone, with no file and no advice). Any other error
/// comes back as it is.
pub(super) fn eval_overflow(e: Error, enc: &Encoded, split: &str) -> Result<String, Error> {
    match e {
        Error::Overflow { row, msg, .. } => {
            let line = enc.rows.get(row).map_or(row + 1, |r| r.line);
            let at = format!("{}:{line}", enc.path.display());
            Ok(format!("the {split} row at {at} {msg}"))
        }
        e => Err(e),
    }
}

/// `e`, when it is an `Overflow` of a row of `enc`, the test split scored with the kept prompt
/// (`kept`: "the kept prompt (step N)") after training finished, said as that: the row's file
/// and line, what overflowed, and that the prompt is saved in `saved` (it read "… at step N,
/// so the run stops …: lower --lr" of a run that had finished). Any other error comes back as
/// it is.
pub(super) fn final_test_overflow(e: Error, enc: &Encoded, kept: &str, saved: &Path) -> Error {
    match e {
        Error::Overflow { row, msg, .. } => {
            let line = enc.rows.get(row).map_or(row + 1, |r| r.line);
            Error::data(
                &enc.path,
                line,
                format!(
                    "the final test of {kept} overflowed on this row: it {msg}. Training itself \
                     finished, and the kept prompt is saved in {}",
                    saved.display()
                ),
            )
        }
        e => e,
    }
}

/// Scores every row of `enc` (in length order, `batch_size` rows at a time) and returns the
/// metrics against the gold labels with the predictions in file order. Rows without a label
/// are predicted but not counted.
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    params: &Params<B>,
    enc: &Encoded,
    batch_size: usize,
) -> Result<(EvalMetrics, Vec<Prediction>)> {
    evaluate_until(be, model, task, params, enc, batch_size, &mut |_| true)
}

/// As [`evaluate`], asking `go_on` after each batch.
pub fn evaluate_until<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    params: &Params<B>,
    enc: &Encoded,
    batch_size: usize,
    go_on: GoOn<'_>,
) -> Result<(EvalMetrics, Vec<Prediction>)> {
    check_labelled(task, enc)?;
    let preds = predict_until(be, model, task, params, enc, batch_size, go_on)?;
    Ok((scores(task, enc, &preds), preds))
}

/// The metrics of `preds` (in file order) against the gold labels of `enc`'s rows (their
/// target texts for free targets); rows without one are not counted.
pub fn scores(task: &Task, enc: &Encoded, preds: &[Prediction]) -> EvalMetrics {
    let (mut gold, mut pred) = (Vec::new(), Vec::new());
    if task.spec.free_targets {
        // exact match of the generated target; classes are the distinct target texts
        let mut ids: BTreeMap<Vec<i32>, usize> = BTreeMap::new();
        let golds: std::collections::BTreeSet<&[i32]> =
            enc.rows.iter().map(|r| r.target.as_slice()).collect();
        for (row, p) in enc.rows.iter().zip(preds) {
            if row.target.is_empty() {
                continue;
            }
            let n = ids.len();
            gold.push(*ids.entry(row.target.clone()).or_insert(n));
            let n = ids.len();
            let key = task.target_of(&p.ids, |t| golds.contains(t));
            pred.push(*ids.entry(key).or_insert(n));
        }
    } else {
        for (row, p) in enc.rows.iter().zip(preds) {
            if let Some(g) = row.label {
                gold.push(g);
                // greedy output that is no label's target counts as wrong
                pred.push(p.class.unwrap_or(usize::MAX / 2));
            }
        }
        let k = task.spec.labels.len();
        for p in pred.iter_mut() {
            if *p >= k {
                *p = k; // one extra "none of the labels" class
            }
        }
    }
    metrics::classification_metrics(&gold, &pred)
}

/// Accuracy over no labelled row would read as 0 (a score, not an error): `enc` must hold a
/// row with a label (a target, for free targets), and no label past the task's (counted as a
/// wrong prediction). Prediction needs none.
pub fn check_labelled(task: &Task, enc: &Encoded) -> Result<()> {
    if enc.rows.is_empty() {
        return Err(Error::file(
            &enc.path,
            "holds no rows: there is nothing to evaluate",
        ));
    }
    let labelled = |r: &Row| {
        if task.spec.free_targets {
            !r.target.is_empty()
        } else {
            r.label.is_some()
        }
    };
    if !enc.rows.iter().any(labelled) {
        return Err(Error::file(
            &enc.path,
            format!(
                "none of its {} rows has a label: accuracy needs labelled rows (predict scores \
                 unlabelled ones)",
                enc.rows.len()
            ),
        ));
    }
    task.check_labels(&enc.rows, LabelUse::Score)
}

/// Predictions for every row of `enc`, in file order (batched in length order).
pub fn predict_all<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    params: &Params<B>,
    enc: &Encoded,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    predict_until(be, model, task, params, enc, batch_size, &mut |_| true)
}

/// As [`predict_all`], asking `go_on` after each batch; a stop heard after the last one
/// leaves the result.
pub fn predict_until<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    params: &Params<B>,
    enc: &Encoded,
    batch_size: usize,
    go_on: GoOn<'_>,
) -> Result<Vec<Prediction>> {
    if batch_size == 0 {
        return Err(Error::arg("batch_size", "is 0: expected at least 1"));
    }
    let longest = enc.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let target = enc.rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    check_causal_room(model, task, params.p, longest)?;
    let rows = batch_size.min(enc.rows.len());
    model.check_forward_memory(be, rows, params.p + longest, target, BatchSetting::Call)?;
    let mut order: Vec<u32> = (0..enc.rows.len() as u32).collect();
    order.sort_by_key(|&i| enc.rows.get(i as usize).map_or(0, |r| r.ids.len()));
    let mut out: Vec<Option<Prediction>> = vec![None; enc.rows.len()];
    let mut done = 0;
    for chunk in order.chunks(batch_size) {
        let batch = task.batch(enc, chunk)?;
        let preds = task.predict(be, model, params, &batch).map_err(|e| {
            // the batch's rows are data rows sorted by length: name the data's
            e.overflow_at(|r, job| (chunk.get(r).map_or(r, |&i| i as usize), job))
        })?;
        for (&i, p) in chunk.iter().zip(preds) {
            if let Some(slot) = out.get_mut(i as usize) {
                *slot = Some(p);
            }
        }
        done += chunk.len();
        crate::error::ask(go_on, done, enc.rows.len(), "rows")?;
    }
    Ok(out.into_iter().flatten().collect())
}

/// A `causal` task's rows fit the decoder's positions as prediction lays them out, checked
/// before the first batch: rank scoring's targets behind max_len (`room::check_room`), or
/// greedy decoding's new tokens behind the longest row of all (a batch's own check names its
/// longest row only, and batches run shortest first: following its advice took a round per
/// batch).
/// `p`: the prompt's rows (a prefix's); `longest`: the most tokens a row holds.
pub(crate) fn check_causal_room<B: Backend>(
    model: &Model<B>,
    task: &Task,
    p: usize,
    longest: usize,
) -> Result<()> {
    let spec = &task.spec;
    if spec.kind != TaskKind::Causal {
        return Ok(());
    }
    let greedy = spec.free_targets || spec.decode == Decode::Greedy;
    match &model.net {
        // the new tokens, behind rows no longer than max_len
        Net::Bloom(m) | Net::Llama(m) if greedy => m
            .check_reach(p, longest, spec.max_target_len.max(1))
            .map_err(super::causal::target_len_flag),
        _ => super::room::check_room(task, model, p, super::room::Placing::Score),
    }
}
