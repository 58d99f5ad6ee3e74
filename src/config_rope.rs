//! RoPE settings of a decoder's config.json: `rope_parameters` (transformers 5) or
//! `rope_scaling` + `rope_theta` (earlier configs).

use super::{Cfg, Positions};
use crate::backend::rope::Llama3Scaling;
use crate::error::{Error, Result};
use serde_json::Value;

/// `rope_parameters` (transformers 5) or `rope_scaling` + `rope_theta` (earlier configs).
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
                original_max_position_embeddings: need("original_max_position_embeddings")?,
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

/// The scaling object and its key: `rope_parameters`, else `rope_scaling`, else none. Anything but an
/// object (a string, a list) is refused naming the key, as is one that scales (holds a
/// `factor` or another setting) with no `rope_type` or `type`, and the two keys set to
/// different settings: each was read as no scaling, silently.
fn rope_settings(cfg: &Cfg) -> Result<(&'static str, Value)> {
    let mut found = Vec::new();
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(v) = cfg.get(key) else { continue };
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
        found.push((key, v));
    }
    if let [(a, va), (b, vb)] = found[..] {
        // transformers 5 reads rope_parameters; a config that also says otherwise is ambiguous
        if va.get("rope_type") != vb.get("rope_type") || va.get("factor") != vb.get("factor") {
            return Err(Error::config(
                &cfg.path,
                format!("`{a}` and `{b}` name different RoPE settings ({va} and {vb}): keep one"),
            ));
        }
    }
    Ok(match found.first() {
        Some((key, v)) => (key, (*v).clone()),
        None => ("rope_scaling", Value::Object(Default::default())),
    })
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
