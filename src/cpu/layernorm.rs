//! LayerNorm (BERT), forward and backward.
//!
//! Accumulation contract (src/backend/mod.rs): `layernorm_bwd` adds into `dinp` with
//! `accumulate`, else writes it whole (as adding into zeros would).

use super::real::{base, Real};
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

/// dinp (N, C) += LayerNorm backward of dout (N, C), from the saved input and statistics,
/// with `acc`; else dinp = 0 + it.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd<F: Real>(
    dinp: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    c: usize,
    acc: bool,
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
                dx[i] = base(acc, dx[i]) + (dy[i] * w[i] - mean_g - xhat * mean_gx) * rs;
            }
        });
}

/// The float32 forms on the instruction set in use (src/cpu/simd.rs): the same math, with
/// each row's sums taken lane by lane.
pub mod fast {
    use crate::cpu::simd::{self, isa};
    use rayon::prelude::*;

    /// As `layernorm_fwd`.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd(
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: &[f32],
        c: usize,
        eps: f64,
    ) {
        let isa = isa();
        let inv_c = 1.0 / c as f32;
        out.par_chunks_mut(c)
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .zip(inp.par_chunks(c))
            .for_each(|((y, m), x)| {
                let mu = simd::sum(isa, x) * inv_c;
                let var = simd::sum_sq_dev(isa, x, mu) * inv_c;
                let rs = 1.0 / (var + eps as f32).sqrt();
                simd::norm_row(isa, y, x, w, Some(b), mu, rs);
                (*m.0, *m.1) = (mu, rs);
            });
    }

    /// As `layernorm_bwd`.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd(
        dinp: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
        acc: bool,
    ) {
        let isa = isa();
        let inv_c = 1.0 / c as f32;
        dinp.par_chunks_mut(c)
            .zip(dout.par_chunks(c))
            .zip(inp.par_chunks(c))
            .zip(mean.par_iter().zip(rstd.par_iter()))
            .for_each(|(((dx, dy), x), (&mu, &rs))| {
                let (sum_g, sum_gx) = simd::norm_bwd_sums(isa, dy, x, w, mu);
                let (mean_g, mean_gx) = (sum_g * inv_c, sum_gx * rs * inv_c);
                // dx += (g - mean_g - xhat·mean_gx)·rs with xhat = (x - mu)·rs
                let (k, c0) = (mean_gx * rs * rs, mean_g * rs);
                simd::norm_bwd_row(isa, dx, dy, x, w, mu, rs, k, c0, acc);
            });
    }
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
        let (out, mean, rstd) = (
            real_mut(out, "layernorm out", n * c)?,
            real_mut(mean, "layernorm mean", n)?,
            real_mut(rstd, "layernorm rstd", n)?,
        );
        let (inp, w, bias) = (
            real(inp, "layernorm inp", n * c)?,
            real(w, "layernorm weight", c)?,
            real(bias, "layernorm bias", c)?,
        );
        match (
            F::as_f32(inp),
            F::as_f32(w),
            F::as_f32(bias),
            F::as_f32_mut(out),
            F::as_f32_mut(mean),
            F::as_f32_mut(rstd),
        ) {
            (Some(x), Some(w), Some(b), Some(y), Some(m), Some(r)) => {
                fast::layernorm_fwd(y, m, r, x, w, b, c, eps)
            }
            _ => layernorm_fwd(out, mean, rstd, inp, w, bias, c, eps),
        }
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
        accumulate: bool,
    ) -> Result<()> {
        let dinp = real_mut(dinp, "layernorm dinp", n * c)?;
        let (dout, inp, w) = (
            real(dout, "layernorm dout", n * c)?,
            real(inp, "layernorm inp", n * c)?,
            real(w, "layernorm weight", c)?,
        );
        let (mean, rstd) = (
            real(mean, "layernorm mean", n)?,
            real(rstd, "layernorm rstd", n)?,
        );
        match (
            F::as_f32(dout),
            F::as_f32(inp),
            F::as_f32(w),
            F::as_f32(mean),
            F::as_f32(rstd),
            F::as_f32_mut(dinp),
        ) {
            (Some(dy), Some(x), Some(w), Some(m), Some(r), Some(dx)) => {
                fast::layernorm_bwd(dx, dy, x, w, m, r, c, accumulate)
            }
            _ => layernorm_bwd(dinp, dout, inp, w, mean, rstd, c, accumulate),
        }
        Ok(())
    }
}
