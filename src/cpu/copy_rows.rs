//! Copying rows by index (src/backend/copy_rows.rs). The CPU holds every float buffer in one
//! type, so the copy has nothing to cast; it overwrites the rows it names.

use super::real::Real;
use super::{ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::copy_rows::check_distinct;
use crate::backend::{check_ids, CopyRowsOps};
use crate::error::Result;

/// out[dst[m]] = inp[src[m]] for inp (N, C), out (R, C), src and dst (M).
pub fn copy_rows<F: Real>(out: &mut [F], inp: &[F], src: &[i32], dst: &[i32], c: usize) {
    for (&s, &d) in src.iter().zip(dst) {
        let (s, d) = (s as usize, d as usize);
        out[d * c..(d + 1) * c].copy_from_slice(&inp[s * c..(s + 1) * c]);
    }
}

impl<F: Real> CopyRowsOps for CpuBackend<F> {
    fn copy_rows(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        src: &CpuBuf<F>,
        dst: &CpuBuf<F>,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let (src, dst) = (
            ints(src, "copy source rows", m)?,
            ints(dst, "copy rows", m)?,
        );
        let inp = real(inp, "copy inp", inp.len())?;
        check_ids("copy source rows", src, inp.len() / c.max(1))?;
        let n = out.len();
        let out = real_mut(out, "copy out", n)?;
        check_distinct("copy rows", dst, n / c.max(1))?;
        copy_rows(out, inp, src, dst, c);
        Ok(())
    }
}
