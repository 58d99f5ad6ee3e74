//! The decoder-only models: BLOOM and the Llama family's fixtures, defaults and variants,
//! Qwen2's sliding window, RoPE settings, errors.

use super::{parse_edited, remove, Edit};
use crate::common::fixture;
use softprompt::internals::backend::rope::Llama3Scaling;
use softprompt::internals::backend::Act;
use softprompt::internals::config::{DecoderConfig, ModelConfig, Positions};

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
    // Llama's bias keys only: transformers' Qwen2 builds q/k/v biases alone and Mistral none,
    // whatever config.json says (hostile pass 26, F2: stored ones were added)
    let biased = |v: &mut serde_json::Value| {
        v["attention_bias"] = true.into();
        v["mlp_bias"] = true.into();
    };
    let c = decoder_edited("qwen2", biased);
    assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias);
    let c = decoder_edited("mistral", biased);
    assert!(!c.qkv_bias && !c.o_bias && !c.mlp_bias);
    let c = decoder_edited("llama", biased);
    assert!(c.qkv_bias && c.o_bias && c.mlp_bias);
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
/// layers `max_window_layers` (default 28) and up. A window on any layer is the model's
/// (every row kept inside it, where sliding and full attention agree: one on some layers
/// only was refused; hostile pass 26, F4); sliding layers with no window are refused naming
/// the key.
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
    assert_eq!(slides(&mwl(Some(1))), Some(64), "layer 1 of 2 slides");
    let second = json!(["full_attention", "sliding_attention"]);
    assert_eq!(slides(&|v| v["layer_types"] = second.clone()), Some(64));
    type Fix = Box<dyn Fn(&mut serde_json::Value)>;
    let refusals: Vec<(Fix, &str)> = vec![
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

/// BloomConfig's attribute_map aliases are set after its own keys (PretrainedConfig.__init__):
/// num_hidden_layers wins over n_layer (n_layer won here) as num_attention_heads over n_head;
/// `n_embed` is popped before and wins over hidden_size.
#[test]
fn bloom_aliases_resolve_as_transformers_does() {
    let c = decoder_edited("bloom", |v| {
        v["num_hidden_layers"] = 1.into();
        v["n_head"] = 3.into();
        v["hidden_size"] = 24.into();
    });
    let got = (c.num_layers, c.num_heads, c.hidden_size);
    assert_eq!(got, (1, 6, 48));
    let c = decoder_edited("bloom", |v| {
        remove(v, &["n_layer", "num_attention_heads", "n_embed"]);
        v["num_hidden_layers"] = 1.into();
        v["n_head"] = 3.into();
        v["hidden_size"] = 24.into();
    });
    let got = (c.num_layers, c.num_heads, c.hidden_size);
    assert_eq!(got, (1, 3, 24));
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
