//! The memory accountant: what BERT and T5 keep for backward, in bytes, against formulas
//! written out from the saved-tensor lists, so that any tensor someone starts saving (a linear
//! input, a T×T matrix, a duplicate) fails here.
//!
//! - `Recompute::None`: only nonlinear state is held, and no held tensor is ever the input of
//!   a linear layer (`saved_linear_inputs()` is empty).
//! - `Recompute::Layer`: after forward only each layer's input and the small embedding / final
//!   norm state are held.
//! - Both policies give bitwise the same loss and prompt gradient, and backward releases
//!   everything (held bytes return to 0, and no backend buffer leaks).
//!
//! Every tensor is accounted at its logical dtype: 4 bytes per element on the CPU (activations
//! F32, statistics F32).

mod common;

use common::fixture;
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::config::{BertConfig, DecoderConfig, ModelConfig, T5Config};
use softprompt::internals::cpu::CpuBackend;
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::bert::{self, Bert, BertInputs};
use softprompt::internals::models::heads::{self, Decoder};
use softprompt::internals::models::t5::{self, T5Inputs, T5};
use softprompt::internals::models::Recompute;
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::weights::WeightStore;
use std::collections::BTreeSet;

type Be = CpuBackend<f32>;
const F32: usize = 4;

fn live_names(acct: &MemoryAccountant) -> BTreeSet<String> {
    acct.live().map(|(n, _)| n.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// BERT

/// Bytes one BERT layer holds under `Recompute::None`: q, k, v, ln1_in, ln2_in (B·T·C each),
/// ffn_pre (B·T·I), the attention log-sum-exp (B·H·T), and 4 norm statistics (B·T each).
fn bert_layer_bytes(cfg: &BertConfig, b: usize, t: usize) -> usize {
    let (c, i, h) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
    );
    F32 * (5 * b * t * c + b * t * i + b * h * t + 4 * b * t)
}

/// The embedding state: the LayerNorm input (B·T·C) and its mean and rstd (B·T each).
fn bert_embedding_bytes(cfg: &BertConfig, b: usize, t: usize) -> usize {
    F32 * (b * t * cfg.hidden_size + 2 * b * t)
}

fn bert_names(layers: usize, recompute: Recompute) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["emb.in", "emb.mean", "emb.rstd"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for l in 0..layers {
        match recompute {
            Recompute::None | Recompute::Mlp | Recompute::MlpLayers(_) => {
                for n in [
                    "q", "k", "v", "lse", "ln1_in", "ln1_mean", "ln1_rstd", "ffn_pre", "ln2_in",
                    "ln2_mean", "ln2_rstd",
                ] {
                    names.insert(format!("layer.{l}.{n}"));
                }
            }
            Recompute::Layer => {
                names.insert(format!("layer.{l}.input"));
            }
        }
    }
    names
}

struct BertRun {
    loss: f64,
    grad: Vec<f32>,
    held_after_fwd: usize,
    names_after_fwd: BTreeSet<String>,
    linear_inputs: Vec<String>,
    peak: usize,
}

fn load_bert(folder: &str, reference: &str) -> (Be, Bert<Be>, Reference) {
    let dir = fixture(folder);
    let be = Be::new();
    let ModelConfig::Bert(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("not BERT")
    };
    let model = Bert::load(&be, &WeightStore::open(&dir).unwrap(), cfg).unwrap();
    let r = Reference::read(&dir.join(reference)).unwrap();
    (be, model, r)
}

fn run_bert(
    be: &Be,
    model: &Bert<Be>,
    r: &Reference,
    inputs: &BertInputs<Be>,
    recompute: Recompute,
) -> BertRun {
    let (b, t, p, c) = (r.batch.b, r.batch.t, r.p(), model.cfg.hidden_size);
    let prompt = be.upload(DType::F32, &r.prompt.data).unwrap();
    let mut dprompt = be.zeros(DType::F32, p * c).unwrap();
    let live_before = be.memory().live_bytes;
    let mut acct = MemoryAccountant::new();
    let (hidden, acts) = model
        .encoder_fwd(be, &mut acct, &prompt, inputs, recompute, None)
        .unwrap();
    let held_after_fwd = acct.held_bytes();
    let names_after_fwd = live_names(&acct);
    let h = match &r.objective {
        RefObjective::Mlm { labels } => {
            let (rows, targets) = heads::mlm_rows(labels, b, t, p, false);
            heads::mlm_head_fwd_bwd(be, model, &hidden, &rows, &targets, Decoder::Vocab, false)
                .unwrap()
        }
        RefObjective::Pet {
            mask_positions,
            verbalizer_ids,
            class_labels,
        } => {
            let rows = heads::pet_rows(mask_positions, b, t, p).unwrap();
            heads::mlm_head_fwd_bwd(
                be,
                model,
                &hidden,
                &rows,
                class_labels,
                Decoder::Rows(verbalizer_ids),
                false,
            )
            .unwrap()
        }
        _ => panic!("mlm or pet expected"),
    };
    drop(hidden);
    model
        .encoder_bwd(be, &mut acct, &mut dprompt, h.dhidden, acts, inputs)
        .unwrap();
    assert_eq!(
        acct.held_bytes(),
        0,
        "backward must release every saved tensor; still live: {:?}",
        live_names(&acct)
    );
    assert_eq!(acct.live().count(), 0);
    // every buffer made during the step is gone again: nothing leaked on the backend
    assert_eq!(
        be.memory().live_bytes,
        live_before,
        "backend buffers leaked by forward/backward"
    );
    BertRun {
        loss: h.loss,
        grad: be.download(&dprompt).unwrap(),
        held_after_fwd,
        names_after_fwd,
        linear_inputs: acct.saved_linear_inputs(),
        peak: acct.peak_bytes(),
    }
}

fn check_bert(folder: &str, reference: &str) {
    let (be, model, r) = load_bert(folder, reference);
    let cfg = &model.cfg;
    let (b, t, layers) = (r.batch.b, r.p() + r.batch.t, cfg.num_hidden_layers);
    let inputs = bert::upload_inputs(&be, cfg, &r.batch, r.p()).unwrap();

    let prompt = be.upload(DType::F32, &r.prompt.data).unwrap();
    let refused = model.encoder_fwd(
        &be,
        &mut MemoryAccountant::new(),
        &prompt,
        &inputs,
        Recompute::Mlp,
        None,
    );
    let msg = refused.err().expect("--recompute mlp on BERT").to_string();
    assert!(msg.contains("--recompute") && msg.contains("BERT"), "{msg}");
    drop(prompt);

    let none = run_bert(&be, &model, &r, &inputs, Recompute::None);
    let want_none = bert_embedding_bytes(cfg, b, t) + layers * bert_layer_bytes(cfg, b, t);
    assert_eq!(
        none.names_after_fwd,
        bert_names(layers, Recompute::None),
        "{folder}: saved tensors (none)"
    );
    assert_eq!(
        none.held_after_fwd, want_none,
        "{folder}: held bytes after forward (none)"
    );
    // backward only releases, so the peak is the end of forward
    assert_eq!(none.peak, want_none, "{folder}: peak (none)");
    assert!(
        none.linear_inputs.is_empty(),
        "{folder}: linear inputs held for backward: {:?}",
        none.linear_inputs
    );

    let layer = run_bert(&be, &model, &r, &inputs, Recompute::Layer);
    let input_bytes = F32 * b * t * cfg.hidden_size;
    let want_layer = bert_embedding_bytes(cfg, b, t) + layers * input_bytes;
    assert_eq!(
        layer.names_after_fwd,
        bert_names(layers, Recompute::Layer),
        "{folder}: saved tensors (layer)"
    );
    assert_eq!(
        layer.held_after_fwd, want_layer,
        "{folder}: held bytes after forward (layer)"
    );
    // backward recomputes the top layer while every input is still held: one layer's state
    // on top of the forward's
    assert_eq!(
        layer.peak,
        want_layer + bert_layer_bytes(cfg, b, t),
        "{folder}: peak (layer)"
    );
    assert!(
        layer.peak < none.peak,
        "{folder}: recompute must lower the peak"
    );
    // the only held tensors a linear layer reads are the kept layer inputs (read again by the
    // recomputation, never by a linear backward)
    for name in &layer.linear_inputs {
        assert!(
            name.starts_with("layer.") && name.ends_with(".input"),
            "{folder}: {name} fed to a linear layer"
        );
    }

    assert_eq!(
        none.loss.to_bits(),
        layer.loss.to_bits(),
        "{folder}: loss differs between policies"
    );
    assert_eq!(
        none.grad, layer.grad,
        "{folder}: prompt gradient differs between policies"
    );
    assert!(
        none.grad.iter().any(|&g| g != 0.0),
        "{folder}: zero gradient"
    );
}

#[test]
fn bert_saved_state_matches_formula() {
    check_bert("bert_mlm", "ref_mlm_random.safetensors");
    check_bert("bert_mlm_bf16_sharded", "ref_pet_text.safetensors");
}

// ---------------------------------------------------------------------------------------------
// T5

/// Bytes one T5 block holds under `Recompute::None`, for Tq query rows and (decoder) Tk memory
/// rows: the inputs of its RMS norms (B·Tq·C each) with their rstd (B·Tq each), q, k, v
/// (B·Tq·A each, A = heads·d_kv) with the log-sum-exp (B·H·Tq), the feed-forward's activation
/// input (B·Tq·F) and, gated, its linear branch (B·Tq·F). The decoder adds cross-attention:
/// q (B·Tq·A), k and v over the memory (B·Tk·A each) and a second log-sum-exp (B·H·Tq).
fn t5_block_bytes(cfg: &T5Config, b: usize, tq: usize, cross_tk: Option<usize>) -> usize {
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
fn t5_final_bytes(cfg: &T5Config, b: usize, tq: usize) -> usize {
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

// ---------------------------------------------------------------------------------------------
// Decoder-only language models

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

// ---------------------------------------------------------------------------------------------
// Prefix tuning against prompt tuning

/// Bytes held after forward by one `Model::train_step` of `r`'s batch read as `tuning`, with
/// the table `table`; backward then releases them all.
fn held_by(
    be: &Be,
    model: &softprompt::internals::models::Model<Be>,
    r: &Reference,
    table: &[f32],
    tuning: softprompt::internals::models::Tuning,
) -> usize {
    use softprompt::internals::models::Objective;
    let objective = match &r.objective {
        RefObjective::Mlm { labels } => Objective::Mlm { labels },
        RefObjective::Seq2Seq { labels, l } => Objective::Seq2Seq { labels, l: *l },
        o => panic!("objective {}", o.name()),
    };
    let table = be.upload(DType::F32, table).unwrap();
    let mut dtable = be.zeros(DType::F32, be.len(&table)).unwrap();
    let mut acct = MemoryAccountant::new();
    model
        .train_step(
            be,
            &mut acct,
            &mut dtable,
            &table,
            &r.batch,
            tuning,
            &objective,
            Recompute::None,
            None,
        )
        .unwrap();
    assert_eq!(acct.held_bytes(), 0, "{tuning:?}: {:?}", live_names(&acct));
    assert!(acct.saved_linear_inputs().is_empty(), "{tuning:?}");
    assert!(be.download(&dtable).unwrap().iter().any(|&g| g != 0.0));
    acct.held_after_forward()
}

/// Prefix tuning keeps no more for backward than prompt tuning of the same batch and P (issue
/// #15 item 4): the prefix sits in the keys, read in place from its table, so every layer holds
/// T rows where prompt tuning holds P + T, exactly the formulas above with no prompt rows; under
/// PEFT's T5 placement the encoder reads no prefix and holds nothing at all (it runs forward
/// only), leaving the decoder's state with memory keys over the T tokens.
#[test]
fn prefix_holds_no_more_than_prompt_tuning() {
    use softprompt::internals::models::{Model, Placement, PrefixSpec, Tuning};
    let be = Be::new();
    let spec = |p, placement| {
        Tuning::Prefix(PrefixSpec {
            p,
            placement,
            bert_first_position: None,
            blocks: None,
        })
    };
    // BERT: the layers and the embedding state over T rows instead of P + T
    let dir = fixture("bert_mlm");
    let model = Model::load(&be, &dir).unwrap();
    let ModelConfig::Bert(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("not BERT")
    };
    let r = Reference::read(&dir.join("ref_mlm_random.safetensors")).unwrap();
    let (b, t, p) = (r.batch.b, r.batch.t, r.p());
    let prompt = held_by(&be, &model, &r, &r.prompt.data, Tuning::Prompt(p));
    let (blocks, kv) = model.prefix_layout(Placement::Papers);
    let table = vec![0.1f32; p * blocks * 2 * kv];
    let prefix = held_by(&be, &model, &r, &table, spec(p, Placement::Papers));
    let rows =
        |t| cfg.num_hidden_layers * bert_layer_bytes(&cfg, b, t) + bert_embedding_bytes(&cfg, b, t);
    assert_eq!(prompt, rows(p + t), "bert prompt tuning");
    assert_eq!(prefix, rows(t), "bert prefix tuning");
    assert!(prefix < prompt);

    // T5, both placements
    let dir = fixture("t5_v1_0");
    let model = Model::load(&be, &dir).unwrap();
    let ModelConfig::T5(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("not T5")
    };
    let r = Reference::read(&dir.join("ref_seq2seq_random.safetensors")).unwrap();
    let RefObjective::Seq2Seq { l, .. } = r.objective else {
        panic!("not seq2seq")
    };
    let (b, t, p) = (r.batch.b, r.batch.t, r.p());
    let (ne, nd) = (cfg.num_layers, cfg.num_decoder_layers);
    let encoder = |t| ne * t5_block_bytes(&cfg, b, t, None) + t5_final_bytes(&cfg, b, t);
    let decoder = |t| nd * t5_block_bytes(&cfg, b, l, Some(t)) + t5_final_bytes(&cfg, b, l);
    let prompt = held_by(&be, &model, &r, &r.prompt.data, Tuning::Prompt(p));
    assert_eq!(prompt, encoder(p + t) + decoder(p + t), "t5 prompt tuning");
    for (placement, want) in [
        (Placement::Papers, encoder(t) + decoder(t)),
        (Placement::Peft, decoder(t)),
    ] {
        let (blocks, kv) = model.prefix_layout(placement);
        let table = vec![0.1f32; p * blocks * 2 * kv];
        let prefix = held_by(&be, &model, &r, &table, spec(p, placement));
        assert_eq!(prefix, want, "t5 prefix tuning, {placement:?}");
        assert!(prefix < prompt, "{placement:?}");
    }
}

/// The CPU pool keeps a step's freed working set (more than its 64 MiB floor) for the next
/// step's same lengths, within the most ever live at once, so the peak does not grow; a length
/// the pool does not hold makes it drop others rather than stack on top of them.
#[test]
fn cpu_pool_keeps_the_working_set_within_the_high_water_mark() {
    let be = Be::new();
    let len = 10 << 20; // 40 MiB of floats
    let bytes = len * F32;
    let step = |be: &Be| {
        let bufs: Vec<_> = (0..3)
            .map(|_| be.output(DType::F32, len).unwrap())
            .collect();
        drop(bufs);
    };
    step(&be);
    assert_eq!(be.pooled_bytes(), 3 * bytes, "the freed step, all of it");
    be.reset_peak();
    step(&be);
    assert_eq!(be.pooled_bytes(), 3 * bytes);
    assert_eq!(
        be.memory().peak_bytes,
        3 * bytes,
        "reuse adds nothing to the peak"
    );
    // another length: the pool makes room for it within the high-water mark and its floor
    let other = be.output(DType::F32, len + 1).unwrap();
    assert!(be.pooled_bytes() <= 2 * bytes, "{}", be.pooled_bytes());
    assert!(be.memory().peak_bytes <= 3 * bytes + (64 << 20));
    drop(other);
}
