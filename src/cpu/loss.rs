//! Loss family: softmax cross-entropy, forward and backward fused in one pass over the
//! logits (the logits are needed for nothing else), writing the gradient in place so a
//! (rows, V) chunk is the only logits storage at any time.

use super::real::Real;
use super::{ints, real_mut, CpuBackend, CpuBuf};
use crate::backend::loss::check_targets;
use crate::backend::{LossOps, IGNORE_INDEX};
use crate::error::Result;
use rayon::prelude::*;

/// In: `logits` (M, V). Out: the same buffer holds d loss / d logits = (softmax - onehot) *
/// grad_scale; `losses` (M) holds each row's cross-entropy (0 for ignored rows, whose gradient
/// row is 0).
pub fn cross_entropy_fwd_bwd<F: Real>(
    logits: &mut [F],
    losses: &mut [F],
    targets: &[i32],
    v: usize,
    grad_scale: f64,
) -> Result<()> {
    check_targets(targets, v)?;
    let grad_scale = F::from_f64(grad_scale);
    logits
        .par_chunks_mut(v)
        .zip(losses.par_iter_mut())
        .zip(targets.par_iter())
        .for_each(|((row, loss), &target)| {
            if target == IGNORE_INDEX {
                row.iter_mut().for_each(|x| *x = F::ZERO);
                *loss = F::ZERO;
                return;
            }
            let t = target as usize;
            let m = row.iter().copied().fold(F::neg_infinity(), F::max);
            let target_logit = row[t] - m;
            let mut sum = F::ZERO;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            *loss = sum.ln() - target_logit;
            let inv = F::ONE / sum;
            for x in row.iter_mut() {
                *x = *x * inv * grad_scale;
            }
            row[t] -= grad_scale;
        });
    Ok(())
}

impl<F: Real> LossOps for CpuBackend<F> {
    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut CpuBuf<F>,
        losses: &mut CpuBuf<F>,
        targets: &CpuBuf<F>,
        m: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        cross_entropy_fwd_bwd(
            real_mut(logits, "logits", m * v)?,
            real_mut(losses, "losses", m)?,
            ints(targets, "targets", m)?,
            v,
            grad_scale,
        )
    }
}
