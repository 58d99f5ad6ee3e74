//! What attention adds to its scaled scores, built once per (batch row, head) so that masking
//! is a vector add instead of a branch per score: the key padding mask as an additive row (0 or
//! -inf per key), the position bias (T5's relative bias or ALiBi) as one row along the
//! diagonal, and the causal mask as the end of each query's visible key range. Forward and
//! backward (attention.rs) read the same terms. Positions are aligned at the end
//! (src/backend/attention.rs), and the P prefix keys, always visible, come first.

use super::real::Real;
use super::{check_rows, ints, real, CpuBuf};
use crate::backend::{alibi_slope, AttnBias, AttnDims};
use crate::error::Result;

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
    /// The bias of head hi at relative position j − i = t + 1 − Tq (both forms depend on
    /// j − i only); `dims` counts the prefix in Tk.
    fn diag(&self, t: usize, hi: usize, dims: &AttnDims) -> F {
        match self {
            Bias::Relative(pb) => pb.table[pb.buckets[t] as usize * dims.h + hi],
            Bias::Alibi => F::from_f64(alibi_slope(hi, dims.h) * (t as f64 + 1.0 - dims.tk as f64)),
        }
    }
}

/// What a (batch row, head) adds to its scaled scores: the padding mask as 0 or -inf per key,
/// the position bias as one diagonal row (it depends on j − i only), and the causal mask as
/// the end of each query's visible key range. `dims` counts the P prefix keys in Tk.
pub(super) struct ScoreTerms<F> {
    /// (P + Tk): 0 for a visible key (every prefix key), -inf for padding
    mask: Vec<F>,
    /// (Tq + P + Tk − 1): the bias of j − i at index j − i + Tq − 1
    diag: Option<Vec<F>>,
    causal: bool,
    /// prefix keys, visible to every query
    p: usize,
}

impl<F: Real> ScoreTerms<F> {
    pub(super) fn new(
        bi: usize,
        key_mask: &[i32],
        p: usize,
        causal: bool,
        dims: &AttnDims,
    ) -> Self {
        let real = dims.tk - p;
        let mut mask = vec![F::ZERO; dims.tk];
        for (m, &k) in mask[p..]
            .iter_mut()
            .zip(&key_mask[bi * real..(bi + 1) * real])
        {
            if k == 0 {
                *m = F::neg_infinity();
            }
        }
        ScoreTerms {
            mask,
            diag: None,
            causal,
            p,
        }
    }

    /// Hides the first `n` prefix keys (a row reading a shorter prefix of a stack, or none).
    pub(super) fn hide_prefix(&mut self, n: usize) {
        self.mask[..n.min(self.p)].fill(F::neg_infinity());
    }

    /// Sets the bias row of head hi.
    pub(super) fn set_head(&mut self, bias: Option<&Bias<F>>, hi: usize, dims: &AttnDims) {
        self.diag = bias.map(|b| {
            (0..(dims.tq + dims.tk).saturating_sub(1))
                .map(|t| b.diag(t, hi, dims))
                .collect()
        });
    }

    /// (mask, bias) of query i, each (P + Tk).
    pub(super) fn row(&self, i: usize, dims: &AttnDims) -> (&[F], Option<&[F]>) {
        let at = dims.tq - 1 - i;
        (
            &self.mask,
            self.diag.as_deref().map(|d| &d[at..at + dims.tk]),
        )
    }

    /// The end of query i's visible keys: with the causal mask, keys j ≤ i + Tk − Tq
    /// (positions aligned at the end) and every prefix key; else all.
    pub(super) fn end(&self, i: usize, dims: &AttnDims) -> usize {
        if !self.causal {
            return dims.tk;
        }
        (i + 1 + dims.tk)
            .saturating_sub(dims.tq)
            .max(self.p)
            .min(dims.tk)
    }
}

/// The bias over `p` prefix keys and the real ones.
pub(super) fn cpu_bias<'a, F: Real>(
    bias: Option<AttnBias<'a, CpuBuf<F>>>,
    dims: &AttnDims,
    p: usize,
) -> Result<Option<Bias<'a, F>>> {
    let bias = match bias {
        None => return Ok(None),
        Some(AttnBias::Alibi) => return Ok(Some(Bias::Alibi)),
        Some(AttnBias::Relative(bias)) => bias,
    };
    let buckets = ints(bias.buckets, "bias buckets", dims.tq + p + dims.tk - 1)?;
    let table = real(bias.table, "relative_attention_bias", bias.table.len())?;
    let rows = table.len() / dims.h.max(1);
    check_rows("bias buckets", buckets, rows)?;
    Ok(Some(Bias::Relative(PositionBias { table, buckets })))
}
