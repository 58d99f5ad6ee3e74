//! The decoder's cross-attention over the encoder output, its key and value products folded
//! into the queries where that costs less (the CPU, decoder targets short against the input).
//!
//! Per head h, with E (T, C) a batch row's encoder output and Wk_h, Wv_h (D, C) the head's
//! rows of Wk and Wv: the scores q_h·(E·Wk_hᵀ)ᵀ are (q_h·Wk_h)·Eᵀ, and the context
//! P·(E·Wv_hᵀ) is (P·E)·Wv_hᵀ. So the attention runs over E itself, one head of width C
//! whose queries are the L·H rows q'_h = q_h·Wk_h of a batch row, (B·L, H, C) = (B, L·H, C);
//! its output rows P·E come back through Wv_hᵀ per head. The key and value products at every
//! encoder row, 2·B·T·C·A multiply-adds a layer (A = H·D) forward and as many backward,
//! become per-head products at the B·L decoder rows (`linear_heads_*`, 2·B·L·A·C) and an
//! attention of width C (2·B·L·H·T·C in place of 2·B·L·T·A): L·(D + T) / (T·D) of the
//! multiply-adds, 0.18 at t5-base's bench shapes (L 8, T 148, D 64). Backward, d of the
//! encoder output is the attention's dk + dv (both read E). Only the float32 rounding
//! differs from the products in their written order (tests/t5_cross_fold.rs).

use super::block::{AttnActs, AttnCall, KvGrad};
use super::weights::{T5AttnWeights, T5};
use crate::backend::{AttnDims, Backend, DType, DeviceKind};
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{linear, output};

/// Whether the cross-attention folds its key and value products into its queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossFold {
    /// on the CPU, where the fold takes at most half the multiply-adds of the products it
    /// replaces: 2·L·(D + T) <= T·D (its products are smaller, so run at a lower rate); the
    /// CUDA attention kernels take head dims up to 128 (not C), so never on a GPU
    Auto,
    /// the products as written: K and V at every encoder row
    Never,
    /// always (tests; the CPU only)
    Always,
}

/// What the cross-attention keeps for backward.
pub enum CrossActs<B: Backend> {
    /// q (B, L, A), k, v (B, T, A), lse (B, H, L)
    Direct(AttnActs<B>),
    /// q' (B·L, H, C), the queries over the encoder output, and lse (B, L·H) F32
    Folded { qf: B::Buf, lse: B::Buf },
}

impl<B: Backend> CrossActs<B> {
    /// The held tensors, by name.
    pub(super) fn named(&self) -> Vec<(&'static str, &B::Buf)> {
        match self {
            CrossActs::Direct(a) => vec![
                ("cross_q", &a.q),
                ("cross_k", &a.k),
                ("cross_v", &a.v),
                ("cross_lse", &a.lse),
            ],
            CrossActs::Folded { qf, lse } => vec![("cross_q", qf), ("cross_lse", lse)],
        }
    }
}

/// Whether the fold takes at most half the multiply-adds of the products it replaces, for L
/// decoder rows over T encoder rows at head dim D: 2·L·(D + T) <= T·D (`CrossFold::Auto`
/// on the CPU; the ceiling's products count it).
pub fn fold_pays(l: usize, t: usize, d: usize) -> bool {
    2 * l * (d + t) <= t * d
}

/// The cross-attention as written: L queries over the T encoder rows under their key mask
/// (B, T), no prefix, bias or causal mask.
fn cross_call<'a, B: Backend>(
    w: &'a T5AttnWeights<B>,
    mask: &'a B::Buf,
    b: usize,
    l: usize,
    t: usize,
) -> AttnCall<'a, B> {
    AttnCall {
        w,
        prefix: None,
        mask,
        bias: None,
        causal: false,
        b,
        tq: l,
        tk: t,
    }
}

impl<B: Backend> T5<B> {
    /// Whether a cross-attention of B·L queries over T encoder rows folds (`CrossFold`).
    fn folds(&self, be: &B, l: usize, t: usize) -> bool {
        match self.cross_fold {
            CrossFold::Never => false,
            CrossFold::Always => true,
            CrossFold::Auto => be.device() == DeviceKind::Cpu && fold_pays(l, t, self.cfg.d_kv),
        }
    }

    /// The folded attention: one head of width C, the L·H query rows of each batch row.
    fn fold_dims(&self, b: usize, l: usize, t: usize) -> AttnDims {
        AttnDims {
            b,
            tq: l * self.cfg.num_heads,
            tk: t,
            h: 1,
            hkv: 1,
            d: self.cfg.d_model,
        }
    }

    /// (C, H, D, the activations' type): the folded products' sizes.
    fn fold_sizes(&self, be: &B) -> (usize, usize, usize, DType) {
        let cfg = &self.cfg;
        (cfg.d_model, cfg.num_heads, cfg.d_kv, be.act_dtype())
    }

    /// out (B, L, C) = o(attention(q(h), k(memory), v(memory))) for h (B, L, C) and the
    /// encoder output `memory` (B, T, C) under its key mask (B, T); folded or as written.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cross_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &T5AttnWeights<B>,
        h: &B::Buf,
        memory: &B::Buf,
        mask: &B::Buf,
        b: usize,
        l: usize,
        t: usize,
    ) -> Result<(B::Buf, CrossActs<B>)> {
        if !self.folds(be, l, t) {
            let call = cross_call(w, mask, b, l, t);
            let (out, a) = self.attention_fwd(be, acct, h, memory, call)?;
            return Ok((out, CrossActs::Direct(a)));
        }
        let (c, heads, d, act) = self.fold_sizes(be);
        let m = b * l;
        let q = linear(be, acct, h, &w.q, None, m, c, heads * d)?;
        // q'_h (M, C) = q_h (M, D) · Wk_h (D, C)
        acct.linear_input(be.buf_id(&q));
        let mut qf = output(be, act, m * heads * c)?;
        be.linear_heads_bwd(&mut qf, &q, &w.k, m, heads, c, d, false)?;
        let (mut ctxf, mut lse) = (
            output(be, act, m * heads * c)?,
            output(be, DType::F32, m * heads)?,
        );
        let dims = self.fold_dims(b, l, t);
        be.attention_fwd(
            &mut ctxf, &mut lse, &qf, memory, memory, None, mask, None, false, 1.0, dims,
        )?;
        // ctx_h (M, D) = ctx'_h (M, C) · Wv_hᵀ
        acct.linear_input(be.buf_id(&ctxf));
        let mut ctx = output(be, act, m * heads * d)?;
        be.linear_heads_fwd(&mut ctx, &ctxf, &w.v, m, heads, c, d)?;
        let out = linear(be, acct, &ctx, &w.o, None, m, heads * d, c)?;
        Ok((out, CrossActs::Folded { qf, lse }))
    }

    /// cross_fwd's backward: dh (B, L, C) = d of its query input, written whole; d of the
    /// encoder output goes where `dkv` says.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cross_bwd(
        &self,
        be: &B,
        dh: &mut B::Buf,
        dkv: KvGrad<'_, B::Buf>,
        w: &T5AttnWeights<B>,
        acts: &CrossActs<B>,
        dout: &B::Buf,
        memory: &B::Buf,
        mask: &B::Buf,
        b: usize,
        l: usize,
        t: usize,
    ) -> Result<()> {
        let (qf, lse) = match acts {
            CrossActs::Direct(a) => {
                let call = cross_call(w, mask, b, l, t);
                return self.attention_bwd(be, dh, dkv, a, dout, call);
            }
            CrossActs::Folded { qf, lse } => (qf, lse),
        };
        let (c, heads, d, act) = self.fold_sizes(be);
        let (m, a) = (b * l, heads * d);
        let mut dctx = output(be, act, m * a)?;
        be.linear_bwd(&mut dctx, dout, &w.o, m, a, c, false)?;
        let mut dctxf = output(be, act, m * heads * c)?;
        be.linear_heads_bwd(&mut dctxf, &dctx, &w.v, m, heads, c, d, false)?;
        let (mut dqf, mut dk, mut dv) = (
            output(be, act, m * heads * c)?,
            output(be, act, b * t * c)?,
            output(be, act, b * t * c)?,
        );
        let dims = self.fold_dims(b, l, t);
        be.attention_bwd(
            &mut dqf, &mut dk, &mut dv, None, &dctxf, qf, memory, memory, None, lse, mask, None,
            false, 1.0, dims, false,
        )?;
        let mut dq = output(be, act, m * a)?;
        be.linear_heads_fwd(&mut dq, &dqf, &w.k, m, heads, c, d)?;
        be.linear_bwd(dh, &dq, &w.q, m, c, a, false)?;
        match dkv {
            KvGrad::Frozen => Ok(()),
            KvGrad::Memory(dmem, false) => be.add_fwd(dmem, &dk, &dv, b * t * c),
            KvGrad::Memory(dmem, true) => {
                be.add_inplace(dmem, &dk, b * t * c)?;
                be.add_inplace(dmem, &dv, b * t * c)
            }
        }
    }
}
