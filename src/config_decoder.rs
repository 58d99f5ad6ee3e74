//! The decoder-only language models' config.json: BLOOM's, and the Llama family's (Llama 2/3,
//! Mistral, Qwen2), normalised to one `DecoderConfig`.

use super::keys::{check_token_ids, Cfg};
use super::{rope, window};
use crate::backend::rope::Llama3Scaling;
use crate::backend::Act;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

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
    /// config.json's end-of-sequence tokens (a list in Llama 3.1 instruct configs); the first
    /// ends `--target-end eos` targets
    pub eos_token_ids: Vec<usize>,
    /// the tokens that end greedy generation: generation_config.json's `eos_token_id` where
    /// the folder has that file and it names one (transformers' `generate` takes it over
    /// config.json's: Llama 3 Instruct adds `<|eot_id|>` there), else `eos_token_ids`
    pub stop_token_ids: Vec<usize>,
    /// why generation_config.json gave no stop tokens (not JSON, an id past the table, a
    /// value that is no id): the file and the message. Greedy generation refuses with it;
    /// every other use ignores the file, as transformers' `from_pretrained` only warns.
    pub stop_token_error: Option<(PathBuf, String)>,
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

pub(super) fn parse_bloom(cfg: &Cfg) -> Result<DecoderConfig> {
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
    let eos = match cfg.token_ids("eos_token_id")? {
        ids if ids.is_empty() => vec![2],
        ids => ids,
    };
    Ok(DecoderConfig {
        model_type: "bloom".into(),
        vocab_size: cfg.positive("vocab_size", cfg.usize_or("vocab_size", 250880)?)?,
        hidden_size: hidden,
        // BloomConfig's attribute_map aliases are set after its own keys
        // (PretrainedConfig.__init__): num_hidden_layers wins over n_layer, as
        // num_attention_heads over n_head; `n_embed` is popped first and wins over hidden_size
        num_layers: cfg.usize_any(&["num_hidden_layers", "n_layer"])?,
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
        eos_token_ids: eos.clone(),
        stop_token_ids: eos,
        stop_token_error: None,
        pad_token_id: Some(cfg.usize_or("pad_token_id", 3)?),
    })
    .and_then(|c| check_decoder_token_ids(cfg, c))
}

/// Llama 2/3, Mistral and Qwen2: the same shape with different defaults.
pub(super) fn parse_llama(cfg: &Cfg, model_type: &str) -> Result<DecoderConfig> {
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
    let act = cfg.act_opt("hidden_act")?.unwrap_or(Act::Silu);
    let qwen2 = model_type == "qwen2";
    // `attention_bias` and `mlp_bias` are Llama's: transformers' Mistral builds no bias and
    // Qwen2 q/k/v's alone, whatever config.json says, and leaves stored ones unread (they
    // were added here, other logits; or a folder without them was refused; hostile pass 26)
    let llama = model_type == "llama";
    let llama_key =
        |key: &str| -> Result<bool> { Ok(llama && cfg.bool_opt(key)?.unwrap_or(false)) };
    let attention_bias = llama_key("attention_bias")?;
    let num_layers = cfg.positive("num_hidden_layers", cfg.usize_any(&["num_hidden_layers"])?)?;
    let eos = cfg.token_ids("eos_token_id")?;
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
        mlp_bias: llama_key("mlp_bias")?,
        tie_word_embeddings: cfg.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        sliding_window: window::sliding_window(cfg, model_type, num_layers)?,
        bos_token_id: cfg.usize_opt("bos_token_id")?,
        stop_token_ids: eos.clone(),
        eos_token_ids: eos,
        stop_token_error: None,
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

/// `<dir>/generation_config.json`'s `eos_token_id` (an id or a list), where the file exists
/// and names one, becomes the decoder's stop set, as transformers' `from_pretrained` loads
/// that file over the config.json-derived generation config. A file without the key (or
/// with null, or an empty list) leaves config.json's: transformers would then stop at
/// nothing, which no prompt trained here to end with an end token wants. A file that cannot
/// give stop tokens is kept as `stop_token_error`: only generation reads the file.
pub(super) fn read_generation_stop(dir: &Path, c: &mut DecoderConfig) {
    let path = dir.join("generation_config.json");
    if !path.exists() {
        return;
    }
    match generation_stop_ids(&path, c.vocab_size) {
        Ok(ids) if ids.is_empty() => {}
        Ok(ids) => c.stop_token_ids = ids,
        Err(Error::Config { path, msg } | Error::File { path, msg }) => {
            c.stop_token_error = Some((path, msg))
        }
        Err(Error::Io { path, source }) => c.stop_token_error = Some((path, source.to_string())),
        Err(e) => c.stop_token_error = Some((path, e.to_string())),
    }
}

/// The stop ids generation_config.json at `path` names (none: leave config.json's).
fn generation_stop_ids(path: &Path, vocab_size: usize) -> Result<Vec<usize>> {
    let text = crate::fsutil::read_json_text(path)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::config(path, "expected a JSON object"));
    }
    let cfg = Cfg {
        v: &v,
        path: path.to_path_buf(),
    };
    let ids = cfg.token_ids("eos_token_id")?;
    let named: Vec<(&str, usize)> = ids.iter().map(|&id| ("eos_token_id", id)).collect();
    check_token_ids(&cfg, vocab_size, &named)?;
    Ok(ids)
}
