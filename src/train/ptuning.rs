//! The training method: prompt tuning (the prompt rows are the parameters), P-tuning (the
//! rows are the output of PEFT's prompt encoder, whose tensors are the parameters) or prefix
//! tuning (the trained table is the prefix of every attention layer, free or the output of
//! PEFT's projection). What P-tuning and prefix tuning add to a run lives here: their
//! settings, the host encoder in the checkpoint, and its files beside the exported prompt.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::Checkpoint;
use super::encoder::{EncoderSpec, HostEncoder};
use crate::error::{Error, Result};
use crate::models::{Placement, PrefixSpec};
use crate::prompt::PromptInit;
use crate::prompt_encoder::{kind_name, EncoderConfig, EncoderKind, ProjectionConfig};
use crate::weights::write_safetensors;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The encoder's own file in an exported prompt folder: PEFT saves only the encoder's output,
/// so without it a P-tuning run could not go on from its export.
pub const ENCODER_FILE: &str = "prompt_encoder.safetensors";

/// The most LSTM layers P-tuning's encoder may have (`--encoder-num-layers`). PEFT and
/// torch set none, and PEFT's default is 2; the P rows of a prompt need few. Memory bounded
/// nothing useful: 100000 layers of hidden size 1 fit and took minutes a step (the host
/// encoder runs its layers one after another, a thread hand-off each).
pub const MAX_ENCODER_LAYERS: usize = 64;

/// What is trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// the prompt rows themselves (PEFT `PROMPT_TUNING`)
    #[default]
    Prompt,
    /// P-tuning's prompt encoder (PEFT `P_TUNING`)
    PTuning(PTuning),
    /// prefix tuning (PEFT `PREFIX_TUNING`)
    Prefix(PrefixTuning),
}

/// Prefix tuning's settings (PEFT's `PrefixTuningConfig`, and where the blocks go).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixTuning {
    /// `--prefix-projection`: the table is the output of embedding, Linear, Tanh, Linear
    pub projection: bool,
    /// `--encoder-hidden-size` of the projection (None: PEFT's token_dim, the keys' and
    /// values' width: the model's d, or less on a grouped-query model)
    pub hidden: Option<usize>,
    /// `--prefix-placement`
    pub placement: Placement,
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
    /// `init` applies to prompt tuning only: P-tuning's encoder and prefix tuning's table
    /// start from N(0, 1) embeddings, as PEFT's do.
    pub fn check_init(&self, init: &PromptInit) -> Result<()> {
        if *self == Method::Prompt || matches!(init, PromptInit::Random { std } if *std == 1.0) {
            return Ok(());
        }
        // the flag that was given: a random init of another spread is --init-std's
        let flag = match init {
            PromptInit::Random { .. } => "--init-std",
            _ => "--init",
        };
        Err(Error::arg(
            flag,
            "applies to --method prompt: P-tuning's encoder and prefix tuning's table start \
             from N(0, 1) embeddings (PEFT's), so --init and --init-std stay at their defaults",
        ))
    }

    /// The settings in range, the error naming the flag.
    pub fn validate(&self) -> Result<()> {
        let pt = match self {
            Method::Prompt => return Ok(()),
            Method::Prefix(pre) => return pre.validate(),
            Method::PTuning(pt) => pt,
        };
        if pt.hidden == Some(0) {
            return Err(Error::arg(
                "--encoder-hidden-size",
                "is 0: expected at least 1",
            ));
        }
        if pt.num_layers == 0 || pt.num_layers > MAX_ENCODER_LAYERS {
            return Err(Error::arg(
                "--encoder-num-layers",
                format!(
                    "is {}: expected 1 to {MAX_ENCODER_LAYERS} (PEFT's default is 2)",
                    pt.num_layers
                ),
            ));
        }
        Ok(())
    }

    /// P-tuning's encoder sizes for a prompt of `p` rows on a model of width `d`.
    pub fn encoder_config(&self, p: usize, d: usize) -> Option<EncoderConfig> {
        match self {
            Method::PTuning(pt) => Some(EncoderConfig {
                kind: pt.kind,
                p,
                d,
                hidden: pt.hidden.unwrap_or(d),
                lstm_layers: pt.num_layers,
            }),
            _ => None,
        }
    }

    /// The host encoder of a table of `p` rows, `width` wide, at the encoder width `d` (the
    /// model's; under prefix tuning PEFT's `token_dim`, `Method::encoder_width`): P-tuning's
    /// encoder, prefix tuning's projection, or None when the table is the parameter.
    pub fn encoder_spec(&self, p: usize, d: usize, width: usize) -> Option<EncoderSpec> {
        match self {
            Method::Prompt => None,
            Method::PTuning(_) => self.encoder_config(p, d).map(EncoderSpec::PTuning),
            Method::Prefix(pre) => pre.projection.then(|| {
                EncoderSpec::Projection(ProjectionConfig {
                    p,
                    w: d,
                    hidden: pre.hidden.unwrap_or(d),
                    out: width,
                })
            }),
        }
    }

    /// Prefix tuning's step settings for a table of `p` rows (BERT's tokens behind the prefix
    /// at P.., as P-tuning v2's transformers 4 put them).
    pub fn prefix_spec(&self, p: usize) -> Option<PrefixSpec> {
        match self {
            Method::Prefix(pre) => Some(PrefixSpec {
                p,
                placement: pre.placement,
                bert_first_position: None,
                blocks: None,
            }),
            _ => None,
        }
    }

    /// The width the method's encoder works at: under prefix tuning PEFT's `token_dim`, the
    /// key/value width (less than d on a grouped-query model, where the projection was built d
    /// wide, another network than PEFT's; hostile pass 28, F1), else the model's d.
    pub(crate) fn encoder_width<B: crate::backend::Backend>(
        &self,
        net: &crate::models::Model<B>,
    ) -> usize {
        match self {
            Method::Prefix(pre) => net.prefix_layout(pre.placement).1,
            _ => net.hidden_size(),
        }
    }

    /// The method's entry in the settings hash: null for prompt tuning (so that its hash is
    /// the one of the runs before the other methods existed).
    pub fn settings(&self, p: usize, d: usize) -> Value {
        match self {
            Method::Prompt => Value::Null,
            Method::PTuning(_) => settings(self.encoder_config(p, d).as_ref()),
            Method::Prefix(pre) => json!({
                "method": "prefix",
                "prefix_projection": pre.projection,
                "encoder_hidden_size": pre.projection.then(|| pre.hidden.unwrap_or(d)),
                "prefix_placement": pre.placement.name(),
            }),
        }
    }
}

impl Method {
    /// The method from the command line's flags (`--method` prompt, p-tuning or prefix,
    /// `--prefix-projection`, `--prefix-placement`, `--encoder-reparameterization`,
    /// `--encoder-hidden-size`, `--encoder-num-layers`; the Python package's keywords of the
    /// same names): a flag of another method is refused, naming it.
    pub fn from_flags(
        method: &str,
        prefix_projection: bool,
        prefix_placement: Option<&str>,
        encoder_reparameterization: Option<&str>,
        encoder_hidden_size: Option<usize>,
        encoder_num_layers: Option<usize>,
    ) -> Result<Method> {
        let encoder_flags = [
            (
                "--encoder-reparameterization",
                encoder_reparameterization.is_some(),
            ),
            ("--encoder-hidden-size", encoder_hidden_size.is_some()),
            ("--encoder-num-layers", encoder_num_layers.is_some()),
        ];
        let prefix_flags = [
            ("--prefix-projection", prefix_projection),
            ("--prefix-placement", prefix_placement.is_some()),
        ];
        if method != "prefix" {
            if let Some((flag, _)) = prefix_flags.iter().find(|(_, set)| *set) {
                return Err(Error::arg(
                    *flag,
                    format!("applies to --method prefix only (this run is --method {method})"),
                ));
            }
        }
        match method {
            "prompt" => match encoder_flags.iter().find(|(_, set)| *set) {
                // the hidden size also sizes a prefix projection
                Some(&(flag @ "--encoder-hidden-size", _)) => Err(Error::arg(
                    flag,
                    "applies to --method p-tuning, or --method prefix with --prefix-projection \
                     (this run is --method prompt)",
                )),
                Some((flag, _)) => Err(Error::arg(
                    *flag,
                    "applies to --method p-tuning only (this run is --method prompt)",
                )),
                None => Ok(Method::Prompt),
            },
            "p-tuning" => {
                let mut pt = PTuning::default();
                if let Some(k) = encoder_reparameterization {
                    pt.kind = k.parse()?;
                }
                // PEFT's MLP has its three linears whatever the count: --encoder-num-layers 3
                // with the MLP trained the same encoder without a word
                if encoder_num_layers.is_some() && pt.kind != EncoderKind::Lstm {
                    return Err(Error::arg(
                        "--encoder-num-layers",
                        "applies to --encoder-reparameterization lstm only (the MLP always has its \
                         three linears, as PEFT's)",
                    ));
                }
                pt.hidden = encoder_hidden_size.or(pt.hidden);
                pt.num_layers = encoder_num_layers.unwrap_or(pt.num_layers);
                Ok(Method::PTuning(pt))
            }
            "prefix" => {
                // of P-tuning's flags only --encoder-hidden-size, which sizes the projection
                let other = (encoder_flags.iter())
                    .find(|(flag, set)| *set && *flag != "--encoder-hidden-size");
                if let Some((flag, _)) = other {
                    return Err(Error::arg(
                        *flag,
                        "applies to --method p-tuning only (this run is --method prefix)",
                    ));
                }
                Ok(Method::Prefix(PrefixTuning {
                    projection: prefix_projection,
                    hidden: encoder_hidden_size,
                    placement: prefix_placement.map_or(Ok(Placement::Papers), str::parse)?,
                }))
            }
            other => Err(Error::arg(
                "--method",
                format!("\"{other}\": expected prompt, p-tuning or prefix"),
            )),
        }
    }
}

impl PrefixTuning {
    fn validate(&self) -> Result<()> {
        match (self.projection, self.hidden) {
            (false, Some(_)) => Err(Error::arg(
                "--encoder-hidden-size",
                "sizes prefix tuning's projection: it needs --prefix-projection",
            )),
            (true, Some(0)) => Err(Error::arg(
                "--encoder-hidden-size",
                "is 0: expected at least 1",
            )),
            _ => Ok(()),
        }
    }
}

/// adapter_config.json's PREFIX_TUNING keys (PEFT's `PrefixTuningConfig`) for a table of
/// `blocks` blocks of key and value rows `kv_width` wide, split into `heads` heads (what PEFT
/// writes: `Model::prefix_heads`), and where they go (`prefix_placement`, a key PEFT ignores:
/// only `peft` is what PEFT computes). The projection's hidden size defaults to `kv_width`,
/// PEFT's `token_dim`, as PEFT's does.
pub fn prefix_adapter_config(
    pre: &PrefixTuning,
    (blocks, kv_width, heads): (usize, usize, usize),
    seq2seq: bool,
) -> Value {
    json!({
        "peft_type": "PREFIX_TUNING",
        "token_dim": kv_width,
        "num_attention_heads": heads,
        "num_layers": blocks,
        "num_transformer_submodules": if seq2seq { 2 } else { 1 },
        "prefix_projection": pre.projection,
        "encoder_hidden_size": pre.hidden.unwrap_or(kv_width),
        "init_weights": null,
        "prefix_placement": pre.placement.name(),
    })
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

/// The prefix an adapter_config.json (`path`, for messages) describes, for a table of `p`
/// rows: None unless its `peft_type` is PREFIX_TUNING; its placement is `prefix_placement`
/// (ours), or PEFT's when the key is absent (PEFT wrote it).
pub fn adapter_prefix_spec(cfg: &Value, p: usize, path: &Path) -> Result<Option<PrefixSpec>> {
    if cfg.get("peft_type").and_then(|v| v.as_str()) != Some("PREFIX_TUNING") {
        return Ok(None);
    }
    let placement = match cfg.get("prefix_placement") {
        None => Placement::Peft,
        Some(v) => v.as_str().unwrap_or("").parse().map_err(|_| {
            Error::file(
                path,
                format!("`prefix_placement` is {v}: expected \"papers\" or \"peft\""),
            )
        })?,
    };
    let blocks = crate::prompt::config_count(cfg, "num_layers", path)?;
    Ok(Some(PrefixSpec {
        p,
        placement,
        bert_first_position: None,
        blocks: blocks.map(|n| n as usize),
    }))
}

/// The encoder stored under `prefix` (`encoder.` or `best.encoder.`) in a checkpoint.
pub fn from_checkpoint(cfg: EncoderSpec, ck: &Checkpoint, prefix: &str) -> Result<HostEncoder> {
    HostEncoder::from_tensors(cfg, |name| {
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
    enc: &HostEncoder,
    prefix: &str,
    out: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) {
    for (name, shape) in enc.spec().shapes() {
        if let Some(data) = enc.tensors().get(&name) {
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
pub fn save_encoder(dir: &Path, enc: &HostEncoder, stamp: &str) -> Result<()> {
    let shapes = enc.spec().shapes();
    let mut views = Vec::new();
    for (name, shape) in &shapes {
        let data = enc.tensors().get(name).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            msg: "missing from the prompt encoder".into(),
        })?;
        views.push((name.as_str(), shape.clone(), data.as_slice()));
    }
    let meta = super::checkpoint::stamp_metadata(stamp);
    write_safetensors(&dir.join(ENCODER_FILE), &views, meta)
}
