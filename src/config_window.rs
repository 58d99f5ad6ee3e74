//! A decoder's sliding attention window from config.json, as transformers 5.24 reads it.

use super::Cfg;
use crate::error::{Error, Result};

/// The window every layer attends within, or None (full attention in every layer). Mistral's
/// `sliding_window` holds on every layer (its `layer_types` only warns in transformers). Qwen2
/// has a window only under `use_sliding_window: true`, on the layers its `layer_types` name
/// `sliding_attention`, else on layers `max_window_layers` (default 28) and up. The engine
/// runs one attention over every layer and keeps every row inside the window, where sliding
/// and full attention agree: a window on any layer is the model's (one on some layers only
/// was refused, although the rows it was kept to made it exact; hostile pass 26, F4).
pub(super) fn sliding_window(
    cfg: &Cfg,
    model_type: &str,
    num_layers: usize,
) -> Result<Option<usize>> {
    let window = cfg.usize_opt("sliding_window")?;
    match model_type {
        "mistral" => Ok(window),
        "qwen2" if cfg.bool_opt("use_sliding_window")? == Some(true) => {
            qwen2_window(cfg, window, num_layers)
        }
        "qwen2" => no_window_named(cfg),
        _ => Ok(None),
    }
}

/// Qwen2 under `use_sliding_window: true`: `window` where any layer slides, else None.
fn qwen2_window(cfg: &Cfg, window: Option<usize>, n: usize) -> Result<Option<usize>> {
    let sliding = match layer_types(cfg)? {
        Some(s) if s.len() != n => {
            return Err(Error::config(
                &cfg.path,
                format!(
                    "`layer_types` has {} entries for num_hidden_layers {n}",
                    s.len()
                ),
            ))
        }
        Some(s) => s,
        None => {
            let first = cfg.usize_or("max_window_layers", 28)?;
            (0..n).map(|l| l >= first).collect()
        }
    };
    match window {
        None => no_window_named(cfg),
        Some(w) => Ok(sliding.contains(&true).then_some(w)),
    }
}

/// With no window to slide by, a `layer_types` naming a sliding layer is refused, as
/// transformers' mask refuses it ("Could not find a `sliding_window`").
fn no_window_named(cfg: &Cfg) -> Result<Option<usize>> {
    if layer_types(cfg)?.is_some_and(|s| s.contains(&true)) {
        return Err(Error::config(
            &cfg.path,
            "`layer_types` names sliding_attention layers, but there is no window \
             (`use_sliding_window` is not true, or `sliding_window` is null)",
        ));
    }
    Ok(None)
}

/// `layer_types` (one per layer) as whether each layer slides; None when absent.
fn layer_types(cfg: &Cfg) -> Result<Option<Vec<bool>>> {
    let Some(v) = cfg.get("layer_types") else {
        return Ok(None);
    };
    let bad = |why: String| Error::config(&cfg.path, format!("`layer_types` {why}"));
    let list =
        (v.as_array()).ok_or_else(|| bad(format!("is {v}: expected a list of layer types")))?;
    let slides = |t: &serde_json::Value| match t.as_str() {
        // "attention" is transformers' legacy name of full attention
        Some("full_attention" | "attention") => Ok(false),
        Some("sliding_attention") => Ok(true),
        _ => Err(bad(format!(
            "holds {t}: expected \"full_attention\" or \"sliding_attention\""
        ))),
    };
    list.iter().map(slides).collect::<Result<_>>().map(Some)
}
