//! The host-side network whose output is the trained table, when the table is not itself the
//! parameter: P-tuning's prompt encoder (the prompt rows) or prefix tuning's projection (the
//! prefix table). The trainer runs it, steps and checkpoints it the same way whichever it is.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::Result;
use crate::prompt_encoder::{
    EncoderConfig, EncoderTape, PrefixProjection, ProjectionConfig, ProjectionTape, PromptEncoder,
};
use crate::rng::Rng;
use std::collections::BTreeMap;

/// The sizes of a host encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderSpec {
    PTuning(EncoderConfig),
    Projection(ProjectionConfig),
}

/// A host encoder with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum HostEncoder {
    PTuning(PromptEncoder),
    Projection(PrefixProjection),
}

/// What a forward keeps for its backward.
pub enum HostTape {
    PTuning(EncoderTape),
    Projection(ProjectionTape),
}

impl EncoderSpec {
    /// Every tensor's PEFT name (without the adapter's prefix) and shape, in PEFT's order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            EncoderSpec::PTuning(c) => c.shapes(),
            EncoderSpec::Projection(c) => (c.shapes().into_iter())
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
        }
    }
}

impl HostEncoder {
    /// A fresh encoder, drawn from `rng` as PyTorch initialises PEFT's.
    pub fn init(spec: EncoderSpec, rng: &mut Rng) -> Result<HostEncoder> {
        Ok(match spec {
            EncoderSpec::PTuning(c) => HostEncoder::PTuning(PromptEncoder::init(c, rng)?),
            EncoderSpec::Projection(c) => HostEncoder::Projection(PrefixProjection::init(c, rng)?),
        })
    }

    /// The encoder from named tensors (`get`: shape and values), each checked.
    pub fn from_tensors<'a>(
        spec: EncoderSpec,
        get: impl Fn(&str) -> Option<(&'a [usize], &'a [f32])>,
    ) -> Result<HostEncoder> {
        Ok(match spec {
            EncoderSpec::PTuning(c) => HostEncoder::PTuning(PromptEncoder::from_tensors(c, get)?),
            EncoderSpec::Projection(c) => {
                HostEncoder::Projection(PrefixProjection::from_tensors(c, get)?)
            }
        })
    }

    pub fn spec(&self) -> EncoderSpec {
        match self {
            HostEncoder::PTuning(e) => EncoderSpec::PTuning(e.cfg),
            HostEncoder::Projection(e) => EncoderSpec::Projection(e.cfg),
        }
    }

    pub fn tensors(&self) -> &BTreeMap<String, Vec<f32>> {
        match self {
            HostEncoder::PTuning(e) => &e.tensors,
            HostEncoder::Projection(e) => &e.tensors,
        }
    }

    pub fn tensors_mut(&mut self) -> &mut BTreeMap<String, Vec<f32>> {
        match self {
            HostEncoder::PTuning(e) => &mut e.tensors,
            HostEncoder::Projection(e) => &mut e.tensors,
        }
    }

    /// The table (P, width) row-major, and what the backward needs.
    pub fn forward(&self) -> Result<(Vec<f32>, HostTape)> {
        Ok(match self {
            HostEncoder::PTuning(e) => {
                let (y, t) = e.forward()?;
                (y, HostTape::PTuning(t))
            }
            HostEncoder::Projection(e) => {
                let (y, t) = e.forward()?;
                (y, HostTape::Projection(t))
            }
        })
    }

    /// d loss / d every parameter, by PEFT name, from the table's gradient.
    pub fn backward(&self, tape: &HostTape, d_table: &[f32]) -> Result<BTreeMap<String, Vec<f32>>> {
        match (self, tape) {
            (HostEncoder::PTuning(e), HostTape::PTuning(t)) => e.backward(t, d_table),
            (HostEncoder::Projection(e), HostTape::Projection(t)) => e.backward(t, d_table),
            _ => Err(crate::error::Error::Unsupported(
                "host encoder backward with another encoder's tape".into(),
            )),
        }
    }
}
