//! RMS norm (T5), forward and backward: no mean, no bias.
//!
//! Accumulation contract: `rmsnorm_bwd` adds into `dinp` with `accumulate`: in T5's pre-LN
//! blocks the norm's input is the residual stream, whose gradient already holds the skip
//! path; else it writes `dinp` whole (the final norm's), as adding into zeros would.

use super::real::{base, Real};
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

/// dinp (N, C) += RMS-norm backward of dout (N, C) with `acc`, else dinp = 0 + it.
pub fn rmsnorm_bwd<F: Real>(
    dinp: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    rstd: &[F],
    c: usize,
    acc: bool,
) {
    let inv_c = F::from_f64(1.0 / c as f64);
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter())
        .for_each(|(((dx, dy), x), &rs)| {
            let dot = (0..c).map(|i| dy[i] * w[i] * x[i]).sum::<F>();
            let k = rs * rs * rs * dot * inv_c;
            for i in 0..c {
                dx[i] = base(acc, dx[i]) + (dy[i] * w[i] * rs - x[i] * k);
            }
        });
}

/// The float32 forms on the instruction set in use (src/cpu/simd.rs).
pub mod fast {
    use crate::cpu::simd::{self, isa};
    use rayon::prelude::*;

    /// As `rmsnorm_fwd`.
    pub fn rmsnorm_fwd(
        out: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        w: &[f32],
        c: usize,
        eps: f64,
    ) {
        let isa = isa();
        let inv_c = 1.0 / c as f32;
        out.par_chunks_mut(c)
            .zip(rstd.par_iter_mut())
            .zip(inp.par_chunks(c))
            .for_each(|((y, r), x)| {
                let ms = simd::sum_sq_dev(isa, x, 0.0) * inv_c;
                let rs = 1.0 / (ms + eps as f32).sqrt();
                simd::norm_row(isa, y, x, w, None, 0.0, rs);
                *r = rs;
            });
    }

    /// As `rmsnorm_bwd`.
    pub fn rmsnorm_bwd(
        dinp: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        rstd: &[f32],
        c: usize,
        acc: bool,
    ) {
        let isa = isa();
        let inv_c = 1.0 / c as f32;
        dinp.par_chunks_mut(c)
            .zip(dout.par_chunks(c))
            .zip(inp.par_chunks(c))
            .zip(rstd.par_iter())
            .for_each(|(((dx, dy), x), &rs)| {
                let (_, dot) = simd::norm_bwd_sums(isa, dy, x, w, 0.0);
                let k = rs * rs * rs * dot * inv_c;
                simd::norm_bwd_row(isa, dx, dy, x, w, 0.0, rs, k, 0.0, acc);
            });
    }
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
        let (out, rstd) = (
            real_mut(out, "rmsnorm out", n * c)?,
            real_mut(rstd, "rmsnorm rstd", n)?,
        );
        let (inp, w) = (
            real(inp, "rmsnorm inp", n * c)?,
            real(w, "rmsnorm weight", c)?,
        );
        match (
            F::as_f32(inp),
            F::as_f32(w),
            F::as_f32_mut(out),
            F::as_f32_mut(rstd),
        ) {
            (Some(x), Some(w), Some(y), Some(r)) => fast::rmsnorm_fwd(y, r, x, w, c, eps),
            _ => rmsnorm_fwd(out, rstd, inp, w, c, eps),
        }
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
        accumulate: bool,
    ) -> Result<()> {
        let dinp = real_mut(dinp, "rmsnorm dinp", n * c)?;
        let (dout, inp) = (
            real(dout, "rmsnorm dout", n * c)?,
            real(inp, "rmsnorm inp", n * c)?,
        );
        let (w, rstd) = (
            real(w, "rmsnorm weight", c)?,
            real(rstd, "rmsnorm rstd", n)?,
        );
        match (
            F::as_f32(dout),
            F::as_f32(inp),
            F::as_f32(w),
            F::as_f32(rstd),
            F::as_f32_mut(dinp),
        ) {
            (Some(dy), Some(x), Some(w), Some(r), Some(dx)) => {
                fast::rmsnorm_bwd(dx, dy, x, w, r, c, accumulate)
            }
            _ => rmsnorm_bwd(dinp, dout, inp, w, rstd, c, accumulate),
        }
        Ok(())
    }
}
