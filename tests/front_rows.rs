//! T5's encoder and the decoder-only stacks have the prompt in front, and every other row of
//! their first layer's input is a frozen token embedding: the input gradient is wanted at the
//! B·P prompt rows only (none under prefix tuning), so the first layer's query, key and value
//! input-gradient products (and the norm's backward behind them) run at those rows alone
//! (`FrontRows` in src/models/common.rs; `front_bwd` in src/models/t5/block.rs and
//! src/models/decoder/layer.rs). Every other frozen-weight product runs once forward and
//! once backward, so the profiling backend's backward FLOPs are the forward's less exactly
//! the skipped rows' products. The loss and gradients themselves are checked against PyTorch +
//! PEFT by tests/parity_fixtures.rs, tests/decoder_tail.rs and tests/mixed.rs.

mod common;

use common::ref_step::{load_case, ref_step};
use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::models::{Model, Recompute};
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::CpuBackend;

type Be = Profiler<CpuBackend<f32>>;

/// A float32 CPU run passes at 1e-4 (reference-format.md).
const TOL: f64 = 1e-4;

/// One step without a capture; returns (forward FLOPs, backward FLOPs) of the frozen-weight
/// products, after checking the loss and the trained gradient against the reference's.
fn step_flops(be: &Be, m: &Model<Be>, r: &Reference, name: &str) -> (f64, f64) {
    be.reset();
    let out = ref_step(be, m, r, Recompute::None, false);
    out.assert_reference(name, r, TOL);
    (be.sum_of(&["linear_fwd"]).0, be.sum_of(&["linear_bwd"]).0)
}

/// P, the prompt rows in front of each batch row: none under prefix tuning, whose table is
/// read as keys and values.
fn prompt_rows(r: &Reference) -> usize {
    if r.prefix.is_some() {
        0
    } else {
        r.p()
    }
}

/// For each (model folder, reference): one step's backward products are its forward's less
/// `skipped(model, B·(P + T) - B·P)`, the FLOPs of the first layer's products at the rows that
/// are not the prompt's.
fn assert_skips(cases: &[(&str, &str)], skipped: impl Fn(&Model<Be>, usize, &Reference) -> usize) {
    let be = Be::new(CpuBackend::new());
    for &(model, file) in cases {
        let (r, m) = load_case(&be, model, file);
        let (b, p) = (r.batch.b, prompt_rows(&r));
        let skipped = skipped(&m, b * (p + r.batch.t) - b * p, &r);
        assert!(skipped > 0, "{file}: nothing to skip");
        let (fwd, bwd) = step_flops(&be, &m, &r, file);
        assert_eq!(
            bwd as usize,
            fwd as usize - skipped,
            "{file}: backward products"
        );
    }
}

/// T5 (v1.1's gated FFN, v1.0 under the papers' prefix placement, whose encoder runs a
/// backward for its prefix but wants no input gradient): the encoder's first block's q, k and
/// v (C → A each) are skipped at the rows that are not the prompt's, and the decoder's first
/// block's self-attention input gradient everywhere.
#[test]
fn t5_first_block_input_gradient_runs_at_the_prompt_rows_only() {
    let cases = [
        ("t5_v1_1", "t5_v1_1/ref_seq2seq_random.safetensors"),
        ("t5_v1_0", "t5_v1_0/ref_seq2seq_text.safetensors"),
        (
            "t5_v1_0",
            "deep/t5_v1_0/ref_seq2seq_prefix_papers.safetensors",
        ),
    ];
    assert_skips(&cases, |m, rows, r| {
        let Model::T5(t5) = m else { panic!("not T5") };
        let RefObjective::Seq2Seq { l, .. } = r.objective else {
            panic!("not seq2seq")
        };
        let (d, a) = (t5.cfg.d_model, t5.cfg.inner_dim());
        // and the decoder's first block runs no self-attention backward (its input is the
        // labels' frozen embeddings): its q, k and v products at the B·L decoder rows, and its
        // o product unless a decoder prefix (both placements give one) takes the gradient
        let o = r.prefix.is_none() as usize;
        2 * 3 * rows * d * a + 2 * (3 + o) * r.batch.b * l * d * a
    });
}

/// The decoder-only stacks (Llama's RoPE with grouped keys, BLOOM's ALiBi behind its
/// embedding LayerNorm, Qwen2 under prefix tuning, where the gradient stops at the prefix):
/// the first layer's q (C → H·D), k and v (C → Hkv·D) are skipped at the rows that are not
/// the prompt's.
#[test]
fn decoder_first_layer_input_gradient_runs_at_the_prompt_rows_only() {
    let cases = [
        ("llama", "llama/ref_causal_random.safetensors"),
        ("bloom", "bloom/ref_causal_text.safetensors"),
        ("qwen2", "deep/qwen2/ref_causal_prefix.safetensors"),
    ];
    assert_skips(&cases, |m, rows, _| {
        let (Model::Llama(dec) | Model::Bloom(dec)) = m else {
            panic!("not a decoder")
        };
        assert!(dec.cfg.num_layers >= 2, "the first layer is the last");
        let (c, q, kv) = (dec.cfg.hidden_size, dec.cfg.q_width(), dec.cfg.kv_width());
        2 * rows * c * (q + 2 * kv)
    });
}
