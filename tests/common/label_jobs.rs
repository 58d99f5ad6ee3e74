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
