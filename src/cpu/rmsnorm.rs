//! RMS norm (T5), forward and backward: no mean, no bias.
//!
//! Accumulation contract: `rmsnorm_bwd` adds into `dinp`: in T5's pre-LN blocks the norm's
//! input is the residual stream, whose gradient already holds the skip path.

use super::real::Real;
use super::{real, real_mut, CpuBackend, CpuBuf};
use crate::backend::RmsNormOps;
use crate::error::Result;
use rayon::prelude::*;

/// out (N, C) = inp * rstd * w, with rstd = 1/sqrt(mean(inp^2) + eps) saved (N).
pub fn rmsnorm_fwd<F: Real>(out: &mut [F], rstd: &mut [F], inp: &[F], w: &[F], c: usize, eps: f64) {
    let inv_c = F::from_f64(1.0 / c as f64);
    out.par_chunks_mut(c)
        .zip(rstd.par_iter_mut())
        .zip(inp.par_chunks(c))
        .for_each(|((y, r), x)| {
            let ms = x.iter().map(|&v| v * v).sum::<F>() * inv_c;
            let rs = F::ONE / (ms + F::from_f64(eps)).sqrt();
            for i in 0..c {
                y[i] = x[i] * rs * w[i];
            }
            *r = rs;
        });
}

/// dinp (N, C) += RMS-norm backward of dout (N, C).
pub fn rmsnorm_bwd<F: Real>(dinp: &mut [F], dout: &[F], inp: &[F], w: &[F], rstd: &[F], c: usize) {
    let inv_c = F::from_f64(1.0 / c as f64);
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter())
        .for_each(|(((dx, dy), x), &rs)| {
            let dot = (0..c).map(|i| dy[i] * w[i] * x[i]).sum::<F>();
            let k = rs * rs * rs * dot * inv_c;
            for i in 0..c {
                dx[i] += dy[i] * w[i] * rs - x[i] * k;
            }
        });
}

impl<F: Real> RmsNormOps for CpuBackend<F> {
    fn rmsnorm_fwd(
        &self,
        out: &mut CpuBuf<F>,
        rstd: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        rmsnorm_fwd(
            real_mut(out, "rmsnorm out", n * c)?,
            real_mut(rstd, "rmsnorm rstd", n)?,
            real(inp, "rmsnorm inp", n * c)?,
            real(w, "rmsnorm weight", c)?,
            c,
            eps,
        );
        Ok(())
    }

    fn rmsnorm_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        rstd: &CpuBuf<F>,
        n: usize,
        c: usize,
    ) -> Result<()> {
        rmsnorm_bwd(
            real_mut(dinp, "rmsnorm dinp", n * c)?,
            real(dout, "rmsnorm dout", n * c)?,
            real(inp, "rmsnorm inp", n * c)?,
            real(w, "rmsnorm weight", c)?,
            real(rstd, "rmsnorm rstd", n)?,
            c,
        );
        Ok(())
    }
}
