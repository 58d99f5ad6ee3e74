//! BERT: the bytes held for backward under each recompute policy, against formulas written
//! out from the saved-tensor lists.

use crate::common::fixture;
use crate::{live_names, Be, F32};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::config::{BertConfig, ModelConfig};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::bert::{self, Bert, BertInputs};
use softprompt::internals::models::heads::{self, Decoder};
use softprompt::internals::models::Recompute;
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::weights::WeightStore;
use std::collections::BTreeSet;

/// Bytes one BERT layer holds under `Recompute::None`: q, k, v, ln1_in, ln2_in (B·T·C each),
/// ffn_pre (B·T·I), the attention log-sum-exp (B·H·T), and 4 norm statistics (B·T each).
pub(crate) fn bert_layer_bytes(cfg: &BertConfig, b: usize, t: usize) -> usize {
    let (c, i, h) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
    );
    F32 * (5 * b * t * c + b * t * i + b * h * t + 4 * b * t)
}

/// Bytes the last layer holds when the training step runs it at the R rows per batch row the
/// head reads (src/models/bert/tail.rs): k and v at every row (B·T·C each), the rest of
/// `bert_layer_bytes` at the B·R rows.
pub(crate) fn bert_last_layer_bytes(cfg: &BertConfig, b: usize, t: usize, r: usize) -> usize {
    let c = cfg.hidden_size;
    F32 * 2 * b * t * c + bert_layer_bytes(cfg, b, r) - F32 * 2 * b * r * c
}

/// The embedding state: the LayerNorm input (B·T·C) and its mean and rstd (B·T each).
pub(crate) fn bert_embedding_bytes(cfg: &BertConfig, b: usize, t: usize) -> usize {
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
