//! T5: the encoder's and decoder's bytes held for backward under each recompute policy,
//! against formulas written out from the saved-tensor lists.

use crate::common::fixture;
use crate::{live_names, Be, F32};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::config::{ModelConfig, T5Config};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::t5::{self, T5Inputs, T5};
use softprompt::internals::models::Recompute;
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::weights::WeightStore;
use std::collections::BTreeSet;

/// Bytes one T5 block holds under `Recompute::None`, for Tq query rows and (decoder) Tk memory
/// rows: the inputs of its RMS norms (B·Tq·C each) with their rstd (B·Tq each), q, k, v
/// (B·Tq·A each, A = heads·d_kv) with the log-sum-exp (B·H·Tq), the feed-forward's activation
/// input (B·Tq·F) and, gated, its linear branch (B·Tq·F). The decoder adds cross-attention:
/// q (B·Tq·A), k and v over the memory (B·Tk·A each) and a second log-sum-exp (B·H·Tq).
pub(crate) fn t5_block_bytes(
    cfg: &T5Config,
    b: usize,
    tq: usize,
    cross_tk: Option<usize>,
) -> usize {
    let (c, a, f, h) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff, cfg.num_heads);
    let gated = cfg.is_gated_act as usize;
    let norms = if cross_tk.is_some() { 3 } else { 2 };
    let mut n =
        norms * (b * tq * c + b * tq) + 3 * b * tq * a + b * h * tq + (1 + gated) * b * tq * f;
    if let Some(tk) = cross_tk {
        n += b * tq * a + 2 * b * tk * a + b * h * tq;
    }
    F32 * n
}

/// A stack's final RMS norm: its input (B·Tq·C) and rstd (B·Tq).
pub(crate) fn t5_final_bytes(cfg: &T5Config, b: usize, tq: usize) -> usize {
    F32 * (b * tq * cfg.d_model + b * tq)
}

fn t5_names(
    enc_layers: usize,
    dec_layers: usize,
    gated: bool,
    recompute: Recompute,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (stack, layers) in [("encoder", enc_layers), ("decoder", dec_layers)] {
        names.insert(format!("{stack}.final_in"));
        names.insert(format!("{stack}.final_rstd"));
        for l in 0..layers {
            if recompute == Recompute::Layer {
                names.insert(format!("{stack}.{l}.input"));
                continue;
            }
            let mut list = vec![
                "attn_in",
                "attn_rstd",
                "q",
                "k",
                "v",
                "lse",
                "ffn_in",
                "ffn_rstd",
                "ffn_pre",
            ];
            if gated {
                list.push("ffn_lin");
            }
            if stack == "decoder" {
                list.extend([
                    "cross_in",
                    "cross_rstd",
                    "cross_q",
                    "cross_k",
                    "cross_v",
                    "cross_lse",
                ]);
            }
            for n in list {
                names.insert(format!("{stack}.{l}.{n}"));
            }
        }
    }
    names
}

fn check_t5(folder: &str, reference: &str) {
    let dir = fixture(folder);
    let be = Be::new();
    let ModelConfig::T5(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("not T5")
    };
    let model = T5::load(&be, &WeightStore::open(&dir).unwrap(), cfg).unwrap();
    let r = Reference::read(&dir.join(reference)).unwrap();
    let RefObjective::Seq2Seq { labels, l } = &r.objective else {
        panic!("not seq2seq")
    };
    let cfg = &model.cfg;
    let inputs: T5Inputs<Be> = t5::upload_inputs(&be, cfg, &r.batch, r.p(), labels, *l).unwrap();
    let prompt = be.upload(DType::F32, &r.prompt.data).unwrap();
    let (b, t, l, p) = (r.batch.b, r.p() + r.batch.t, *l, r.p());
    let (ne, nd) = (cfg.num_layers, cfg.num_decoder_layers);

    let want_none = ne * t5_block_bytes(cfg, b, t, None)
        + t5_final_bytes(cfg, b, t)
        + nd * t5_block_bytes(cfg, b, l, Some(t))
        + t5_final_bytes(cfg, b, l);
    let want_layer = ne * F32 * b * t * cfg.d_model
        + t5_final_bytes(cfg, b, t)
        + nd * F32 * b * l * cfg.d_model
        + t5_final_bytes(cfg, b, l);

    for (recompute, want) in [(Recompute::None, want_none), (Recompute::Layer, want_layer)] {
        let mut acct = MemoryAccountant::new();
        let (enc, _ea) = model
            .encoder_fwd(&be, &mut acct, &prompt, &inputs, recompute, None)
            .unwrap();
        let (_dec, _da) = model
            .decoder_fwd(&be, &mut acct, &enc, &inputs, recompute, None)
            .unwrap();
        assert_eq!(
            live_names(&acct),
            t5_names(ne, nd, cfg.is_gated_act, recompute),
            "{folder}: saved tensors ({recompute:?})"
        );
        assert_eq!(
            acct.held_bytes(),
            want,
            "{folder}: held bytes after forward ({recompute:?})"
        );
        assert!(
            acct.saved_linear_inputs().is_empty(),
            "{folder}: linear inputs held ({recompute:?}): {:?}",
            acct.saved_linear_inputs()
        );
    }
    assert!(want_layer < want_none);

    let mut results = Vec::new();
    for recompute in [Recompute::None, Recompute::Layer] {
        let mut dprompt = be.zeros(DType::F32, p * cfg.d_model).unwrap();
        let live_before = be.memory().live_bytes;
        let mut acct = MemoryAccountant::new();
        let loss = model
            .train_step(
                &be,
                &mut acct,
                &mut dprompt,
                &prompt,
                &inputs,
                labels,
                recompute,
                None,
            )
            .unwrap();
        assert_eq!(
            acct.held_bytes(),
            0,
            "{folder}: still held after backward ({recompute:?}): {:?}",
            live_names(&acct)
        );
        assert_eq!(
            be.memory().live_bytes,
            live_before,
            "{folder}: backend buffers leaked ({recompute:?})"
        );
        assert!(
            acct.saved_linear_inputs().is_empty(),
            "{folder}: linear inputs held ({recompute:?})"
        );
        if recompute == Recompute::None {
            assert_eq!(
                acct.peak_bytes(),
                want_none,
                "{folder}: peak (none) is the end of forward"
            );
        } else {
            assert!(
                acct.peak_bytes() < want_none,
                "{folder}: recompute must lower the peak"
            );
        }
        results.push((loss, be.download(&dprompt).unwrap()));
    }
    assert_eq!(
        results[0].0.to_bits(),
        results[1].0.to_bits(),
        "{folder}: loss differs between policies"
    );
    assert_eq!(
        results[0].1, results[1].1,
        "{folder}: prompt gradient differs between policies"
    );
    assert!(results[0].1.iter().any(|&g| g != 0.0));
}

#[test]
fn t5_saved_state_matches_formula() {
    check_t5("t5_v1_0", "ref_seq2seq_random.safetensors");
    check_t5("t5_v1_1", "ref_seq2seq_text.safetensors");
    check_t5("t5_flan", "ref_seq2seq_random.safetensors");
}
