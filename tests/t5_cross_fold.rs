//! T5's cross-attention with its key and value products folded into the queries
//! (src/models/t5/cross.rs) against the products as written, and against PyTorch + PEFT: the
//! same loss and prompt gradient up to rounding, in f64 and float32, with every layer kept
//! and recomputed; it holds the (B·L, H, C) folded queries instead of q, k and v.

mod common;

use common::{assert_close, fixture};
use softprompt::internals::backend::{Backend, DType};
use softprompt::internals::config::ModelConfig;
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::t5::{self, CrossFold, T5};
use softprompt::internals::models::Recompute;
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::weights::WeightStore;
use softprompt::internals::CpuBackend;

/// A step's loss and prompt gradient, and what its forward held: the first decoder block's
/// cross-attention tensors by name, and the bytes.
struct Step {
    loss: f64,
    grad: Vec<f64>,
    cross_names: Vec<String>,
    held: usize,
}

fn step<B: Backend>(be: &B, model: &T5<B>, r: &Reference, recompute: Recompute) -> Step {
    let RefObjective::Seq2Seq { labels, l } = &r.objective else {
        panic!("seq2seq fixture expected")
    };
    let inp = t5::upload_inputs(be, &model.cfg, &r.batch, r.p(), labels, *l).unwrap();
    let prompt = be.upload(DType::F32, &r.prompt.data).unwrap();
    let mut acct = MemoryAccountant::new();
    let (enc, _ea) =
        (model.encoder_fwd(be, &mut acct, &prompt, &inp, Recompute::None, None)).unwrap();
    let (_dec, _da) =
        (model.decoder_fwd(be, &mut acct, &enc, &inp, Recompute::None, None)).unwrap();
    let held = acct.held_bytes();
    let mut cross_names: Vec<String> = (acct.live().map(|(n, _)| n.to_string()))
        .filter(|n| n.starts_with("decoder.0.cross_"))
        .collect();
    cross_names.sort();
    let mut dprompt = be.zeros(DType::F32, r.p() * model.cfg.d_model).unwrap();
    let mut acct = MemoryAccountant::new();
    let loss = model
        .train_step(
            be,
            &mut acct,
            &mut dprompt,
            &prompt,
            &inp,
            labels,
            recompute,
            None,
        )
        .unwrap();
    Step {
        loss,
        grad: be.download_f64(&dprompt).unwrap(),
        cross_names,
        held,
    }
}

fn load<B: Backend>(be: &B) -> (T5<B>, Reference) {
    let dir = fixture("t5_v1_1");
    let r = Reference::read(&dir.join("ref_seq2seq_random.safetensors")).unwrap();
    let ModelConfig::T5(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("t5 config expected")
    };
    let model = T5::load(be, &WeightStore::open(&dir).unwrap(), cfg).unwrap();
    (model, r)
}

/// Folded against as written, both precisions. Tolerances (relative L2): f64 1e-12 (the
/// reassociation's rounding: loss observed 0, gradient 2.9e-15), float32 1e-5 (the order of
/// every sum changes: loss observed 3.2e-8, gradient 1.9e-6); against PyTorch's float32 loss
/// and gradient 1e-4, the parity tolerance (observed 4.2e-8 and 3.4e-6).
fn fold_matches<B: Backend>(be: &B, precision: &str, tol: f64) {
    let (mut model, r) = load(be);
    let RefObjective::Seq2Seq { l, .. } = &r.objective else {
        panic!("seq2seq fixture expected")
    };
    let (b, l, t, cfg) = (r.batch.b, *l, r.p() + r.batch.t, model.cfg.clone());
    let (h, c, a) = (cfg.num_heads, cfg.d_model, cfg.inner_dim());
    for recompute in [Recompute::None, Recompute::Layer] {
        model.cross_fold = CrossFold::Never;
        let want = step(be, &model, &r, recompute);
        model.cross_fold = CrossFold::Always;
        let got = step(be, &model, &r, recompute);
        let name = format!("{precision} {recompute:?}");
        assert_close(&format!("{name} loss"), &[got.loss], &[want.loss], tol);
        assert_close(&format!("{name} prompt_grad"), &got.grad, &want.grad, tol);
        let torch = &r.expected;
        assert_close(
            &format!("{name} loss vs torch"),
            &[got.loss],
            &torch["loss"].data,
            1e-4,
        );
        let grad = &torch["prompt_grad"].data;
        assert_close(&format!("{name} grad vs torch"), &got.grad, grad, 1e-4);
        // the folded queries (B·L, H, C) in place of q (B·L, A), k and v (B·T, A) each
        let names = ["cross_in", "cross_lse", "cross_q", "cross_rstd"];
        let names: Vec<String> = names.iter().map(|n| format!("decoder.0.{n}")).collect();
        assert_eq!(got.cross_names, names, "{name}: held");
        let (layers, size) = (cfg.num_decoder_layers, be.act_dtype().size());
        let direct = layers * size * (b * l * a + 2 * b * t * a);
        let folded = layers * size * b * l * h * c;
        assert_eq!(got.held + direct, want.held + folded, "{name}: held bytes");
    }
}

#[test]
fn folded_cross_attention_matches_the_products_as_written() {
    fold_matches(&CpuBackend::<f64>::new(), "f64", 1e-12);
    fold_matches(&CpuBackend::<f32>::new(), "f32", 1e-5);
}

/// `Auto` folds on the CPU only where it saves half the multiply-adds: not at the fixture's
/// shapes (D 12, T 36, L 8: 2·8·48 > 36·12), so the step there is the products as written.
#[test]
fn auto_keeps_the_products_at_small_shapes() {
    let be = CpuBackend::<f32>::new();
    let (mut model, r) = load(&be);
    assert_eq!(model.cross_fold, CrossFold::Auto);
    let auto = step(&be, &model, &r, Recompute::None);
    model.cross_fold = CrossFold::Never;
    let never = step(&be, &model, &r, Recompute::None);
    assert_eq!(auto.loss.to_bits(), never.loss.to_bits());
    assert_eq!(auto.held, never.held);
    assert!(auto.cross_names.iter().any(|n| n == "decoder.0.cross_k"));
}
