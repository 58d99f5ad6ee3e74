//! T5 (encoder-decoder) with the prompt in front of the encoder input.

use crate::backend::Backend;
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::models::TokenBatch;
use crate::parity::Outputs;
use crate::weights::WeightStore;
use std::marker::PhantomData;

pub struct T5<B: Backend> {
    pub cfg: T5Config,
    _b: PhantomData<B>,
}

impl<B: Backend> T5<B> {
    pub fn load(_be: &B, _store: &WeightStore, _cfg: T5Config) -> Result<Self> {
        Err(Error::Unsupported("T5 is not implemented yet".into()))
    }
}

pub fn parity_outputs<B: Backend>(
    _be: &B,
    _model: &T5<B>,
    _batch: &TokenBatch,
    _prompt: &[f32],
    _p: usize,
    _labels: &[i32],
    _l: usize,
) -> Result<Outputs> {
    Err(Error::Unsupported("T5 is not implemented yet".into()))
}
