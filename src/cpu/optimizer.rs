//! Optimizer family: AdamW (PyTorch's semantics) and Adafactor (transformers' semantics, as
//! Lester et al. used it for prompt tuning). Both update the parameter in place; their state
//! is float32 whatever the device.

use super::real::Real;
use super::{real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{AdafactorHyper, AdamWHyper, OptimizerOps};
use crate::error::{Error, Result};

/// One AdamW step (decoupled weight decay, bias-corrected moments); `step` counts from 1.
/// param, grad, m, v: (N).
pub fn adamw_update<F: Real>(
    param: &mut [F],
    grad: &[F],
    m: &mut [F],
    v: &mut [F],
    hp: &AdamWHyper,
    step: u64,
) {
    let bc1 = 1.0 - hp.beta1.powi(step as i32);
    let bc2 = 1.0 - hp.beta2.powi(step as i32);
    for i in 0..param.len() {
        let g = grad[i].to_f64();
        let mut p = param[i].to_f64();
        p *= 1.0 - hp.lr * hp.weight_decay;
        let mi = hp.beta1 * m[i].to_f64() + (1.0 - hp.beta1) * g;
        let vi = hp.beta2 * v[i].to_f64() + (1.0 - hp.beta2) * g * g;
        let denom = (vi / bc2).sqrt() + hp.eps;
        p -= hp.lr * (mi / bc1) / denom;
        m[i] = F::from_f64(mi);
        v[i] = F::from_f64(vi);
        param[i] = F::from_f64(p);
    }
}

/// One factored Adafactor step without first moment and without parameter scaling, for a
/// (R, C) parameter: row (R) and col (C) hold the factored second moments; `step` from 1.
pub fn adafactor_update<F: Real>(
    param: &mut [F],
    grad: &[F],
    row: &mut [F],
    col: &mut [F],
    hp: &AdafactorHyper,
    step: u64,
) {
    let (r, c) = (row.len(), col.len());
    let beta2t = 1.0 - (step as f64).powf(hp.decay_rate);
    let sq = |i: usize| grad[i].to_f64() * grad[i].to_f64() + hp.eps;
    for (ri, x) in row.iter_mut().enumerate() {
        let mean = (0..c).map(|ci| sq(ri * c + ci)).sum::<f64>() / c as f64;
        *x = F::from_f64(beta2t * x.to_f64() + (1.0 - beta2t) * mean);
    }
    for (ci, x) in col.iter_mut().enumerate() {
        let mean = (0..r).map(|ri| sq(ri * c + ci)).sum::<f64>() / r as f64;
        *x = F::from_f64(beta2t * x.to_f64() + (1.0 - beta2t) * mean);
    }
    let row_mean = row.iter().map(|x| x.to_f64()).sum::<f64>() / r as f64;
    let mut update: Vec<f64> = (0..r * c)
        .map(|i| {
            let (ri, ci) = (i / c, i % c);
            let r_factor = (row[ri].to_f64() / row_mean).sqrt().recip();
            let c_factor = col[ci].to_f64().sqrt().recip();
            r_factor * c_factor * grad[i].to_f64()
        })
        .collect();
    let rms = (update.iter().map(|u| u * u).sum::<f64>() / update.len() as f64).sqrt();
    let denom = (rms / hp.clip_threshold).max(1.0);
    update.iter_mut().for_each(|u| *u = *u / denom * hp.lr);
    for (p, u) in param.iter_mut().zip(&update) {
        let mut x = p.to_f64();
        x -= x * hp.weight_decay * hp.lr;
        *p = F::from_f64(x - u);
    }
}

impl<F: Real> OptimizerOps for CpuBackend<F> {
    fn adamw_update(
        &self,
        param: &mut CpuBuf<F>,
        grad: &CpuBuf<F>,
        m: &mut CpuBuf<F>,
        v: &mut CpuBuf<F>,
        hp: &AdamWHyper,
        step: u64,
    ) -> Result<()> {
        let n = param.len();
        adamw_update(
            real_mut(param, "param", n)?,
            real(grad, "grad", n)?,
            real_mut(m, "adam m", n)?,
            real_mut(v, "adam v", n)?,
            hp,
            step,
        );
        Ok(())
    }

    fn adafactor_update(
        &self,
        param: &mut CpuBuf<F>,
        grad: &CpuBuf<F>,
        row: &mut CpuBuf<F>,
        col: &mut CpuBuf<F>,
        hp: &AdafactorHyper,
        step: u64,
    ) -> Result<()> {
        let (n, r, c) = (param.len(), row.len(), col.len());
        if r * c != n {
            return Err(Error::shape("adafactor factors", n, format!("{r} x {c}")));
        }
        adafactor_update(
            real_mut(param, "param", n)?,
            real(grad, "grad", n)?,
            real_mut(row, "adafactor row", r)?,
            real_mut(col, "adafactor col", c)?,
            hp,
            step,
        );
        Ok(())
    }
}
