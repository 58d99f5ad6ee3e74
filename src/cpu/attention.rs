//! Fused attention, forward and backward, with key padding, an optional causal mask, and
//! T5's relative position bias read from the frozen (buckets, H) table.
//!
//! Nothing of size Tq×Tk is ever stored: forward saves only the log-sum-exp per query row,
//! and backward recomputes each row of probabilities from it. Because D_i = Σ_j P_ij dP_ij
//! equals dO_i·O_i, backward does not need the forward output either.
//! Backward overwrites dq, dk and dv.

use super::real::Real;
use rayon::prelude::*;

/// q, out, dq: (B, Tq, H, D); k, v, dk, dv: (B, Tk, H, D); lse: (B, H, Tq); key_mask: (B, Tk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub h: usize,
    pub d: usize,
}

/// T5's relative position bias, never expanded to (H, Tq, Tk).
#[derive(Clone, Copy, Debug)]
pub struct PositionBias<'a, F> {
    /// (num_buckets, H), the frozen `relative_attention_bias.weight` of block 0
    pub table: &'a [F],
    /// (Tq + Tk - 1): the bucket of relative position j - i, stored at index j - i + Tq - 1
    pub buckets: &'a [i32],
}

/// T5's bucketing of a relative position (memory position minus query position), exactly as
/// transformers' `T5Attention._relative_position_bucket`, including its float32 logarithm.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        return (bucket + distance) as usize;
    }
    // float32 throughout, as torch computes it on a float tensor with Python scalars
    let ratio = (distance as f32 / max_exact as f32).ln();
    let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + (ratio / scale * (num_buckets - max_exact) as f32) as i64;
    (bucket + large.min(num_buckets - 1)) as usize
}

/// The (Tq + Tk - 1) bucket lookup that `PositionBias::buckets` expects.
pub fn bucket_lookup(
    tq: usize,
    tk: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<i32> {
    (0..tq + tk - 1)
        .map(|idx| {
            let rel = idx as i64 - (tq as i64 - 1);
            relative_position_bucket(rel, bidirectional, num_buckets, max_distance) as i32
        })
        .collect()
}

struct Head<F> {
    q: Vec<F>, // (Tq, D)
    k: Vec<F>, // (Tk, D)
    v: Vec<F>, // (Tk, D)
}

fn gather_head<F: Real>(src: &[F], bi: usize, hi: usize, t: usize, dims: &AttnDims) -> Vec<F> {
    let (h, d) = (dims.h, dims.d);
    let mut dst = Vec::with_capacity(t * d);
    for s in 0..t {
        let off = ((bi * t + s) * h + hi) * d;
        dst.extend_from_slice(&src[off..off + d]);
    }
    dst
}

fn scatter_head<F: Real>(dst: &mut [F], src: &[F], bi: usize, hi: usize, t: usize, dims: &AttnDims) {
    let (h, d) = (dims.h, dims.d);
    for s in 0..t {
        let off = ((bi * t + s) * h + hi) * d;
        dst[off..off + d].copy_from_slice(&src[s * d..(s + 1) * d]);
    }
}

fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// Fills `scores` (Tk) with the logits of query row i; masked keys get -inf.
#[allow(clippy::too_many_arguments)]
fn score_row<F: Real>(
    scores: &mut [F],
    head: &Head<F>,
    i: usize,
    bi: usize,
    hi: usize,
    key_mask: &[i32],
    bias: Option<&PositionBias<F>>,
    causal: bool,
    scale: F,
    dims: &AttnDims,
) {
    let d = dims.d;
    let qi = &head.q[i * d..(i + 1) * d];
    for (j, s) in scores.iter_mut().enumerate() {
        let visible = key_mask[bi * dims.tk + j] != 0 && !(causal && j > i);
        *s = if visible {
            let mut x = scale * dot(qi, &head.k[j * d..(j + 1) * d]);
            if let Some(pb) = bias {
                let bucket = pb.buckets[j + dims.tq - 1 - i] as usize;
                x += pb.table[bucket * dims.h + hi];
            }
            x
        } else {
            F::neg_infinity()
        };
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
    let AttnDims { b, tq, tk, h, d } = dims;
    let scale = F::from_f64(scale);
    let per_head: Vec<(Vec<F>, Vec<F>)> = (0..b * h)
        .into_par_iter()
        .map(|bh| {
            let (bi, hi) = (bh / h, bh % h);
            let head = Head {
                q: gather_head(q, bi, hi, tq, &dims),
                k: gather_head(k, bi, hi, tk, &dims),
                v: gather_head(v, bi, hi, tk, &dims),
            };
            let mut o = vec![F::ZERO; tq * d];
            let mut l = vec![F::ZERO; tq];
            let mut scores = vec![F::ZERO; tk];
            for i in 0..tq {
                score_row(&mut scores, &head, i, bi, hi, key_mask, bias.as_ref(), causal, scale, &dims);
                let m = scores.iter().copied().fold(F::neg_infinity(), F::max);
                if !m.is_finite() {
                    l[i] = F::neg_infinity();
                    continue;
                }
                let mut sum = F::ZERO;
                let oi = &mut o[i * d..(i + 1) * d];
                for j in 0..tk {
                    let p = (scores[j] - m).exp();
                    sum += p;
                    if p != F::ZERO {
                        for (acc, &vj) in oi.iter_mut().zip(&head.v[j * d..(j + 1) * d]) {
                            *acc += p * vj;
                        }
                    }
                }
                let inv = F::ONE / sum;
                oi.iter_mut().for_each(|x| *x *= inv);
                l[i] = m + sum.ln();
            }
            (o, l)
        })
        .collect();
    for (bh, (o, l)) in per_head.iter().enumerate() {
        let (bi, hi) = (bh / h, bh % h);
        scatter_head(out, o, bi, hi, tq, &dims);
        lse[bh * tq..(bh + 1) * tq].copy_from_slice(l);
    }
}

/// dq, dk, dv from dout, recomputing each probability row from q, k and the saved lse.
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
    let per_head: Vec<[Vec<F>; 3]> = (0..b * h)
        .into_par_iter()
        .map(|bh| {
            let (bi, hi) = (bh / h, bh % h);
            let head = Head {
                q: gather_head(q, bi, hi, tq, &dims),
                k: gather_head(k, bi, hi, tk, &dims),
                v: gather_head(v, bi, hi, tk, &dims),
            };
            let dout_h = gather_head(dout, bi, hi, tq, &dims);
            let (mut dq_h, mut dk_h, mut dv_h) =
                (vec![F::ZERO; tq * d], vec![F::ZERO; tk * d], vec![F::ZERO; tk * d]);
            let mut p = vec![F::ZERO; tk];
            let mut dp = vec![F::ZERO; tk];
            for i in 0..tq {
                let l = lse[bh * tq + i];
                if !l.is_finite() {
                    continue;
                }
                score_row(&mut p, &head, i, bi, hi, key_mask, bias.as_ref(), causal, scale, &dims);
                let doi = &dout_h[i * d..(i + 1) * d];
                let mut big_d = F::ZERO;
                for j in 0..tk {
                    p[j] = (p[j] - l).exp();
                    dp[j] = if p[j] != F::ZERO { dot(doi, &head.v[j * d..(j + 1) * d]) } else { F::ZERO };
                    big_d += p[j] * dp[j];
                }
                let qi = &head.q[i * d..(i + 1) * d];
                for j in 0..tk {
                    if p[j] == F::ZERO {
                        continue;
                    }
                    let ds = p[j] * (dp[j] - big_d) * scale;
                    for x in 0..d {
                        dq_h[i * d + x] += ds * head.k[j * d + x];
                        dk_h[j * d + x] += ds * qi[x];
                        dv_h[j * d + x] += p[j] * doi[x];
                    }
                }
            }
            [dq_h, dk_h, dv_h]
        })
        .collect();
    for (bh, [dq_h, dk_h, dv_h]) in per_head.iter().enumerate() {
        let (bi, hi) = (bh / h, bh % h);
        scatter_head(dq, dq_h, bi, hi, tq, &dims);
        scatter_head(dk, dk_h, bi, hi, tk, &dims);
        scatter_head(dv, dv_h, bi, hi, tk, &dims);
    }
}
