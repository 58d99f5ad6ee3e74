//! config.json parsing: the three T5 spellings of the fixtures (Hub t5-small, transformers 5
//! `save_pretrained`, Hub flan-t5) and the BERT folders parse to the values transformers
//! 5.24 uses, including every default a missing key implies; unsupported values are errors
//! that name the key.

mod common;

use common::fixture;
use softprompt::internals::backend::rope::Llama3Scaling;
use softprompt::internals::backend::Act;
use softprompt::internals::config::{BertConfig, DecoderConfig, ModelConfig, Positions, T5Config};
use std::path::Path;

fn t5(folder: &str) -> T5Config {
    match ModelConfig::load(&fixture(folder)).unwrap() {
        ModelConfig::T5(c) => c,
        other => panic!("{folder}: {other:?}"),
    }
}

fn bert(folder: &str) -> BertConfig {
    match ModelConfig::load(&fixture(folder)).unwrap() {
        ModelConfig::Bert(c) => c,
        other => panic!("{folder}: {other:?}"),
    }
}

/// Parses `base` with `edit` applied.
fn parse_edited(
    base: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> softprompt::Result<ModelConfig> {
    let path = fixture(base).join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    ModelConfig::parse(&v.to_string(), Path::new("edited/config.json"))
}

fn t5_edited(base: &str, edit: impl FnOnce(&mut serde_json::Value)) -> T5Config {
    match parse_edited(base, edit).unwrap() {
        ModelConfig::T5(c) => c,
        other => panic!("{other:?}"),
    }
}

/// One config.json edit.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

fn remove(v: &mut serde_json::Value, keys: &[&str]) {
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
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

fn decoder(folder: &str) -> DecoderConfig {
    match ModelConfig::load(&fixture(folder)).unwrap() {
        ModelConfig::Bloom(c) | ModelConfig::Llama(c) => c,
        other => panic!("{folder}: {other:?}"),
    }
}

fn decoder_edited(base: &str, edit: impl FnOnce(&mut serde_json::Value)) -> DecoderConfig {
    match parse_edited(base, edit).unwrap() {
        ModelConfig::Bloom(c) | ModelConfig::Llama(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn decoder_fixture_configs() {
    // BLOOM spelled like the Hub bloom-560m: n_embed, n_layer, no hidden_size
    let c = decoder("bloom");
    assert!(matches!(
        ModelConfig::load(&fixture("bloom")).unwrap(),
        ModelConfig::Bloom(_)
    ));
    assert_eq!(
        (
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim
        ),
        (48, 2, 6, 6, 8)
    );
    assert_eq!(
        (c.intermediate_size, c.norm_eps, c.act),
        (192, 1e-3, Act::GeluTanh)
    );
    assert_eq!(c.positions, Positions::Alibi);
    assert!(c.qkv_bias && c.o_bias && c.mlp_bias && c.tie_word_embeddings);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone(), c.pad_token_id),
        (Some(1), vec![2], Some(3))
    );
    // Llama 3.2 spelling: rope_scaling llama3 + rope_theta, GQA, untied
    let c = decoder("llama");
    assert_eq!(
        (
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
            c.intermediate_size
        ),
        (48, 4, 2, 12, 80)
    );
    let scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 256.0,
    };
    assert_eq!(
        c.positions,
        Positions::Rope {
            theta: 1e4,
            llama3: Some(scaling),
            linear_factor: None
        }
    );
    assert!(!c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.tie_word_embeddings);
    assert_eq!((c.act, c.norm_eps), (Act::Silu, 1e-3));
    // Qwen2 as transformers 5 writes it: rope_parameters, q/k/v biases, tied, one kv head
    let c = decoder("qwen2");
    assert!(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (5, 1, 8));
    assert_eq!(c.sliding_window, None, "use_sliding_window: false");
    // Mistral: explicit head_dim 12 != 32 / 4
    let c = decoder("mistral");
    assert_eq!(
        (c.hidden_size, c.num_heads, c.head_dim, c.q_width()),
        (32, 4, 12, 48)
    );
    assert!(matches!(c.positions, Positions::Rope { theta, .. } if theta == 1000.0));
    assert_eq!(c.eos_token_ids, Vec::<usize>::new());
}

#[test]
fn decoder_defaults_and_variants() {
    // Llama 3.1 instruct: a list of end tokens; no num_key_value_heads: one per head
    let c = decoder_edited("llama", |v| {
        v["eos_token_id"] = serde_json::json!([1, 7, 9]);
        remove(v, &["num_key_value_heads", "head_dim", "rms_norm_eps"]);
    });
    assert_eq!(c.eos_token_ids, vec![1, 7, 9]);
    assert_eq!((c.num_kv_heads, c.head_dim, c.norm_eps), (4, 12, 1e-6));
    // Llama 2: no rope_scaling, attention_bias on every projection
    let c = decoder_edited("llama", |v| {
        remove(v, &["rope_scaling"]);
        v["attention_bias"] = true.into();
    });
    assert!(matches!(
        c.positions,
        Positions::Rope {
            llama3: None,
            linear_factor: None,
            ..
        }
    ));
    assert!(c.qkv_bias && c.o_bias);
    // linear scaling, the older `type` key
    let c = decoder_edited("llama", |v| {
        v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
    });
    assert!(matches!(c.positions, Positions::Rope { linear_factor: Some(f), .. } if f == 2.0));
    // a Mistral window applies to every layer, whatever its layer_types say
    let c = decoder_edited("mistral", |v| {
        v["sliding_window"] = 4096.into();
        v["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
    });
    assert_eq!(c.sliding_window, Some(4096));
}

/// Qwen2's window as transformers 5.24 reads it (Qwen2Config, `layer_types`): only under
/// `use_sliding_window: true`, on the layers `layer_types` name `sliding_attention`, else on
/// layers `max_window_layers` (default 28) and up. All layers or none load; a window on some
/// layers only, or sliding layers with no window, are refused naming the key.
#[test]
fn qwen2_sliding_window_follows_the_layer_types() {
    use serde_json::json;
    // the fixture: sliding_window null, use_sliding_window false, layer_types both full
    let window = |edit: &dyn Fn(&mut serde_json::Value)| {
        parse_edited("qwen2", |v| {
            v["sliding_window"] = 64.into();
            v["use_sliding_window"] = true.into();
            edit(v)
        })
    };
    let slides = |edit: &dyn Fn(&mut serde_json::Value)| match window(edit) {
        Ok(ModelConfig::Llama(c)) => c.sliding_window,
        other => panic!("{other:?}"),
    };
    let c = decoder_edited("qwen2", |v| v["sliding_window"] = 64.into());
    assert_eq!(c.sliding_window, None, "use_sliding_window false");
    // the fixture's layer_types (both full_attention) win over the window
    assert_eq!(slides(&|_| {}), None);
    let both = json!(["sliding_attention", "sliding_attention"]);
    assert_eq!(slides(&|v| v["layer_types"] = both.clone()), Some(64));
    // no layer_types: layers max_window_layers and up slide (none at 2 of 2 layers, or 28)
    let mwl = |n: Option<usize>| {
        move |v: &mut serde_json::Value| {
            remove(v, &["layer_types", "max_window_layers"]);
            if let Some(n) = n {
                v["max_window_layers"] = n.into();
            }
        }
    };
    assert_eq!(slides(&mwl(Some(0))), Some(64));
    assert_eq!(slides(&mwl(Some(2))), None);
    assert_eq!(slides(&mwl(None)), None);
    type Fix = Box<dyn Fn(&mut serde_json::Value)>;
    let refusals: Vec<(Fix, &str)> = vec![
        (
            Box::new(mwl(Some(1))),
            "`max_window_layers` gives sliding_window 64 to 1 of the 2",
        ),
        (
            Box::new(|v| v["layer_types"] = json!(["full_attention", "sliding_attention"])),
            "`layer_types` gives sliding_window 64 to 1 of the 2",
        ),
        (
            Box::new(|v| v["layer_types"] = json!(["sliding_attention"])),
            "`layer_types` has 1 entries for num_hidden_layers 2",
        ),
        (
            Box::new(|v| v["layer_types"] = json!(["full_attention", "chunked_attention"])),
            "`layer_types` holds \"chunked_attention\"",
        ),
        (
            Box::new(|v| {
                v["layer_types"] = json!(["sliding_attention", "sliding_attention"]);
                v["use_sliding_window"] = false.into();
            }),
            "`layer_types` names sliding_attention layers, but there is no window",
        ),
    ];
    for (edit, want) in refusals {
        let err = window(&*edit).expect_err(want).to_string();
        assert!(
            err.contains(want) && err.contains("edited/config.json"),
            "{err}"
        );
    }
}

/// A config holding both `rope_scaling` and `rope_parameters` is read as transformers reads it
/// (`rope_scaling or rope_parameters`, then the theta inside it, else the top-level one, else
/// 10000: measured on inv_freq with transformers 5.24): a non-empty `rope_scaling` wins whole,
/// `rope_parameters` is not read, its `rope_theta` included.
#[test]
fn rope_scaling_wins_over_rope_parameters() {
    use serde_json::json;
    let rope = |edit: &dyn Fn(&mut serde_json::Value)| decoder_edited("llama", edit).positions;
    let llama3 = |theta, low, high| Positions::Rope {
        theta,
        llama3: Some(Llama3Scaling {
            factor: 8.0,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: 256.0,
        }),
        linear_factor: None,
    };
    let linear = |theta, factor| Positions::Rope {
        theta,
        llama3: None,
        linear_factor: Some(factor),
    };
    // both llama3, other frequency factors: rope_scaling's (1, 4)
    let got = rope(&|v| {
        v["rope_parameters"] = v["rope_scaling"].clone();
        v["rope_parameters"]["low_freq_factor"] = 2.0.into();
        v["rope_parameters"]["high_freq_factor"] = 3.0.into();
    });
    assert_eq!(got, llama3(1e4, 1.0, 4.0));
    // rope_parameters' theta is not read, with or without a top-level one
    for top in [None, Some(1e4)] {
        let got = rope(&|v| {
            remove(v, &["rope_theta"]);
            if let Some(t) = top {
                v["rope_theta"] = t.into();
            }
            v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 100.0});
            v["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
        });
        assert_eq!(got, linear(1e4, 2.0), "top-level rope_theta {top:?}");
    }
    // rope_scaling's own theta wins over the top-level one
    let got = rope(&|v| {
        v["rope_scaling"]["rope_theta"] = 500.0.into();
        v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 100.0});
    });
    assert_eq!(got, llama3(500.0, 1.0, 4.0));
    // an empty or null rope_scaling gives way to rope_parameters
    for empty in [json!({}), serde_json::Value::Null] {
        let got = rope(&|v| {
            v["rope_parameters"] =
                json!({"rope_type": "linear", "factor": 3.0, "rope_theta": 100.0});
            v["rope_scaling"] = empty.clone();
        });
        assert_eq!(got, linear(100.0, 3.0), "rope_scaling {empty}");
    }
}

#[test]
fn decoder_config_errors_name_the_key() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "llama",
            Box::new(|v| {
                v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
            }),
            "yarn",
        ),
        (
            "llama",
            Box::new(|v| {
                v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0})
            }),
            "low_freq_factor",
        ),
        (
            "llama",
            Box::new(|v| v["num_key_value_heads"] = 3.into()),
            "num_key_value_heads",
        ),
        (
            "llama",
            Box::new(|v| v["hidden_act"] = "relu2".into()),
            "hidden_act",
        ),
        (
            "llama",
            Box::new(|v| v["partial_rotary_factor"] = 0.5.into()),
            "partial_rotary_factor",
        ),
        ("llama", Box::new(|v| v["head_dim"] = 7.into()), "head_dim"),
        (
            "bloom",
            Box::new(|v| v["apply_residual_connection_post_layernorm"] = true.into()),
            "apply_residual_connection_post_layernorm",
        ),
        ("bloom", Box::new(|v| remove(v, &["n_embed"])), "n_embed"),
        (
            "bloom",
            Box::new(|v| v["num_attention_heads"] = 5.into()),
            "num_attention_heads",
        ),
        (
            "qwen2",
            Box::new(|v| v["model_type"] = "gemma".into()),
            "model_type",
        ),
    ];
    for (base, edit, key) in cases {
        let err = parse_edited(base, edit).expect_err(key).to_string();
        assert!(
            err.contains(key) && err.contains("edited/config.json"),
            "{key}: {err}"
        );
    }
}
