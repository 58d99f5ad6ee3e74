//! What a `p-tuning` or `prefix` reference adds to format 1 (reference-format.md,
//! "Extensions for deep prompts"): PEFT's prompt encoder or prefix projection, where a prefix
//! goes, and the names of the encoder's tensors and of their gradients.
// The loaders never panic on what a user hands them: no unwrap, no expect, no unchecked
// indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::PrefixRef;
use crate::error::{Error, Result};
use crate::models::{Placement, PrefixSpec};
use crate::prompt_encoder::{
    kind_name, EncoderConfig, PrefixProjection, ProjectionConfig, PromptEncoder,
};
use crate::weights::{HostTensor, TensorFile};
use serde_json::Value;
use std::path::Path;

/// The prefix of the prompt encoder's tensors (PEFT's names follow it).
pub(super) const ENCODER: &str = "encoder.";

/// PEFT's prompt encoder of a `p-tuning` reference, sized by its `peft_config`.
pub(super) fn read_encoder(
    path: &Path,
    file: &TensorFile,
    meta: &Value,
    prompt: &HostTensor,
) -> Result<PromptEncoder> {
    let peft = meta.get("peft_config").ok_or_else(|| {
        Error::file(
            path,
            "method p-tuning without `peft_config` in its metadata",
        )
    })?;
    // capped as config.json's sizes are: past i32, the encoder's parameter count and shapes
    // overflowed (an LSTM of hidden size 2^62)
    let size = |k: &str| -> Result<usize> {
        match peft.get(k).and_then(|v| v.as_u64()) {
            None => Err(Error::file(path, format!("peft_config lacks `{k}`"))),
            Some(n) if n > i32::MAX as u64 => Err(Error::file(
                path,
                format!(
                    "peft_config's `{k}` is {n}: more than this engine supports ({})",
                    i32::MAX
                ),
            )),
            Some(n) => Ok(n as usize),
        }
    };
    if peft
        .get("encoder_dropout")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
        != 0.0
    {
        return Err(Error::file(
            path,
            "peft_config has encoder_dropout > 0: a reference must be deterministic",
        ));
    }
    let kind = peft
        .get("encoder_reparameterization_type")
        .and_then(|v| v.as_str())
        .unwrap_or("MLP")
        .parse()?;
    // PEFT's seq2seq models keep num_virtual_tokens x num_transformer_submodules (2) rows in
    // the encoder's table and feed the first num_virtual_tokens of its output to the model
    let tables = peft
        .get("num_transformer_submodules")
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as usize;
    if !(1..=2).contains(&tables) {
        return Err(Error::file(
            path,
            format!("peft_config has num_transformer_submodules {tables}: expected 1 or 2"),
        ));
    }
    let rows = prompt.shape.first().copied().unwrap_or(0);
    let p = tables.checked_mul(rows).ok_or_else(|| {
        Error::file(
            path,
            format!("num_virtual_tokens {rows} x peft_config's num_transformer_submodules {tables} overflows"),
        )
    })?;
    let cfg = EncoderConfig {
        kind,
        p,
        d: prompt.shape.get(1).copied().unwrap_or(0),
        hidden: size("encoder_hidden_size")?,
        lstm_layers: size("encoder_num_layers")?,
    };
    PromptEncoder::from_tensors(cfg, |n| {
        file.floats
            .get(&format!("{ENCODER}{n}"))
            .map(|t| (t.shape.as_slice(), t.data.as_slice()))
    })
    .map_err(|e| Error::file(path, e.to_string()))
}

/// A `prefix` reference's placement (`peft_config` present: PEFT's; else its `placement`),
/// BERT's first token position, and its projection.
pub(super) fn read_prefix(
    path: &Path,
    file: &TensorFile,
    meta: &Value,
    prefix: &HostTensor,
) -> Result<PrefixRef> {
    let peft = meta.get("peft_config");
    let placement = read_placement(path, meta)?;
    let key = |k: &str| peft.unwrap_or(meta).get(k);
    let projection = key("prefix_projection").and_then(|v| v.as_bool()) == Some(true);
    let p = prefix.shape.first().copied().unwrap_or(0);
    let spec = PrefixSpec {
        p,
        placement,
        bert_first_position: meta
            .get("real_token_position_offset")
            .and_then(|v| v.as_u64())
            .map(|n| n as usize),
        blocks: key("num_layers")
            .and_then(|v| v.as_u64())
            .map(|n| n as usize),
    };
    if !projection {
        return Ok(PrefixRef {
            spec,
            projection: None,
        });
    }
    let shape = |n: &str| {
        file.floats
            .get(&format!("{ENCODER}{n}"))
            .map(|t| t.shape.clone())
    };
    let (emb, first) = (shape("embedding.weight"), shape("transform.0.weight"));
    let cfg = ProjectionConfig {
        p,
        w: emb.and_then(|s| s.get(1).copied()).unwrap_or(0),
        hidden: first.and_then(|s| s.first().copied()).unwrap_or(0),
        out: prefix.shape.get(1).copied().unwrap_or(0),
    };
    let projection = PrefixProjection::from_tensors(cfg, |n| {
        file.floats
            .get(&format!("{ENCODER}{n}"))
            .map(|t| (t.shape.as_slice(), t.data.as_slice()))
    })
    .map_err(|e| Error::file(path, e.to_string()))?;
    Ok(PrefixRef {
        spec,
        projection: Some(projection),
    })
}

/// Where a `prefix` reference puts its prefix: PEFT's placement when its metadata holds
/// `peft_config` (PEFT made it), else its `placement`. An unknown or contradicting
/// `placement` is refused: it was ignored beside `peft_config`, and the check ran under a
/// placement the file never named.
fn read_placement(path: &Path, meta: &Value) -> Result<Placement> {
    let named = match meta.get("placement") {
        None => None,
        Some(v) => Some(v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            Error::file(
                path,
                format!("metadata `placement` is {v}: expected \"papers\" or \"peft\""),
            )
        })?),
    };
    match (meta.get("peft_config"), named) {
        (Some(_), None | Some(Placement::Peft)) => Ok(Placement::Peft),
        (Some(_), Some(other)) => Err(Error::file(
            path,
            format!(
                "metadata holds `peft_config` (a reference PEFT made: PEFT's placement) and \
                 `placement` \"{}\": expected one of them",
                other.name()
            ),
        )),
        (None, Some(placement)) => Ok(placement),
        (None, None) => Err(Error::file(
            path,
            "method prefix needs `peft_config` (PEFT's placement) or `placement`",
        )),
    }
}

/// The prefix of an expected gradient's name: `grad.encoder.<name>` is d loss / d
/// `encoder.<name>`.
pub(super) const GRAD: &str = "grad.";

/// The reference's method and the tensors of its encoder (`names`, PEFT's), for messages.
pub(super) fn method_tensors(
    encoder: Option<&PromptEncoder>,
    prefix: Option<&PrefixRef>,
    names: &[&str],
) -> String {
    let method = match (encoder, prefix.map(|p| p.projection.is_some())) {
        (Some(e), _) => format!(
            "p-tuning, whose PEFT prompt encoder ({})",
            kind_name(e.cfg.kind)
        ),
        (None, Some(true)) => "prefix with a projection, which".into(),
        (None, Some(false)) => "prefix without a projection, which".into(),
        (None, None) => "prompt tuning, which".into(),
    };
    match names {
        [] => format!("the method is {method} has no encoder tensors"),
        _ => format!("the method is {method} has {}", names.join(", ")),
    }
}

/// Every `encoder.*` tensor of `file` is one of the encoder's `names` (PEFT's, without
/// `encoder.`), and every `grad.*` one of their gradients: a misnamed gradient was skipped as
/// "not computed by the engine" and the file passed, an unknown encoder tensor was never read.
/// `method` describes the method and its tensors (`method_tensors`).
pub(super) fn check_encoder_tensors(
    path: &Path,
    file: &TensorFile,
    names: &[&str],
    method: &str,
) -> Result<()> {
    let own = |n: &str| {
        n.strip_prefix(ENCODER)
            .is_some_and(|rest| names.contains(&rest))
    };
    for name in file.floats.keys() {
        let why = match name.strip_prefix(GRAD) {
            Some(of) if !own(of) => format!(
                "tensor `{name}` is the gradient of no tensor of the reference's method: \
                 {method}, each one's gradient named `{GRAD}{ENCODER}<tensor>`"
            ),
            None if name.starts_with(ENCODER) && !own(name) => format!(
                "tensor `{name}` is no tensor of the reference's method: {method}, each named \
                 `{ENCODER}<tensor>`"
            ),
            _ => continue,
        };
        return Err(Error::file(path, why));
    }
    Ok(())
}
