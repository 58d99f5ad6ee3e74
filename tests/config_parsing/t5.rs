//! T5: the three spellings of the fixtures, the scale and activation rules, defaults, errors.

use super::{parse_edited, remove, Edit};
use crate::common::fixture;
use softprompt::internals::backend::Act;
use softprompt::internals::config::{ModelConfig, T5Config};

fn t5(folder: &str) -> T5Config {
    match ModelConfig::load(&fixture(folder)).unwrap() {
        ModelConfig::T5(c) => c,
        other => panic!("{folder}: {other:?}"),
    }
}

fn t5_edited(base: &str, edit: impl FnOnce(&mut serde_json::Value)) -> T5Config {
    match parse_edited(base, edit).unwrap() {
        ModelConfig::T5(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn t5_v1_0_hub_spelling_uses_defaults() {
    // no feed_forward_proj, num_decoder_layers, relative_attention_max_distance,
    // tie_word_embeddings, scale_decoder_outputs, dense_act_fn or is_gated_act
    let c = t5("t5_v1_0");
    let want = T5Config {
        vocab_size: 176,
        d_model: 32,
        d_kv: 8,
        d_ff: 48,
        num_layers: 2,
        num_decoder_layers: 2,
        num_heads: 4,
        relative_attention_num_buckets: 16,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        dense_act: Act::Relu,
        is_gated_act: false,
        scale_decoder_outputs: true,
        tie_word_embeddings: true,
        decoder_start_token_id: 0,
        pad_token_id: 0,
        eos_token_id: 1,
    };
    assert_eq!(c, want);
}

#[test]
fn t5_v1_1_transformers5_spelling() {
    // tie_word_embeddings true but scale_decoder_outputs false: no scaling
    let c = t5("t5_v1_1");
    assert_eq!(c.dense_act, Act::GeluTanh);
    assert!(c.is_gated_act);
    assert!(!c.scale_decoder_outputs);
    assert_eq!((c.num_layers, c.num_decoder_layers), (2, 3));
    assert_eq!(
        (
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance
        ),
        (16, 12)
    );
    assert_eq!(c.layer_norm_epsilon, 1e-3);
    assert_eq!(
        (c.d_model, c.num_heads, c.d_kv, c.inner_dim(), c.d_ff),
        (40, 3, 12, 36, 56)
    );
}

#[test]
fn t5_flan_hub_spelling() {
    // tie_word_embeddings false, no scale_decoder_outputs: no scaling
    let c = t5("t5_flan");
    assert_eq!(c.dense_act, Act::GeluTanh);
    assert!(c.is_gated_act);
    assert!(!c.scale_decoder_outputs);
    assert_eq!((c.num_layers, c.num_decoder_layers), (3, 2));
    assert_eq!(
        (
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance
        ),
        (8, 16)
    );
    assert_eq!(c.layer_norm_epsilon, 1e-6);
    assert_eq!(
        (c.d_model, c.num_heads, c.d_kv, c.inner_dim(), c.d_ff),
        (24, 5, 8, 40, 40)
    );
}

#[test]
fn t5_scale_rule() {
    // scale_decoder_outputs if present, else tie_word_embeddings if present, else true
    let base =
        |v: &mut serde_json::Value| remove(v, &["scale_decoder_outputs", "tie_word_embeddings"]);
    assert!(t5_edited("t5_v1_1", base).scale_decoder_outputs);
    assert!(
        !t5_edited("t5_v1_1", |v| {
            base(v);
            v["tie_word_embeddings"] = false.into();
        })
        .scale_decoder_outputs
    );
    assert!(
        t5_edited("t5_v1_1", |v| {
            base(v);
            v["tie_word_embeddings"] = true.into();
        })
        .scale_decoder_outputs
    );
    assert!(
        t5_edited("t5_flan", |v| v["scale_decoder_outputs"] = true.into()).scale_decoder_outputs
    );
    assert!(
        !t5_edited("t5_v1_0", |v| v["scale_decoder_outputs"] = false.into()).scale_decoder_outputs
    );
}

/// transformers' `tie_word_embeddings` default is true (the v1.0 configs carry no key); flan
/// says false. The loader reads it for the head (`shared.weight` only when tied).
#[test]
fn t5_tie_flag_defaults_to_tied() {
    assert!(t5("t5_v1_0").tie_word_embeddings);
    assert!(t5("t5_v1_1").tie_word_embeddings);
    assert!(!t5("t5_flan").tie_word_embeddings);
}

/// T5Config's attribute_map aliases are set after its own keys (PretrainedConfig.__init__), so
/// they win; num_decoder_layers defaults to the `num_layers` key (6 when absent), read before
/// the alias overwrites num_layers. They were ignored.
#[test]
fn t5_attribute_map_aliases_win_as_in_transformers() {
    let c = t5_edited("t5_flan", |v| {
        v["num_hidden_layers"] = 1.into();
        v["num_attention_heads"] = 2.into();
        v["hidden_size"] = 16.into();
        v["head_dim"] = 5.into();
    });
    let got = (
        c.num_layers,
        c.num_decoder_layers,
        c.num_heads,
        c.d_model,
        c.d_kv,
    );
    assert_eq!(got, (1, 2, 2, 16, 5));
    // no num_decoder_layers: the `num_layers` key's 3, not the alias's 1
    let c = t5_edited("t5_flan", |v| {
        remove(v, &["num_decoder_layers"]);
        v["num_hidden_layers"] = 1.into();
    });
    assert_eq!((c.num_layers, c.num_decoder_layers), (1, 3));
    // neither: T5Config's default num_layers, 6
    let c = t5_edited("t5_flan", |v| {
        remove(v, &["num_decoder_layers", "num_layers"]);
        v["num_hidden_layers"] = 2.into();
    });
    assert_eq!((c.num_layers, c.num_decoder_layers), (2, 6));
    // an alias of 0 is named
    let err = parse_edited("t5_flan", |v| v["num_attention_heads"] = 0.into()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`num_attention_heads` must be positive, got 0"),
        "{err}"
    );
}

#[test]
fn t5_activation_rules() {
    let no_act = |v: &mut serde_json::Value, proj: &str| {
        remove(v, &["dense_act_fn", "is_gated_act"]);
        v["feed_forward_proj"] = proj.into();
    };
    // "gated-gelu" means the tanh GELU
    let c = t5_edited("t5_flan", |v| no_act(v, "gated-gelu"));
    assert_eq!((c.dense_act, c.is_gated_act), (Act::GeluTanh, true));
    let c = t5_edited("t5_flan", |v| no_act(v, "gated-silu"));
    assert_eq!((c.dense_act, c.is_gated_act), (Act::Silu, true));
    let c = t5_edited("t5_flan", |v| no_act(v, "gated-relu"));
    assert_eq!((c.dense_act, c.is_gated_act), (Act::Relu, true));
    let c = t5_edited("t5_flan", |v| no_act(v, "gelu"));
    assert_eq!((c.dense_act, c.is_gated_act), (Act::GeluErf, false));
    let c = t5_edited("t5_flan", |v| no_act(v, "relu"));
    assert_eq!((c.dense_act, c.is_gated_act), (Act::Relu, false));
    // an explicit dense_act_fn wins over the one derived from the projection
    let c = t5_edited("t5_flan", |v| v["dense_act_fn"] = "gelu".into());
    assert_eq!((c.dense_act, c.is_gated_act), (Act::GeluErf, true));
    // and so does an explicit is_gated_act, either way
    let c = t5_edited("t5_flan", |v| {
        no_act(v, "relu");
        v["is_gated_act"] = true.into();
    });
    assert_eq!((c.dense_act, c.is_gated_act), (Act::Relu, true));
    let c = t5_edited("t5_flan", |v| {
        no_act(v, "gated-gelu");
        v["is_gated_act"] = false.into();
    });
    assert_eq!((c.dense_act, c.is_gated_act), (Act::GeluTanh, false));
    // mt5 is T5
    let c = t5_edited("t5_flan", |v| v["model_type"] = "mt5".into());
    assert_eq!(c, t5("t5_flan"));
}

#[test]
fn t5_defaults_for_missing_keys() {
    let c = t5_edited("t5_flan", |v| {
        remove(
            v,
            &[
                "relative_attention_num_buckets",
                "relative_attention_max_distance",
                "layer_norm_epsilon",
                "num_decoder_layers",
                "decoder_start_token_id",
                "eos_token_id",
            ],
        );
        v["pad_token_id"] = 3.into();
    });
    assert_eq!(
        (
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance
        ),
        (32, 128)
    );
    assert_eq!(c.layer_norm_epsilon, 1e-6);
    assert_eq!(c.num_decoder_layers, c.num_layers);
    // decoder_start_token_id defaults to the pad id
    assert_eq!(
        (c.pad_token_id, c.decoder_start_token_id, c.eos_token_id),
        (3, 3, 1)
    );
}

#[test]
fn t5_config_errors_name_the_key() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["feed_forward_proj"] = "gated-mish".into()),
            "feed_forward_proj",
        ),
        (
            Box::new(|v| v["dense_act_fn"] = "tanh".into()),
            "dense_act_fn",
        ),
        (
            Box::new(|v| v["relative_attention_num_buckets"] = 2.into()),
            "relative_attention_num_buckets",
        ),
        (
            Box::new(|v| v["relative_attention_max_distance"] = 4.into()),
            "relative_attention_max_distance",
        ),
        (Box::new(|v| v["d_kv"] = 0.into()), "d_kv"),
        (Box::new(|v| v["num_heads"] = (-1).into()), "num_heads"),
        (Box::new(|v| v["d_model"] = "big".into()), "d_model"),
        (Box::new(|v| remove(v, &["num_layers"])), "num_layers"),
        (
            Box::new(|v| v["scale_decoder_outputs"] = "yes".into()),
            "scale_decoder_outputs",
        ),
    ];
    for (edit, key) in cases {
        let err = parse_edited("t5_flan", edit).expect_err(key).to_string();
        assert!(
            err.contains(key) && err.contains("edited/config.json"),
            "{key}: {err}"
        );
    }
}
