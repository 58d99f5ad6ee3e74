//! Which jobs of a mixed call share batches (`groups`): the model a group runs on
//! (`mixable`), and the prompt lengths its table is laid out by (`group_lens`). Split out of
//! `mixed.rs`.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

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
/// job's: one that runs alone does not decide it.
pub(super) fn groups<B: Backend>(
    model: &Model<B>,
    jobs: &[MixJob<'_, B>],
    step: bool,
) -> Vec<Vec<usize>> {
    // [prompt and prefix jobs, greedy jobs]
    let mut shared: [(Vec<usize>, Option<_>); 2] = Default::default();
    let mut alone = Vec::new();
    for (j, (_, params)) in jobs.iter().enumerate() {
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
