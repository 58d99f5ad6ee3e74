//! The labelled rows the mixed-batch tests (tests/mixed.rs, tests/mixed_prefix.rs) share, and
//! their check of a mixed prediction against each job alone.

use super::{assert_close, assert_close_floor};
use softprompt::prelude::*;
use std::borrow::Borrow;

/// A dataset of (text, label) rows named "mem".
pub fn pairs(items: &[(&str, &str)]) -> Dataset {
    Dataset::from_pairs("mem", items.iter().map(|&(t, l)| (t, Some(l))))
}

/// One of two label jobs: three topics whose target texts have different token lengths, or two
/// sentiments; its rows, its (label, target text) pairs and its template.
pub fn label_job(three: bool) -> (Dataset, Vec<(&'static str, &'static str)>, &'static str) {
    if three {
        let data = pairs(&[
            ("the striker scored twice", "sport"),
            ("rates rose again this quarter and then once more", "money"),
            ("a telescope", "science"),
        ]);
        let verbalizer = vec![
            ("sport", "football match"),
            ("money", "bank"),
            ("science", "the stars above us"),
        ];
        (data, verbalizer, "topic: {text} answer:")
    } else {
        let data = pairs(&[
            ("a great film with a warm heart", "positive"),
            ("bad", "negative"),
            ("the plot drags and the actors look tired of it", "negative"),
            ("quite good", "positive"),
        ]);
        let verbalizer = vec![("negative", "terrible film"), ("positive", "great")];
        (data, verbalizer, "review: {text}")
    }
}

/// Rows of every job interleaved (job 0's first row, job 1's first row, ...).
pub fn interleave(encs: &[&Encoded]) -> Vec<(usize, Row)> {
    let longest = encs.iter().map(|e| e.rows.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            (encs.iter().enumerate())
                .filter_map(move |(j, e)| e.rows.get(i).map(|r| (j, r.clone())))
        })
        .collect()
}

/// The bound on a mixed row against its job alone: a batch's make-up changes the
/// last bits, nothing more.
pub const MIX_TOL: f64 = 1e-5;

/// Each mixed row's prediction against its job's `predict` alone (batch size 1): its scores
/// (rank classification) and its score within `MIX_TOL`, its class and its generated ids
/// (greedy decoding) equal. Returns the worst error.
pub fn check_mixed<J: Borrow<(Task, Prompt, Encoded)>>(
    model: &Model,
    jobs: &[J],
    batch_size: usize,
) -> f64 {
    let jobs: Vec<&(Task, Prompt, Encoded)> = jobs.iter().map(Borrow::borrow).collect();
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let encs: Vec<&Encoded> = jobs.iter().map(|(_, _, e)| e).collect();
    let rows = interleave(&encs);
    let mixed = model.predict_mixed(&refs, &rows, batch_size).unwrap();
    assert_eq!(mixed.len(), rows.len());
    let alone: Vec<Vec<Prediction>> = (jobs.iter())
        .map(|(t, p, e)| model.predict(t, p, e, 1).unwrap())
        .collect();
    let mut next = vec![0usize; jobs.len()];
    let mut worst = 0.0f64;
    for ((j, _), got) in rows.iter().zip(&mixed) {
        let want = &alone[*j][next[*j]];
        next[*j] += 1;
        let what = format!("job {j} (batch {batch_size})");
        assert_eq!(got.scores.len(), want.scores.len(), "{what}: scores");
        assert_eq!(got.ids, want.ids, "{what}: generated ids");
        assert_eq!(got.class, want.class, "{what}: class");
        let scores = assert_close(
            &format!("{what} scores"),
            &got.scores,
            &want.scores,
            MIX_TOL,
        );
        // a summed log-probability: measured absolutely below 1
        let (g, w) = ([got.score], [want.score]);
        let score = assert_close_floor(&format!("{what} score"), &g, &w, MIX_TOL, 1.0);
        worst = worst.max(scores).max(score);
    }
    worst
}

/// The label job (`label_job`) as a task of `model` with a prompt of `p` rows: rank
/// classification, or `pet` on BERT (whose verbalizer words are one token each); its rows.
pub fn label_task(model: &Model, bert: bool, p: usize, three: bool) -> (Task, Encoded) {
    let (data, verbalizer, template) = label_job(three);
    let verbalizer = (verbalizer.iter().enumerate())
        .map(|(i, &(l, w))| match bert {
            true => (l.into(), ["bad", "great", "good"][i].into()),
            false => (l.into(), w.into()),
        })
        .collect();
    let opts = TaskOptions {
        template: (!bert).then(|| template.into()),
        verbalizer: Some(verbalizer),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data), p).unwrap();
    let enc = model.encode(&task, &data).unwrap();
    (task, enc)
}

/// `step_mixed` over every job's rows (one batch: the prompt jobs' table and the prefix
/// jobs' stack read in one pass, both gradients from its one backward) against `step` on
/// each job's rows alone: loss, prompt or prefix gradient (within `MIX_TOL`), tokens.
/// Returns the worst error.
pub fn check_step_mixed<J: Borrow<(Task, Prompt, Encoded)>>(model: &Model, jobs: &[J]) -> f64 {
    let jobs: Vec<&(Task, Prompt, Encoded)> = jobs.iter().map(Borrow::borrow).collect();
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let encs: Vec<&Encoded> = jobs.iter().map(|(_, _, e)| e).collect();
    let rows = interleave(&encs);
    let mixed = model.step_mixed(&refs, &rows).unwrap();
    assert_eq!(mixed.len(), jobs.len());
    let mut worst = 0.0f64;
    for (j, ((task, prompt, enc), got)) in jobs.iter().zip(&mixed).enumerate() {
        let want = model.step(task, prompt, &enc.rows).unwrap();
        assert_close(&format!("job {j} loss"), &[got.loss], &[want.loss], MIX_TOL);
        assert!(want.prompt_grad.iter().any(|&g| g != 0.0), "job {j}");
        let name = format!("job {j} gradient");
        let err = assert_close(&name, &got.prompt_grad, &want.prompt_grad, MIX_TOL);
        worst = worst.max(err);
        assert_eq!(got.tokens, want.tokens, "job {j}");
    }
    worst
}
