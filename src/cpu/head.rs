//! The `cls` head (src/backend/head.rs): a linear classifier on pooled states, its softmax
//! cross-entropy gradient and its backward, in one fixed order that the CUDA kernels follow:
//! dot products summed over C in order with the bias added last, the softmax in double
//! precision, and the backward looping over b, then k, then c.
//!
//! Accumulation contract: `cls_head_fwd` and `cls_xent_grad` overwrite; `cls_head_bwd` adds
//! into dweight, dbias and dpooled, or with `accumulate` false writes them whole: each
//! element's first term is added to zero instead of to what the buffer held, so the bits are
//! those of adding into zeros.

use super::real::Real;
use super::{ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{check_ids, HeadOps};
use crate::error::Result;

/// logits (B, K) = bias (K) + pooled (B, C) · weightᵀ (K, C).
pub fn cls_head_fwd<F: Real>(
    logits: &mut [F],
    pooled: &[F],
    weight: &[F],
    bias: &[F],
    k: usize,
    c: usize,
) {
    for (row, x) in logits.chunks_mut(k).zip(pooled.chunks(c)) {
        for (ki, out) in row.iter_mut().enumerate() {
            let w = &weight[ki * c..(ki + 1) * c];
            *out = bias[ki] + x.iter().zip(w).map(|(&a, &b)| a * b).sum::<F>();
        }
    }
}

/// dlogits (B, K) = (softmax(logits) - onehot(labels)) / B, the softmax in double precision.
pub fn cls_xent_grad<F: Real>(dlogits: &mut [F], logits: &[F], labels: &[i32], k: usize) {
    let b = labels.len() as f64;
    for ((drow, row), &t) in dlogits.chunks_mut(k).zip(logits.chunks(k)).zip(labels) {
        let m = row.iter().copied().fold(F::neg_infinity(), F::max);
        let sum = row.iter().map(|&x| (x - m).to_f64().exp()).sum::<f64>();
        for (j, (d, &x)) in drow.iter_mut().zip(row).enumerate() {
            let p = (x - m).to_f64().exp() / sum;
            *d = F::from_f64((p - (j == t as usize) as u8 as f64) / b);
        }
    }
}

/// dweight (K, C) += dlogitsᵀ · pooled, dbias (K) += Σ_b dlogits, dpooled (B, C) += dlogits ·
/// weight; with `accumulate` false each is written whole.
#[allow(clippy::too_many_arguments)]
pub fn cls_head_bwd<F: Real>(
    dweight: &mut [F],
    dbias: &mut [F],
    dpooled: &mut [F],
    dlogits: &[F],
    pooled: &[F],
    weight: &[F],
    k: usize,
    c: usize,
    accumulate: bool,
) {
    // what an element's first term adds to: the buffer, or zero in write mode
    let start = |first: bool, held: F| if first && !accumulate { F::ZERO } else { held };
    // B = 0 (or K = 0) leaves no term to write: the gradients are zero
    let b = dlogits.len().checked_div(k).unwrap_or(0);
    if !accumulate && b == 0 {
        dweight.fill(F::ZERO);
        dbias.fill(F::ZERO);
        dpooled.fill(F::ZERO);
    }
    for bi in 0..b {
        let (grow, x) = (&dlogits[bi * k..][..k], &pooled[bi * c..][..c]);
        let dx = &mut dpooled[bi * c..][..c];
        for (ki, &g) in grow.iter().enumerate() {
            dbias[ki] = start(bi == 0, dbias[ki]) + g;
            let (dw, w) = (&mut dweight[ki * c..][..c], &weight[ki * c..][..c]);
            for ci in 0..c {
                dw[ci] = start(bi == 0, dw[ci]) + g * x[ci];
                dx[ci] = start(ki == 0, dx[ci]) + g * w[ci];
            }
        }
    }
}

impl<F: Real> HeadOps for CpuBackend<F> {
    fn cls_head_fwd(
        &self,
        logits: &mut CpuBuf<F>,
        pooled: &CpuBuf<F>,
        weight: &CpuBuf<F>,
        bias: &CpuBuf<F>,
        b: usize,
        k: usize,
        c: usize,
    ) -> Result<()> {
        cls_head_fwd(
            real_mut(logits, "head logits", b * k)?,
            real(pooled, "head pooled", b * c)?,
            real(weight, "head weight", k * c)?,
            real(bias, "head bias", k)?,
            k,
            c,
        );
        Ok(())
    }

    fn cls_xent_grad(
        &self,
        dlogits: &mut CpuBuf<F>,
        logits: &CpuBuf<F>,
        labels: &CpuBuf<F>,
        b: usize,
        k: usize,
    ) -> Result<()> {
        let labels = ints(labels, "class labels", b)?;
        check_ids("class labels", labels, k)?;
        cls_xent_grad(
            real_mut(dlogits, "head dlogits", b * k)?,
            real(logits, "head logits", b * k)?,
            labels,
            k,
        );
        Ok(())
    }

    fn cls_head_bwd(
        &self,
        dweight: &mut CpuBuf<F>,
        dbias: &mut CpuBuf<F>,
        dpooled: &mut CpuBuf<F>,
        dlogits: &CpuBuf<F>,
        pooled: &CpuBuf<F>,
        weight: &CpuBuf<F>,
        b: usize,
        k: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        cls_head_bwd(
            real_mut(dweight, "head dweight", k * c)?,
            real_mut(dbias, "head dbias", k)?,
            real_mut(dpooled, "head dpooled", b * c)?,
            real(dlogits, "head dlogits", b * k)?,
            real(pooled, "head pooled", b * c)?,
            real(weight, "head weight", k * c)?,
            k,
            c,
            accumulate,
        );
        Ok(())
    }
}
