//! A decoder's training step without a capture runs its last layer and final norm at the
//! target rows' tail only (`Tail` in src/models/decoder/layer.rs: the queries, the output
//! projection and the MLP at the last rows of each row, keys and values at every row). Its
//! loss and prompt (or prefix) gradient against PyTorch + PEFT's at 1e-4, on every decoder
//! fixture (BLOOM's ALiBi, Llama's and Qwen2's RoPE, Mistral; prompt and prefix tuning), and
//! against the full step (`parity`'s, with a capture: every row) at 1e-5.

mod common;

use common::{assert_close, fixtures};
use softprompt::internals::backend::{DType, Storage};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::{Capture, Model, Objective, Recompute, Tuning};
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

/// The step's loss, trained gradient and bytes held after the forward, with or without a
/// capture.
fn step(
    be: &Be,
    m: &Model<Be>,
    r: &Reference,
    labels: &[i32],
    recompute: Recompute,
    full: bool,
) -> (f64, Vec<f32>, usize) {
    let tuning = match &r.prefix {
        Some(prefix) => Tuning::Prefix(prefix.spec),
        None => Tuning::Prompt(r.p()),
    };
    let table = be.upload(DType::F32, &r.prompt.data).unwrap();
    let mut grad = be.zeros(DType::F32, r.prompt.data.len()).unwrap();
    let mut capture = Capture::new();
    let mut acct = MemoryAccountant::new();
    let out = m
        .train_step(
            be,
            &mut acct,
            &mut grad,
            &table,
            &r.batch,
            tuning,
            &Objective::Causal { labels },
            recompute,
            full.then_some(&mut capture),
        )
        .unwrap();
    (
        out.loss,
        be.download(&grad).unwrap(),
        acct.held_after_forward(),
    )
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
        let r = Reference::read(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let m = Model::load(&be, &fixtures().join(model)).unwrap();
        let grad_name = if r.prefix.is_some() {
            "prefix_grad"
        } else {
            "prompt_grad"
        };
        let modes: &[Recompute] = if model == "bloom" {
            &[Recompute::None, Recompute::Layer]
        } else {
            &[Recompute::None, Recompute::Mlp, Recompute::Layer]
        };
        let (full_loss, full_grad, _) = step(&be, &m, &r, labels(&r), Recompute::None, true);
        for &recompute in modes {
            let (loss, grad, _) = step(&be, &m, &r, labels(&r), recompute, false);
            let name = format!("{file} {recompute:?}");
            assert_close(
                &format!("{name} loss"),
                &[loss],
                &r.expected["loss"].data,
                TOL,
            );
            assert_close(
                &format!("{name} {grad_name}"),
                &grad,
                &r.expected[grad_name].data,
                TOL,
            );
            assert_close(
                &format!("{name} loss vs full"),
                &[loss],
                &[full_loss],
                TOL_FULL,
            );
            assert_close(&format!("{name} grad vs full"), &grad, &full_grad, TOL_FULL);
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
        let r = Reference::read(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let m = Model::load(&be, &fixtures().join(model)).unwrap();
        let width = labels(&r).len() / r.batch.b;
        let late: Vec<i32> = (labels(&r).chunks(width))
            .flat_map(|row| {
                (row.iter().enumerate()).map(|(t, &l)| if t < width / 2 { -100 } else { l })
            })
            .collect();
        assert!(late.iter().any(|&l| l != -100), "{file}: no label left");
        let (full_loss, full_grad, _) = step(&be, &m, &r, &late, Recompute::None, true);
        let (_, _, held_reference) = step(&be, &m, &r, labels(&r), Recompute::None, false);
        let (loss, grad, held) = step(&be, &m, &r, &late, Recompute::None, false);
        assert_close(
            &format!("{file} late loss vs full"),
            &[loss],
            &[full_loss],
            TOL_FULL,
        );
        assert_close(
            &format!("{file} late grad vs full"),
            &grad,
            &full_grad,
            TOL_FULL,
        );
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
