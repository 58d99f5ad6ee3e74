//! The training method: prompt tuning (the prompt rows are the parameters) or P-tuning (the
//! rows are the output of PEFT's prompt encoder, whose tensors are the parameters). What
//! P-tuning adds to a run lives here: its settings, the encoder's fresh start, its tensors in
//! the checkpoint, and its files beside the exported prompt.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::prompt_encoder::{kind_name, EncoderConfig, EncoderKind, PromptEncoder};
use crate::weights::write_safetensors;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The encoder's own file in an exported prompt folder: PEFT saves only the encoder's output,
/// so without it a P-tuning run could not go on from its export.
pub const ENCODER_FILE: &str = "prompt_encoder.safetensors";

/// What is trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// the prompt rows themselves (PEFT `PROMPT_TUNING`)
    #[default]
    Prompt,
    /// P-tuning's prompt encoder (PEFT `P_TUNING`)
    PTuning(PTuning),
}

/// P-tuning's settings, PEFT's `PromptEncoderConfig` defaults: MLP, hidden = the model's
/// width, 2 LSTM layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PTuning {
    /// `--encoder-reparameterization`
    pub kind: EncoderKind,
    /// `--encoder-hidden-size` (None: the model's width d)
    pub hidden: Option<usize>,
    /// `--encoder-num-layers` (the LSTM's; PEFT's MLP always has its three linears)
    pub num_layers: usize,
}

impl Default for PTuning {
    fn default() -> Self {
        PTuning {
            kind: EncoderKind::Mlp,
            hidden: None,
            num_layers: 2,
        }
    }
}

impl Method {
    /// The settings in range, the error naming the flag.
    pub fn validate(&self) -> Result<()> {
        let Method::PTuning(pt) = self else {
            return Ok(());
        };
        if pt.hidden == Some(0) {
            return Err(Error::arg(
                "--encoder-hidden-size",
                "is 0: expected at least 1",
            ));
        }
        if pt.num_layers == 0 {
            return Err(Error::arg(
                "--encoder-num-layers",
                "is 0: expected at least 1",
            ));
        }
        Ok(())
    }

    /// The encoder's sizes for a prompt of `p` rows on a model of width `d`.
    pub fn encoder_config(&self, p: usize, d: usize) -> Option<EncoderConfig> {
        match self {
            Method::Prompt => None,
            Method::PTuning(pt) => Some(EncoderConfig {
                kind: pt.kind,
                p,
                d,
                hidden: pt.hidden.unwrap_or(d),
                lstm_layers: pt.num_layers,
            }),
        }
    }
}

/// The method's entry in the settings hash: null for prompt tuning (so that its hash is the
/// one of the runs before P-tuning existed).
pub fn settings(enc: Option<&EncoderConfig>) -> Value {
    match enc {
        None => Value::Null,
        Some(c) => json!({
            "method": "p-tuning",
            "encoder_reparameterization_type": kind_name(c.kind),
            "encoder_hidden_size": c.hidden,
            "encoder_num_layers": c.lstm_layers,
        }),
    }
}

/// The encoder stored under `prefix` (`encoder.` or `best.encoder.`) in a checkpoint.
pub fn from_checkpoint(cfg: EncoderConfig, ck: &Checkpoint, prefix: &str) -> Result<PromptEncoder> {
    PromptEncoder::from_tensors(cfg, |name| {
        ck.tensors
            .get(&format!("{prefix}{name}"))
            .map(|(s, d)| (s.as_slice(), d.as_slice()))
    })
    .map_err(|e| match e {
        Error::Tensor { name, msg } => Error::Tensor {
            name: format!("{prefix}{name}"),
            msg: format!("{msg} (checkpoint.safetensors)"),
        },
        e => e,
    })
}

/// The encoder's tensors under `prefix`, for a checkpoint.
pub fn to_tensors(
    enc: &PromptEncoder,
    prefix: &str,
    out: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) {
    for (name, shape) in enc.cfg.shapes() {
        if let Some(data) = enc.tensors.get(&name) {
            out.insert(format!("{prefix}{name}"), (shape, data.clone()));
        }
    }
}

/// adapter_config.json's P_TUNING keys (PEFT's `PromptEncoderConfig`), for `save_peft`.
pub fn adapter_config(c: &EncoderConfig) -> Value {
    json!({
        "peft_type": "P_TUNING",
        "encoder_reparameterization_type": kind_name(c.kind),
        "encoder_hidden_size": c.hidden,
        "encoder_num_layers": c.lstm_layers,
        "encoder_dropout": 0.0,
    })
}

/// Writes the encoder into `dir/prompt_encoder.safetensors` with PEFT's names (the adapter's
/// `prompt_encoder.default.` prefix left off), atomically.
pub fn save_encoder(dir: &Path, enc: &PromptEncoder) -> Result<()> {
    let shapes = enc.cfg.shapes();
    let mut views = Vec::new();
    for (name, shape) in &shapes {
        let data = enc.tensors.get(name).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            msg: "missing from the prompt encoder".into(),
        })?;
        views.push((name.as_str(), shape.clone(), data.as_slice()));
    }
    write_safetensors(&dir.join(ENCODER_FILE), &views, None)
}
