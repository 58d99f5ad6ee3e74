//! Which jobs of a mixed call share batches (`groups`): the model a group runs on
//! (`mixable`), and the prompt lengths its table is laid out by (`group_lens`). Split out of
//! `mixed.rs`.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::encode::Row;
use super::mixed::MixJob;
use super::model::Model;
use super::step::Params;
use super::task::{job, Job};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::models::bert::Bert;
use crate::models::decoder::Decoder as DecoderLm;
use crate::models::t5::T5;

/// The rows a job puts in front of its tokens in a mixed batch: its prompt's P; a prefix job
/// none, except on BERT, whose tokens sit at their first position behind as many hidden rows
/// (`mixed_prefix.rs`).
fn front_rows<B: Backend>(params: &Params<B>, bert: bool) -> usize {
    match params.prefix {
        Some(spec) if bert => spec.bert_first_position.unwrap_or(spec.p),
        _ => params.input_rows(),
    }
}

/// The jobs that share batches (`mixable`) together, every other job alone: in prediction
/// the rank-scored (or BERT) jobs one group, the greedily decoded ones another
/// (`mixed_greedy.rs`); prefix jobs join their group when their prefixes share one layout
/// (`mixed_prefix.rs`), in the step too: its one backward fills the prompt table's gradient
/// and the prefixes' stack's at once (`Bert::encoder_bwd_split`, `T5::train_step_parts`,
/// `Decoder::train_step_parts`; `mixed_grads.rs`). Each group's layout is its first prefix
/// job's: one that runs alone does not decide it, nor one with no row in the call (`count`:
/// each job's rows), which takes no part.
fn groups<B: Backend>(
    model: &Model<B>,
    jobs: &[MixJob<'_, B>],
    step: bool,
    count: &[usize],
) -> Vec<Vec<usize>> {
    // [prompt and prefix jobs, greedy jobs]
    let mut shared: [(Vec<usize>, Option<_>); 2] = Default::default();
    let mut alone = Vec::new();
    for (j, (_, params)) in jobs.iter().enumerate() {
        if count.get(j).is_none_or(|&n| n == 0) {
            continue;
        }
        // the greedy group is prediction's only
        let greedy = !step && decodes_greedily(jobs, &[j]);
        let at = mixable(model, jobs, &[j], step).map(|_| usize::from(greedy));
        let Some((group, layout)) = at.and_then(|at| shared.get_mut(at)) else {
            alone.push(vec![j]);
            continue;
        };
        let fits = params.prefix.is_none_or(|spec| {
            let this = (spec.placement, spec.blocks);
            *layout.get_or_insert(this) == this
        });
        match fits {
            true => group.push(j),
            false => alone.push(vec![j]),
        }
    }
    (shared.into_iter().map(|(group, _)| group))
        .filter(|g| !g.is_empty())
        .chain(alone)
        .collect()
}

/// What a pass costs beside the positions it computes, in positions: a pass reads every
/// weight once and launches every kernel, which for a few rows costs about as much as this
/// many positions more (on the CPU nearer 32, on a GPU several hundred; a guess, not
/// measured on a GPU); jobs that share a pass save it. Cutting is for the rows a long
/// prompt's padding costs hundreds of positions each, not for a few rows of prompts of
/// 3 and 8 rows.
const PASS_POSITIONS: usize = 256;

/// The jobs that share batches (`groups`), leaving out the jobs with no row in `rows`, each
/// group of rank-scored (or stepped) jobs cut where sharing one table costs more than it
/// saves. A group's rows are laid out behind its longest prompt: a row of
/// a 4-row prompt beside one of 400 computed 400 rows, and a prompt that no row used still set
/// the length (hostile pass 19: `predict` 10.8x slower for a prompt named and unused; the
/// issue asks for no padding to the longest prompt where that costs real time). A group's
/// jobs, sorted by the rows they put in front of their tokens, are cut into runs that
/// minimize the positions their rows take (rows x the run's longest front) plus
/// `PASS_POSITIONS` a pass: a batch of `batch_size` rows in prediction, one in the step
/// (`batch_size` None). Each job's rows stay in one run, so each job's numbers are its own
/// as before; only which rows share a pass changes. A greedy group is not cut: each of its
/// batches is a whole generation loop, whose steps the padding hardly touches.
pub(super) fn by_prompt_len<B: Backend>(
    model: &Model<B>,
    jobs: &[MixJob<'_, B>],
    rows: &[(usize, Row)],
    batch_size: Option<usize>,
    step: bool,
) -> Vec<Vec<usize>> {
    let mut count = vec![0usize; jobs.len()];
    for (j, _) in rows {
        if let Some(c) = count.get_mut(*j) {
            *c += 1;
        }
    }
    let mut out = Vec::new();
    for group in groups(model, jobs, step, &count) {
        if !step && decodes_greedily(jobs, &group) {
            out.push(group);
            continue;
        }
        let bert = matches!(mixable(model, jobs, &group, step), Some(Mix::Bert(_)));
        // (job, its rows, its front rows), sorted by the front
        let mut used: Vec<(usize, usize, usize)> = (group.iter())
            .filter_map(|&j| Some((j, *count.get(j)?, front_rows(jobs.get(j)?.1, bert))))
            .filter(|&(_, n, _)| n > 0)
            .collect();
        used.sort_by_key(|&(_, _, front)| front);
        let passes = |n: usize| batch_size.map_or(1, |b| n.div_ceil(b.max(1)));
        let cuts = cheapest_runs(&used, |n, front| n * front + PASS_POSITIONS * passes(n));
        out.extend(cuts.windows(2).filter_map(|w| {
            let run = used.get(*w.first()?..*w.get(1)?)?;
            Some(run.iter().map(|&(j, _, _)| j).collect::<Vec<_>>())
        }));
    }
    out
}

/// Where to cut `used` (jobs with their rows and front rows, sorted by front) into runs of
/// least total `cost(rows, longest front)`: the cut points, from 0 to its length.
fn cheapest_runs(
    used: &[(usize, usize, usize)],
    cost: impl Fn(usize, usize) -> usize,
) -> Vec<usize> {
    let n = used.len();
    // rows[i]: the rows of the first i jobs
    let rows: Vec<usize> = std::iter::once(0)
        .chain(used.iter().scan(0, |sum, &(_, r, _)| {
            *sum += r;
            Some(*sum)
        }))
        .collect();
    let at = |v: &[usize], i: usize| v.get(i).copied().unwrap_or(0);
    // best[i]: the least cost of the first i jobs, and where its last run starts (of equal
    // costs the longest run: jobs share a pass unless cutting saves something)
    let mut best: Vec<(usize, usize)> = vec![(0, 0); n + 1];
    for i in 1..=n {
        let front = used.get(i - 1).map_or(0, |&(_, _, f)| f);
        let mut pick = (usize::MAX, 0);
        for start in 0..i {
            let before = best.get(start).map_or(0, |b| b.0);
            let total = before.saturating_add(cost(at(&rows, i) - at(&rows, start), front));
            if total < pick.0 {
                pick = (total, start);
            }
        }
        if let Some(b) = best.get_mut(i) {
            *b = pick;
        }
    }
    let mut cuts = vec![n];
    let mut end = n;
    while end > 0 {
        end = best.get(end).map_or(0, |b| b.1);
        cuts.push(end);
    }
    cuts.reverse();
    cuts
}

/// Whether `group`'s jobs are decoded greedily (`mixable` keeps them apart from the
/// rank-scored ones): its first job's.
pub(super) fn decodes_greedily<B: Backend>(jobs: &[MixJob<'_, B>], group: &[usize]) -> bool {
    (group.first().and_then(|&j| jobs.get(j))).is_some_and(|(task, _)| task.decodes_greedily())
}

/// The prompt lengths of a group: the longest (the table's P), and each job's (in group
/// order) when they differ; None when all are one length (the layout of a single prompt).
pub(super) fn group_lens<B: Backend>(
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    bert: bool,
) -> (usize, Option<Vec<usize>>) {
    let lens: Vec<usize> = (group.iter().filter_map(|&j| jobs.get(j)))
        .map(|(_, params)| front_rows(params, bert))
        .collect();
    let p = lens.iter().copied().max().unwrap_or(0);
    (p, lens.iter().any(|&l| l != p).then_some(lens))
}

/// The model a group of mixed jobs runs on.
pub(super) enum Mix<'m, B: Backend> {
    Bert(&'m Bert<B>),
    T5(&'m T5<B>),
    Causal(&'m DecoderLm<B>),
}

/// The model when every job of `group` can share batches: BERT `pet`/`cls` (no free
/// targets), T5 `seq2seq` and decoder-only `causal` jobs; in prediction (`step` false) the
/// jobs of one group either all scored by rank classification or all decoded greedily.
pub(super) fn mixable<'m, B: Backend>(
    model: &'m Model<B>,
    jobs: &[MixJob<'_, B>],
    group: &[usize],
    step: bool,
) -> Option<Mix<'m, B>> {
    let mut mix = None;
    let greedy = !step && decodes_greedily(jobs, group);
    for (task, _) in group.iter().filter_map(|&j| jobs.get(j)) {
        let spec = &task.spec;
        if !step && task.decodes_greedily() != greedy {
            return None;
        }
        mix = match job(spec.kind, model) {
            Ok(Job::Pet(m) | Job::Cls(m)) if !spec.free_targets => Some(Mix::Bert(m)),
            Ok(Job::Seq2Seq(m)) => Some(Mix::T5(m)),
            Ok(Job::Causal(m)) => Some(Mix::Causal(m)),
            _ => return None,
        };
    }
    mix
}

pub(super) fn one_job<'a, B: Backend>(
    jobs: &[MixJob<'a, B>],
    group: &[usize],
) -> Result<MixJob<'a, B>> {
    (group.first().and_then(|&j| jobs.get(j)).copied())
        .ok_or_else(|| Error::arg("jobs", "an empty group of jobs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs by cost: a few rows of prompts of 3, 5 and 8 rows share a pass; a prompt of 400
    /// rows beside many rows of a prompt of 4 runs apart; equal fronts always share.
    #[test]
    fn runs_cut_where_sharing_costs_more_than_it_saves() {
        let cost = |n: usize, front: usize| n * front + PASS_POSITIONS * n.div_ceil(32);
        assert_eq!(
            cheapest_runs(&[(0, 4, 3), (1, 3, 5), (2, 5, 8)], cost),
            [0, 3]
        );
        assert_eq!(cheapest_runs(&[(0, 500, 4), (1, 2, 400)], cost), [0, 1, 2]);
        assert_eq!(cheapest_runs(&[(0, 500, 4), (1, 600, 4)], cost), [0, 2]);
        // a tie (5 rows each of one length, batches of 5) keeps them together
        let by_fives = |n: usize, front: usize| n * front + PASS_POSITIONS * n.div_ceil(5);
        assert_eq!(
            cheapest_runs(&[(0, 5, 4), (1, 4, 4), (2, 5, 4)], by_fives),
            [0, 3]
        );
        // 8 rows each: 4 and 5 share, 300 and 302 share, the two pairs apart
        assert_eq!(
            cheapest_runs(&[(0, 8, 4), (1, 8, 5), (2, 8, 300), (3, 8, 302)], cost),
            [0, 2, 4]
        );
        // full batches gain nothing from sharing: every length apart
        assert_eq!(
            cheapest_runs(&[(0, 64, 4), (1, 64, 5), (2, 64, 300)], cost),
            [0, 1, 2, 3]
        );
        assert_eq!(cheapest_runs(&[], cost), [0]);
    }
}
