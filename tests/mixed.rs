//! Many prompts, one frozen model: `Model::predict_mixed` over rows of several jobs (different
//! tasks, labels, heads and prompt lengths on one fixture model), batches mixing them, gives
//! each row the scores `Model::predict` gives its job's rows alone, within 1e-5 relative (the
//! make-up of a batch changes the last bits); and `softprompt predict` with `--prompt name=dir`
//! pairs writes what one run per prompt writes. `Model::step_mixed` over such a batch gives
//! each job the loss and gradients `Model::step` gives on its rows alone. The same for T5
//! `seq2seq` and decoder-only `causal` jobs (BLOOM's ALiBi, Llama's RoPE) on their fixtures.

use softprompt::prelude::*;

mod common;
use common::label_jobs::{check_mixed, interleave, label_job, pairs};

/// The bound: a batch's make-up changes the last bits, nothing more.
const REL_TOL: f64 = common::label_jobs::MIX_TOL;

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
    topic_pooled(model, p, seed, None)
}

/// `topic` pooled as `pooling` says (the task's default without).
fn topic_pooled(
    model: &Model,
    p: usize,
    seed: u64,
    pooling: Option<Pooling>,
) -> (Task, Prompt, Encoded) {
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
        pooling,
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

#[test]
fn mixed_tasks_equal_each_prompt_alone() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [
        sentiment(&model, 4, 1),
        topic(&model, 4, 2),
        sentiment(&model, 4, 3),
    ];
    for batch_size in [1, 3, 64] {
        check_mixed(&model, &jobs, batch_size);
    }
}

/// Prompts of different lengths share batches: row b holds its own P_b prompt rows, its
/// tokens from position P_b on and P - P_b masked padding rows.
#[test]
fn mixed_prompt_lengths_equal_each_prompt_alone() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
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

/// A prompt of 40 rows beside 24 rows of a 2-row prompt: padding each short row to 40 costs
/// more than a second pass (24 x 38 positions against 256 a pass, `by_prompt_len`), so the
/// group is cut in two (hostile pass 19: a long prompt slowed every row beside it); every
/// row's scores and each job's step still equal its own, in prediction and in the step.
#[test]
fn prompts_of_far_apart_lengths_run_apart_and_equal_each_alone() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let (task, prompt, mut enc) = sentiment(&model, 2, 5);
    enc.rows = enc.rows.iter().cycle().take(24).cloned().collect();
    let jobs = [(task, prompt, enc), topic(&model, 40, 6)];
    for batch_size in [8, 64] {
        check_mixed(&model, &jobs, batch_size);
    }
    check_step_mixed(&model, &jobs);
}

/// A sentiment job whose longest rows reach its task's bound: its `max_len`, clamped to the
/// position table beside its own prompt of `p` rows (max_position_embeddings - P).
fn sentiment_at_limit(model: &Model, p: usize, seed: u64) -> (Task, Prompt, Encoded) {
    let long = "the film opens on a quiet street and stays there for far too long, \
                while the actors wait for a plot that never arrives and the music \
                repeats the same four notes over every scene until the very end "
        .repeat(2);
    let data = pairs(&[
        (&long, "negative"),
        ("quite good", "positive"),
        (&long.replace("far too long", "a warm while"), "positive"),
        ("bad", "negative"),
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

/// #17: each task's max_len is clamped to the position table beside its own prompt (bert_mlm:
/// 64 - 4 = 60), so a batch of a short prompt's longest rows beside a longer prompt runs
/// past the table (12 + 60 > 64) while every row fits beside its own prompt (4 + 60). Such
/// batches predict and step as each prompt alone does (they were refused: "expected <= 64,
/// got 12 + 60").
#[test]
fn rows_at_the_position_limit_mix_prompt_lengths() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [sentiment_at_limit(&model, 4, 1), topic(&model, 12, 2)];
    let (task, _, enc) = &jobs[0];
    let longest = enc.rows.iter().map(|r| r.ids.len()).max().unwrap();
    assert_eq!((task.spec().max_len, longest), (60, 60));
    assert!(enc.rows.iter().any(|r| r.truncated));
    for batch_size in [2, 64] {
        check_mixed(&model, &jobs, batch_size);
    }
    check_step_mixed(&model, &jobs);
}

/// Each job's `step_mixed` output against `Model::step` on its rows alone: loss, prompt and
/// head gradients within `REL_TOL`, the same tokens; gradients that are not all zero, so the
/// comparison can fail.
fn check_step_mixed(model: &Model, jobs: &[(Task, Prompt, Encoded)]) {
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let encs: Vec<&Encoded> = jobs.iter().map(|(_, _, e)| e).collect();
    let rows = interleave(&encs);
    let mixed = model.step_mixed(&refs, &rows).unwrap();
    assert_eq!(mixed.len(), jobs.len());
    for (j, ((task, prompt, enc), got)) in jobs.iter().zip(&mixed).enumerate() {
        let want = model.step(task, prompt, &enc.rows).unwrap();
        common::assert_close(&format!("job {j} loss"), &[got.loss], &[want.loss], REL_TOL);
        assert!(
            want.prompt_grad.iter().any(|&g| g != 0.0),
            "job {j}: a zero gradient"
        );
        let name = format!("job {j} prompt grad");
        common::assert_close(&name, &got.prompt_grad, &want.prompt_grad, REL_TOL);
        assert_eq!(got.head_grad.is_some(), want.head_grad.is_some(), "job {j}");
        if let (Some((gw, gb)), Some((ww, wb))) = (&got.head_grad, &want.head_grad) {
            common::assert_close(&format!("job {j} head weight grad"), gw, ww, REL_TOL);
            common::assert_close(&format!("job {j} head bias grad"), gb, wb, REL_TOL);
        }
        assert_eq!(got.tokens, want.tokens, "job {j}");
    }
}

#[test]
fn step_mixed_equals_each_job_alone() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [
        sentiment(&model, 4, 1),
        topic(&model, 4, 2),
        sentiment(&model, 4, 3),
    ];
    check_step_mixed(&model, &jobs);
}

/// Prompts of different lengths step in one batch, as in prediction.
#[test]
fn step_mixed_over_prompt_lengths_equals_each_job_alone() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [
        topic(&model, 5, 1),
        sentiment(&model, 3, 2),
        topic(&model, 3, 3),
    ];
    check_step_mixed(&model, &jobs);
}

/// Prompts of 3, 5 and 8 rows in one batch (the `[MASK]` row, mean and [CLS] pooling move
/// with each row's prompt length): each row's scores, and each job's loss and gradients, equal
/// its prompt's own run's, for every batch size.
#[test]
fn prompts_of_3_5_and_8_rows_share_batches() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let jobs = [
        sentiment(&model, 3, 11),
        topic(&model, 5, 12),
        sentiment(&model, 8, 13),
        topic_pooled(&model, 8, 14, Some(Pooling::Cls)),
        topic_pooled(&model, 3, 15, Some(Pooling::Cls)),
    ];
    for batch_size in [1, 4, 64] {
        check_mixed(&model, &jobs, batch_size);
    }
    check_step_mixed(&model, &jobs);
}

/// A job with no row in the batch: loss 0, zero gradients, 0 tokens; an empty batch and a
/// row naming no job are errors.
#[test]
fn step_mixed_edges() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let (t0, p0, e0) = sentiment(&model, 4, 1);
    let (t1, p1, _) = topic(&model, 4, 2);
    let jobs = [(&t0, &p0), (&t1, &p1)];
    let rows: Vec<(usize, Row)> = e0.rows.iter().map(|r| (0, r.clone())).collect();
    let out = model.step_mixed(&jobs, &rows).unwrap();
    let want = model.step(&t0, &p0, &e0.rows).unwrap();
    common::assert_close("job 0 loss", &[out[0].loss], &[want.loss], REL_TOL);
    assert_eq!((out[1].loss, out[1].tokens), (0.0, 0));
    assert!(out[1].grads().all(|&g| g == 0.0));
    assert_eq!(out[1].prompt_grad.len(), p1.values().len());
    let e = model
        .step_mixed(&jobs, &[])
        .map(|_| ())
        .expect_err("no rows");
    assert!(e.to_string().contains("rows"), "{e}");
    let e = model
        .step_mixed(&jobs, &[(2, e0.rows[0].clone())])
        .map(|_| ());
    let e = e.expect_err("job 2 of 2").to_string();
    assert!(e.contains("row 0") && e.contains("job 2"), "{e}");
}

/// `predict_mixed_until` tells the rows done, of every job, after each batch (`predict`'s
/// bar over several prompts), and a stop set during the first batch ends the call with
/// `Error::Interrupted`.
#[test]
fn predict_mixed_until_tells_each_batch_and_stops() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let (ta, pa, ea) = sentiment(&model, 4, 1);
    let (tb, pb, eb) = topic(&model, 6, 2);
    let jobs = [(&ta, &pa), (&tb, &pb)];
    let rows: Vec<_> = (ea.rows.iter().map(|r| (0, r.clone())))
        .chain(eb.rows.iter().map(|r| (1, r.clone())))
        .collect();
    let n = rows.len();
    assert!(n > 6, "{n} rows: three batches at least");
    let never = AtomicBool::new(false);
    let mut heard = vec![];
    let got = model
        .predict_mixed_until(&jobs, &rows, 3, &mut |done| heard.push(done), &never)
        .unwrap();
    let want: Vec<usize> = (1..=n.div_ceil(3)).map(|k| (3 * k).min(n)).collect();
    assert_eq!(heard, want);
    let plain = model.predict_mixed(&jobs, &rows, 3).unwrap();
    assert_eq!(format!("{got:?}"), format!("{plain:?}"));
    let stop = AtomicBool::new(false);
    let e = model.predict_mixed_until(
        &jobs,
        &rows,
        3,
        &mut |_| stop.store(true, Ordering::SeqCst),
        &stop,
    );
    let e = e.expect_err("stopped after the first batch").to_string();
    assert!(e.contains(&format!("after 3 of {n} rows")), "{e}");
}

#[test]
fn mixed_rows_naming_no_job_are_an_error() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let (task, prompt, enc) = sentiment(&model, 4, 1);
    let rows = vec![(1, enc.rows[0].clone())];
    let e = model
        .predict_mixed(&[(&task, &prompt)], &rows, 4)
        .map(|_| ());
    let e = e.expect_err("job 1 of 1").to_string();
    assert!(e.contains("row 0") && e.contains("job 1"), "{e}");
}

fn cli_predict(args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .arg("predict")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "softprompt predict {args:?}: {stderr}"
    );
    (String::from_utf8(out.stdout).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `softprompt predict --prompt a=dir --prompt b=dir` over rows naming their prompt: each line
/// is the one `predict --prompt dir` writes for that row alone (scores within 1e-5), plus
/// `"prompt"`; a row naming no prompt is an error naming the line and --prompt-field.
#[test]
fn cli_predict_over_named_prompts_equals_one_prompt_at_a_time() {
    let model = Model::open(common::fixture("bert_mlm"), Device::Cpu).unwrap();
    let scratch = common::ScratchDir::new("mixed_cli");
    let dir = scratch.path();
    let jobs = [
        ("sent", sentiment(&model, 4, 1)),
        ("topic", topic(&model, 6, 2)),
    ];
    let mut lines = String::new();
    let mut args = vec![];
    for (name, (task, prompt, _)) in &jobs {
        let out = dir.join(name);
        model
            .save_prompt(&out, prompt, task, SaveOptions::default())
            .unwrap();
        args.push(format!("{name}={}", out.display()));
    }
    let long = "a slow film that never finds its feet ".repeat(8);
    let texts = [
        ("sent", "a great film"),
        ("topic", "the striker scored a goal in the last minute"),
        ("topic", "rates rose"),
        ("sent", "dull and far too long, with nothing to say"),
        ("sent", "fine"),
        // cut to sent's max_len, 64 - 4 = 60 tokens: its batch with topic's prompt of 6 rows
        // runs past the position table, each row fits beside its own (#17)
        ("sent", long.as_str()),
    ];
    for (name, text) in texts {
        lines.push_str(&format!(
            "{{\"text\": \"{text}\", \"prompt\": \"{name}\"}}\n"
        ));
    }
    let data = dir.join("rows.jsonl");
    std::fs::write(&data, &lines).unwrap();
    let data_s = data.display().to_string();
    let mut mixed_args = vec!["--data", &data_s, "--batch-size", "3"];
    for a in &args {
        mixed_args.extend(["--prompt", a.as_str()]);
    }
    let mixed = cli_predict(&mixed_args);
    assert_eq!(mixed.len(), texts.len());
    // on a terminal the rows of every prompt count on one bar, as one prompt's do
    let line = format!(
        "'{}' predict {}",
        common::binary().display(),
        mixed_args.join(" ")
    );
    assert!(common::on_terminal(&line).contains("/6 rows"));
    for (name, _) in &jobs {
        let only = dir.join(format!("{name}.jsonl"));
        let rows: Vec<&str> = lines
            .lines()
            .filter(|l| l.contains(&format!("\"{name}\"")))
            .collect();
        std::fs::write(&only, rows.join("\n")).unwrap();
        let prompt_dir = dir.join(name).display().to_string();
        let alone = cli_predict(&[
            "--data",
            &only.display().to_string(),
            "--prompt",
            &prompt_dir,
        ]);
        let got: Vec<&serde_json::Value> = mixed.iter().filter(|v| v["prompt"] == *name).collect();
        assert_eq!(got.len(), alone.len(), "{name}");
        for (g, w) in got.iter().zip(&alone) {
            assert_eq!(
                (&g["text"], &g["label"]),
                (&w["text"], &w["label"]),
                "{name}"
            );
            let scores = |v: &serde_json::Value| -> Vec<f64> {
                let m = v["scores"].as_object().unwrap();
                m.values().map(|s| s.as_f64().unwrap()).collect()
            };
            assert_eq!(
                scores(g).len(),
                jobs.iter()
                    .find(|j| j.0 == *name)
                    .unwrap()
                    .1
                     .0
                    .labels()
                    .len()
            );
            common::assert_close(&format!("{name} scores"), &scores(g), &scores(w), REL_TOL);
        }
    }
    // a row naming no prompt (line 7), then a blank one: the prompt's field, not a label's
    // (hostile pass 31, INFO-2)
    let refused = |prompt: &str, want: &str| {
        let row = serde_json::json!({"text": "x", "prompt": prompt});
        std::fs::write(&data, format!("{lines}{row}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
            .arg("predict")
            .args(&mixed_args)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && e.contains(":7") && e.contains(want),
            "{e}"
        );
    };
    refused("other", "--prompt-field");
    refused(" ", "each row names its prompt");
}

/// A label job of the LM families (`seq2seq` on T5, `causal` on the decoders): rank
/// classification over target texts of different token lengths, its own template.
fn lm_labels(model: &Model, p: usize, seed: u64, three: bool) -> (Task, Prompt, Encoded) {
    lm_labels_decoded(model, p, seed, three, None)
}

/// `lm_labels` predicted as `decode` says (the task's default without).
fn lm_labels_decoded(
    model: &Model,
    p: usize,
    seed: u64,
    three: bool,
    decode: Option<Decode>,
) -> (Task, Prompt, Encoded) {
    let (data, verbalizer, template) = label_job(three);
    let opts = TaskOptions {
        template: Some(template.into()),
        verbalizer: Some(
            (verbalizer.iter())
                .map(|&(l, w)| (l.into(), w.into()))
                .collect(),
        ),
        decode,
        ..TaskOptions::default()
    };
    job(model, &opts, &data, p, seed)
}

/// A free-target job (each row its own target text): stepped mixed, predicted greedily alone.
fn lm_free(model: &Model, p: usize, seed: u64) -> (Task, Prompt, Encoded) {
    let data = pairs(&[
        ("translate: the house", "das haus"),
        ("translate: a very small dog in the garden", "ein hund"),
        ("translate: good", "gut und schön, wirklich sehr gut"),
    ]);
    let opts = TaskOptions {
        free_targets: true,
        ..TaskOptions::default()
    };
    job(model, &opts, &data, p, seed)
}

/// T5 `seq2seq` and the decoders' `causal` jobs share batches: prompts of 3, 5 and 8 rows,
/// label targets of different lengths and counts; each row's rank scores equal its prompt's
/// own run's, and each job's loss and prompt gradient (free targets included) its own step's.
#[test]
fn lm_jobs_of_every_family_share_batches() {
    for name in ["t5_v1_0", "t5_flan", "bloom", "llama"] {
        let model = Model::open(common::fixture(name), Device::Cpu).unwrap();
        let jobs = [
            lm_labels(&model, 3, 21, false),
            lm_labels(&model, 8, 22, true),
            lm_labels(&model, 5, 23, false),
        ];
        for batch_size in [1, 4, 64] {
            check_mixed(&model, &jobs, batch_size);
        }
        check_step_mixed(&model, &jobs);
        let jobs = [
            lm_labels(&model, 5, 24, true),
            lm_free(&model, 3, 25),
            lm_free(&model, 8, 26),
        ];
        check_step_mixed(&model, &jobs);
        // one prompt length: the table without per-row lengths
        let jobs = [lm_labels(&model, 4, 27, true), lm_free(&model, 4, 28)];
        check_step_mixed(&model, &jobs);
    }
}

/// `predict_mixed_until` over two groups (a rank-scored job and a greedy one on BLOOM, which
/// never share a batch): the rows done count on across them, and a stop heard at the first
/// group's last batch ends the call there, in the call's counts (review 11, R11-4/5).
#[test]
fn predict_mixed_until_counts_across_groups() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let model = Model::open(common::fixture("bloom"), Device::Cpu).unwrap();
    let (ta, pa, ea) = lm_labels(&model, 3, 41, false);
    let (tb, pb, eb) = lm_free(&model, 5, 42);
    let jobs = [(&ta, &pa), (&tb, &pb)];
    let rows: Vec<_> = (eb.rows.iter().map(|r| (1, r.clone())))
        .chain(ea.rows.iter().map(|r| (0, r.clone())))
        .collect();
    let (first, n) = (ea.rows.len(), rows.len());
    let never = AtomicBool::new(false);
    let mut heard = vec![];
    model
        .predict_mixed_until(&jobs, &rows, 2, &mut |done| heard.push(done), &never)
        .unwrap();
    // the rank group (job 0's rows) runs first, two rows a batch, then the greedy group
    let batches =
        |from: usize, rows: usize| (1..=rows.div_ceil(2)).map(move |k| from + (2 * k).min(rows));
    let want: Vec<usize> = batches(0, first).chain(batches(first, n - first)).collect();
    assert_eq!(heard, want);
    let stop = AtomicBool::new(false);
    let mut at_group_end = |done| stop.store(done == first, Ordering::SeqCst);
    let e = model.predict_mixed_until(&jobs, &rows, 2, &mut at_group_end, &stop);
    let e = e.expect_err("stopped at the first group's end").to_string();
    assert!(e.contains(&format!("after {first} of {n} rows")), "{e}");
}

/// A label job decoded greedily (`--decode greedy`): its class the label whose target it
/// generates.
fn lm_greedy_labels(model: &Model, p: usize, seed: u64) -> (Task, Prompt, Encoded) {
    lm_labels_decoded(model, p, seed, true, Some(Decode::Greedy))
}

/// `lm_free` generating at most `max` tokens a row.
fn lm_free_upto(model: &Model, p: usize, seed: u64, max: usize) -> (Task, Prompt, Encoded) {
    let data = pairs(&[
        ("translate: the old bridge", "die alte brücke"),
        ("translate: rain", "regen"),
    ]);
    let opts = TaskOptions {
        free_targets: true,
        max_target_len: Some(max),
        ..TaskOptions::default()
    };
    job(model, &opts, &data, p, seed)
}

/// Greedy jobs of different prompts (3, 5, 8 and 2 rows; free targets under different token
/// limits, a label job decoded greedily) share batches on T5 and the decoders (BLOOM's ALiBi,
/// Llama's RoPE): every row's tokens and class equal its job's alone, its summed
/// log-probability within 1e-5; a rank-scored job in the same call keeps its own scores.
#[test]
fn greedy_lm_jobs_share_batches() {
    for name in ["t5_v1_0", "bloom", "llama"] {
        let model = Model::open(common::fixture(name), Device::Cpu).unwrap();
        let jobs = [
            lm_labels(&model, 3, 31, false),
            lm_free(&model, 5, 32),
            lm_free_upto(&model, 8, 33, 3),
            lm_greedy_labels(&model, 2, 34),
        ];
        for (task, prompt, enc) in &jobs[1..] {
            let alone = model.predict(task, prompt, enc, 8).unwrap();
            assert!(
                alone.iter().all(|p| !p.ids.is_empty()),
                "{name}: greedy output"
            );
        }
        let mut worst = 0.0f64;
        for batch_size in [1, 4, 64] {
            worst = worst.max(check_mixed(&model, &jobs, batch_size));
        }
        eprintln!("{name}: greedy mixed worst rel err {worst:.2e}");
    }
}

/// Through the kernels (the `emu` device, float32 build): the prompt table's gather in
/// `embedding_fwd` gives each row its own prompt, of its own length, as on the CPU, in rank
/// scoring, greedy decoding (T5's, and the decoders' generation with the KV cache) and the
/// step.
#[cfg(feature = "emu")]
#[test]
fn mixed_on_the_emu_device_equals_each_prompt_alone() {
    let device = Device::parse("emu", "f32").unwrap();
    let model = Model::open(common::fixture("bert_mlm"), device).unwrap();
    let jobs = [
        sentiment(&model, 4, 1),
        topic(&model, 4, 2),
        sentiment(&model, 3, 3),
        topic(&model, 8, 4),
    ];
    check_mixed(&model, &jobs, 64);
    check_step_mixed(&model, &jobs);
    // the kernels over a batch laid out past the position table (#17)
    let jobs = [sentiment_at_limit(&model, 4, 1), topic(&model, 12, 2)];
    check_mixed(&model, &jobs, 64);
    check_step_mixed(&model, &jobs);
    for name in ["t5_v1_1", "bloom", "llama"] {
        let model = Model::open(common::fixture(name), device).unwrap();
        let jobs = [
            lm_labels(&model, 3, 41, false),
            lm_labels(&model, 6, 42, true),
            lm_free(&model, 4, 43),
        ];
        // the free-target job decodes greedily in a batch of its own, through the kernels
        check_mixed(&model, &jobs, 64);
        check_step_mixed(&model, &jobs);
    }
}

/// #17 on a decoder with a sliding window (mistral, its window set to 24): greedy jobs of
/// different bounds (2 and 8 new tokens) share a left-padded batch whose layout runs past the
/// window (the long row's 3 + 19 positions, then 8 new tokens: 30 > 24) while each row's own
/// positions fit (3 + 19 + 2 and 3 + 2 + 8). It generates as each job alone (it was refused:
/// "new tokens ... past sliding_window 24").
#[test]
fn greedy_rows_of_other_bounds_fit_the_window_each() {
    let scratch = common::ScratchDir::new("mixed_window");
    let dir = common::windowed_mistral(scratch.path(), 24);
    let model = Model::open(&dir, Device::Cpu).unwrap();
    let long = "word ".repeat(40);
    let data = Dataset::from_pairs("mem", [(long.as_str(), None::<&str>), ("short", None)]);
    let jobs: Vec<(Task, Prompt, Encoded)> = [(2, 1), (8, 2)]
        .into_iter()
        .map(|(bound, seed)| {
            let opts = TaskOptions {
                task: Some(TaskKind::Causal),
                free_targets: true,
                max_target_len: Some(bound),
                ..TaskOptions::default()
            };
            job(&model, &opts, &data, 3, seed)
        })
        .collect();
    // each task's rows cut to what its prompt and bound leave of the window
    let longest = |e: &Encoded| e.rows.iter().map(|r| r.ids.len()).max().unwrap();
    assert_eq!(longest(&jobs[0].2), 24 - 3 - 2);
    assert_eq!(longest(&jobs[1].2), 24 - 3 - 8);
    // the long row of the first job beside the second job's rows in one batch
    let worst = check_mixed(&model, &jobs, 8);
    assert!(worst.is_finite(), "{worst}");
}
