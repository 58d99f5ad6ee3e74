//! Row selection and pooling: heads compute only the rows their loss reads.
//!
//! `gather_rows` overwrites; `scatter_rows_bwd` adds into the residual gradient it returns
//! to; `mean_pool_bwd` adds, or with `accumulate` false writes its gradient whole.

use super::real::Real;
use super::{check_rows, ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::RowOps;
use crate::error::Result;
use rayon::prelude::*;

/// out (M, C) = inp[idx[m]] for inp (N, C), idx (M).
pub fn gather_rows<F: Real>(out: &mut [F], inp: &[F], idx: &[i32], c: usize) {
    out.par_chunks_mut(c)
        .zip(idx.par_iter())
        .for_each(|(dst, &r)| {
            let r = r as usize;
            dst.copy_from_slice(&inp[r * c..(r + 1) * c]);
        });
}

/// dinp[idx[m]] += dout[m] for dout (M, C). Serial: indices may repeat.
pub fn scatter_rows_bwd<F: Real>(dinp: &mut [F], dout: &[F], idx: &[i32], c: usize) {
    for (src, &r) in dout.chunks(c).zip(idx) {
        let r = r as usize;
        for (d, &s) in dinp[r * c..(r + 1) * c].iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// out (B, C) = mean over the rows s of inp (B, T, C) with weight[b, s] != 0, i.e. a
/// masked mean; `weight` (B, T) holds 1/count for pooled rows and 0 elsewhere.
pub fn mean_pool_fwd<F: Real>(out: &mut [F], inp: &[F], weight: &[F], t: usize, c: usize) {
    out.par_chunks_mut(c).enumerate().for_each(|(bi, dst)| {
        dst.iter_mut().for_each(|x| *x = F::ZERO);
        for s in 0..t {
            let w = weight[bi * t + s];
            if w != F::ZERO {
                let row = &inp[(bi * t + s) * c..(bi * t + s + 1) * c];
                for (d, &x) in dst.iter_mut().zip(row) {
                    *d += w * x;
                }
            }
        }
    });
}

/// dinp (B, T, C) += weight[b, s] * dout[b] (B, C); with `accumulate` false dinp is written
/// whole, its rows of weight 0 zeros and the others zero plus their term (the bits of adding
/// into zeros).
pub fn mean_pool_bwd<F: Real>(
    dinp: &mut [F],
    dout: &[F],
    weight: &[F],
    t: usize,
    c: usize,
    accumulate: bool,
) {
    dinp.par_chunks_mut(c).enumerate().for_each(|(row, dst)| {
        let w = weight[row];
        if w == F::ZERO {
            if !accumulate {
                dst.fill(F::ZERO);
            }
            return;
        }
        let bi = row / t;
        for (d, &g) in dst.iter_mut().zip(&dout[bi * c..(bi + 1) * c]) {
            let held = if accumulate { *d } else { F::ZERO };
            *d = held + w * g;
        }
    });
}

impl<F: Real> RowOps for CpuBackend<F> {
    fn gather_rows(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        idx: &CpuBuf<F>,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let idx = ints(idx, "row index", m)?;
        let inp = real(inp, "gather inp", inp.len())?;
        check_rows("row index", idx, inp.len() / c.max(1))?;
        gather_rows(real_mut(out, "gather out", m * c)?, inp, idx, c);
        Ok(())
    }

    fn scatter_rows_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        idx: &CpuBuf<F>,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let idx = ints(idx, "row index", m)?;
        let rows_in = dinp.len() / c.max(1);
        check_rows("row index", idx, rows_in)?;
        let n = dinp.len();
        scatter_rows_bwd(
            real_mut(dinp, "scatter dinp", n)?,
            real(dout, "scatter dout", m * c)?,
            idx,
            c,
        );
        Ok(())
    }

    fn mean_pool_fwd(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        weight: &CpuBuf<F>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        mean_pool_fwd(
            real_mut(out, "pool out", b * c)?,
            real(inp, "pool inp", b * t * c)?,
            real(weight, "pool weight", b * t)?,
            t,
            c,
        );
        Ok(())
    }

    fn mean_pool_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        weight: &CpuBuf<F>,
        b: usize,
        t: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        mean_pool_bwd(
            real_mut(dinp, "pool dinp", b * t * c)?,
            real(dout, "pool dout", b * c)?,
            real(weight, "pool weight", b * t)?,
            t,
            c,
            accumulate,
        );
        Ok(())
    }
}
