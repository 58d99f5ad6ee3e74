//! Fused attention, forward and backward, with key padding, an optional causal mask, and
//! T5's relative position bias read from the frozen (buckets, H) table.
//!
//! Nothing of size Tq×Tk is ever stored: forward saves only the log-sum-exp per query row,
//! and backward recomputes the probabilities from it, a block of query rows at a time (a
//! transient (block, Tk) tile per head in flight). Because D_i = Σ_j P_ij dP_ij equals
//! dO_i·O_i, backward does not need the forward output either.
//! Backward adds into dq, dk and dv (src/backend/mod.rs).
//!
//! Each (batch, head) pair is one independent task; within it the products are small GEMMs
//! on strided views of the (B, T, H, D) tensors, so nothing is transposed or copied.

use super::matmul::{gemm_strided, Mat};
use super::real::Real;
use super::{check_rows, ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{AttentionOps, AttnDims, BiasRef};
use crate::error::Result;
use rayon::prelude::*;

/// T5's relative position bias, never expanded to (H, Tq, Tk).
#[derive(Clone, Copy, Debug)]
pub struct PositionBias<'a, F> {
    /// (num_buckets, H), the frozen `relative_attention_bias.weight` of block 0
    pub table: &'a [F],
    /// (Tq + Tk - 1): the bucket of relative position j - i, stored at index j - i + Tq - 1
    pub buckets: &'a [i32],
}

/// Query rows per tile: big enough for efficient GEMMs, small enough that a (QBLOCK, Tk)
/// tile per thread stays in cache for the usual lengths.
const QBLOCK: usize = 64;

/// A raw pointer that may cross threads: every task writes a disjoint (batch, head) region.
#[derive(Clone, Copy)]
struct SendPtr<F>(*mut F);
unsafe impl<F> Send for SendPtr<F> {}
unsafe impl<F> Sync for SendPtr<F> {}

impl<F> SendPtr<F> {
    // a method, so closures capture the wrapper rather than its raw field
    fn get(self) -> *const F {
        self.0
    }
}

/// The (T, D) matrix of head `hi` in batch row `bi` of a (B, T, H, D) tensor.
fn head_mat<F>(base: *const F, bi: usize, hi: usize, t: usize, dims: &AttnDims) -> Mat<F> {
    let off = (bi * t * dims.h + hi) * dims.d;
    // SAFETY (pointer arithmetic only): the offset is inside the tensor for bi < B, hi < H.
    Mat {
        ptr: base.wrapping_add(off),
        rs: (dims.h * dims.d) as isize,
        cs: 1,
    }
}

fn transpose<F>(m: Mat<F>) -> Mat<F> {
    Mat {
        ptr: m.ptr,
        rs: m.cs,
        cs: m.rs,
    }
}

/// scores (rows, Tk) = scale · q_blk · kᵀ + bias, with masked keys at -inf.
#[allow(clippy::too_many_arguments)]
fn score_tile<F: Real>(
    scores: &mut [F],
    q: Mat<F>,
    k: Mat<F>,
    i0: usize,
    rows: usize,
    bi: usize,
    hi: usize,
    key_mask: &[i32],
    bias: Option<&PositionBias<F>>,
    causal: bool,
    scale: F,
    dims: &AttnDims,
) {
    let tk = dims.tk;
    let q_blk = Mat {
        ptr: q.ptr.wrapping_offset(i0 as isize * q.rs),
        ..q
    };
    // SAFETY: q_blk spans rows i0..i0+rows of this head, k all Tk rows; scores is (rows, Tk).
    unsafe {
        gemm_strided(
            rows,
            tk,
            dims.d,
            scores.as_mut_ptr(),
            tk as isize,
            q_blk,
            transpose(k),
            false,
        )
    };
    for r in 0..rows {
        let i = i0 + r;
        let row = &mut scores[r * tk..(r + 1) * tk];
        for (j, s) in row.iter_mut().enumerate() {
            let visible = key_mask[bi * tk + j] != 0 && !(causal && j > i);
            *s = if visible {
                let mut x = scale * *s;
                if let Some(pb) = bias {
                    x += pb.table[pb.buckets[j + dims.tq - 1 - i] as usize * dims.h + hi];
                }
                x
            } else {
                F::neg_infinity()
            };
        }
    }
}

/// out = softmax(scale * q k^T + bias + mask) v; lse (B, H, Tq) saved for backward.
/// A query row with no visible key gets out = 0 and lse = -inf.
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd<F: Real>(
    out: &mut [F],
    lse: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    key_mask: &[i32],
    bias: Option<PositionBias<F>>,
    causal: bool,
    scale: f64,
    dims: AttnDims,
) {
    let AttnDims { b, tq, tk, h, .. } = dims;
    let scale = F::from_f64(scale);
    let out_ptr = SendPtr(out.as_mut_ptr());
    lse.par_chunks_mut(tq)
        .take(b * h)
        .enumerate()
        .for_each(|(bh, lse_bh)| {
            let (bi, hi) = (bh / h, bh % h);
            let (qm, km, vm) = (
                head_mat(q.as_ptr(), bi, hi, tq, &dims),
                head_mat(k.as_ptr(), bi, hi, tk, &dims),
                head_mat(v.as_ptr(), bi, hi, tk, &dims),
            );
            let om = head_mat(out_ptr.get(), bi, hi, tq, &dims);
            let mut p = vec![F::ZERO; QBLOCK.min(tq) * tk];
            for i0 in (0..tq).step_by(QBLOCK) {
                let rows = QBLOCK.min(tq - i0);
                let p = &mut p[..rows * tk];
                score_tile(
                    p,
                    qm,
                    km,
                    i0,
                    rows,
                    bi,
                    hi,
                    key_mask,
                    bias.as_ref(),
                    causal,
                    scale,
                    &dims,
                );
                for (r, row) in p.chunks_mut(tk).enumerate() {
                    let m = F::row_max(row);
                    if !m.is_finite() {
                        row.iter_mut().for_each(|x| *x = F::ZERO);
                        lse_bh[i0 + r] = F::neg_infinity();
                        continue;
                    }
                    let sum = F::exp_sub_sum(row, m);
                    let inv = F::ONE / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                    lse_bh[i0 + r] = m + sum.ln();
                }
                let dst = om.ptr.wrapping_offset(i0 as isize * om.rs) as *mut F;
                let p_mat = Mat {
                    ptr: p.as_ptr(),
                    rs: tk as isize,
                    cs: 1,
                };
                // SAFETY: this task alone writes rows i0..i0+rows of head (bi, hi) of `out`.
                unsafe { gemm_strided(rows, dims.d, tk, dst, om.rs, p_mat, vm, false) };
            }
        });
}

/// For query rows i0..i0+rows of head (bi, hi): p (rows, Tk) = the probabilities, recomputed
/// from the saved lse, and ds (rows, Tk) = dS = P ∘ (dP − D) · scale, with dP = dO·Vᵀ and
/// D_i = Σ_j P_ij dP_ij.
#[allow(clippy::too_many_arguments)]
fn probs_and_dscores<F: Real>(
    p: &mut [F],
    ds: &mut [F],
    qm: Mat<F>,
    km: Mat<F>,
    vm: Mat<F>,
    do_blk: Mat<F>,
    lse_blk: &[F],
    i0: usize,
    (bi, hi): (usize, usize),
    key_mask: &[i32],
    bias: Option<&PositionBias<F>>,
    causal: bool,
    scale: F,
    dims: &AttnDims,
) {
    let (tk, d, rows) = (dims.tk, dims.d, lse_blk.len());
    score_tile(
        p, qm, km, i0, rows, bi, hi, key_mask, bias, causal, scale, dims,
    );
    for (row, &l) in p.chunks_mut(tk).zip(lse_blk) {
        if l.is_finite() {
            F::exp_sub_sum(row, l);
        } else {
            row.iter_mut().for_each(|x| *x = F::ZERO);
        }
    }
    // dP (rows, Tk) = dO_blk · Vᵀ
    // SAFETY: reads of this head's rows; ds is a local (rows, Tk) buffer.
    unsafe {
        gemm_strided(
            rows,
            tk,
            d,
            ds.as_mut_ptr(),
            tk as isize,
            do_blk,
            transpose(vm),
            false,
        )
    };
    for (prow, dsrow) in p.chunks(tk).zip(ds.chunks_mut(tk)) {
        F::softmax_bwd_row(dsrow, prow, scale);
    }
}

/// dq, dk, dv += their gradients from dout, recomputing the probabilities from q, k and the saved lse.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<F: Real>(
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    lse: &[F],
    key_mask: &[i32],
    bias: Option<PositionBias<F>>,
    causal: bool,
    scale: f64,
    dims: AttnDims,
) {
    let AttnDims { b, tq, tk, h, d } = dims;
    let scale = F::from_f64(scale);
    let ptrs = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    (0..b * h).into_par_iter().for_each(|bh| {
        let (bi, hi) = (bh / h, bh % h);
        let (qm, km, vm) = (
            head_mat(q.as_ptr(), bi, hi, tq, &dims),
            head_mat(k.as_ptr(), bi, hi, tk, &dims),
            head_mat(v.as_ptr(), bi, hi, tk, &dims),
        );
        let dom = head_mat(dout.as_ptr(), bi, hi, tq, &dims);
        let dqm = head_mat(ptrs.0.get(), bi, hi, tq, &dims);
        let dkm = head_mat(ptrs.1.get(), bi, hi, tk, &dims);
        let dvm = head_mat(ptrs.2.get(), bi, hi, tk, &dims);
        let lse_bh = &lse[bh * tq..(bh + 1) * tq];
        let mut p = vec![F::ZERO; QBLOCK.min(tq) * tk];
        let mut ds = vec![F::ZERO; QBLOCK.min(tq) * tk];
        for i0 in (0..tq).step_by(QBLOCK) {
            let rows = QBLOCK.min(tq - i0);
            let (p, ds) = (&mut p[..rows * tk], &mut ds[..rows * tk]);
            let do_blk = Mat {
                ptr: dom.ptr.wrapping_offset(i0 as isize * dom.rs),
                ..dom
            };
            let (lse_blk, head) = (&lse_bh[i0..i0 + rows], (bi, hi));
            probs_and_dscores(
                p,
                ds,
                qm,
                km,
                vm,
                do_blk,
                lse_blk,
                i0,
                head,
                key_mask,
                bias.as_ref(),
                causal,
                scale,
                &dims,
            );
            let p_mat = Mat {
                ptr: p.as_ptr(),
                rs: tk as isize,
                cs: 1,
            };
            let ds_mat = Mat {
                ptr: ds.as_ptr(),
                rs: tk as isize,
                cs: 1,
            };
            let q_blk = Mat {
                ptr: qm.ptr.wrapping_offset(i0 as isize * qm.rs),
                ..qm
            };
            // SAFETY: this task alone writes head (bi, hi) of dq, dk and dv.
            unsafe {
                let dq_dst = dqm.ptr.wrapping_offset(i0 as isize * dqm.rs) as *mut F;
                gemm_strided(rows, d, tk, dq_dst, dqm.rs, ds_mat, km, true);
                gemm_strided(
                    tk,
                    d,
                    rows,
                    dkm.ptr as *mut F,
                    dkm.rs,
                    transpose(ds_mat),
                    q_blk,
                    true,
                );
                gemm_strided(
                    tk,
                    d,
                    rows,
                    dvm.ptr as *mut F,
                    dvm.rs,
                    transpose(p_mat),
                    do_blk,
                    true,
                );
            }
        }
    });
}

impl<F: Real> AttentionOps for CpuBackend<F> {
    fn attention_fwd(
        &self,
        out: &mut CpuBuf<F>,
        lse: &mut CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<BiasRef<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims { b, tq, tk, h, d } = dims;
        let bias = cpu_bias(bias, &dims)?;
        attention_fwd(
            real_mut(out, "attention out", b * tq * h * d)?,
            real_mut(lse, "attention lse", b * h * tq)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * h * d)?,
            real(v, "attention v", b * tk * h * d)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
        );
        Ok(())
    }

    fn attention_bwd(
        &self,
        dq: &mut CpuBuf<F>,
        dk: &mut CpuBuf<F>,
        dv: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        lse: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<BiasRef<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims { b, tq, tk, h, d } = dims;
        let bias = cpu_bias(bias, &dims)?;
        attention_bwd(
            real_mut(dq, "attention dq", b * tq * h * d)?,
            real_mut(dk, "attention dk", b * tk * h * d)?,
            real_mut(dv, "attention dv", b * tk * h * d)?,
            real(dout, "attention dout", b * tq * h * d)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * h * d)?,
            real(v, "attention v", b * tk * h * d)?,
            real(lse, "attention lse", b * h * tq)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
        );
        Ok(())
    }
}

fn cpu_bias<'a, F: Real>(
    bias: Option<BiasRef<'a, CpuBuf<F>>>,
    dims: &AttnDims,
) -> Result<Option<PositionBias<'a, F>>> {
    let Some(bias) = bias else { return Ok(None) };
    let buckets = ints(bias.buckets, "bias buckets", dims.tq + dims.tk - 1)?;
    let table = real(bias.table, "relative_attention_bias", bias.table.len())?;
    let rows = table.len() / dims.h.max(1);
    check_rows("bias buckets", buckets, rows)?;
    Ok(Some(PositionBias { table, buckets }))
}
