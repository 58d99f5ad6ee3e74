//! BERT's frozen weights, named after the checkpoint keys, and their loading.

use crate::backend::Backend;
use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::models::common::load;
use crate::weights::WeightSource;

/// One encoder layer, named after the checkpoint keys under `encoder.layer.{l}.`.
pub struct BertLayerWeights<B: Backend> {
    pub query_w: B::Buf,    // (C, C)
    pub query_b: B::Buf,    // (C)
    pub key_w: B::Buf,      // (C, C)
    pub key_b: B::Buf,      // (C)
    pub value_w: B::Buf,    // (C, C)
    pub value_b: B::Buf,    // (C)
    pub attn_out_w: B::Buf, // (C, C)  attention.output.dense
    pub attn_out_b: B::Buf, // (C)
    pub ln1_w: B::Buf,      // (C)     attention.output.LayerNorm
    pub ln1_b: B::Buf,      // (C)
    pub ffn_in_w: B::Buf,   // (I, C)  intermediate.dense
    pub ffn_in_b: B::Buf,   // (I)
    pub ffn_out_w: B::Buf,  // (C, I)  output.dense
    pub ffn_out_b: B::Buf,  // (C)
    pub ln2_w: B::Buf,      // (C)     output.LayerNorm
    pub ln2_b: B::Buf,      // (C)
}

/// The masked-LM head, `cls.predictions.*`.
pub struct BertMlmHead<B: Backend> {
    pub dense_w: B::Buf, // (C, C)  transform.dense
    pub dense_b: B::Buf, // (C)
    pub ln_w: B::Buf,    // (C)     transform.LayerNorm
    pub ln_b: B::Buf,    // (C)
    /// (V, C) `decoder.weight` when the checkpoint holds it; None reads the word embeddings
    pub decoder_w: Option<B::Buf>,
    pub bias: B::Buf, // (V)     `decoder.bias`, else `bias`
}

pub struct BertWeights<B: Backend> {
    pub word_embeddings: B::Buf,       // (V, C)
    pub position_embeddings: B::Buf,   // (max_position_embeddings, C)
    pub token_type_embeddings: B::Buf, // (type_vocab_size, C)
    pub emb_ln_w: B::Buf,              // (C)
    pub emb_ln_b: B::Buf,              // (C)
    pub layers: Vec<BertLayerWeights<B>>,
    pub mlm_head: Option<BertMlmHead<B>>,
}

pub struct Bert<B: Backend> {
    pub cfg: BertConfig,
    pub w: BertWeights<B>,
}

/// Resolves checkpoint names with or without the `bert.` prefix, and the old
/// `LayerNorm.gamma/beta` spelling.
struct Names<'a> {
    store: &'a dyn WeightSource,
    prefix: &'static str,
}

impl Names<'_> {
    fn resolve(&self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        if self.store.contains(&full) {
            return full;
        }
        let legacy = full
            .replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta");
        if self.store.contains(&legacy) {
            legacy
        } else {
            full
        }
    }
}

impl<B: Backend> BertLayerWeights<B> {
    fn load(be: &B, n: &Names, cfg: &BertConfig, l: usize) -> Result<Self> {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        let get = |key: &str, shape: &[usize]| {
            load(
                be,
                n.store,
                &n.resolve(&format!("encoder.layer.{l}.{key}")),
                shape,
            )
        };
        Ok(BertLayerWeights {
            query_w: get("attention.self.query.weight", &[c, c])?,
            query_b: get("attention.self.query.bias", &[c])?,
            key_w: get("attention.self.key.weight", &[c, c])?,
            key_b: get("attention.self.key.bias", &[c])?,
            value_w: get("attention.self.value.weight", &[c, c])?,
            value_b: get("attention.self.value.bias", &[c])?,
            attn_out_w: get("attention.output.dense.weight", &[c, c])?,
            attn_out_b: get("attention.output.dense.bias", &[c])?,
            ln1_w: get("attention.output.LayerNorm.weight", &[c])?,
            ln1_b: get("attention.output.LayerNorm.bias", &[c])?,
            ffn_in_w: get("intermediate.dense.weight", &[i, c])?,
            ffn_in_b: get("intermediate.dense.bias", &[i])?,
            ffn_out_w: get("output.dense.weight", &[c, i])?,
            ffn_out_b: get("output.dense.bias", &[c])?,
            ln2_w: get("output.LayerNorm.weight", &[c])?,
            ln2_b: get("output.LayerNorm.bias", &[c])?,
        })
    }
}

impl<B: Backend> BertMlmHead<B> {
    /// None when the folder has no `cls.predictions.transform.dense.weight` (encoder only).
    fn load(be: &B, store: &dyn WeightSource, cfg: &BertConfig) -> Result<Option<Self>> {
        let n = Names {
            store,
            prefix: "cls.predictions.",
        };
        if !store.contains(&n.resolve("transform.dense.weight")) {
            return Ok(None);
        }
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let get = |key: &str, shape: &[usize]| load(be, store, &n.resolve(key), shape);
        // transformers 5 uses a stored `decoder.weight` and `decoder.bias` even under
        // tie_word_embeddings: true (its tie fills only a missing key), and untied it reads
        // `decoder.bias`, `bias` then being a dead copy. 4.x made `decoder.bias` the very
        // parameter `bias` is, whatever the tie, so its files hold `bias` alone: the head's
        // bias (transformers 5 would start that untied head's bias from zeros instead).
        let decoder_w = if store.contains("cls.predictions.decoder.weight") {
            Some(get("decoder.weight", &[v, c])?)
        } else if !cfg.tie_word_embeddings {
            return Err(Error::tensor(
                "cls.predictions.decoder.weight",
                "missing, and config.json says tie_word_embeddings: false (the masked-LM head is \
                 not the word embeddings)",
            ));
        } else {
            None
        };
        let bias_key = if store.contains("cls.predictions.decoder.bias") {
            "decoder.bias"
        } else {
            "bias"
        };
        Ok(Some(BertMlmHead {
            dense_w: get("transform.dense.weight", &[c, c])?,
            dense_b: get("transform.dense.bias", &[c])?,
            ln_w: get("transform.LayerNorm.weight", &[c])?,
            ln_b: get("transform.LayerNorm.bias", &[c])?,
            decoder_w,
            bias: get(bias_key, &[v])?,
        }))
    }
}

impl<B: Backend> Bert<B> {
    pub fn load(be: &B, store: &dyn WeightSource, cfg: BertConfig) -> Result<Self> {
        let prefix = if store.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let n = Names { store, prefix };
        let c = cfg.hidden_size;
        let get = |key: &str, shape: &[usize]| load(be, store, &n.resolve(key), shape);
        let w = BertWeights {
            word_embeddings: get("embeddings.word_embeddings.weight", &[cfg.vocab_size, c])?,
            position_embeddings: get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, c],
            )?,
            token_type_embeddings: get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, c],
            )?,
            emb_ln_w: get("embeddings.LayerNorm.weight", &[c])?,
            emb_ln_b: get("embeddings.LayerNorm.bias", &[c])?,
            layers: (0..cfg.num_hidden_layers)
                .map(|l| BertLayerWeights::load(be, &n, &cfg, l))
                .collect::<Result<_>>()?,
            mlm_head: BertMlmHead::load(be, store, &cfg)?,
        };
        Ok(Bert { cfg, w })
    }

    /// The MLM head's decoder matrix: `decoder.weight` when stored, else the word embeddings.
    pub fn decoder_weight(&self) -> Result<(&BertMlmHead<B>, &B::Buf)> {
        let head = self.w.mlm_head.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "this BERT checkpoint has no masked-LM head (cls.predictions.*); the mlm and pet \
                 objectives need one: use the cls task instead"
                    .into(),
            )
        })?;
        Ok((
            head,
            head.decoder_w.as_ref().unwrap_or(&self.w.word_embeddings),
        ))
    }
}
