//! Prefix tuning against prompt tuning: a prefix, read in place from its table, keeps no more
//! for backward than a prompt of the same length.

use crate::bert::{bert_embedding_bytes, bert_last_layer_bytes, bert_layer_bytes};
use crate::common::fixture;
use crate::common::ref_step::step_with;
use crate::t5::{t5_block_bytes, t5_final_bytes};
use crate::{live_names, Be};
use softprompt::internals::config::ModelConfig;
use softprompt::internals::models::{Model, Recompute, Tuning};
use softprompt::internals::reference::{RefObjective, Reference};

/// Bytes held after forward by one `Model::train_step` of `r`'s batch (its objective) read as
/// `tuning`, with the table `table`; backward then releases them all.
fn held_by(be: &Be, model: &Model<Be>, r: &Reference, table: &[f32], tuning: Tuning) -> usize {
    let out = step_with(be, model, r, (table, tuning), None, Recompute::None, false);
    let acct = &out.acct;
    assert_eq!(acct.held_bytes(), 0, "{tuning:?}: {:?}", live_names(acct));
    assert!(acct.saved_linear_inputs().is_empty(), "{tuning:?}");
    assert!(out.grad.iter().any(|&g| g != 0.0));
    acct.held_after_forward()
}

/// Prefix tuning keeps no more for backward than prompt tuning of the same batch and P (issue
/// #15 item 4): the prefix sits in the keys, read in place from its table, so every layer holds
/// T rows where prompt tuning holds P + T, exactly the formulas above with no prompt rows; under
/// PEFT's T5 placement the encoder reads no prefix and holds nothing at all (it runs forward
/// only), leaving the decoder's state with memory keys over the T tokens.
#[test]
fn prefix_holds_no_more_than_prompt_tuning() {
    use softprompt::internals::models::{Placement, PrefixSpec};
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
    // the step runs the last layer at the labelled rows (R a batch row at most) past its keys
    // and values
    let RefObjective::Mlm { labels } = &r.objective else {
        panic!("not mlm")
    };
    let most = (labels.chunks(t))
        .map(|row| row.iter().filter(|&&l| l != -100).count())
        .max()
        .unwrap();
    let rows = |t| {
        (cfg.num_hidden_layers - 1) * bert_layer_bytes(&cfg, b, t)
            + bert_last_layer_bytes(&cfg, b, t, most)
            + bert_embedding_bytes(&cfg, b, t)
    };
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
