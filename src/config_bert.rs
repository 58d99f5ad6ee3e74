//! BERT's config.json, with transformers' defaults for absent keys.

use super::keys::{check_token_ids, Cfg};
use crate::backend::Act;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Act,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    /// the masked-LM decoder shares the word embeddings (transformers' default)
    pub tie_word_embeddings: bool,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

pub(super) fn parse_bert(cfg: &Cfg) -> Result<BertConfig> {
    // transformers' default "gelu", the erf GELU
    let hidden_act = cfg.act_opt("hidden_act")?.unwrap_or(Act::GeluErf);
    if let Some(kind) = cfg.str_opt("position_embedding_type")? {
        if kind != "absolute" {
            return Err(Error::config(
                &cfg.path,
                format!(
                    "position_embedding_type \"{kind}\" is not supported: expected \"absolute\""
                ),
            ));
        }
    }
    if cfg.bool_opt("is_decoder")? == Some(true) {
        return Err(Error::config(
            &cfg.path,
            "is_decoder: true is not supported: expected an encoder BERT",
        ));
    }
    let c = BertConfig {
        vocab_size: cfg.positive("vocab_size", cfg.usize("vocab_size")?)?,
        hidden_size: cfg.positive("hidden_size", cfg.usize("hidden_size")?)?,
        // no layer would train a prompt in front of the embeddings alone, without a word
        num_hidden_layers: cfg.positive("num_hidden_layers", cfg.usize("num_hidden_layers")?)?,
        num_attention_heads: cfg
            .positive("num_attention_heads", cfg.usize("num_attention_heads")?)?,
        intermediate_size: cfg.positive("intermediate_size", cfg.usize("intermediate_size")?)?,
        hidden_act,
        max_position_embeddings: cfg.positive(
            "max_position_embeddings",
            cfg.usize_or("max_position_embeddings", 512)?,
        )?,
        // every row adds token type 0's embedding, so the table needs a row
        type_vocab_size: cfg.positive("type_vocab_size", cfg.usize_or("type_vocab_size", 2)?)?,
        layer_norm_eps: cfg.epsilon_or("layer_norm_eps", 1e-12)?,
        pad_token_id: cfg.usize_or("pad_token_id", 0)?,
        tie_word_embeddings: cfg.bool_opt("tie_word_embeddings")?.unwrap_or(true),
    };
    check_token_ids(cfg, c.vocab_size, &[("pad_token_id", c.pad_token_id)])?;
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(Error::config(
            &cfg.path,
            format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            ),
        ));
    }
    Ok(c)
}
