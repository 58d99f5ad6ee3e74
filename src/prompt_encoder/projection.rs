//! Prefix tuning's `prefix_projection` (PEFT `PrefixEncoder` with `prefix_projection=True`):
//! the prefix table (P, N·2·w) is not free but `transform(embedding)`, with `transform` =
//! Linear(w, hidden), Tanh, Linear(hidden, N·2·w). Like P-tuning's encoder it is a few rows
//! and runs once per step on the host, with PEFT's tensor names (`embedding.weight`,
//! `transform.0.weight`, ...). Sums in f64 (`linear.rs`).

use super::linear::{linear_bwd, linear_fwd};
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::collections::BTreeMap;

/// The projection's sizes, as PEFT's `PrefixTuningConfig` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectionConfig {
    /// prefix rows (num_virtual_tokens)
    pub p: usize,
    /// the embedding's width (PEFT: token_dim)
    pub w: usize,
    /// PEFT: encoder_hidden_size
    pub hidden: usize,
    /// the output row, N·2·w (PEFT: num_layers · 2 · token_dim)
    pub out: usize,
}

impl ProjectionConfig {
    fn check(&self) -> Result<()> {
        if [self.p, self.w, self.hidden, self.out].contains(&0) {
            return Err(Error::arg(
                "--encoder-hidden-size",
                format!("prefix projection sizes {self:?}: every size must be at least 1"),
            ));
        }
        self.check_memory()
    }

    /// The parameters, counted in u128 (an --encoder-hidden-size of 10^11 overflows usize
    /// products).
    pub fn params(&self) -> u128 {
        let (p, w, h, out) = (
            self.p as u128,
            self.w as u128,
            self.hidden as u128,
            self.out as u128,
        );
        p * w + h * w + h + out * h + out
    }

    /// The weights, gradients, two Adam moments, best copy and checkpoint copy within the
    /// host's memory: an --encoder-hidden-size of 10^11 aborted on the allocation (SIGABRT).
    fn check_memory(&self) -> Result<()> {
        match crate::memory::trainable_room_refusal(self.params()) {
            Some(words) => Err(Error::arg(
                "--encoder-hidden-size",
                format!(
                    "a prefix projection of hidden size {} holds {words}",
                    self.hidden
                ),
            )),
            None => Ok(()),
        }
    }

    /// Every tensor's PEFT name and shape, in PEFT's state-dict order.
    pub fn shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        vec![
            ("embedding.weight", vec![self.p, self.w]),
            ("transform.0.weight", vec![self.hidden, self.w]),
            ("transform.0.bias", vec![self.hidden]),
            ("transform.2.weight", vec![self.out, self.hidden]),
            ("transform.2.bias", vec![self.out]),
        ]
    }
}

/// The projection's parameters, by PEFT name.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefixProjection {
    pub cfg: ProjectionConfig,
    pub tensors: BTreeMap<String, Vec<f32>>,
}

/// What the forward keeps: the embedding and the Tanh's output.
pub struct ProjectionTape {
    hidden: Vec<f32>,
}

impl PrefixProjection {
    /// The projection from named tensors, each checked against the shape `cfg` implies.
    pub fn from_tensors<'a>(
        cfg: ProjectionConfig,
        get: impl Fn(&str) -> Option<(&'a [usize], &'a [f32])>,
    ) -> Result<PrefixProjection> {
        cfg.check()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in cfg.shapes() {
            let (got, data) = get(name)
                .ok_or_else(|| Error::tensor(name, "missing from the prefix projection"))?;
            if got != shape.as_slice() {
                return Err(Error::tensor(
                    name,
                    format!("has shape {got:?}: expected {shape:?}"),
                ));
            }
            tensors.insert(name.to_string(), data.to_vec());
        }
        Ok(PrefixProjection { cfg, tensors })
    }

    /// A fresh projection initialised as PyTorch initialises PEFT's: the embedding N(0, 1),
    /// each linear U(-1/√fan_in, 1/√fan_in).
    pub fn init(cfg: ProjectionConfig, rng: &mut Rng) -> Result<PrefixProjection> {
        cfg.check()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in cfg.shapes() {
            let fan = if name.starts_with("transform.0") {
                cfg.w
            } else {
                cfg.hidden
            };
            let values = super::init_values(name, &shape, fan, rng);
            tensors.insert(name.to_string(), values);
        }
        Ok(PrefixProjection { cfg, tensors })
    }

    fn get(&self, name: &str) -> Result<&[f32]> {
        self.tensors
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::tensor(name, "missing from the prefix projection"))
    }

    /// The prefix table (P, out) row-major, and what the backward needs.
    pub fn forward(&self) -> Result<(Vec<f32>, ProjectionTape)> {
        let ProjectionConfig { p, w, hidden, out } = self.cfg;
        let x = self.get("embedding.weight")?;
        let mut h = linear_fwd(
            x,
            self.get("transform.0.weight")?,
            self.get("transform.0.bias")?,
            p,
            w,
            hidden,
        )?;
        h.iter_mut().for_each(|v| *v = v.tanh());
        let y = linear_fwd(
            &h,
            self.get("transform.2.weight")?,
            self.get("transform.2.bias")?,
            p,
            hidden,
            out,
        )?;
        Ok((y, ProjectionTape { hidden: h }))
    }

    /// d loss / d every parameter, by PEFT name, from `d_prefix` (P, out).
    pub fn backward(
        &self,
        tape: &ProjectionTape,
        d_prefix: &[f32],
    ) -> Result<BTreeMap<String, Vec<f32>>> {
        let ProjectionConfig { p, w, hidden, out } = self.cfg;
        crate::error::ensure_len("prefix gradient (P x N·2·w)", p * out, d_prefix.len())?;
        let mut grads = BTreeMap::new();
        let (mut dh, dw2, db2) = linear_bwd(
            d_prefix,
            &tape.hidden,
            self.get("transform.2.weight")?,
            p,
            hidden,
            out,
        )?;
        grads.insert("transform.2.weight".to_string(), dw2);
        grads.insert("transform.2.bias".to_string(), db2);
        // tanh' = 1 - tanh²
        dh.iter_mut()
            .zip(&tape.hidden)
            .for_each(|(g, &t)| *g *= 1.0 - t * t);
        let (dx, dw0, db0) = linear_bwd(
            &dh,
            self.get("embedding.weight")?,
            self.get("transform.0.weight")?,
            p,
            w,
            hidden,
        )?;
        grads.insert("transform.0.weight".to_string(), dw0);
        grads.insert("transform.0.bias".to_string(), db0);
        grads.insert("embedding.weight".to_string(), dx);
        Ok(grads)
    }
}
