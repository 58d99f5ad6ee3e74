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

use crate::backend::rope::Llama3Scaling;
use crate::backend::Act;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[path = "config_rope.rs"]
mod rope;
#[path = "config_window.rs"]
mod window;

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

#[derive(Clone, Debug, PartialEq)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    /// activation of the feed-forward (the gate's activation when gated)
    pub dense_act: Act,
    pub is_gated_act: bool,
    /// decoder output multiplied by d_model^-0.5 before the LM head
    pub scale_decoder_outputs: bool,
    pub decoder_start_token_id: usize,
    pub pad_token_id: usize,
    pub eos_token_id: usize,
}

impl T5Config {
    /// The width of q, k and v: num_heads * d_kv, which may differ from d_model.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

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
    /// Reads `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = crate::fsutil::read_json_text(&path)?;
        ModelConfig::parse(&text, &path)
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
            "bert" => Ok(ModelConfig::Bert(parse_bert(&cfg)?)),
            "t5" | "mt5" => Ok(ModelConfig::T5(parse_t5(&cfg)?)),
            "bloom" => Ok(ModelConfig::Bloom(parse_bloom(&cfg)?)),
            "llama" | "mistral" | "qwen2" => Ok(ModelConfig::Llama(parse_llama(&cfg, &model_type)?)),
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

struct Cfg<'a> {
    v: &'a Value,
    path: PathBuf,
}

impl Cfg<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|x| !x.is_null())
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => match x.as_u64() {
                // sizes and token ids travel as i32 on the device; a larger value is a typo
                // (and would overflow the products of sizes further on)
                Some(n) if n <= i32::MAX as u64 => Ok(Some(n as usize)),
                Some(n) => Err(Error::config(
                    &self.path,
                    format!(
                        "`{key}` is {n}: more than this engine supports ({})",
                        i32::MAX
                    ),
                )),
                None => Err(Error::config(
                    &self.path,
                    format!("`{key}` must be a non-negative integer, got {x}"),
                )),
            },
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| {
            Error::config(&self.path, format!("missing `{key}` (a positive integer)"))
        })
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }
    fn positive(&self, key: &str, value: usize) -> Result<usize> {
        if value == 0 {
            Err(Error::config(
                &self.path,
                format!("`{key}` must be positive, got 0"),
            ))
        } else {
            Ok(value)
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| {
                Error::config(&self.path, format!("`{key}` must be a number, got {x}"))
            }),
        }
    }
    /// A layer-norm epsilon: finite and positive (a negative one turns the variance of a
    /// constant row negative and every loss NaN).
    fn epsilon_or(&self, key: &str, default: f64) -> Result<f64> {
        let eps = self.f64_or(key, default)?;
        if eps.is_finite() && eps > 0.0 {
            Ok(eps)
        } else {
            Err(Error::config(
                &self.path,
                format!("`{key}` must be a small positive number (such as 1e-12), got {eps}"),
            ))
        }
    }
    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x.as_bool().map(Some).ok_or_else(|| {
                Error::config(
                    &self.path,
                    format!("`{key}` must be true or false, got {x}"),
                )
            }),
        }
    }
    fn str_opt(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
                Error::config(&self.path, format!("`{key}` must be a string, got {x}"))
            }),
        }
    }
    /// A token id that may be given as an integer or a list (eos_token_id: [1]).
    fn token_id_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            Some(Value::Array(a)) if !a.is_empty() => a
                .first()
                .and_then(Value::as_u64)
                .filter(|&n| n <= i32::MAX as u64)
                .map(|n| n as usize)
                .ok_or_else(|| Error::config(&self.path, format!("`{key}` must hold integers"))),
            _ => self.usize_or(key, default),
        }
    }
}

fn parse_bert(cfg: &Cfg) -> Result<BertConfig> {
    let act_name = cfg.str_opt("hidden_act")?.unwrap_or_else(|| "gelu".into());
    let hidden_act = Act::from_hf_name(&act_name).ok_or_else(|| {
        Error::config(
            &cfg.path,
            format!(
                "hidden_act \"{act_name}\" is not supported: expected one of {}",
                Act::SUPPORTED
            ),
        )
    })?;
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

/// Special token ids must be rows of the embedding table.
fn check_token_ids(cfg: &Cfg, vocab_size: usize, ids: &[(&str, usize)]) -> Result<()> {
    match ids.iter().find(|(_, id)| *id >= vocab_size) {
        Some((key, id)) => Err(Error::config(
            &cfg.path,
            format!("`{key}` is {id}, outside the vocabulary (vocab_size {vocab_size})"),
        )),
        None => Ok(()),
    }
}

/// transformers' rule: "gated-<act>" or "<act>"; "gated-gelu" means the tanh GELU.
fn parse_feed_forward_proj(cfg: &Cfg, proj: &str) -> Result<(Act, bool)> {
    let parts: Vec<&str> = proj.split('-').collect();
    let bad = || {
        Error::config(
            &cfg.path,
            format!(
                "feed_forward_proj \"{proj}\" is not supported: expected \"relu\", \"gated-gelu\", \
                 \"gated-silu\" or \"[gated-]<act>\" with <act> one of {}",
                Act::SUPPORTED
            ),
        )
    };
    let (gated, name) = match parts.as_slice() {
        [name] => (false, *name),
        ["gated", name] => (true, *name),
        _ => return Err(bad()),
    };
    let act = if proj == "gated-gelu" {
        Act::GeluTanh
    } else {
        Act::from_hf_name(name).ok_or_else(bad)?
    };
    Ok((act, gated))
}

fn parse_t5(cfg: &Cfg) -> Result<T5Config> {
    let proj = cfg
        .str_opt("feed_forward_proj")?
        .unwrap_or_else(|| "relu".into());
    let (mut dense_act, mut is_gated_act) = parse_feed_forward_proj(cfg, &proj)?;
    // transformers (4.x and 5) sets config.json's own keys after deriving these two from the
    // projection: an explicit `is_gated_act` or `dense_act_fn` wins (a gated MLP over a file
    // without `wi_0` then fails naming the tensor, where transformers would start it at random)
    if let Some(gated) = cfg.bool_opt("is_gated_act")? {
        is_gated_act = gated;
    }
    if let Some(name) = cfg.str_opt("dense_act_fn")? {
        dense_act = Act::from_hf_name(&name).ok_or_else(|| {
            Error::config(
                &cfg.path,
                format!(
                    "dense_act_fn \"{name}\" is not supported: expected one of {}",
                    Act::SUPPORTED
                ),
            )
        })?;
    }
    let num_layers = cfg.positive("num_layers", cfg.usize("num_layers")?)?;
    // transformers 5 writes `scale_decoder_outputs`; older configs say it with
    // `tie_word_embeddings` (false on v1.1); the original T5 always scaled.
    let scale_decoder_outputs = match cfg.bool_opt("scale_decoder_outputs")? {
        Some(s) => s,
        None => cfg.bool_opt("tie_word_embeddings")?.unwrap_or(true),
    };
    let pad_token_id = cfg.usize_or("pad_token_id", 0)?;
    let c = T5Config {
        vocab_size: cfg.positive("vocab_size", cfg.usize("vocab_size")?)?,
        d_model: cfg.positive("d_model", cfg.usize("d_model")?)?,
        d_kv: cfg.positive("d_kv", cfg.usize("d_kv")?)?,
        d_ff: cfg.positive("d_ff", cfg.usize("d_ff")?)?,
        num_layers,
        num_decoder_layers: cfg.positive(
            "num_decoder_layers",
            cfg.usize_or("num_decoder_layers", num_layers)?,
        )?,
        num_heads: cfg.positive("num_heads", cfg.usize("num_heads")?)?,
        relative_attention_num_buckets: cfg.positive(
            "relative_attention_num_buckets",
            cfg.usize_or("relative_attention_num_buckets", 32)?,
        )?,
        relative_attention_max_distance: cfg.usize_or("relative_attention_max_distance", 128)?,
        layer_norm_epsilon: cfg.epsilon_or("layer_norm_epsilon", 1e-6)?,
        dense_act,
        is_gated_act,
        scale_decoder_outputs,
        decoder_start_token_id: cfg.usize_or("decoder_start_token_id", pad_token_id)?,
        pad_token_id,
        eos_token_id: cfg.token_id_or("eos_token_id", 1)?,
    };
    check_token_ids(
        cfg,
        c.vocab_size,
        &[
            ("pad_token_id", c.pad_token_id),
            ("eos_token_id", c.eos_token_id),
            ("decoder_start_token_id", c.decoder_start_token_id),
        ],
    )?;
    if c.relative_attention_num_buckets < 4 {
        return Err(Error::config(
            &cfg.path,
            "relative_attention_num_buckets must be at least 4 (T5 halves it twice)",
        ));
    }
    // the decoder's unidirectional buckets take log(max_distance / (num_buckets / 2)); at or
    // below 1 the bucket function divides by zero or goes negative
    if c.relative_attention_max_distance <= c.relative_attention_num_buckets / 2 {
        return Err(Error::config(
            &cfg.path,
            format!(
                "relative_attention_max_distance {} must exceed half of relative_attention_num_buckets {} \
                 (otherwise T5's bucket function is degenerate)",
                c.relative_attention_max_distance, c.relative_attention_num_buckets
            ),
        ));
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// Decoder-only language models

const SUPPORTED_MODEL_TYPES: &str =
    "\"bert\", \"t5\", \"bloom\", \"llama\", \"mistral\" or \"qwen2\"";

/// The position encoding of a decoder-only model.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    /// BLOOM: ALiBi slopes from the head count, nothing to load
    Alibi,
    /// the Llama family: rotary embeddings with base `theta`, optionally Llama 3's scaling
    /// (`rope_type: "llama3"`) or linear scaling (`rope_type: "linear"`: positions / factor)
    Rope {
        theta: f64,
        llama3: Option<Llama3Scaling>,
        linear_factor: Option<f64>,
    },
}

/// A decoder-only language model, normalised from BLOOM's or the Llama family's config.json.
/// BLOOM: LayerNorm (with the embedding LayerNorm), fused interleaved query_key_value with
/// biases, tanh GELU MLP of width 4·hidden, ALiBi. The Llama family: RMSNorm, separate
/// q/k/v/o projections (biases: Qwen2's q, k, v; Llama's `attention_bias`), a gated MLP
/// (SwiGLU), RoPE, grouped-query attention.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// "bloom", "llama", "mistral" or "qwen2"
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// key/value heads (grouped-query attention); num_heads without GQA
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    /// LayerNorm's (BLOOM) or RMSNorm's epsilon
    pub norm_eps: f64,
    /// the MLP's activation (the gate's, in the Llama family)
    pub act: Act,
    pub positions: Positions,
    /// biases on the q, k and v projections
    pub qkv_bias: bool,
    /// bias on the output projection
    pub o_bias: bool,
    /// biases in the MLP (always in BLOOM)
    pub mlp_bias: bool,
    /// the LM head reads the input embeddings when the checkpoint has no `lm_head.weight`
    pub tie_word_embeddings: bool,
    /// the attention window of Mistral and Qwen2 configs that use one (None: full attention)
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<usize>,
    /// the tokens that end generation (a list in Llama 3.1 instruct configs)
    pub eos_token_ids: Vec<usize>,
    pub pad_token_id: Option<usize>,
}

impl DecoderConfig {
    /// BLOOM (LayerNorm, ALiBi) rather than the Llama family (RMSNorm, RoPE).
    pub fn is_bloom(&self) -> bool {
        self.model_type == "bloom"
    }
    /// Width of the query projection: num_heads · head_dim (may differ from hidden_size).
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }
    /// Width of the key and value projections: num_kv_heads · head_dim.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

impl Cfg<'_> {
    /// The first of `keys` present, as a positive integer; an error naming them all when none is.
    fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(v) = self.usize_opt(k)? {
                return self.positive(k, v);
            }
        }
        Err(Error::config(
            &self.path,
            format!("missing `{}` (a positive integer)", keys.join("` or `")),
        ))
    }

    /// A token id or a list of them (Llama 3.1's eos_token_id).
    fn token_ids(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64().map(|n| n as usize).ok_or_else(|| {
                        Error::config(&self.path, format!("`{key}` must hold integers, got {x}"))
                    })
                })
                .collect(),
            Some(_) => Ok(vec![self.usize(key)?]),
        }
    }
}

fn parse_bloom(cfg: &Cfg) -> Result<DecoderConfig> {
    if cfg.bool_opt("apply_residual_connection_post_layernorm")? == Some(true) {
        return Err(Error::config(
            &cfg.path,
            "apply_residual_connection_post_layernorm: true is not supported: expected false \
             (every released BLOOM)",
        ));
    }
    let hidden = cfg.usize_any(&["n_embed", "hidden_size"])?;
    let heads = cfg.usize_any(&["num_attention_heads", "n_head"])?;
    if hidden % heads != 0 {
        return Err(Error::config(
            &cfg.path,
            format!("n_embed {hidden} is not a multiple of num_attention_heads {heads}"),
        ));
    }
    Ok(DecoderConfig {
        model_type: "bloom".into(),
        vocab_size: cfg.positive("vocab_size", cfg.usize_or("vocab_size", 250880)?)?,
        hidden_size: hidden,
        num_layers: cfg.positive("n_layer", cfg.usize_any(&["n_layer", "num_hidden_layers"])?)?,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: hidden / heads,
        // transformers' BloomMLP is 4 · hidden wide whatever `n_inner` says
        intermediate_size: 4 * hidden,
        norm_eps: cfg.epsilon_or("layer_norm_epsilon", 1e-5)?,
        act: Act::GeluTanh,
        positions: Positions::Alibi,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        tie_word_embeddings: cfg.bool_opt("tie_word_embeddings")?.unwrap_or(true),
        sliding_window: None,
        bos_token_id: Some(cfg.usize_or("bos_token_id", 1)?),
        eos_token_ids: match cfg.token_ids("eos_token_id")? {
            ids if ids.is_empty() => vec![2],
            ids => ids,
        },
        pad_token_id: Some(cfg.usize_or("pad_token_id", 3)?),
    })
    .and_then(|c| check_decoder_token_ids(cfg, c))
}

/// Llama 2/3, Mistral and Qwen2: the same shape with different defaults.
fn parse_llama(cfg: &Cfg, model_type: &str) -> Result<DecoderConfig> {
    let hidden = cfg.usize_any(&["hidden_size"])?;
    let heads = cfg.usize_any(&["num_attention_heads"])?;
    let kv_heads = cfg.usize_opt("num_key_value_heads")?.unwrap_or(heads);
    let kv_heads = cfg.positive("num_key_value_heads", kv_heads)?;
    if heads % kv_heads != 0 {
        return Err(Error::config(
            &cfg.path,
            format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            ),
        ));
    }
    let head_dim = match cfg.usize_opt("head_dim")? {
        Some(d) => cfg.positive("head_dim", d)?,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(Error::config(
                &cfg.path,
                format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads} and there is no `head_dim`"),
            ))
        }
    };
    if head_dim % 2 != 0 {
        return Err(Error::config(
            &cfg.path,
            format!("head_dim {head_dim} must be even for rotary embeddings"),
        ));
    }
    let act_name = cfg.str_opt("hidden_act")?.unwrap_or_else(|| "silu".into());
    let act = Act::from_hf_name(&act_name).ok_or_else(|| {
        Error::config(
            &cfg.path,
            format!(
                "hidden_act \"{act_name}\" is not supported: expected one of {}",
                Act::SUPPORTED
            ),
        )
    })?;
    let qwen2 = model_type == "qwen2";
    let attention_bias = cfg.bool_opt("attention_bias")?.unwrap_or(false);
    let num_layers = cfg.positive("num_hidden_layers", cfg.usize_any(&["num_hidden_layers"])?)?;
    Ok(DecoderConfig {
        model_type: model_type.into(),
        vocab_size: cfg.usize_any(&["vocab_size"])?,
        hidden_size: hidden,
        num_layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        intermediate_size: cfg.usize_any(&["intermediate_size"])?,
        norm_eps: cfg.epsilon_or("rms_norm_eps", 1e-6)?,
        act,
        positions: rope::parse_rope(cfg)?,
        qkv_bias: qwen2 || attention_bias,
        o_bias: attention_bias,
        mlp_bias: cfg.bool_opt("mlp_bias")?.unwrap_or(false),
        tie_word_embeddings: cfg.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        sliding_window: window::sliding_window(cfg, model_type, num_layers)?,
        bos_token_id: cfg.usize_opt("bos_token_id")?,
        eos_token_ids: cfg.token_ids("eos_token_id")?,
        pad_token_id: cfg.usize_opt("pad_token_id")?,
    })
    .and_then(|c| check_decoder_token_ids(cfg, c))
}

/// A decoder's end tokens must be rows of its embedding table: one past it was accepted,
/// then every target it ended failed as "tensor `labels`" with no word of config.json.
///
/// Its pad token need not be: a `pad_token_id` of `vocab_size` (a pad token added to the
/// tokenizer without resizing the embeddings) loads, as it did before this check. In
/// transformers 5.24 such a config only warns; BloomForCausalLM builds, but its forward fails
/// on a padded batch holding the id (the embedding gathers every position), and the Llama
/// family's `nn.Embedding(padding_idx=pad_token_id)` asserts. Here padding only fills
/// positions the key mask hides, and fills them with `Decoder::pad_id`, an id within the
/// table; the one use of the pad id as a token, `--target-end pad`, refuses an id past the
/// table (`train::task::pad_end`).
fn check_decoder_token_ids(cfg: &Cfg, c: DecoderConfig) -> Result<DecoderConfig> {
    let ids: Vec<(&str, usize)> = (c.eos_token_ids.iter())
        .map(|&id| ("eos_token_id", id))
        .collect();
    check_token_ids(cfg, c.vocab_size, &ids)?;
    Ok(c)
}
