//! A decoder's training step without a capture runs its last layer and final norm at the
//! target rows' tail only (`Tail` in src/models/decoder/layer.rs: the queries, the output
//! projection and the MLP at the last rows of each row, keys and values at every row). Its
//! loss and prompt (or prefix) gradient against PyTorch + PEFT's at 1e-4, on every decoder
//! fixture (BLOOM's ALiBi, Llama's and Qwen2's RoPE, Mistral; prompt and prefix tuning), and
//! against the full step (`parity`'s, with a capture: every row) at 1e-5.

mod common;

use common::assert_close;
use common::ref_step::{load_case, ref_tuning, step_with, RefStep};
use softprompt::internals::models::{Model, Objective, Recompute};
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::CpuBackend;

type Be = CpuBackend<f32>;

/// A float32 CPU run passes at 1e-4 (reference-format.md).
const TOL: f64 = 1e-4;
/// The tail against the full step: the same float32 ops on fewer rows (the rows left out get
/// exactly zero gradient in the full step), bitwise equal on the `gemm` crate's path today;
/// 1e-5, ten times under the reference tolerance, leaves room for a GEMM path that rounds
/// the queries' gradient, added through a scatter here, otherwise.
const TOL_FULL: f64 = 1e-5;

/// The reference's labels (B, P + T for prompt tuning, B, T for a prefix), -100 ignored.
fn labels(r: &Reference) -> &[i32] {
    let RefObjective::Causal { labels } = &r.objective else {
        panic!("not a causal reference")
    };
    labels
}

/// The reference's step on `labels`, with or without a capture.
fn step(
    be: &Be,
    m: &Model<Be>,
    r: &Reference,
    labels: &[i32],
    recompute: Recompute,
    full: bool,
) -> RefStep {
    let table = (&r.prompt.data[..], ref_tuning(r).0);
    let objective = Objective::Causal { labels };
    step_with(be, m, r, table, Some(&objective), recompute, full)
}

/// Every decoder fixture: (model folder, reference).
const CASES: [(&str, &str); 10] = [
    ("bloom", "bloom/ref_causal_random.safetensors"),
    ("bloom", "bloom/ref_causal_text.safetensors"),
    ("llama", "llama/ref_causal_random.safetensors"),
    ("llama", "llama/ref_causal_text.safetensors"),
    ("mistral", "mistral/ref_causal_random.safetensors"),
    ("qwen2", "qwen2/ref_causal_random.safetensors"),
    ("qwen2", "qwen2/ref_causal_text.safetensors"),
    ("bloom", "deep/bloom/ref_causal_prefix.safetensors"),
    ("llama", "deep/llama/ref_causal_prefix.safetensors"),
    ("qwen2", "deep/qwen2/ref_causal_prefix.safetensors"),
];

#[test]
fn tail_step_matches_peft_and_the_full_step() {
    let be = Be::new();
    for (model, file) in CASES {
        let (r, m) = load_case(&be, model, file);
        let modes: &[Recompute] = if model == "bloom" {
            &[Recompute::None, Recompute::Layer]
        } else {
            &[Recompute::None, Recompute::Mlp, Recompute::Layer]
        };
        let full = step(&be, &m, &r, labels(&r), Recompute::None, true);
        for &recompute in modes {
            let got = step(&be, &m, &r, labels(&r), recompute, false);
            let name = format!("{file} {recompute:?}");
            got.assert_reference(&name, &r, TOL);
            assert_close(
                &format!("{name} loss vs full"),
                &[got.loss],
                &[full.loss],
                TOL_FULL,
            );
            let grad_vs_full = format!("{name} grad vs full");
            assert_close(&grad_vs_full, &got.grad, &full.grad, TOL_FULL);
        }
    }
}

/// The prefix references label a row from its first token on, where the tail would have to
/// cover every row and the full path runs instead; so each row's first half is unlabelled here:
/// the tail then runs (fewer bytes held after the forward than with the reference's labels, for
/// the prefix references) and equals the full step on the same labels.
#[test]
fn tail_with_late_targets_runs_and_matches_the_full_step() {
    let be = Be::new();
    for (model, file) in CASES {
        let (r, m) = load_case(&be, model, file);
        let width = labels(&r).len() / r.batch.b;
        let late: Vec<i32> = (labels(&r).chunks(width))
            .flat_map(|row| {
                (row.iter().enumerate()).map(|(t, &l)| if t < width / 2 { -100 } else { l })
            })
            .collect();
        assert!(late.iter().any(|&l| l != -100), "{file}: no label left");
        let full = step(&be, &m, &r, &late, Recompute::None, true);
        let on_reference = step(&be, &m, &r, labels(&r), Recompute::None, false);
        let held_reference = on_reference.acct.held_after_forward();
        let got = step(&be, &m, &r, &late, Recompute::None, false);
        let held = got.acct.held_after_forward();
        assert_close(
            &format!("{file} late loss vs full"),
            &[got.loss],
            &[full.loss],
            TOL_FULL,
        );
        let grad_vs_full = format!("{file} late grad vs full");
        assert_close(&grad_vs_full, &got.grad, &full.grad, TOL_FULL);
        match r.prefix {
            Some(_) => assert!(
                held < held_reference,
                "{file}: the tail did not run ({held} bytes held, {held_reference} with every row)"
            ),
            None => assert!(
                held <= held_reference,
                "{file}: {held} bytes held, {held_reference} with the reference's labels"
            ),
        }
    }
}
