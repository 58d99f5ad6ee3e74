//! Rotary position embeddings, forward and backward, in place (src/backend/rope.rs): the
//! angle f = pos · inv_freq[i] in the working precision (float32 for the engine, as
//! transformers computes it), cos and sin of it, and the rotation of each (x_i, x_{i+D/2}).

use super::real::Real;
use super::{check_rows, ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::rope::check_rope;
use crate::backend::RopeOps;
use crate::error::Result;
use rayon::prelude::*;

/// x (B, T, H, D) rotated in place at positions pos (B, T); `sign` 1 rotates by +f (forward),
/// -1 by -f (backward: the transpose).
fn rotate<F: Real>(x: &mut [F], inv_freq: &[F], pos: &[i32], h: usize, d: usize, sign: f64) {
    let half = d / 2;
    x.par_chunks_mut(h * d)
        .zip(pos.par_iter())
        .for_each(|(row, &p)| {
            let p = F::from_f64(p as f64);
            for (i, &inv) in inv_freq.iter().enumerate() {
                let f = (p * inv).to_f64();
                let (c, s) = (F::from_f64(f.cos()), F::from_f64(sign * f.sin()));
                for head in row.chunks_mut(d) {
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * c - b * s;
                    head[i + half] = b * c + a * s;
                }
            }
        });
}

/// x (B, T, H, D) rotated in place: forward RoPE.
pub fn rope_fwd<F: Real>(x: &mut [F], inv_freq: &[F], pos: &[i32], h: usize, d: usize) {
    rotate(x, inv_freq, pos, h, d, 1.0);
}

/// dx (B, T, H, D) rotated back in place: RoPE's backward.
pub fn rope_bwd<F: Real>(dx: &mut [F], inv_freq: &[F], pos: &[i32], h: usize, d: usize) {
    rotate(dx, inv_freq, pos, h, d, -1.0);
}

/// The rotation's operands checked, in the order the ops check them: D, the positions (B, T),
/// then x or dx (B, T, H, D) as `x.1` names it, and inv_freq (D/2).
fn rope_args<'a, F: Real>(
    x: (&'a mut CpuBuf<F>, &str),
    inv_freq: &'a CpuBuf<F>,
    pos: &'a CpuBuf<F>,
    [b, t, h, d]: [usize; 4],
) -> Result<(&'a mut [F], &'a [F], &'a [i32])> {
    check_rope(d)?;
    let pos = ints(pos, "rope positions", b * t)?;
    check_rows("rope positions", pos, i32::MAX as usize)?;
    let x = real_mut(x.0, x.1, b * t * h * d)?;
    Ok((x, real(inv_freq, "rope inv_freq", d / 2)?, pos))
}

impl<F: Real> RopeOps for CpuBackend<F> {
    fn rope_fwd(
        &self,
        x: &mut CpuBuf<F>,
        inv_freq: &CpuBuf<F>,
        pos: &CpuBuf<F>,
        b: usize,
        t: usize,
        h: usize,
        d: usize,
    ) -> Result<()> {
        let (x, inv_freq, pos) = rope_args((x, "rope x"), inv_freq, pos, [b, t, h, d])?;
        rope_fwd(x, inv_freq, pos, h, d);
        Ok(())
    }

    fn rope_bwd(
        &self,
        dx: &mut CpuBuf<F>,
        inv_freq: &CpuBuf<F>,
        pos: &CpuBuf<F>,
        b: usize,
        t: usize,
        h: usize,
        d: usize,
    ) -> Result<()> {
        let (x, inv_freq, pos) = rope_args((dx, "rope dx"), inv_freq, pos, [b, t, h, d])?;
        rope_bwd(x, inv_freq, pos, h, d);
        Ok(())
    }
}
