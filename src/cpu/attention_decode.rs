//! The KV-cache decode step of generation, the attention stem's third op (its trait in
//! src/backend/attention.rs, kernel `attention_decode` in kernels/attention_decode.cu): one new
//! query per batch row over the first Tk rows of a (B, Tmax, Hkv, D) cache, forward only, with key
//! padding, grouped-query heads, ALiBi or T5's relative bias.

use super::attention_mask::PositionBias;
use super::real::Real;
use super::{check_rows, ints, real, real_mut, CpuBuf};
use crate::backend::attention::{check_decode, decode_lookup_len};
use crate::backend::{alibi_slope, AttnBias, AttnDims};
use crate::error::Result;
use rayon::prelude::*;

/// The bias the decode step adds: ALiBi, or T5's relative bias with `buckets` (Tk) the
/// bucket of each key (the Tk entries of the (2·Tmax − 1) lookup its query row reads).
#[derive(Clone, Copy, Debug)]
pub enum DecodeBias<'a, F> {
    Alibi,
    Relative(PositionBias<'a, F>),
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
    bias: Option<DecodeBias<F>>,
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
        // key j's bias: at distance j − (Tk − 1) from the query
        let add = |j: usize| match bias {
            None => F::ZERO,
            Some(DecodeBias::Alibi) => slope * F::from_f64(j as f64 - (tk - 1) as f64),
            Some(DecodeBias::Relative(pb)) => pb.table[pb.buckets[j] as usize * h + hi],
        };
        let scores: Vec<Option<F>> = (0..tk)
            .map(|j| {
                (key_mask[bi * tmax + j] != 0).then(|| {
                    let s = qi
                        .iter()
                        .zip(&k[row(j)..row(j) + d])
                        .map(|(&a, &b)| a * b)
                        .sum::<F>();
                    scale * s + add(j)
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

/// `AttentionOps::attention_decode` of the CPU backend: the buffers checked, then
/// `attention_decode`.
#[allow(clippy::too_many_arguments)]
pub(super) fn cpu_attention_decode<F: Real>(
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
    check_decode(&dims, tmax)?;
    let bias = match bias {
        None => None,
        Some(AttnBias::Alibi) => Some(DecodeBias::Alibi),
        Some(AttnBias::Relative(pb)) => {
            let lookup = ints(pb.buckets, "bias buckets", decode_lookup_len(tmax))?;
            // query row Tk − 1 of the (Tmax, Tmax) lookup: key j at j − (Tk − 1) + Tmax − 1
            let buckets = &lookup[tmax - dims.tk..tmax];
            let table = real(pb.table, "relative_attention_bias", pb.table.len())?;
            check_rows("bias buckets", buckets, table.len() / h.max(1))?;
            Some(DecodeBias::Relative(PositionBias { table, buckets }))
        }
    };
    attention_decode(
        real_mut(out, "attention_decode out", b * h * d)?,
        real(q, "attention_decode q", b * h * d)?,
        real(k, "attention_decode k cache", b * tmax * hkv * d)?,
        real(v, "attention_decode v cache", b * tmax * hkv * d)?,
        ints(key_mask, "attention_decode key mask", b * tmax)?,
        bias,
        scale,
        dims,
        tmax,
    );
    Ok(())
}
