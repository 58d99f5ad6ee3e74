//! BLOOM's checkpoint keys, with or without the `transformer.` prefix (bigscience/bloom-560m
//! stores them without): `word_embeddings`, `word_embeddings_layernorm`, `h.{l}.*`, `ln_f`,
//! and `lm_head.weight` only when it is not tied.

use crate::backend::Backend;
use crate::config::DecoderConfig;
use crate::error::Result;
use crate::models::decoder::{
    key_prefix, load_lm_head, Decoder, DecoderLayerWeights, DecoderWeights, Linear, Mlp, Norm,
};
use crate::weights::WeightSource;

/// Loads a BLOOM checkpoint onto `be`.
pub fn load<B: Backend>(
    be: &B,
    store: &dyn WeightSource,
    cfg: DecoderConfig,
) -> Result<Decoder<B>> {
    let pre = key_prefix(store, "transformer.", "word_embeddings.weight");
    let (c, v, i) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let name = |key: &str| format!("{pre}{key}");
    // grown layer by layer, never sized by the config's count: a count the weights do not
    // hold (n_layer 1e9) is refused at its first missing layer, not by an 864 GB allocation
    let mut layers = Vec::new();
    for l in 0..cfg.num_layers {
        let h = |key: &str| name(&format!("h.{l}.{key}"));
        let (q, k, vv) = split_qkv(be, store, &h("self_attention.query_key_value"), &cfg)?;
        layers.push(DecoderLayerWeights {
            attn_norm: Norm::load_layer(be, store, &h("input_layernorm"), c)?,
            q,
            k,
            v: vv,
            o: Linear::load(be, store, &h("self_attention.dense"), c, c, true)?,
            mlp_norm: Norm::load_layer(be, store, &h("post_attention_layernorm"), c)?,
            mlp: Mlp::Plain {
                up: Linear::load(be, store, &h("mlp.dense_h_to_4h"), i, c, true)?,
                down: Linear::load(be, store, &h("mlp.dense_4h_to_h"), c, i, true)?,
            },
        });
    }
    let w = DecoderWeights {
        embed: crate::models::common::load(be, store, &name("word_embeddings.weight"), &[v, c])?,
        embed_norm: Some(Norm::load_layer(
            be,
            store,
            &name("word_embeddings_layernorm"),
            c,
        )?),
        layers,
        final_norm: Norm::load_layer(be, store, &name("ln_f"), c)?,
        lm_head: load_lm_head(be, store, &cfg)?,
    };
    Decoder::new(be, cfg, w)
}

/// The fused (3C, C) `query_key_value` weight and (3C) bias, whose rows are (H, 3, D): q, k, v
/// of head 0, then of head 1, ...; split into the q, k and v projections (C, C) each.
fn split_qkv<B: Backend>(
    be: &B,
    store: &dyn WeightSource,
    name: &str,
    cfg: &DecoderConfig,
) -> Result<(Linear<B>, Linear<B>, Linear<B>)> {
    let (c, h, d) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim);
    let w = store.get(&format!("{name}.weight"), &[3 * c, c])?;
    let b = store.get(&format!("{name}.bias"), &[3 * c])?;
    // rows of part `which` (0 q, 1 k, 2 v) of a (3C, width) tensor, head by head
    let part = |data: &[f32], width: usize, which: usize| -> Vec<f32> {
        (0..h)
            .flat_map(|head| {
                let row0 = (head * 3 + which) * d;
                data[row0 * width..(row0 + d) * width].iter().copied()
            })
            .collect()
    };
    let mut out = Vec::with_capacity(3);
    for which in 0..3 {
        out.push(Linear {
            w: be.upload(be.weight_dtype(), &part(&w.data, c, which))?,
            b: Some(be.upload(be.weight_dtype(), &part(&b.data, 1, which))?),
        });
    }
    let mut it = out.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(q), Some(k), Some(v)) => Ok((q, k, v)),
        _ => Err(crate::error::Error::tensor(
            name,
            "could not split into q, k and v",
        )),
    }
}
