//! Residual additions, scalings and the squared norm. `add_inplace` adds (the residual
//! contract); the others overwrite.

use super::real::Real;
use super::{real, real_mut, CpuBackend, CpuBuf};
use crate::backend::ElementwiseOps;
use crate::error::Result;
use rayon::prelude::*;

/// out (N) = a + b.
pub fn add_fwd<F: Real>(out: &mut [F], a: &[F], b: &[F]) {
    out.par_iter_mut()
        .zip(a.par_iter().zip(b.par_iter()))
        .for_each(|(o, (&x, &y))| *o = x + y);
}

/// acc (N) += a.
pub fn add_inplace<F: Real>(acc: &mut [F], a: &[F]) {
    acc.par_iter_mut()
        .zip(a.par_iter())
        .for_each(|(o, &x)| *o += x);
}

/// x (N) *= s.
pub fn scale_inplace<F: Real>(x: &mut [F], s: f64) {
    let s = F::from_f64(s);
    x.par_iter_mut().for_each(|v| *v *= s);
}

/// Σ x² in double precision, in index order: the gradient norm's summation order.
pub fn sum_squares<F: Real>(x: &[F]) -> f64 {
    x.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>()
}

impl<F: Real> ElementwiseOps for CpuBackend<F> {
    fn add_fwd(&self, out: &mut CpuBuf<F>, a: &CpuBuf<F>, b: &CpuBuf<F>, n: usize) -> Result<()> {
        add_fwd(
            real_mut(out, "add out", n)?,
            real(a, "add a", n)?,
            real(b, "add b", n)?,
        );
        Ok(())
    }

    fn add_inplace(&self, acc: &mut CpuBuf<F>, a: &CpuBuf<F>, n: usize) -> Result<()> {
        add_inplace(real_mut(acc, "add acc", n)?, real(a, "add a", n)?);
        Ok(())
    }

    fn scale_inplace(&self, x: &mut CpuBuf<F>, s: f64, n: usize) -> Result<()> {
        scale_inplace(real_mut(x, "scale x", n)?, s);
        Ok(())
    }
    fn sum_squares(&self, x: &CpuBuf<F>, n: usize) -> Result<f64> {
        Ok(sum_squares(real(x, "sum_squares x", n)?))
    }
}
