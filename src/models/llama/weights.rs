//! The Llama family's checkpoint keys, with or without the `model.` prefix: `embed_tokens`,
//! `layers.{l}.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
//! mlp.{gate,up,down}_proj}`, `norm`, and `lm_head.weight` (absent when tied).

use crate::backend::Backend;
use crate::config::DecoderConfig;
use crate::error::Result;
use crate::models::decoder::{
    key_prefix, load_lm_head, Decoder, DecoderLayerWeights, DecoderWeights, Linear, Mlp, Norm,
};
use crate::weights::WeightSource;

/// Loads a Llama, Mistral or Qwen2 checkpoint onto `be`.
pub fn load<B: Backend>(
    be: &B,
    store: &dyn WeightSource,
    cfg: DecoderConfig,
) -> Result<Decoder<B>> {
    let pre = key_prefix(store, "model.", "embed_tokens.weight");
    let (c, v, i) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let (qw, kvw) = (cfg.q_width(), cfg.kv_width());
    let name = |key: &str| format!("{pre}{key}");
    // grown layer by layer, never sized by the config's count: a count the weights do not
    // hold (n_layer 1e9) is refused at its first missing layer, not by an 864 GB allocation
    let mut layers = Vec::new();
    for l in 0..cfg.num_layers {
        let at = |key: &str| name(&format!("layers.{l}.{key}"));
        let lin = |key: &str, n: usize, k: usize, bias: bool| {
            Linear::load(be, store, &at(key), n, k, bias)
        };
        layers.push(DecoderLayerWeights {
            attn_norm: Norm::load_rms(be, store, &at("input_layernorm"), c)?,
            q: lin("self_attn.q_proj", qw, c, cfg.qkv_bias)?,
            k: lin("self_attn.k_proj", kvw, c, cfg.qkv_bias)?,
            v: lin("self_attn.v_proj", kvw, c, cfg.qkv_bias)?,
            o: lin("self_attn.o_proj", c, qw, cfg.o_bias)?,
            mlp_norm: Norm::load_rms(be, store, &at("post_attention_layernorm"), c)?,
            mlp: Mlp::Gated {
                gate: lin("mlp.gate_proj", i, c, cfg.mlp_bias)?,
                up: lin("mlp.up_proj", i, c, cfg.mlp_bias)?,
                down: lin("mlp.down_proj", c, i, cfg.mlp_bias)?,
            },
        });
    }
    let w = DecoderWeights {
        embed: crate::models::common::load(be, store, &name("embed_tokens.weight"), &[v, c])?,
        embed_norm: None,
        layers,
        final_norm: Norm::load_rms(be, store, &name("norm"), c)?,
        lm_head: load_lm_head(be, store, &cfg)?,
    };
    Decoder::new(be, cfg, w)
}
