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

/// The step's loss and trained gradient, with or without a capture.
fn step(
    be: &Be,
    m: &Model<Be>,
    r: &Reference,
    recompute: Recompute,
    full: bool,
) -> (f64, Vec<f32>) {
    let RefObjective::Causal { labels } = &r.objective else {
        panic!("not a causal reference")
    };
    let tuning = match &r.prefix {
        Some(prefix) => Tuning::Prefix(prefix.spec),
        None => Tuning::Prompt(r.p()),
    };
    let table = be.upload(DType::F32, &r.prompt.data).unwrap();
    let mut grad = be.zeros(DType::F32, r.prompt.data.len()).unwrap();
    let mut capture = Capture::new();
    let out = m
        .train_step(
            be,
            &mut MemoryAccountant::new(),
            &mut grad,
            &table,
            &r.batch,
            tuning,
            &Objective::Causal { labels },
            recompute,
            full.then_some(&mut capture),
        )
        .unwrap();
    (out.loss, be.download(&grad).unwrap())
}

#[test]
fn tail_step_matches_peft_and_the_full_step() {
    let be = Be::new();
    let cases = [
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
    for (model, file) in cases {
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
        let (full_loss, full_grad) = step(&be, &m, &r, Recompute::None, true);
        for &recompute in modes {
            let (loss, grad) = step(&be, &m, &r, recompute, false);
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
