//! LayerNorm (BERT), forward and backward.
//!
//! Accumulation contract (src/backend/mod.rs): `layernorm_bwd` adds into `dinp`.

use super::real::Real;
use super::{real, real_mut, CpuBackend, CpuBuf};
use crate::backend::LayerNormOps;
use crate::error::Result;
use rayon::prelude::*;

/// out (N, C) = (inp - mean) * rstd * w + b; mean, rstd (N) are saved for backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd<F: Real>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    w: &[F],
    b: &[F],
    c: usize,
    eps: f64,
) {
    let inv_c = F::from_f64(1.0 / c as f64);
    out.par_chunks_mut(c)
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .zip(inp.par_chunks(c))
        .for_each(|((y, (m, r)), x)| {
            let mu = x.iter().copied().sum::<F>() * inv_c;
            let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() * inv_c;
            let rs = F::ONE / (var + F::from_f64(eps)).sqrt();
            for i in 0..c {
                y[i] = (x[i] - mu) * rs * w[i] + b[i];
            }
            *m = mu;
            *r = rs;
        });
}

/// dinp (N, C) += LayerNorm backward of dout (N, C), from the saved input and statistics.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd<F: Real>(
    dinp: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    c: usize,
) {
    let inv_c = F::from_f64(1.0 / c as f64);
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .for_each(|(((dx, dy), x), (&mu, &rs))| {
            let mut mean_g = F::ZERO;
            let mut mean_gx = F::ZERO;
            for i in 0..c {
                let g = dy[i] * w[i];
                mean_g += g;
                mean_gx += g * (x[i] - mu) * rs;
            }
            mean_g *= inv_c;
            mean_gx *= inv_c;
            for i in 0..c {
                let xhat = (x[i] - mu) * rs;
                dx[i] += (dy[i] * w[i] - mean_g - xhat * mean_gx) * rs;
            }
        });
}

impl<F: Real> LayerNormOps for CpuBackend<F> {
    fn layernorm_fwd(
        &self,
        out: &mut CpuBuf<F>,
        mean: &mut CpuBuf<F>,
        rstd: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        bias: &CpuBuf<F>,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        layernorm_fwd(
            real_mut(out, "layernorm out", n * c)?,
            real_mut(mean, "layernorm mean", n)?,
            real_mut(rstd, "layernorm rstd", n)?,
            real(inp, "layernorm inp", n * c)?,
            real(w, "layernorm weight", c)?,
            real(bias, "layernorm bias", c)?,
            c,
            eps,
        );
        Ok(())
    }

    fn layernorm_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        mean: &CpuBuf<F>,
        rstd: &CpuBuf<F>,
        n: usize,
        c: usize,
    ) -> Result<()> {
        layernorm_bwd(
            real_mut(dinp, "layernorm dinp", n * c)?,
            real(dout, "layernorm dout", n * c)?,
            real(inp, "layernorm inp", n * c)?,
            real(w, "layernorm weight", c)?,
            real(mean, "layernorm mean", n)?,
            real(rstd, "layernorm rstd", n)?,
            c,
        );
        Ok(())
    }
}
