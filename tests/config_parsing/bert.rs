//! BERT: the fixtures' configs, defaults for absent keys, errors.

use super::{parse_edited, remove, Edit};
use crate::common::fixture;
use softprompt::internals::backend::Act;
use softprompt::internals::config::{BertConfig, ModelConfig};

fn bert(folder: &str) -> BertConfig {
    match ModelConfig::load(&fixture(folder)).unwrap() {
        ModelConfig::Bert(c) => c,
        other => panic!("{folder}: {other:?}"),
    }
}

#[test]
fn bert_fixture_configs() {
    let c = bert("bert_mlm");
    let want = BertConfig {
        vocab_size: 139,
        hidden_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 80,
        hidden_act: Act::GeluErf,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-3,
        pad_token_id: 0,
        tie_word_embeddings: true,
    };
    assert_eq!(c, want);
    assert_eq!(c.head_dim(), 12);
    let c = bert("bert_mlm_bf16_sharded");
    assert_eq!(
        (
            c.hidden_act,
            c.layer_norm_eps,
            c.hidden_size,
            c.num_hidden_layers,
            c.head_dim()
        ),
        (Act::GeluTanh, 1e-12, 32, 3, 16)
    );
    let c = bert("bert_nohead");
    assert_eq!(
        (
            c.hidden_act,
            c.layer_norm_eps,
            c.hidden_size,
            c.num_attention_heads,
            c.head_dim()
        ),
        (Act::GeluErf, 1e-12, 36, 3, 12)
    );
}

#[test]
fn bert_defaults_and_errors() {
    let c = match parse_edited("bert_mlm", |v| {
        remove(
            v,
            &[
                "layer_norm_eps",
                "hidden_act",
                "max_position_embeddings",
                "type_vocab_size",
                "tie_word_embeddings",
            ],
        )
    })
    .unwrap()
    {
        ModelConfig::Bert(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            c.layer_norm_eps,
            c.hidden_act,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.tie_word_embeddings
        ),
        (1e-12, Act::GeluErf, 512, 2, true)
    );
    // transformers' Python spellings of the two GELUs (verification 29, F1)
    for (name, act) in [
        ("gelu_python", Act::GeluErf),
        ("gelu_python_tanh", Act::GeluTanh),
    ] {
        match parse_edited("bert_mlm", |v| v["hidden_act"] = name.into()) {
            Ok(ModelConfig::Bert(c)) => assert_eq!(c.hidden_act, act, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["hidden_act"] = "quick_gelu".into()),
            "hidden_act",
        ),
        (
            Box::new(|v| v["num_attention_heads"] = 5.into()),
            "num_attention_heads",
        ),
        (
            Box::new(|v| v["position_embedding_type"] = "relative_key".into()),
            "position_embedding_type",
        ),
        (Box::new(|v| v["is_decoder"] = true.into()), "is_decoder"),
        (
            Box::new(|v| v["model_type"] = "roberta".into()),
            "model_type",
        ),
        (Box::new(|v| remove(v, &["model_type"])), "model_type"),
        (Box::new(|v| remove(v, &["hidden_size"])), "hidden_size"),
    ];
    for (edit, key) in cases {
        let err = parse_edited("bert_mlm", edit).expect_err(key).to_string();
        assert!(
            err.contains(key) && err.contains("edited/config.json"),
            "{key}: {err}"
        );
    }
}
