//! Fused attention, forward and backward, with key padding, an optional causal mask,
//! grouped-query attention, and a position bias: T5's relative bias read from the frozen
//! (buckets, H) table, or ALiBi computed from the head index. The KV-cache decode step is in
//! attention_decode.rs.
//!
//! Nothing of size Tq×Tk is ever stored: forward saves only the log-sum-exp per query row,
//! and backward recomputes the probabilities from it, a block of query rows at a time (a
//! transient (block, Tk) tile per head in flight). Because D_i = Σ_j P_ij dP_ij equals
//! dO_i·O_i, backward does not need the forward output either.
//! Backward adds into dq, dk and dv with `accumulate`; else each task first zeroes the rows
//! it alone writes, so the result is bit for bit that of adding into zeroed buffers
//! (src/backend/mod.rs) without a separate pass over them.
//!
//! Each (batch, head) pair is one independent task in forward; backward takes one (batch,
//! key/value head) pair per task and runs its H/Hkv query heads in turn, so that each task
//! alone writes its dk and dv. Within a task the products are small GEMMs on strided views of
//! the (B, T, H, D) tensors, so nothing is transposed, copied or repeated.
//! Positions are aligned at the end (src/backend/attention.rs): query i sits at i + Tk − Tq.
//! The padding mask, the position bias and the causal limits a tile adds to its scores are
//! built in attention_mask.rs; the backend trait's checks of the buffers are in
//! attention_ops.rs.

use super::attention_mask::ScoreTerms;
use super::matmul::{gemm_strided, Mat, SendPtr};
use super::real::Real;
use crate::backend::{AttnDims, PrefixRows};
use rayon::prelude::*;

pub use super::attention_mask::{Bias, PositionBias};

/// Query rows per tile under a causal mask: big enough for efficient GEMMs, small enough
/// that the clamp of a tile's key range skips much of the hidden part.
const QBLOCK: usize = 64;

/// Without a causal mask, a tile takes as many query rows as fit this many scores (128 KiB
/// in float32; backward holds two such tiles per thread, within a core's L2), at least
/// QBLOCK: every tile packs the head's keys (and in backward its values) for its products
/// again, so at bert-base's 148 keys one tile of all 148 rows instead of three of 64 saves
/// 10% of the attention's time (bench/history.md).
const TILE_SCORES: usize = 32 * 1024;

/// Query rows per tile for `tq` queries over `tk` keys (the prefix counted): tiles of equal
/// size without a causal mask, QBLOCK with one. Never 0.
fn tile_rows(tq: usize, tk: usize, causal: bool) -> usize {
    if causal {
        return QBLOCK;
    }
    let most = (TILE_SCORES / tk.max(1)).max(QBLOCK);
    tq.div_ceil(tq.div_ceil(most).max(1)).max(1)
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

/// Rows r0.. of a matrix.
fn from_row<F>(m: Mat<F>, r0: usize) -> Mat<F> {
    Mat {
        ptr: m.ptr.wrapping_offset(r0 as isize * m.rs),
        ..m
    }
}

/// A row-major (rows, cols) tile as a matrix, starting at column c0.
fn tile<F>(t: &[F], cols: usize, c0: usize) -> Mat<F> {
    Mat {
        ptr: t.as_ptr().wrapping_add(c0),
        rs: cols as isize,
        cs: 1,
    }
}

/// Prefix tuning's keys and values of one layer, in place in the (P, width) table.
#[derive(Clone, Copy, Debug)]
pub struct Prefix<'a, F> {
    /// (P, width)
    pub table: &'a [F],
    pub p: usize,
    pub width: usize,
    /// where a row holds this layer's keys, Hkv·D head-major
    pub k_off: usize,
    /// where a row holds this layer's values
    pub v_off: usize,
    /// batch rows mixing the prefixes of a (K·P, width) stack (`PrefixRows`)
    pub rows: Option<PrefixRows<'a>>,
}

impl<F> Prefix<'_, F> {
    /// The first table row batch row `bi` reads, and how many of its P rows it hides.
    fn of_row(&self, bi: usize) -> (usize, usize) {
        self.rows
            .map_or((0, 0), |r| (r.slot[bi] * self.p, r.hidden[bi]))
    }
}

/// The keys a query block reads: P prefix rows (of key/value head kvh) then Tk real ones.
#[derive(Clone, Copy)]
struct Keys<F> {
    k: Mat<F>,
    v: Mat<F>,
    /// (P, D) views of the prefix's key and value rows of this head
    pk: Mat<F>,
    pv: Mat<F>,
    p: usize,
}

impl<F: Copy> Keys<F> {
    /// Batch row `bi`'s keys (its own prefix of a stack).
    fn new(
        k: Mat<F>,
        v: Mat<F>,
        prefix: Option<&Prefix<F>>,
        bi: usize,
        kvh: usize,
        d: usize,
    ) -> Keys<F> {
        let at = |off: usize, pr: &Prefix<F>| Mat {
            ptr: (pr.table.as_ptr()).wrapping_add(pr.of_row(bi).0 * pr.width + off + kvh * d),
            rs: pr.width as isize,
            cs: 1,
        };
        match prefix {
            Some(pr) => Keys {
                k,
                v,
                pk: at(pr.k_off, pr),
                pv: at(pr.v_off, pr),
                p: pr.p,
            },
            None => Keys {
                k,
                v,
                pk: k,
                pv: v,
                p: 0,
            },
        }
    }
}

/// dst (rows, P + cols) = a (rows, D) · [pk; k[..cols]]ᵀ (the scores), or with `values`
/// a · [pv; v[..cols]]ᵀ (dP), in two products so that the prefix rows are read in place where
/// the table holds them; dst's row stride is `stride`.
#[allow(clippy::too_many_arguments)]
unsafe fn times_keys<F: Real>(
    dst: *mut F,
    rows: usize,
    a: Mat<F>,
    keys: &Keys<F>,
    values: bool,
    cols: usize,
    stride: usize,
    d: usize,
) {
    let (pm, m) = if values {
        (keys.pv, keys.v)
    } else {
        (keys.pk, keys.k)
    };
    let stride = stride as isize;
    if keys.p > 0 {
        gemm_strided(rows, keys.p, d, dst, stride, a, transpose(pm), false);
    }
    if cols > 0 {
        gemm_strided(
            rows,
            cols,
            d,
            dst.wrapping_add(keys.p),
            stride,
            a,
            transpose(m),
            false,
        );
    }
}

/// scores (rows, P + Tk) = scale · q_blk · [pk; k]ᵀ + bias + mask over the tile's keys
/// 0..end, the keys the causal mask hides at -inf; returns `end` (P + Tk without the causal
/// mask; with it, the last row's visible end: the tile's other columns are never read).
/// `dims` counts the P + Tk keys (`with_prefix`).
#[allow(clippy::too_many_arguments)]
fn score_tile<F: Real>(
    scores: &mut [F],
    q: Mat<F>,
    keys: &Keys<F>,
    i0: usize,
    rows: usize,
    terms: &ScoreTerms<F>,
    scale: F,
    dims: &AttnDims,
) -> usize {
    let (tk, p) = (dims.tk, keys.p);
    let end = terms.end(i0 + rows - 1, dims);
    // SAFETY: q's rows i0..i0+rows of this head, the P prefix and end - P real key rows;
    // scores is (rows, Tk) (`dims` counts the prefix in Tk) and end <= Tk.
    unsafe {
        times_keys(
            scores.as_mut_ptr(),
            rows,
            from_row(q, i0),
            keys,
            false,
            end - p,
            tk,
            dims.d,
        )
    };
    for (r, row) in scores.chunks_mut(tk).take(rows).enumerate() {
        let i = i0 + r;
        let lim = terms.end(i, dims);
        let (mask, bias) = terms.row(i, dims);
        F::scale_add_row(
            &mut row[..lim],
            scale,
            &mask[..lim],
            bias.map(|b| &b[..lim]),
        );
        row[lim..end].fill(F::neg_infinity());
    }
    end
}

/// The dims of the whole key sequence: P prefix keys in front of the Tk real ones.
fn with_prefix<F>(dims: AttnDims, prefix: Option<&Prefix<F>>) -> AttnDims {
    AttnDims {
        tk: dims.tk + prefix.map_or(0, |p| p.p),
        ..dims
    }
}

/// out = softmax(scale * q [pk; k]^T + bias + mask) [pv; v]; lse (B, H, Tq) saved for
/// backward. A query row with no visible key gets out = 0 and lse = -inf. `prefix`: the
/// layer's P prefix keys and values in front of the real ones (`PrefixKv`).
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd<F: Real>(
    out: &mut [F],
    lse: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    prefix: Option<Prefix<F>>,
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
    let all = with_prefix(dims, prefix.as_ref());
    let scale = F::from_f64(scale);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let block = tile_rows(tq, all.tk, causal);
    // one probability tile per rayon job, not per task: its values are written before read
    let tile_len = block.min(tq) * all.tk;
    lse.par_chunks_mut(tq)
        .take(b * h)
        .enumerate()
        .for_each_init(
            || vec![F::ZERO; tile_len],
            |p, (bh, lse_bh)| {
                let (bi, hi) = (bh / h, bh % h);
                let kvh = hi / dims.group();
                let qm = head_mat(q.as_ptr(), bi, hi, tq, h, d);
                let keys = Keys::new(
                    head_mat(k.as_ptr(), bi, kvh, tk, hkv, d),
                    head_mat(v.as_ptr(), bi, kvh, tk, hkv, d),
                    prefix.as_ref(),
                    bi,
                    kvh,
                    d,
                );
                let om = head_mat(out_ptr.get(), bi, hi, tq, h, d);
                let mut terms = ScoreTerms::new(bi, key_mask, keys.p, causal, &all);
                terms.hide_prefix(prefix.as_ref().map_or(0, |pr| pr.of_row(bi).1));
                terms.set_head(bias.as_ref(), hi, &all);
                for i0 in (0..tq).step_by(block) {
                    let rows = block.min(tq - i0);
                    let p = &mut p[..rows * all.tk];
                    let end = score_tile(p, qm, &keys, i0, rows, &terms, scale, &all);
                    softmax_tile(p, &mut lse_bh[i0..i0 + rows], end, all.tk);
                    // SAFETY: this task alone writes rows i0..i0+rows of head (bi, hi) of `out`.
                    unsafe { times_values(from_row(om, i0), p, &keys, rows, end, &all) };
                }
            },
        );
}

/// Each row of the (rows, P + Tk) tile's first `end` columns becomes its softmax, and lse
/// its log-sum-exp; a row with no visible key becomes 0, with lse -inf.
fn softmax_tile<F: Real>(p: &mut [F], lse: &mut [F], end: usize, stride: usize) {
    for (row, l) in p.chunks_mut(stride).zip(lse.iter_mut()) {
        let row = &mut row[..end];
        let m = F::row_max(row);
        if !m.is_finite() {
            row.iter_mut().for_each(|x| *x = F::ZERO);
            *l = F::neg_infinity();
            continue;
        }
        let sum = F::exp_sub_sum(row, m);
        F::scale_row(row, F::ONE / sum);
        *l = m + sum.ln();
    }
}

/// dst (rows, D) = p[:, ..end] · [pv; v[..end − P]], p the (rows, P + Tk) probabilities.
///
/// # Safety
/// dst's rows are the caller's alone to write; end <= P + Tk.
unsafe fn times_values<F: Real>(
    dst: Mat<F>,
    p: &[F],
    keys: &Keys<F>,
    rows: usize,
    end: usize,
    dims: &AttnDims,
) {
    let (np, d, dp) = (keys.p, dims.d, dst.ptr as *mut F);
    if np > 0 {
        gemm_strided(rows, d, np, dp, dst.rs, tile(p, dims.tk, 0), keys.pv, false);
    }
    if end > np {
        let pr = tile(p, dims.tk, np);
        gemm_strided(rows, d, end - np, dp, dst.rs, pr, keys.v, np > 0);
    } else if np == 0 {
        // no visible key in the whole tile: out = 0
        for r in 0..rows {
            std::slice::from_raw_parts_mut(dp.offset(r as isize * dst.rs), d).fill(F::ZERO);
        }
    }
}

/// For query rows i0..i0+rows of one head: p (rows, P + Tk) = the probabilities,
/// recomputed from the saved lse, and ds (rows, P + Tk) = dS = P ∘ (dP − D) · scale, with
/// dP = dO·[pv; v]ᵀ and D_i = Σ_j P_ij dP_ij, over the tile's keys 0..end (returned, as
/// `score_tile`'s); the columns past it are never read.
#[allow(clippy::too_many_arguments)]
fn probs_and_dscores<F: Real>(
    p: &mut [F],
    ds: &mut [F],
    qm: Mat<F>,
    keys: &Keys<F>,
    do_blk: Mat<F>,
    lse_blk: &[F],
    i0: usize,
    terms: &ScoreTerms<F>,
    scale: F,
    dims: &AttnDims,
) -> usize {
    let (tk, d, rows) = (dims.tk, dims.d, lse_blk.len());
    let end = score_tile(p, qm, keys, i0, rows, terms, scale, dims);
    for (row, &l) in p.chunks_mut(tk).zip(lse_blk) {
        let row = &mut row[..end];
        if l.is_finite() {
            F::exp_sub_sum(row, l);
        } else {
            row.iter_mut().for_each(|x| *x = F::ZERO);
        }
    }
    // dP (rows, P + end) = dO_blk · [pv; v[..end - P]]ᵀ
    // SAFETY: reads of this head's rows; ds is a local (rows, P + Tk) buffer.
    unsafe {
        times_keys(
            ds.as_mut_ptr(),
            rows,
            do_blk,
            keys,
            true,
            end - keys.p,
            tk,
            d,
        )
    };
    for (prow, dsrow) in p.chunks(tk).zip(ds.chunks_mut(tk)) {
        F::softmax_bwd_row(&mut dsrow[..end], &prow[..end], scale);
    }
    end
}

/// One (batch, key/value head) task's prefix gradient: (P, D) keys and (P, D) values.
struct PrefixGrad<F> {
    dk: Vec<F>,
    dv: Vec<F>,
}

/// dq, dk, dv += their gradients from dout, recomputing the probabilities from q, k and the
/// saved lse, with `acc` (else dq, dk, dv = them); with a prefix, dprefix (P, width) += the
/// gradient of its keys and values at the prefix's offsets, summed over the batch (in batch
/// order, so the sum is deterministic).
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<F: Real>(
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dprefix: Option<&mut [F]>,
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    prefix: Option<Prefix<F>>,
    lse: &[F],
    key_mask: &[i32],
    bias: Option<Bias<F>>,
    causal: bool,
    scale: f64,
    dims: AttnDims,
    acc: bool,
) {
    let AttnDims { b, hkv, d, .. } = dims;
    let ptrs = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    let inputs = (dout, q, k, v, lse);
    // one task per (batch, key/value head): it alone writes that head's dk and dv
    let all = with_prefix(dims, prefix.as_ref());
    // the (p, ds) tiles, one pair per rayon job, not per task: written before read
    let tile_len = tile_rows(dims.tq, all.tk, causal).min(dims.tq) * all.tk;
    let grads: Vec<Option<PrefixGrad<F>>> = (0..b * hkv)
        .into_par_iter()
        .map_init(
            || (vec![F::ZERO; tile_len], vec![F::ZERO; tile_len]),
            |tiles, bkv| {
                bwd_task(
                    tiles,
                    bkv,
                    ptrs,
                    inputs,
                    prefix.as_ref(),
                    key_mask,
                    bias.as_ref(),
                    causal,
                    scale,
                    dims,
                    acc,
                )
            },
        )
        .collect();
    let (Some(dprefix), Some(pr)) = (dprefix, prefix) else {
        return;
    };
    for (bkv, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        let (kvh, (first, _)) = (bkv % hkv, pr.of_row(bkv / hkv));
        for r in 0..pr.p {
            let row = &mut dprefix[(first + r) * pr.width..(first + r + 1) * pr.width];
            let src = r * d..(r + 1) * d;
            let kd = pr.k_off + kvh * d;
            let vd = pr.v_off + kvh * d;
            for (x, &g) in row[kd..kd + d].iter_mut().zip(&g.dk[src.clone()]) {
                *x += g;
            }
            for (x, &g) in row[vd..vd + d].iter_mut().zip(&g.dv[src]) {
                *x += g;
            }
        }
    }
}

type BwdPtrs<F> = (SendPtr<F>, SendPtr<F>, SendPtr<F>);
type BwdInputs<'a, F> = (&'a [F], &'a [F], &'a [F], &'a [F], &'a [F]);

/// attention_bwd for key/value head `bkv` = (bi, kvh): its query heads' dq, its dk and dv
/// (zeroed first without `acc`), and its (P, D) prefix gradients, returned; `(p, ds)` two
/// (rows, P + Tk) scratch tiles of `tile_rows` rows.
#[allow(clippy::too_many_arguments)]
fn bwd_task<F: Real>(
    (p, ds): &mut (Vec<F>, Vec<F>),
    bkv: usize,
    (dq, dk, dv): BwdPtrs<F>,
    (dout, q, k, v, lse): BwdInputs<'_, F>,
    prefix: Option<&Prefix<F>>,
    key_mask: &[i32],
    bias: Option<&Bias<F>>,
    causal: bool,
    scale: f64,
    dims: AttnDims,
    acc: bool,
) -> Option<PrefixGrad<F>> {
    let AttnDims {
        tq, tk, h, hkv, d, ..
    } = dims;
    let all = with_prefix(dims, prefix);
    let scale = F::from_f64(scale);
    let (bi, kvh) = (bkv / hkv, bkv % hkv);
    let keys = Keys::new(
        head_mat(k.as_ptr(), bi, kvh, tk, hkv, d),
        head_mat(v.as_ptr(), bi, kvh, tk, hkv, d),
        prefix,
        bi,
        kvh,
        d,
    );
    let np = keys.p;
    let dkm = head_mat(dk.get(), bi, kvh, tk, hkv, d);
    let dvm = head_mat(dv.get(), bi, kvh, tk, hkv, d);
    if !acc {
        // SAFETY: this task alone writes head (bi, kvh) of dk and dv.
        unsafe {
            zero_rows(dkm, tk, d);
            zero_rows(dvm, tk, d);
        }
    }
    let mut grad = prefix.map(|_| PrefixGrad {
        dk: vec![F::ZERO; np * d],
        dv: vec![F::ZERO; np * d],
    });
    let block = tile_rows(tq, all.tk, causal);
    let mut terms = ScoreTerms::new(bi, key_mask, np, causal, &all);
    terms.hide_prefix(prefix.map_or(0, |pr| pr.of_row(bi).1));
    for hi in kvh * dims.group()..(kvh + 1) * dims.group() {
        let qm = head_mat(q.as_ptr(), bi, hi, tq, h, d);
        let dom = head_mat(dout.as_ptr(), bi, hi, tq, h, d);
        let dqm = head_mat(dq.get(), bi, hi, tq, h, d);
        if !acc {
            // SAFETY: this task alone writes query head (bi, hi) of dq.
            unsafe { zero_rows(dqm, tq, d) };
        }
        let lse_bh = &lse[(bi * h + hi) * tq..(bi * h + hi + 1) * tq];
        terms.set_head(bias, hi, &all);
        for i0 in (0..tq).step_by(block) {
            let rows = block.min(tq - i0);
            let (p, ds) = (&mut p[..rows * all.tk], &mut ds[..rows * all.tk]);
            let do_blk = from_row(dom, i0);
            let lse_blk = &lse_bh[i0..i0 + rows];
            let end = probs_and_dscores(p, ds, qm, &keys, do_blk, lse_blk, i0, &terms, scale, &all);
            let q_blk = from_row(qm, i0);
            let dq_blk = from_row(dqm, i0);
            // SAFETY: this task alone writes the query heads of key/value head (bi, kvh) of
            // dq, that head of dk and dv, and its own prefix gradient.
            unsafe {
                key_grads(
                    dq_blk,
                    (dkm, dvm),
                    (p, ds),
                    (q_blk, do_blk),
                    &keys,
                    rows,
                    end,
                    &all,
                );
                if let Some(g) = grad.as_mut() {
                    prefix_grads(dq_blk, g, (p, ds), (q_blk, do_blk), &keys, rows, &all);
                }
            }
        }
    }
    grad
}

/// Zeroes the first `rows` rows (D columns each) of a strided matrix.
///
/// # Safety
/// The caller alone writes those rows, which lie inside their tensor.
unsafe fn zero_rows<F: Real>(m: Mat<F>, rows: usize, d: usize) {
    for r in 0..rows {
        let row = (m.ptr as *mut F).wrapping_offset(r as isize * m.rs);
        // all bits zero is +0.0 in f32 and f64 alike: a memset, not an element loop
        std::ptr::write_bytes(row, 0, d);
    }
}

/// A query tile's share of the real keys' gradients: dq_blk (rows, D) += dS[:, P..end]·k,
/// dk[..end − P] += dSᵀ·q_blk, dv[..end − P] += Pᵀ·dO_blk; (p, ds) the (rows, P + Tk) tiles.
///
/// # Safety
/// The caller alone writes dq_blk's rows and the whole of dk and dv; end <= P + Tk.
#[allow(clippy::too_many_arguments)]
unsafe fn key_grads<F: Real>(
    dq_blk: Mat<F>,
    (dk, dv): (Mat<F>, Mat<F>),
    (p, ds): (&[F], &[F]),
    (q_blk, do_blk): (Mat<F>, Mat<F>),
    keys: &Keys<F>,
    rows: usize,
    end: usize,
    dims: &AttnDims,
) {
    let (np, d) = (keys.p, dims.d);
    let n = end - np;
    if n == 0 {
        return;
    }
    let (ds_real, p_real) = (tile(ds, dims.tk, np), tile(p, dims.tk, np));
    let dq = dq_blk.ptr as *mut F;
    gemm_strided(rows, d, n, dq, dq_blk.rs, ds_real, keys.k, true);
    let (dkp, dvp) = (dk.ptr as *mut F, dv.ptr as *mut F);
    gemm_strided(n, d, rows, dkp, dk.rs, transpose(ds_real), q_blk, true);
    gemm_strided(n, d, rows, dvp, dv.rs, transpose(p_real), do_blk, true);
}

/// A query tile's share of the prefix keys' gradients: dq_blk += dS[:, ..P]·pk, and the
/// task's (P, D) sums dk += dS[:, ..P]ᵀ·q_blk, dv += P[:, ..P]ᵀ·dO_blk.
///
/// # Safety
/// As `key_grads`.
unsafe fn prefix_grads<F: Real>(
    dq_blk: Mat<F>,
    g: &mut PrefixGrad<F>,
    (p, ds): (&[F], &[F]),
    (q_blk, do_blk): (Mat<F>, Mat<F>),
    keys: &Keys<F>,
    rows: usize,
    dims: &AttnDims,
) {
    let (np, d) = (keys.p, dims.d);
    let (ds_pre, p_pre) = (tile(ds, dims.tk, 0), tile(p, dims.tk, 0));
    let dq = dq_blk.ptr as *mut F;
    gemm_strided(rows, d, np, dq, dq_blk.rs, ds_pre, keys.pk, true);
    let rs = d as isize;
    let (dkp, dvp) = (g.dk.as_mut_ptr(), g.dv.as_mut_ptr());
    gemm_strided(np, d, rows, dkp, rs, transpose(ds_pre), q_blk, true);
    gemm_strided(np, d, rows, dvp, rs, transpose(p_pre), do_blk, true);
}
