//! Hugging Face `config.json` for BERT, T5 (v1.0, v1.1 / LM-adapted, flan) and the decoder-only
//! language models (BLOOM; Llama 2/3, Mistral and Qwen2, which load as `llama`), with the
//! defaults transformers applies when a key is absent, and clear errors for what the engine
//! does not support.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

#[path = "config_bert.rs"]
mod bert;
#[path = "config_decoder.rs"]
mod decoder;
#[path = "config_keys.rs"]
mod keys;
#[path = "config_rope.rs"]
mod rope;
#[path = "config_t5.rs"]
mod t5;
#[path = "config_window.rs"]
mod window;

pub use bert::BertConfig;
pub use decoder::{DecoderConfig, Positions};
pub use t5::T5Config;
// the RoPE and window readers name these through `super`
use keys::Cfg;

#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Bert(BertConfig),
    T5(T5Config),
    /// `BloomForCausalLM`
    Bloom(DecoderConfig),
    /// `LlamaForCausalLM` and the configs of its shape: Mistral, Qwen2
    Llama(DecoderConfig),
}

impl ModelConfig {
    /// Reads `<dir>/config.json`, and a decoder's stop tokens from `<dir>/generation_config.json`
    /// where there is one.
    pub fn load(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = crate::fsutil::read_json_text(&path)?;
        let mut cfg = ModelConfig::parse(&text, &path)?;
        if let ModelConfig::Bloom(c) | ModelConfig::Llama(c) = &mut cfg {
            decoder::read_generation_stop(dir, c);
        }
        Ok(cfg)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ModelConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
        let cfg = Cfg {
            v: &v,
            path: path.to_path_buf(),
        };
        let model_type = cfg.str_opt("model_type")?.unwrap_or_default();
        match model_type.as_str() {
            "bert" => Ok(ModelConfig::Bert(bert::parse_bert(&cfg)?)),
            "t5" | "mt5" => Ok(ModelConfig::T5(t5::parse_t5(&cfg)?)),
            "bloom" => Ok(ModelConfig::Bloom(decoder::parse_bloom(&cfg)?)),
            "llama" | "mistral" | "qwen2" => Ok(ModelConfig::Llama(decoder::parse_llama(&cfg, &model_type)?)),
            "" => Err(Error::config(
                path,
                format!("no `model_type`: expected one of {SUPPORTED_MODEL_TYPES}"),
            )),
            other => Err(Error::config(
                path,
                format!("model_type \"{other}\" is not supported: expected one of {SUPPORTED_MODEL_TYPES}"),
            )),
        }
    }

    pub fn arch(&self) -> &'static str {
        match self {
            ModelConfig::Bert(_) => "bert",
            ModelConfig::T5(_) => "t5",
            ModelConfig::Bloom(_) => "bloom",
            ModelConfig::Llama(_) => "llama",
        }
    }

    /// The width of the embeddings, which is the width of a prompt row.
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.hidden_size,
            ModelConfig::T5(c) => c.d_model,
            ModelConfig::Bloom(c) | ModelConfig::Llama(c) => c.hidden_size,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.vocab_size,
            ModelConfig::T5(c) => c.vocab_size,
            ModelConfig::Bloom(c) | ModelConfig::Llama(c) => c.vocab_size,
        }
    }
}

const SUPPORTED_MODEL_TYPES: &str =
    "\"bert\", \"t5\", \"mt5\", \"bloom\", \"llama\", \"mistral\" or \"qwen2\"";
