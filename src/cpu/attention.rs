//! Fused attention, forward and backward, with key padding, an optional causal mask,
//! grouped-query attention, and a position bias: T5's relative bias read from the frozen
//! (buckets, H) table, or ALiBi computed from the head index. Also the KV-cache decode step.
//!
//! Nothing of size Tq×Tk is ever stored: forward saves only the log-sum-exp per query row,
//! and backward recomputes the probabilities from it, a block of query rows at a time (a
//! transient (block, Tk) tile per head in flight). Because D_i = Σ_j P_ij dP_ij equals
//! dO_i·O_i, backward does not need the forward output either.
//! Backward adds into dq, dk and dv (src/backend/mod.rs).
//!
//! Each (batch, head) pair is one independent task in forward; backward takes one (batch,
//! key/value head) pair per task and runs its H/Hkv query heads in turn, so that each task
//! alone writes its dk and dv. Within a task the products are small GEMMs on strided views of
//! the (B, T, H, D) tensors, so nothing is transposed, copied or repeated.
//! Positions are aligned at the end (src/backend/attention.rs): query i sits at i + Tk − Tq.

use super::matmul::{gemm_strided, Mat};
use super::real::Real;
use super::{check_rows, ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{alibi_slope, AttentionOps, AttnBias, AttnDims};
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

/// The bias of the reference functions: T5's table or ALiBi.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a, F> {
    Relative(PositionBias<'a, F>),
    Alibi,
}

impl<F: Real> Bias<'_, F> {
    /// The bias of query i, key j, head hi.
    fn at(&self, i: usize, j: usize, hi: usize, dims: &AttnDims) -> F {
        match self {
            Bias::Relative(pb) => pb.table[pb.buckets[j + dims.tq - 1 - i] as usize * dims.h + hi],
            Bias::Alibi => F::from_f64(
                alibi_slope(hi, dims.h) * (j as f64 - (i + dims.tk) as f64 + dims.tq as f64),
            ),
        }
    }
}

/// Whether key j is hidden from query i by the causal mask (positions aligned at the end).
fn after(i: usize, j: usize, dims: &AttnDims) -> bool {
    j + dims.tq > i + dims.tk
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

/// The (T, D) matrix of head `hi` in batch row `bi` of a (B, T, heads, D) tensor.
fn head_mat<F>(base: *const F, bi: usize, hi: usize, t: usize, heads: usize, d: usize) -> Mat<F> {
    let off = (bi * t * heads + hi) * d;
    // SAFETY (pointer arithmetic only): the offset is inside the tensor for bi < B, hi < heads.
    Mat {
        ptr: base.wrapping_add(off),
        rs: (heads * d) as isize,
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
    bias: Option<&Bias<F>>,
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
            let visible = key_mask[bi * tk + j] != 0 && !(causal && after(i, j, dims));
            *s = if visible {
                let mut x = scale * *s;
                if let Some(bias) = bias {
                    x += bias.at(i, j, hi, dims);
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
    bias: Option<Bias<F>>,
    causal: bool,
    scale: f64,
    dims: AttnDims,
) {
    let AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    } = dims;
    let scale = F::from_f64(scale);
    let out_ptr = SendPtr(out.as_mut_ptr());
    lse.par_chunks_mut(tq)
        .take(b * h)
        .enumerate()
        .for_each(|(bh, lse_bh)| {
            let (bi, hi) = (bh / h, bh % h);
            let kvh = hi / dims.group();
            let (qm, km, vm) = (
                head_mat(q.as_ptr(), bi, hi, tq, h, d),
                head_mat(k.as_ptr(), bi, kvh, tk, hkv, d),
                head_mat(v.as_ptr(), bi, kvh, tk, hkv, d),
            );
            let om = head_mat(out_ptr.get(), bi, hi, tq, h, d);
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
    bias: Option<&Bias<F>>,
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
    bias: Option<Bias<F>>,
    causal: bool,
    scale: f64,
    dims: AttnDims,
) {
    let AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    } = dims;
    let scale = F::from_f64(scale);
    let ptrs = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    // one task per (batch, key/value head): it alone writes that head's dk and dv
    (0..b * hkv).into_par_iter().for_each(|bkv| {
        let (bi, kvh) = (bkv / hkv, bkv % hkv);
        let km = head_mat(k.as_ptr(), bi, kvh, tk, hkv, d);
        let vm = head_mat(v.as_ptr(), bi, kvh, tk, hkv, d);
        let dkm = head_mat(ptrs.1.get(), bi, kvh, tk, hkv, d);
        let dvm = head_mat(ptrs.2.get(), bi, kvh, tk, hkv, d);
        let mut p = vec![F::ZERO; QBLOCK.min(tq) * tk];
        let mut ds = vec![F::ZERO; QBLOCK.min(tq) * tk];
        for hi in kvh * dims.group()..(kvh + 1) * dims.group() {
            let qm = head_mat(q.as_ptr(), bi, hi, tq, h, d);
            let dom = head_mat(dout.as_ptr(), bi, hi, tq, h, d);
            let dqm = head_mat(ptrs.0.get(), bi, hi, tq, h, d);
            let lse_bh = &lse[(bi * h + hi) * tq..(bi * h + hi + 1) * tq];
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
                // SAFETY: this task alone writes the query heads of key/value head (bi, kvh)
                // of dq, and that head of dk and dv.
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
        }
    });
}

/// The KV-cache decode step: out (B, H, D) for one query per row, q (B, H, D), at position
/// Tk − 1 over the first Tk rows of the caches k, v (B, Tmax, Hkv, D), keys whose key_mask
/// (B, Tmax) is 0 hidden. A row that sees no key gets 0.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode<F: Real>(
    out: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    key_mask: &[i32],
    alibi: bool,
    scale: f64,
    dims: AttnDims,
    tmax: usize,
) {
    let AttnDims { tk, h, hkv, d, .. } = dims;
    let scale = F::from_f64(scale);
    out.par_chunks_mut(d).enumerate().for_each(|(bh, o)| {
        let (bi, hi) = (bh / h, bh % h);
        let kvh = hi / dims.group();
        let qi = &q[bh * d..(bh + 1) * d];
        let row = |j: usize| ((bi * tmax + j) * hkv + kvh) * d;
        let slope = F::from_f64(alibi_slope(hi, h));
        let scores: Vec<Option<F>> = (0..tk)
            .map(|j| {
                (key_mask[bi * tmax + j] != 0).then(|| {
                    let s = qi
                        .iter()
                        .zip(&k[row(j)..row(j) + d])
                        .map(|(&a, &b)| a * b)
                        .sum::<F>();
                    let pos = F::from_f64(j as f64 - (tk - 1) as f64);
                    scale * s + if alibi { slope * pos } else { F::ZERO }
                })
            })
            .collect();
        o.iter_mut().for_each(|x| *x = F::ZERO);
        let m = scores
            .iter()
            .flatten()
            .copied()
            .fold(F::neg_infinity(), F::max);
        if !m.is_finite() {
            return;
        }
        let z: F = scores.iter().flatten().map(|&s| (s - m).exp()).sum();
        for (j, s) in scores.iter().enumerate() {
            if let Some(s) = s {
                let p = (*s - m).exp() / z;
                for (x, &vj) in o.iter_mut().zip(&v[row(j)..row(j) + d]) {
                    *x += p * vj;
                }
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
        bias: Option<AttnBias<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = dims;
        dims.check_heads()?;
        let bias = cpu_bias(bias, &dims)?;
        attention_fwd(
            real_mut(out, "attention out", b * tq * h * d)?,
            real_mut(lse, "attention lse", b * h * tq)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * hkv * d)?,
            real(v, "attention v", b * tk * hkv * d)?,
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
        bias: Option<AttnBias<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = dims;
        dims.check_heads()?;
        let bias = cpu_bias(bias, &dims)?;
        attention_bwd(
            real_mut(dq, "attention dq", b * tq * h * d)?,
            real_mut(dk, "attention dk", b * tk * hkv * d)?,
            real_mut(dv, "attention dv", b * tk * hkv * d)?,
            real(dout, "attention dout", b * tq * h * d)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * hkv * d)?,
            real(v, "attention v", b * tk * hkv * d)?,
            real(lse, "attention lse", b * h * tq)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
        );
        Ok(())
    }

    fn attention_decode(
        &self,
        out: &mut CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<AttnBias<'_, CpuBuf<F>>>,
        scale: f64,
        dims: AttnDims,
        tmax: usize,
    ) -> Result<()> {
        let AttnDims { b, h, hkv, d, .. } = dims;
        crate::backend::attention::check_decode(&dims, tmax, bias.as_ref())?;
        attention_decode(
            real_mut(out, "attention_decode out", b * h * d)?,
            real(q, "attention_decode q", b * h * d)?,
            real(k, "attention_decode k cache", b * tmax * hkv * d)?,
            real(v, "attention_decode v cache", b * tmax * hkv * d)?,
            ints(key_mask, "attention_decode key mask", b * tmax)?,
            matches!(bias, Some(AttnBias::Alibi)),
            scale,
            dims,
            tmax,
        );
        Ok(())
    }
}

fn cpu_bias<'a, F: Real>(
    bias: Option<AttnBias<'a, CpuBuf<F>>>,
    dims: &AttnDims,
) -> Result<Option<Bias<'a, F>>> {
    let bias = match bias {
        None => return Ok(None),
        Some(AttnBias::Alibi) => return Ok(Some(Bias::Alibi)),
        Some(AttnBias::Relative(bias)) => bias,
    };
    let buckets = ints(bias.buckets, "bias buckets", dims.tq + dims.tk - 1)?;
    let table = real(bias.table, "relative_attention_bias", bias.table.len())?;
    let rows = table.len() / dims.h.max(1);
    check_rows("bias buckets", buckets, rows)?;
    Ok(Some(Bias::Relative(PositionBias { table, buckets })))
}
