//! P-tuning's prompt encoder (Liu et al. 2021; PEFT `P_TUNING`, `PromptEncoder`): the prompt
//! rows are not free parameters but the output of a small trainable network over P trainable
//! embeddings, either PEFT's MLP (Linear, ReLU, Linear, ReLU, Linear) or its LSTM head (a
//! bidirectional LSTM of `encoder_num_layers` layers, then Linear, ReLU, Linear).
//!
//! The encoder is tiny (P rows) and runs once per step whatever the batch, so it lives on the
//! host: its forward gives the (P, d) prompt the engine uploads, its backward takes the
//! engine's prompt gradient to the encoder's parameters. Tensors carry PEFT's state-dict names
//! without the adapter prefix (`embedding.weight`, `mlp_head.0.weight`,
//! `lstm_head.weight_ih_l0_reverse`, ...), so PEFT's files and the reference files map
//! one to one.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod linear;
mod lstm;
mod projection;

use crate::error::{Error, Result};
use crate::rng::Rng;
use linear::{linear_bwd, linear_fwd, relu_bwd, relu_fwd};
use lstm::{LstmTape, LSTM_GATES};
pub use projection::{PrefixProjection, ProjectionConfig, ProjectionTape};
use std::collections::BTreeMap;

/// PEFT's `encoder_reparameterization_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    Mlp,
    Lstm,
}

impl std::str::FromStr for EncoderKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MLP" => Ok(EncoderKind::Mlp),
            "LSTM" => Ok(EncoderKind::Lstm),
            _ => Err(Error::arg(
                "--encoder-reparameterization",
                format!("\"{s}\": expected mlp or lstm"),
            )),
        }
    }
}

/// The encoder's sizes, as PEFT's `PromptEncoderConfig` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    /// prompt rows (PEFT: num_virtual_tokens × num_transformer_submodules)
    pub p: usize,
    /// the model's width (PEFT: token_dim)
    pub d: usize,
    /// PEFT: encoder_hidden_size
    pub hidden: usize,
    /// LSTM layers (PEFT: encoder_num_layers; the MLP always has its three linear layers)
    pub lstm_layers: usize,
}

impl EncoderConfig {
    /// Every tensor's PEFT name and shape, in PEFT's state-dict order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, h) = (self.d, self.hidden);
        let mut out = vec![("embedding.weight".to_string(), vec![self.p, d])];
        let linears: Vec<(usize, usize, usize)> = match self.kind {
            EncoderKind::Mlp => vec![(0, h, d), (2, h, h), (4, d, h)],
            EncoderKind::Lstm => {
                for l in 0..self.lstm_layers {
                    let input = if l == 0 { d } else { 2 * h };
                    for dir in ["", "_reverse"] {
                        out.push((
                            format!("lstm_head.weight_ih_l{l}{dir}"),
                            vec![LSTM_GATES * h, input],
                        ));
                        out.push((
                            format!("lstm_head.weight_hh_l{l}{dir}"),
                            vec![LSTM_GATES * h, h],
                        ));
                        out.push((format!("lstm_head.bias_ih_l{l}{dir}"), vec![LSTM_GATES * h]));
                        out.push((format!("lstm_head.bias_hh_l{l}{dir}"), vec![LSTM_GATES * h]));
                    }
                }
                vec![(0, 2 * h, 2 * h), (2, d, 2 * h)]
            }
        };
        for (i, n_out, n_in) in linears {
            out.push((format!("mlp_head.{i}.weight"), vec![n_out, n_in]));
            out.push((format!("mlp_head.{i}.bias"), vec![n_out]));
        }
        out
    }

    fn check(&self) -> Result<()> {
        let zero = [
            ("P", self.p),
            ("d", self.d),
            ("--encoder-hidden-size", self.hidden),
        ]
        .into_iter()
        .find(|(_, n)| *n == 0);
        if let Some((what, _)) = zero {
            return Err(Error::arg(
                what,
                "is 0: the prompt encoder needs at least 1",
            ));
        }
        // sizes past i32 (as config.json's) would overflow the u128 parameter count (an
        // LSTM of hidden size 2^62 wrapped it) and the shapes' products before the memory check
        let huge = [
            ("--encoder-hidden-size", self.hidden),
            ("--encoder-num-layers", self.lstm_layers),
        ]
        .into_iter()
        .find(|(_, n)| *n > i32::MAX as usize);
        if let Some((flag, n)) = huge {
            return Err(Error::arg(
                flag,
                format!("is {n}: more than this engine supports ({})", i32::MAX),
            ));
        }
        if self.kind == EncoderKind::Lstm && self.lstm_layers == 0 {
            return Err(Error::arg(
                "--encoder-num-layers",
                "is 0: the LSTM needs at least 1",
            ));
        }
        self.check_memory()
    }

    /// The parameters, counted without listing the tensors (a million LSTM layers would
    /// list eight million names first).
    pub fn params(&self) -> u128 {
        let (p, d, h) = (self.p as u128, self.d as u128, self.hidden as u128);
        let gates = LSTM_GATES as u128;
        let linears = match self.kind {
            EncoderKind::Mlp => h * d + h + h * h + h + d * h + d,
            EncoderKind::Lstm => {
                let layer = |input: u128| 2 * (gates * h * input + gates * h * h + 2 * gates * h);
                let rest = (self.lstm_layers as u128).saturating_sub(1);
                layer(d) + rest * layer(2 * h) + 4 * h * h + 2 * h + d * 2 * h + d
            }
        };
        p * d + linears
    }

    /// The encoder's weights, gradients, two Adam moments, best copy and checkpoint copy
    /// within the host's memory: an --encoder-hidden-size of 10^11 aborted on the allocation,
    /// a million LSTM layers were killed for memory.
    fn check_memory(&self) -> Result<()> {
        let Some(words) = crate::memory::trainable_room_refusal(self.params()) else {
            return Ok(());
        };
        let flag = match self.kind {
            EncoderKind::Lstm if self.lstm_layers > 2 => "--encoder-num-layers",
            _ => "--encoder-hidden-size",
        };
        Err(Error::arg(
            flag,
            format!(
                "a {} encoder of hidden size {} ({} layers) holds {words}",
                kind_name(self.kind),
                self.hidden,
                self.lstm_layers,
            ),
        ))
    }
}

/// PEFT's name of the encoder (`encoder_reparameterization_type`).
pub fn kind_name(kind: EncoderKind) -> &'static str {
    match kind {
        EncoderKind::Mlp => "MLP",
        EncoderKind::Lstm => "LSTM",
    }
}

/// The encoder's parameters, by PEFT name.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptEncoder {
    pub cfg: EncoderConfig,
    pub tensors: BTreeMap<String, Vec<f32>>,
}

/// What the forward keeps for the backward.
pub struct EncoderTape {
    /// each linear layer's input, and the pre-activations of the ReLUs
    mlp_inputs: Vec<Vec<f32>>,
    relu_pre: Vec<Vec<f32>>,
    lstm: Vec<LstmTape>,
}

impl PromptEncoder {
    /// The encoder from named tensors (`get` returns a tensor's shape and values), each
    /// checked against the shape `cfg` implies; the error names the tensor.
    pub fn from_tensors<'a>(
        cfg: EncoderConfig,
        get: impl Fn(&str) -> Option<(&'a [usize], &'a [f32])>,
    ) -> Result<PromptEncoder> {
        cfg.check()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in cfg.shapes() {
            let (got_shape, data) = get(&name).ok_or_else(|| Error::Tensor {
                name: name.clone(),
                msg: "missing from the prompt encoder".into(),
            })?;
            if got_shape != shape.as_slice() {
                return Err(Error::Tensor {
                    name,
                    msg: format!("has shape {got_shape:?}: expected {shape:?}"),
                });
            }
            tensors.insert(name, data.to_vec());
        }
        Ok(PromptEncoder { cfg, tensors })
    }

    /// A fresh encoder initialised as PyTorch initialises PEFT's: the embedding N(0, 1),
    /// linear and LSTM weights and biases U(-1/√fan, 1/√fan) (fan: the linear's inputs, the
    /// LSTM's hidden size).
    pub fn init(cfg: EncoderConfig, rng: &mut Rng) -> Result<PromptEncoder> {
        cfg.check()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in cfg.shapes() {
            let fan = if name.starts_with("lstm_head") {
                cfg.hidden
            } else {
                shape.get(1).copied().unwrap_or(cfg.hidden)
            };
            let values = init_values(&name, &shape, fan, rng);
            tensors.insert(name, values);
        }
        Ok(PromptEncoder { cfg, tensors })
    }

    fn get(&self, name: &str) -> Result<&[f32]> {
        self.tensors
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Tensor {
                name: name.into(),
                msg: "missing from the prompt encoder".into(),
            })
    }

    /// The prompt (P, d) row-major, and what the backward needs.
    pub fn forward(&self) -> Result<(Vec<f32>, EncoderTape)> {
        let (p, d, h) = (self.cfg.p, self.cfg.d, self.cfg.hidden);
        let mut tape = EncoderTape {
            mlp_inputs: Vec::new(),
            relu_pre: Vec::new(),
            lstm: Vec::new(),
        };
        let mut x = self.get("embedding.weight")?.to_vec(); // (P, d)
        let mut width = d;
        if self.cfg.kind == EncoderKind::Lstm {
            for l in 0..self.cfg.lstm_layers {
                let (out, layer_tape) = lstm::layer_fwd(self, l, &x, p, width)?;
                tape.lstm.push(layer_tape);
                x = out; // (P, 2h)
                width = 2 * h;
            }
        }
        let linears = self.mlp_linears();
        for (i, (idx, n_out)) in linears.iter().enumerate() {
            let w = self.get(&format!("mlp_head.{idx}.weight"))?;
            let b = self.get(&format!("mlp_head.{idx}.bias"))?;
            let mut y = linear_fwd(&x, w, b, p, width, *n_out)?;
            tape.mlp_inputs.push(std::mem::take(&mut x));
            if i + 1 < linears.len() {
                tape.relu_pre.push(y.clone());
                relu_fwd(&mut y);
            }
            x = y;
            width = *n_out;
        }
        Ok((x, tape))
    }

    /// d loss / d every parameter, by PEFT name, from `d_prompt` (P', d) = d loss / d the
    /// first P' <= P rows of the prompt `forward` gave (the rest had no use: zero gradient;
    /// PEFT's seq2seq tables hold 2P rows and the model reads the first P).
    pub fn backward(
        &self,
        tape: &EncoderTape,
        d_prompt: &[f32],
    ) -> Result<BTreeMap<String, Vec<f32>>> {
        let (p, d, h) = (self.cfg.p, self.cfg.d, self.cfg.hidden);
        if d_prompt.len() > p * d || d == 0 || !d_prompt.len().is_multiple_of(d) {
            return Err(Error::tensor(
                "prompt gradient",
                format!(
                    "has {} values: expected whole rows of {d}, at most the encoder's {p} rows",
                    d_prompt.len()
                ),
            ));
        }
        let mut grads = BTreeMap::new();
        let linears = self.mlp_linears();
        let mut dy = d_prompt.to_vec();
        dy.resize(p * d, 0.0);
        // the MLP head in reverse: each linear's input width is the previous one's output
        for (i, (idx, n_out)) in linears.iter().enumerate().rev() {
            let n_in = match i.checked_sub(1).and_then(|j| linears.get(j)) {
                Some((_, w)) => *w,
                None if self.cfg.kind == EncoderKind::Lstm => 2 * h,
                None => d,
            };
            let x = tape
                .mlp_inputs
                .get(i)
                .ok_or_else(|| tape_error("mlp input"))?;
            let w = self.get(&format!("mlp_head.{idx}.weight"))?;
            let (dx, dw, db) = linear_bwd(&dy, x, w, p, n_in, *n_out)?;
            grads.insert(format!("mlp_head.{idx}.weight"), dw);
            grads.insert(format!("mlp_head.{idx}.bias"), db);
            dy = dx;
            if let Some(pre) = i.checked_sub(1).and_then(|j| tape.relu_pre.get(j)) {
                relu_bwd(&mut dy, pre);
            }
        }
        if self.cfg.kind == EncoderKind::Lstm {
            for l in (0..self.cfg.lstm_layers).rev() {
                let layer_tape = tape.lstm.get(l).ok_or_else(|| tape_error("lstm layer"))?;
                dy = lstm::layer_bwd(self, l, layer_tape, &dy, &mut grads)?;
            }
        }
        grads.insert("embedding.weight".into(), dy);
        Ok(grads)
    }

    /// The MLP head's linear layers: (index in `mlp_head`, outputs).
    fn mlp_linears(&self) -> Vec<(usize, usize)> {
        let (d, h) = (self.cfg.d, self.cfg.hidden);
        match self.cfg.kind {
            EncoderKind::Mlp => vec![(0, h), (2, h), (4, d)],
            EncoderKind::Lstm => vec![(0, 2 * h), (2, d)],
        }
    }
}

/// PyTorch's initialisation of one of PEFT's encoder tensors: the embedding N(0, 1), any other
/// U(-1/√fan, 1/√fan).
fn init_values(name: &str, shape: &[usize], fan: usize, rng: &mut Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name == "embedding.weight" {
        return (0..n).map(|_| rng.normal() as f32).collect();
    }
    let bound = 1.0 / (fan as f64).sqrt();
    (0..n)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
        .collect()
}

fn tape_error(what: &str) -> Error {
    Error::Unsupported(format!(
        "prompt encoder backward without the forward's {what}"
    ))
}

#[cfg(test)]
mod tests;
