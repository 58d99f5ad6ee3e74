//! RoPE settings of a decoder's config.json: `rope_parameters` (transformers 5) or
//! `rope_scaling` + `rope_theta` (earlier configs; transformers reads it first when a config
//! holds both).

use super::{Cfg, Positions};
use crate::backend::rope::Llama3Scaling;
use crate::error::{Error, Result};
use serde_json::Value;

/// `rope_parameters` (transformers 5) or `rope_scaling` + `rope_theta` (earlier configs); the
/// theta is the chosen object's `rope_theta`, else the top-level one, else 10000.
pub(super) fn parse_rope(cfg: &Cfg) -> Result<Positions> {
    let (key, params) = rope_settings(cfg)?;
    let sub = Cfg {
        v: &params,
        path: cfg.path.clone(),
    };
    let theta = match sub.get("rope_theta") {
        Some(_) => sub.f64_or("rope_theta", 10000.0)?,
        None => cfg.f64_or("rope_theta", 10000.0)?,
    };
    positive(cfg, "rope_theta", theta)?;
    if sub.f64_or("partial_rotary_factor", 1.0)? != 1.0
        || cfg.f64_or("partial_rotary_factor", 1.0)? != 1.0
    {
        return Err(Error::config(
            &cfg.path,
            "partial_rotary_factor other than 1 is not supported",
        ));
    }
    let kind = sub
        .str_opt("rope_type")?
        .or(sub.str_opt("type")?)
        .unwrap_or_else(|| "default".into());
    let need = |k: &str| -> Result<f64> {
        let x = sub.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
            Error::config(
                &cfg.path,
                format!("rope scaling \"{kind}\" needs a number `{k}`"),
            )
        })?;
        positive(cfg, &format!("{key}.{k}"), x)
    };
    Ok(match kind.as_str() {
        "default" => Positions::Rope {
            theta,
            llama3: None,
            linear_factor: None,
        },
        "linear" => Positions::Rope {
            theta,
            llama3: None,
            linear_factor: Some(need("factor")?),
        },
        "llama3" => Positions::Rope {
            theta,
            llama3: Some(Llama3Scaling {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                // present at the top level, even as null: transformers copies it (a null one
                // fails its model; verification 30, F4a)
                original_max_position_embeddings: match (
                    cfg.v.get("original_max_position_embeddings"),
                    sub.get("original_max_position_embeddings"),
                ) {
                    (Some(_), _) => top_level_positions(cfg)?,
                    (None, Some(_)) => need("original_max_position_embeddings")?,
                    (None, None) => pretrained_positions(cfg)?,
                },
            }),
            linear_factor: None,
        },
        other => {
            return Err(Error::config(
                &cfg.path,
                format!(
                    "rope type \"{other}\" is not supported: expected default, linear or llama3"
                ),
            ))
        }
    })
}

/// The pretraining length a top-level `original_max_position_embeddings` gives a `llama3`
/// scaling (Phi-3's layout): transformers 5.24 reads it before the scaling's own when it
/// builds the model (`_compute_llama3_parameters` standardises the scaling again, and
/// `standardize_rope_params` gives the attribute priority). `AutoConfig` alone leaves the
/// scaling's, which is why it was taken for unread (verification 29, F2: logits 0.7 apart).
fn top_level_positions(cfg: &Cfg) -> Result<f64> {
    let key = "original_max_position_embeddings";
    let n = (cfg.v.get(key).and_then(Value::as_f64)).ok_or_else(|| {
        Error::config(
            &cfg.path,
            format!("`{key}` (top level) must be a number: transformers reads it for the llama3 scaling"),
        )
    })?;
    positive(cfg, key, n)
}

/// The pretraining length of a `llama3` scaling that names no
/// `original_max_position_embeddings`, as transformers 5.24 takes it
/// (`standardize_rope_params`: `setdefault` from `max_position_embeddings`): the config's
/// `max_position_embeddings`, else its model type's default (`LlamaConfig` 2048,
/// `MistralConfig` 131072, `Qwen2Config` 32768).
fn pretrained_positions(cfg: &Cfg) -> Result<f64> {
    let default = match cfg.str_opt("model_type")?.as_deref() {
        Some("mistral") => 131_072,
        Some("qwen2") => 32_768,
        _ => 2048,
    };
    let n = cfg.usize_or("max_position_embeddings", default)?;
    Ok(cfg.positive("max_position_embeddings", n)? as f64)
}

/// The scaling object and its key, in transformers' order (`rope_scaling or rope_parameters`
/// in `convert_rope_params_to_dict`, transformers 5.24; 4.x reads `rope_scaling` alone): a
/// `rope_scaling` that is a non-empty object wins and `rope_parameters` is not read at all,
/// its `rope_theta` included; else `rope_parameters`; else none. The one read must be an
/// object (a string or a list was read as no scaling, silently), and one that scales (holds a
/// `factor` or another setting) must name its `rope_type` or `type`.
fn rope_settings(cfg: &Cfg) -> Result<(&'static str, Value)> {
    let scaling = (cfg.get("rope_scaling")).filter(|v| v.as_object().is_none_or(|o| !o.is_empty()));
    let (key, v) = match (scaling, cfg.get("rope_parameters")) {
        (Some(v), _) => ("rope_scaling", v),
        (None, Some(v)) => ("rope_parameters", v),
        (None, None) => return Ok(("rope_scaling", Value::Object(Default::default()))),
    };
    let Some(obj) = v.as_object() else {
        return Err(Error::config(
            &cfg.path,
            format!(
                "`{key}` is {v}: expected an object such as {{\"rope_type\": \"linear\", \"factor\": 2.0}}, or null"
            ),
        ));
    };
    let typed = obj.contains_key("rope_type") || obj.contains_key("type");
    let scales =
        (obj.keys()).any(|k| !matches!(k.as_str(), "rope_theta" | "partial_rotary_factor"));
    if scales && !typed {
        return Err(Error::config(
            &cfg.path,
            format!("`{key}` has no `rope_type` (or `type`): name the scaling (linear, llama3) or leave the key out"),
        ));
    }
    Ok((key, v.clone()))
}

/// `x`, the config's `key`, when finite and positive (0 or below gave every position the
/// same angle, or NaN).
fn positive(cfg: &Cfg, key: &str, x: f64) -> Result<f64> {
    if x.is_finite() && x > 0.0 {
        return Ok(x);
    }
    Err(Error::config(
        &cfg.path,
        format!("`{key}` must be a positive number, got {x}"),
    ))
}
