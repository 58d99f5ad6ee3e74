//! Many prompts, one frozen model: `Model::predict_mixed` over rows of several jobs (different
//! tasks, labels, heads and prompt lengths on one fixture model), batches mixing them, gives
//! each row the scores `Model::predict` gives its job's rows alone, within 1e-5 relative (the
//! make-up of a batch changes the last bits); and `softprompt predict` with `--prompt name=dir`
//! pairs writes what one run per prompt writes.

use softprompt::prelude::*;
use std::path::{Path, PathBuf};

mod common;

/// The bound: a batch's make-up changes the last bits, nothing more.
const REL_TOL: f64 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn pairs(items: &[(&str, &str)]) -> Dataset {
    Dataset::from_pairs("mem", items.iter().map(|&(t, l)| (t, Some(l))))
}

/// A sentiment job (pet, two verbalized labels) with a random prompt of `p` rows.
fn sentiment(model: &Model, p: usize, seed: u64) -> (Task, Prompt, Encoded) {
    let data = pairs(&[
        ("a great film with a warm heart", "positive"),
        ("bad", "negative"),
        ("the plot drags and the actors look tired of it", "negative"),
        ("quite good", "positive"),
        ("not my kind of thing at all, but well made", "positive"),
    ]);
    let opts = TaskOptions {
        verbalizer: Some(vec![
            ("negative".into(), "bad".into()),
            ("positive".into(), "great".into()),
        ]),
        ..TaskOptions::default()
    };
    job(model, &opts, &data, p, seed)
}

/// A topic job (cls, three labels, its own template) with a random prompt and head.
fn topic(model: &Model, p: usize, seed: u64) -> (Task, Prompt, Encoded) {
    let data = pairs(&[
        ("the striker scored twice", "sport"),
        ("rates rose again this quarter", "money"),
        ("a new telescope looks further back", "science"),
        (
            "the keeper saved a penalty in the last minute of the match",
            "sport",
        ),
    ]);
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        template: Some("topic: {text}".into()),
        ..TaskOptions::default()
    };
    job(model, &opts, &data, p, seed)
}

fn job(
    model: &Model,
    opts: &TaskOptions,
    data: &Dataset,
    p: usize,
    seed: u64,
) -> (Task, Prompt, Encoded) {
    let task = model.task(opts, Some(data), p).unwrap();
    let mut prompt = model
        .new_prompt(&task, p, &PromptInit::Random { std: 0.5 }, seed)
        .unwrap();
    // a fresh head is zero: random values make every label's score differ
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    if let Some((w, b)) = prompt.head_mut() {
        for v in w.iter_mut().chain(b.iter_mut()) {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4;
        }
    }
    let enc = model.encode(&task, data).unwrap();
    (task, prompt, enc)
}

/// Rows of every job interleaved (job 0's first row, job 1's first row, ...).
fn interleave(encs: &[&Encoded]) -> Vec<(usize, Row)> {
    let longest = encs.iter().map(|e| e.rows.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            (encs.iter().enumerate())
                .filter_map(move |(j, e)| e.rows.get(i).map(|r| (j, r.clone())))
        })
        .collect()
}

/// Each mixed row's scores and class against its job's `predict` alone.
fn check_mixed(model: &Model, jobs: &[(Task, Prompt, Encoded)], batch_size: usize) {
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let encs: Vec<&Encoded> = jobs.iter().map(|(_, _, e)| e).collect();
    let rows = interleave(&encs);
    let mixed = model.predict_mixed(&refs, &rows, batch_size).unwrap();
    assert_eq!(mixed.len(), rows.len());
    let alone: Vec<Vec<Prediction>> = (jobs.iter())
        .map(|(t, p, e)| model.predict(t, p, e, 1).unwrap())
        .collect();
    let mut next = vec![0usize; jobs.len()];
    for ((j, _), got) in rows.iter().zip(&mixed) {
        let want = &alone[*j][next[*j]];
        next[*j] += 1;
        assert_eq!(
            got.scores.len(),
            jobs[*j].0.labels().len(),
            "job {j}: one score a label"
        );
        common::assert_close(
            &format!("job {j} scores"),
            &got.scores,
            &want.scores,
            REL_TOL,
        );
        assert_eq!(got.class, want.class, "job {j}");
    }
}

#[test]
fn mixed_tasks_equal_each_prompt_alone() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [
        sentiment(&model, 4, 1),
        topic(&model, 4, 2),
        sentiment(&model, 4, 3),
    ];
    for batch_size in [1, 3, 64] {
        check_mixed(&model, &jobs, batch_size);
    }
}

/// Prompts of different lengths: rows of one length share batches, no row sees padding.
#[test]
fn mixed_prompt_lengths_equal_each_prompt_alone() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [
        sentiment(&model, 4, 1),
        topic(&model, 7, 2),
        sentiment(&model, 2, 3),
        topic(&model, 4, 4),
    ];
    for batch_size in [2, 64] {
        check_mixed(&model, &jobs, batch_size);
    }
}

#[test]
fn mixed_rows_naming_no_job_are_an_error() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let (task, prompt, enc) = sentiment(&model, 4, 1);
    let rows = vec![(1, enc.rows[0].clone())];
    let e = model
        .predict_mixed(&[(&task, &prompt)], &rows, 4)
        .map(|_| ());
    let e = e.expect_err("job 1 of 1").to_string();
    assert!(e.contains("row 0") && e.contains("job 1"), "{e}");
}
