//! T5's config.json (v1.0, v1.1 / LM-adapted, flan, mT5), with transformers' defaults for
//! absent keys and its reading of `feed_forward_proj`.

use super::keys::{check_token_ids, Cfg};
use crate::backend::Act;
use crate::error::{Error, Result};

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
    /// the LM head is `shared.weight` when the checkpoint has no `lm_head.weight` (else that
    /// tensor is required)
    pub tie_word_embeddings: bool,
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

pub(super) fn parse_t5(cfg: &Cfg) -> Result<T5Config> {
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
    if let Some(act) = cfg.act_opt("dense_act_fn")? {
        dense_act = act;
    }
    // T5Config's attribute_map aliases (hidden_size, num_attention_heads, num_hidden_layers)
    // are set by PretrainedConfig.__init__ after T5Config's own keys, so an alias wins; and
    // num_decoder_layers defaults to the `num_layers` key (6 when absent) before the alias
    // overwrites num_layers (transformers 4.x configuration_t5.py)
    let num_layers = cfg.usize_any(&["num_hidden_layers", "num_layers"])?;
    let num_decoder_layers = match cfg.usize_opt("num_decoder_layers")? {
        Some(n) => cfg.positive("num_decoder_layers", n)?,
        None => cfg.positive("num_layers", cfg.usize_or("num_layers", 6)?)?,
    };
    // transformers 5 writes `scale_decoder_outputs`; older configs say it with
    // `tie_word_embeddings` (false on v1.1); the original T5 always scaled.
    // transformers' default: tied (T5 v1.0 configs carry no key)
    let tie_word_embeddings = cfg.bool_opt("tie_word_embeddings")?.unwrap_or(true);
    let scale_decoder_outputs = cfg
        .bool_opt("scale_decoder_outputs")?
        .unwrap_or(tie_word_embeddings);
    let pad_token_id = cfg.usize_or("pad_token_id", 0)?;
    let c = T5Config {
        vocab_size: cfg.positive("vocab_size", cfg.usize("vocab_size")?)?,
        d_model: cfg.usize_any(&["hidden_size", "d_model"])?,
        // T5Config's alias `head_dim` wins, as its other aliases do (hostile pass 26, F5)
        d_kv: cfg.usize_any(&["head_dim", "d_kv"])?,
        d_ff: cfg.positive("d_ff", cfg.usize("d_ff")?)?,
        num_layers,
        num_decoder_layers,
        num_heads: cfg.usize_any(&["num_attention_heads", "num_heads"])?,
        relative_attention_num_buckets: cfg.positive(
            "relative_attention_num_buckets",
            cfg.usize_or("relative_attention_num_buckets", 32)?,
        )?,
        relative_attention_max_distance: cfg.usize_or("relative_attention_max_distance", 128)?,
        layer_norm_epsilon: cfg.epsilon_or("layer_norm_epsilon", 1e-6)?,
        dense_act,
        is_gated_act,
        scale_decoder_outputs,
        tie_word_embeddings,
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
