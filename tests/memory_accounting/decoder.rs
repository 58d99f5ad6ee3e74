//! Decoder-only language models: the bytes held for backward under each recompute policy,
//! against formulas written out from the saved-tensor lists.

use crate::common::fixture;
use crate::{live_names, Be, F32};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::config::{DecoderConfig, ModelConfig};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::Recompute;
use softprompt::internals::reference::{RefObjective, Reference};
use std::collections::BTreeSet;

/// Bytes one decoder layer holds under `Recompute::None` (N = B·S rows): both norms' inputs
/// (N·C each) and statistics (rstd, and LayerNorm's mean: N each), q (N·H·D), k and v
/// (N·Hkv·D each), the log-sum-exp (B·H·S), and the MLP's activation input (N·I; the gated
/// MLP also its up branch, unless `Recompute::Mlp`, or `MlpLayers(k)` in layers l < k,
/// recomputes it). The last layer runs its queries and all after them at the last `tq`
/// positions of each row only (those the loss reads), N·C of its input, its statistics, k and
/// v at every row.
fn decoder_layer_bytes(
    cfg: &DecoderConfig,
    b: usize,
    (s, tq): (usize, usize),
    recompute: Recompute,
    l: usize,
) -> usize {
    let (n, nq) = (b * s, b * tq);
    let stats = if cfg.is_bloom() { 2 } else { 1 };
    let recomputed = match recompute {
        Recompute::Mlp => true,
        Recompute::MlpLayers(k) => l < k,
        _ => false,
    };
    let mlp = if cfg.is_bloom() || recomputed { 1 } else { 2 };
    F32 * ((n + nq) * cfg.hidden_size
        + stats * (n + nq)
        + nq * cfg.q_width()
        + 2 * n * cfg.kv_width()
        + b * cfg.num_heads * tq
        + mlp * nq * cfg.intermediate_size)
}

/// The final norm's input and statistics (at the last `tq` positions of each row), and
/// BLOOM's embedding LayerNorm state.
fn decoder_outer_bytes(cfg: &DecoderConfig, b: usize, (s, tq): (usize, usize)) -> usize {
    let stats = if cfg.is_bloom() { 2 } else { 1 };
    let norm = |n: usize| n * cfg.hidden_size + stats * n;
    // the tail's flat row index (B·tq i32) and, with RoPE, its positions
    let tail = if cfg.is_bloom() { 1 } else { 2 };
    F32 * (norm(b * tq) + if cfg.is_bloom() { norm(b * s) } else { 0 } + tail * b * tq)
}

/// The positions from the first one that predicts a label (PEFT's shift: label t is read at
/// P + t - 1) to each row's end: the rows the last layer computes.
fn loss_tail(labels: &[i32], b: usize, t: usize, p: usize) -> usize {
    let first = (0..b * t)
        .filter(|&i| labels[i] != -100 && p + i % t >= 1)
        .map(|i| p + i % t - 1)
        .min();
    p + t - first.filter(|&f| f > 0).unwrap_or(0)
}

fn check_decoder(folder: &str) {
    use softprompt::internals::models::{Model, Objective, Tuning};
    let be = Be::new();
    let dir = fixture(folder);
    let cfg = match ModelConfig::load(&dir).unwrap() {
        ModelConfig::Bloom(c) | ModelConfig::Llama(c) => c,
        other => panic!("{folder}: not a decoder ({other:?})"),
    };
    let model = Model::load(&be, &dir).unwrap();
    let r = Reference::read(&dir.join("ref_causal_random.safetensors")).unwrap();
    let RefObjective::Causal { labels } = &r.objective else {
        panic!("not causal")
    };
    let (b, p) = (r.batch.b, r.p());
    let s = p + r.batch.t;
    let prompt = be.upload(DType::F32, &r.prompt.data).unwrap();
    if cfg.is_bloom() {
        let mut dprompt = be.zeros(DType::F32, p * cfg.hidden_size).unwrap();
        let refused = model.train_step(
            &be,
            &mut MemoryAccountant::new(),
            &mut dprompt,
            &prompt,
            &r.batch,
            Tuning::Prompt(p),
            &Objective::Causal { labels },
            Recompute::Mlp,
            None,
        );
        let msg = refused.err().expect("--recompute mlp on BLOOM").to_string();
        assert!(
            msg.contains("--recompute") && msg.contains("BLOOM"),
            "{msg}"
        );
    }
    let mut results = Vec::new();
    let modes: &[Recompute] = if cfg.is_bloom() {
        &[Recompute::None, Recompute::Layer]
    } else {
        &[
            Recompute::None,
            Recompute::Mlp,
            Recompute::MlpLayers(1),
            Recompute::Layer,
        ]
    };
    for &recompute in modes {
        let live_before = be.memory().live_bytes;
        let mut acct = MemoryAccountant::new();
        let mut dprompt = be.zeros(DType::F32, p * cfg.hidden_size).unwrap();
        let out = model
            .train_step(
                &be,
                &mut acct,
                &mut dprompt,
                &prompt,
                &r.batch,
                Tuning::Prompt(p),
                &Objective::Causal { labels },
                recompute,
                None,
            )
            .unwrap();
        let tq = loss_tail(labels, b, r.batch.t, p);
        assert!(tq < s, "{folder}: the fixture's targets leave no row out");
        let layers: usize = (0..cfg.num_layers)
            .map(|l| {
                let rows = (s, if l + 1 == cfg.num_layers { tq } else { s });
                match recompute {
                    Recompute::Layer => F32 * b * s * cfg.hidden_size,
                    _ => decoder_layer_bytes(&cfg, b, rows, recompute, l),
                }
            })
            .sum();
        assert_eq!(
            acct.held_after_forward(),
            layers + decoder_outer_bytes(&cfg, b, (s, tq)),
            "{folder} {recompute:?}: bytes held after forward"
        );
        if recompute != Recompute::Layer {
            assert!(
                acct.saved_linear_inputs().is_empty(),
                "{folder}: saved linear inputs {:?}",
                acct.saved_linear_inputs()
            );
        }
        assert_eq!(acct.held_bytes(), 0, "{folder} {recompute:?}: released");
        assert_eq!(live_names(&acct), BTreeSet::new());
        let grad = be.download(&dprompt).unwrap();
        drop(dprompt);
        assert_eq!(be.memory().live_bytes, live_before, "{folder}: leaked");
        results.push((out.loss, grad));
    }
    for (r, mode) in results.iter().zip(modes).skip(1) {
        assert_eq!(
            &results[0], r,
            "{folder}: recompute {mode:?} changes the numbers"
        );
    }
}

#[test]
fn decoder_saved_state_matches_formula() {
    check_decoder("bloom");
    check_decoder("llama");
    check_decoder("mistral");
}
