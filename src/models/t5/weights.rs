//! T5's frozen weights, named after the checkpoint keys, and their loading.

use super::cross::CrossFold;
use crate::backend::Backend;
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::models::common::load;
use crate::models::decoder::{key_prefix, missing_untied_head};
use crate::weights::WeightSource;

/// q, k, v (A, C) and o (C, A): `SelfAttention.*` or `EncDecAttention.*`, no biases.
pub struct T5AttnWeights<B: Backend> {
    pub q: B::Buf,
    pub k: B::Buf,
    pub v: B::Buf,
    pub o: B::Buf,
}

/// `DenseReluDense`: wi (F, C) or wi_0 and wi_1 (F, C) when gated; wo (C, F).
pub struct T5FfnWeights<B: Backend> {
    pub wi: B::Buf,
    pub wi_1: Option<B::Buf>,
    pub wo: B::Buf,
}

pub struct T5BlockWeights<B: Backend> {
    pub attn_ln: B::Buf, // (C) layer.0.layer_norm
    pub attn: T5AttnWeights<B>,
    /// decoder only: layer.1.layer_norm and EncDecAttention
    pub cross: Option<(B::Buf, T5AttnWeights<B>)>,
    pub ffn_ln: B::Buf, // (C) the last layer's layer_norm
    pub ffn: T5FfnWeights<B>,
}

pub struct T5Stack<B: Backend> {
    pub blocks: Vec<T5BlockWeights<B>>,
    pub rel_bias: B::Buf, // (num_buckets, H) block.0.layer.0.SelfAttention.relative_attention_bias
    pub final_ln: B::Buf, // (C)
}

pub struct T5<B: Backend> {
    pub cfg: T5Config,
    pub shared: B::Buf, // (V, C) the input embeddings of both stacks
    /// (V, C) `lm_head.weight` when the checkpoint has one, else None: read `shared`
    pub lm_head: Option<B::Buf>,
    pub encoder: T5Stack<B>,
    pub decoder: T5Stack<B>,
    /// bytes of float32 logits the LM loss may hold at once (it runs in row chunks)
    pub lm_chunk_bytes: usize,
    /// whether the cross-attention folds its key and value products into its queries
    pub cross_fold: CrossFold,
}

impl<B: Backend> T5<B> {
    pub fn load(be: &B, store: &dyn WeightSource, cfg: T5Config) -> Result<Self> {
        let (c, v) = (cfg.d_model, cfg.vocab_size);
        // T5For{SequenceClassification,QuestionAnswering,TokenClassification} store the model
        // under its base_model_prefix; transformers strips it loading T5ForConditionalGeneration
        let pre = key_prefix(store, "transformer.", "encoder.final_layer_norm.weight");
        let lm_head = if store.contains("lm_head.weight") {
            Some(load(be, store, "lm_head.weight", &[v, c])?)
        } else if cfg.tie_word_embeddings {
            None
        } else {
            // transformers would start the head at random ("newly initialized"): no numbers
            // match, as for BERT, BLOOM and Llama
            return Err(missing_untied_head("shared.weight"));
        };
        Ok(T5 {
            shared: load_shared(be, store, pre, &[v, c])?,
            lm_head,
            encoder: T5Stack::load(be, store, &cfg, &format!("{pre}encoder"), cfg.num_layers)?,
            decoder: T5Stack::load(
                be,
                store,
                &cfg,
                &format!("{pre}decoder"),
                cfg.num_decoder_layers,
            )?,
            lm_chunk_bytes: 64 << 20,
            cross_fold: CrossFold::Auto,
            cfg,
        })
    }

    pub(super) fn lm_head_weight(&self) -> &B::Buf {
        self.lm_head.as_ref().unwrap_or(&self.shared)
    }
}

/// The embeddings both stacks read (V, C): transformers ties `shared` and the two stacks'
/// `embed_tokens` to one table, so a checkpoint may store any one of them (`shared.weight`
/// is read first).
fn load_shared<B: Backend>(
    be: &B,
    store: &dyn WeightSource,
    pre: &str,
    shape: &[usize],
) -> Result<B::Buf> {
    let [shared, enc, dec] = ["shared", "encoder.embed_tokens", "decoder.embed_tokens"]
        .map(|k| format!("{pre}{k}.weight"));
    if let Some(k) = [&shared, &enc, &dec]
        .into_iter()
        .find(|k| store.contains(k))
    {
        return load(be, store, k, shape);
    }
    // none is stored: the store's "missing from <files>" names `shared.weight`; say that the
    // other two names were looked for too
    load(be, store, &shared, shape).map_err(|e| match e {
        Error::Tensor { name, msg } => Error::tensor(
            name,
            format!(
                "{msg}; nor is `{enc}` or `{dec}` (T5 reads its embeddings from any one of \
                 the three)"
            ),
        ),
        e => e,
    })
}

impl<B: Backend> T5Stack<B> {
    fn load(
        be: &B,
        store: &dyn WeightSource,
        cfg: &T5Config,
        stack: &str,
        layers: usize,
    ) -> Result<Self> {
        let (c, a, f, h) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff, cfg.num_heads);
        let get = |key: &str, shape: &[usize]| load(be, store, &format!("{stack}.{key}"), shape);
        let attn = |prefix: &str| -> Result<T5AttnWeights<B>> {
            Ok(T5AttnWeights {
                q: get(&format!("{prefix}.q.weight"), &[a, c])?,
                k: get(&format!("{prefix}.k.weight"), &[a, c])?,
                v: get(&format!("{prefix}.v.weight"), &[a, c])?,
                o: get(&format!("{prefix}.o.weight"), &[c, a])?,
            })
        };
        let decoder = stack.ends_with("decoder");
        // grown layer by layer, never sized by the config's count: a count the weights do not
        // hold (n_layer 1e9) is refused at its first missing layer, not by an 864 GB allocation
        let mut blocks = Vec::new();
        for l in 0..layers {
            let ffn_layer = if decoder { 2 } else { 1 };
            let ffn_key = format!("block.{l}.layer.{ffn_layer}.DenseReluDense");
            let ffn = if cfg.is_gated_act {
                T5FfnWeights {
                    wi: get(&format!("{ffn_key}.wi_0.weight"), &[f, c])?,
                    wi_1: Some(get(&format!("{ffn_key}.wi_1.weight"), &[f, c])?),
                    wo: get(&format!("{ffn_key}.wo.weight"), &[c, f])?,
                }
            } else {
                T5FfnWeights {
                    wi: get(&format!("{ffn_key}.wi.weight"), &[f, c])?,
                    wi_1: None,
                    wo: get(&format!("{ffn_key}.wo.weight"), &[c, f])?,
                }
            };
            let cross = if decoder {
                Some((
                    get(&format!("block.{l}.layer.1.layer_norm.weight"), &[c])?,
                    attn(&format!("block.{l}.layer.1.EncDecAttention"))?,
                ))
            } else {
                None
            };
            blocks.push(T5BlockWeights {
                attn_ln: get(&format!("block.{l}.layer.0.layer_norm.weight"), &[c])?,
                attn: attn(&format!("block.{l}.layer.0.SelfAttention"))?,
                cross,
                ffn_ln: get(
                    &format!("block.{l}.layer.{ffn_layer}.layer_norm.weight"),
                    &[c],
                )?,
                ffn,
            });
        }
        Ok(T5Stack {
            blocks,
            rel_bias: get(
                "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                &[cfg.relative_attention_num_buckets, h],
            )?,
            final_ln: get("final_layer_norm.weight", &[c])?,
        })
    }
}
