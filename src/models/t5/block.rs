//! One block of either stack: its attention sub-layers and its feed-forward, each forward
//! beside its backward, which runs the same ops in exact reverse.

use super::cross::CrossActs;
use super::weights::{T5AttnWeights, T5BlockWeights, T5Stack, T5};
use crate::backend::{AttnBias, AttnDims, Backend, BiasRef, DType, PrefixKv};
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{hold, linear, output, FrontRows};
use crate::models::prefix::{t5_block, PrefixInputs};

/// One attention sub-layer's saved state.
pub struct AttnActs<B: Backend> {
    pub(super) q: B::Buf,   // (B, Tq, A)
    pub(super) k: B::Buf,   // (B, Tk, A)
    pub(super) v: B::Buf,   // (B, Tk, A)
    pub(super) lse: B::Buf, // (B, H, Tq) F32
}

/// What one block keeps for backward under `Recompute::None`.
pub struct T5BlockActs<B: Backend> {
    attn_in: B::Buf,   // (B, Tq, C)  block input = rms-norm input
    attn_rstd: B::Buf, // (B, Tq)     F32
    attn: AttnActs<B>,
    /// decoder: (cross-attention rms-norm input (B, L, C), its rstd (B, L), cross-attention state)
    cross: Option<(B::Buf, B::Buf, CrossActs<B>)>,
    ffn_in: B::Buf,          // (B, Tq, C)  rms-norm input
    ffn_rstd: B::Buf,        // (B, Tq)     F32
    ffn_pre: B::Buf,         // (B, Tq, F)  activation input (the gate when gated)
    ffn_lin: Option<B::Buf>, // (B, Tq, F) the ungated branch
}

impl<B: Backend> T5BlockActs<B> {
    pub(super) fn named(&self) -> Vec<(&'static str, &B::Buf)> {
        let mut v = vec![
            ("attn_in", &self.attn_in),
            ("attn_rstd", &self.attn_rstd),
            ("q", &self.attn.q),
            ("k", &self.attn.k),
            ("v", &self.attn.v),
            ("lse", &self.attn.lse),
            ("ffn_in", &self.ffn_in),
            ("ffn_rstd", &self.ffn_rstd),
            ("ffn_pre", &self.ffn_pre),
        ];
        if let Some(lin) = &self.ffn_lin {
            v.push(("ffn_lin", lin));
        }
        if let Some((x, r, a)) = &self.cross {
            v.extend([("cross_in", x), ("cross_rstd", r)]);
            v.extend(a.named());
        }
        v
    }
}

/// What the feed-forward keeps for backward.
pub(super) struct FfnActs<B: Backend> {
    rstd: B::Buf,        // (N) F32 of the rms-norm
    pre: B::Buf,         // (N, F) activation input (the gate when gated)
    lin: Option<B::Buf>, // (N, F) the ungated branch
}

/// Where d of the cross-attention's key and value input goes.
pub(super) enum KvGrad<'a, Buf> {
    /// cross-attention: into d of the encoder output, added (true) or, by the first block
    /// the backward reaches, written whole (false)
    Memory(&'a mut Buf, bool),
    /// cross-attention over a frozen encoder: nowhere (its two GEMMs skipped)
    Frozen,
}

/// One attention sub-layer's call: its weights, what its keys carry (a prefix block, the
/// key mask, a relative bias, the causal mask) and its sizes, Tq queries over Tk keys.
pub(super) struct AttnCall<'a, B: Backend> {
    pub(super) w: &'a T5AttnWeights<B>,
    pub(super) prefix: Option<PrefixKv<'a, B::Buf>>,
    pub(super) mask: &'a B::Buf, // (B, Tk) I32
    pub(super) bias: Option<BiasRef<'a, B::Buf>>,
    pub(super) causal: bool,
    pub(super) b: usize,
    pub(super) tq: usize,
    pub(super) tk: usize,
}

// by hand: a derive would require B: Copy
impl<B: Backend> Clone for AttnCall<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for AttnCall<'_, B> {}

/// Which stack a block belongs to, with what its attention reads.
pub(super) struct StackCtx<'a, B: Backend> {
    pub(super) name: &'static str,
    pub(super) stack: &'a T5Stack<B>,
    pub(super) b: usize,
    pub(super) tq: usize,
    pub(super) mask: &'a B::Buf,
    pub(super) buckets: &'a B::Buf,
    pub(super) causal: bool,
    /// decoder: the encoder output (B, T, C), its key mask (B, T), and T
    pub(super) memory: Option<(&'a B::Buf, &'a B::Buf, usize)>,
    /// prefix tuning's blocks, and the encoder's layer count (the placement needs it)
    pub(super) prefix: Option<(&'a PrefixInputs<B>, usize)>,
}

impl<'a, B: Backend> StackCtx<'a, B> {
    /// The prefix block self-attention layer l reads, if any.
    pub(super) fn prefix_kv(&self, l: usize) -> Option<PrefixKv<'a, B::Buf>> {
        let (pre, enc) = self.prefix?;
        t5_block(pre.placement, self.memory.is_some(), l, enc, pre.blocks).map(|n| pre.block(n))
    }

    /// Block l's self-attention: Tq queries over themselves, with the relative bias.
    pub(super) fn self_attn(&self, l: usize) -> AttnCall<'a, B> {
        AttnCall {
            w: &self.stack.blocks[l].attn,
            prefix: self.prefix_kv(l),
            mask: self.mask,
            bias: Some(BiasRef {
                table: &self.stack.rel_bias,
                buckets: self.buckets,
            }),
            causal: self.causal,
            b: self.b,
            tq: self.tq,
            tk: self.tq,
        }
    }
}

// by hand: a derive would require B: Copy
impl<B: Backend> Clone for StackCtx<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for StackCtx<'_, B> {}

impl<B: Backend> T5<B> {
    fn attn_dims(&self, b: usize, tq: usize, tk: usize) -> AttnDims {
        AttnDims {
            b,
            tq,
            tk,
            h: self.cfg.num_heads,
            hkv: self.cfg.num_heads,
            d: self.cfg.d_kv,
        }
    }

    /// out (B, Tq, C) = o(attention(q(hq), k(hkv), v(hkv))), keeping q, k, v and lse.
    pub(super) fn attention_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        hq: &B::Buf,
        hkv: &B::Buf,
        call: AttnCall<B>,
    ) -> Result<(B::Buf, AttnActs<B>)> {
        let AttnCall { w, b, tq, tk, .. } = call;
        let (c, a) = (self.cfg.d_model, self.cfg.inner_dim());
        let dims = self.attn_dims(b, tq, tk);
        let q = linear(be, acct, hq, &w.q, None, b * tq, c, a)?;
        let k = linear(be, acct, hkv, &w.k, None, b * tk, c, a)?;
        let v = linear(be, acct, hkv, &w.v, None, b * tk, c, a)?;
        let (mut ctx, mut lse) = (
            output(be, be.act_dtype(), b * tq * a)?,
            output(be, DType::F32, b * dims.h * tq)?,
        );
        let (prefix, mask, causal) = (call.prefix, call.mask, call.causal);
        let bias = call.bias.map(AttnBias::Relative);
        be.attention_fwd(
            &mut ctx, &mut lse, &q, &k, &v, prefix, mask, bias, causal, 1.0, dims,
        )?;
        let out = linear(be, acct, &ctx, &w.o, None, b * tq, a, c)?;
        Ok((out, AttnActs { q, k, v, lse }))
    }

    /// The cross-attention's backward (as written; no prefix block reads it): dhq (B, Tq, C)
    /// = d of the query input, written whole (an `output` buffer will do); d of the key/value
    /// input goes where `dhkv` says.
    pub(super) fn attention_bwd(
        &self,
        be: &B,
        dhq: &mut B::Buf,
        dhkv: KvGrad<'_, B::Buf>,
        a: &AttnActs<B>,
        dout: &B::Buf,
        call: AttnCall<B>,
    ) -> Result<()> {
        let (c, at) = (self.cfg.d_model, self.cfg.inner_dim());
        let [dq, dk, dv] = self.attention_grads(be, None, a, dout, call)?;
        let AttnCall { w, b, tq, tk, .. } = call;
        be.linear_bwd(dhq, &dq, &w.q, b * tq, c, at, false)?;
        let (dkv, accumulate) = match dhkv {
            KvGrad::Memory(d, accumulate) => (d, accumulate),
            KvGrad::Frozen => return Ok(()),
        };
        be.linear_bwd(dkv, &dk, &w.k, b * tk, c, at, accumulate)?;
        be.linear_bwd(dkv, &dv, &w.v, b * tk, c, at, true)?;
        Ok(())
    }

    /// [dq (B, Tq, A), dk, dv (B, Tk, A)]: d of the attention's q, k and v from dout
    /// (B, Tq, C), through the output projection and the attention; with a prefix block, its
    /// gradient into `dprefix`.
    fn attention_grads(
        &self,
        be: &B,
        dprefix: Option<&mut B::Buf>,
        a: &AttnActs<B>,
        dout: &B::Buf,
        call: AttnCall<B>,
    ) -> Result<[B::Buf; 3]> {
        let AttnCall { w, b, tq, tk, .. } = call;
        let (c, at) = (self.cfg.d_model, self.cfg.inner_dim());
        let act = be.act_dtype();
        let dims = self.attn_dims(b, tq, tk);
        let mut dctx = output(be, act, b * tq * at)?;
        be.linear_bwd(&mut dctx, dout, &w.o, b * tq, at, c, false)?;
        let (mut dq, mut dk, mut dv) = (
            output(be, act, b * tq * at)?,
            output(be, act, b * tk * at)?,
            output(be, act, b * tk * at)?,
        );
        let (prefix, mask, causal) = (call.prefix, call.mask, call.causal);
        let bias = call.bias.map(AttnBias::Relative);
        be.attention_bwd(
            &mut dq, &mut dk, &mut dv, dprefix, &dctx, &a.q, &a.k, &a.v, prefix, &a.lse, mask,
            bias, causal, 1.0, dims, false,
        )?;
        Ok([dq, dk, dv])
    }

    /// dh (M, C) = dq·Wq + dk·Wk + dv·Wv, written whole, of [dq, dk, dv] (M, A): d of the
    /// self-attention's input (the rms-norm's output) over M rows.
    fn qkv_bwd(
        &self,
        be: &B,
        dh: &mut B::Buf,
        dqkv: [&B::Buf; 3],
        w: &T5AttnWeights<B>,
        m: usize,
    ) -> Result<()> {
        let (c, at) = (self.cfg.d_model, self.cfg.inner_dim());
        for (i, (g, wt)) in dqkv.into_iter().zip([&w.q, &w.k, &w.v]).enumerate() {
            be.linear_bwd(dh, g, wt, m, c, at, i > 0)?;
        }
        Ok(())
    }

    /// d block input (M, C) at the `front` rows only, from dx (B·T, C) (d of the
    /// self-attention sub-layer's output) and the attention's [dq, dk, dv] (B·T, A): the
    /// residual's part there, and the rms-norm's backward of the query, key and value
    /// products, run at those rows alone (both are row-wise).
    fn front_bwd(
        &self,
        be: &B,
        front: &FrontRows<B>,
        dx: &B::Buf,
        dqkv: [B::Buf; 3],
        w: &T5BlockWeights<B>,
        a: &T5BlockActs<B>,
    ) -> Result<B::Buf> {
        let (m, c, at) = (front.m, self.cfg.d_model, self.cfg.inner_dim());
        let mut d = front.gather(be, dx, c)?;
        if m == 0 {
            return Ok(d);
        }
        let mut dh = output(be, be.act_dtype(), m * c)?;
        let [dq, dk, dv] = dqkv.map(|g| front.gather(be, &g, at));
        self.qkv_bwd(be, &mut dh, [&dq?, &dk?, &dv?], &w.attn, m)?;
        // the norm's statistics at those rows, recomputed: the forward's ops on the same rows
        let x = front.gather(be, &a.attn_in, c)?;
        let (mut h, mut rstd) = (
            output(be, be.act_dtype(), m * c)?,
            output(be, DType::F32, m)?,
        );
        let eps = self.cfg.layer_norm_epsilon;
        be.rmsnorm_fwd(&mut h, &mut rstd, &x, &w.attn_ln, m, c, eps)?;
        be.rmsnorm_bwd(&mut d, &dh, &x, &w.attn_ln, &rstd, m, c, true)?;
        Ok(d)
    }

    /// One pre-norm block on x (B, Tq, C), which it takes over as the residual stream.
    pub(super) fn block_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        l: usize,
        x: B::Buf,
        ctx: StackCtx<B>,
        save: bool,
    ) -> Result<(B::Buf, Option<T5BlockActs<B>>)> {
        let w = &ctx.stack.blocks[l];
        let (n, c, eps) = (
            ctx.b * ctx.tq,
            self.cfg.d_model,
            self.cfg.layer_norm_epsilon,
        );
        let act = be.act_dtype();
        // self-attention: x1 = x + o(attn(rms(x)))
        let attn_in = x;
        if save {
            hold(be, acct, format!("{}.{l}.attn_in", ctx.name), &attn_in);
        }
        let (mut h, mut attn_rstd) = (output(be, act, n * c)?, output(be, DType::F32, n)?);
        be.rmsnorm_fwd(&mut h, &mut attn_rstd, &attn_in, &w.attn_ln, n, c, eps)?;
        let (attn_out, attn) = self.attention_fwd(be, acct, &h, &h, ctx.self_attn(l))?;
        let mut x1 = output(be, act, n * c)?;
        be.add_fwd(&mut x1, &attn_in, &attn_out, n * c)?;
        // cross-attention (decoder): x2 = x1 + o(attn(rms(x1), memory))
        let (x2, cross) = match (&w.cross, ctx.memory) {
            (Some((cross_ln, cross_w)), Some((memory, mem_mask, tk))) => {
                if save {
                    hold(be, acct, format!("{}.{l}.cross_in", ctx.name), &x1);
                }
                let (mut h, mut rstd) = (output(be, act, n * c)?, output(be, DType::F32, n)?);
                be.rmsnorm_fwd(&mut h, &mut rstd, &x1, cross_ln, n, c, eps)?;
                let (out, a) =
                    self.cross_fwd(be, acct, cross_w, &h, memory, mem_mask, ctx.b, ctx.tq, tk)?;
                let mut x2 = output(be, act, n * c)?;
                be.add_fwd(&mut x2, &x1, &out, n * c)?;
                (x2, Some((x1, rstd, a)))
            }
            _ => (x1, None),
        };
        let ffn_in = x2;
        if save {
            hold(be, acct, format!("{}.{l}.ffn_in", ctx.name), &ffn_in);
        }
        let (out, ffn) = self.ffn_fwd(be, acct, w, &ffn_in, n)?;
        let FfnActs {
            rstd: ffn_rstd,
            pre: ffn_pre,
            lin: ffn_lin,
        } = ffn;
        if !save {
            return Ok((out, None));
        }
        let acts = T5BlockActs {
            attn_in,
            attn_rstd,
            attn,
            cross,
            ffn_in,
            ffn_rstd,
            ffn_pre,
            ffn_lin,
        };
        for (name, buf) in acts.named() {
            if !matches!(name, "attn_in" | "cross_in" | "ffn_in") {
                hold(be, acct, format!("{}.{l}.{name}", ctx.name), buf);
            }
        }
        Ok((out, Some(acts)))
    }

    /// The feed-forward sub-layer on its input x (N, C): out = x + wo(act(wi_0 h) * wi_1 h),
    /// or x + wo(act(wi h)), h = rms(x); returns out (N, C) and what backward reads.
    pub(super) fn ffn_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &T5BlockWeights<B>,
        x: &B::Buf,
        n: usize,
    ) -> Result<(B::Buf, FfnActs<B>)> {
        let (c, f, act) = (self.cfg.d_model, self.cfg.d_ff, be.act_dtype());
        let (mut h, mut rstd) = (output(be, act, n * c)?, output(be, DType::F32, n)?);
        be.rmsnorm_fwd(
            &mut h,
            &mut rstd,
            x,
            &w.ffn_ln,
            n,
            c,
            self.cfg.layer_norm_epsilon,
        )?;
        let pre = linear(be, acct, &h, &w.ffn.wi, None, n, c, f)?;
        let lin = (w.ffn.wi_1.as_ref())
            .map(|wi_1| linear(be, acct, &h, wi_1, None, n, c, f))
            .transpose()?;
        let mut g = output(be, act, n * f)?;
        match &lin {
            Some(lin) => be.gated_act_fwd(&mut g, &pre, lin, self.cfg.dense_act, n * f)?,
            None => be.act_fwd(&mut g, &pre, self.cfg.dense_act, n * f)?,
        }
        let ffn_out = linear(be, acct, &g, &w.ffn.wo, None, n, f, c)?;
        let mut out = output(be, act, n * c)?;
        be.add_fwd(&mut out, x, &ffn_out, n * c)?;
        Ok((out, FfnActs { rstd, pre, lin }))
    }

    /// dx (B, Tq, C) holds d block output on entry and d block input on exit (the residual
    /// stream accumulates in place); block_fwd's ops in exact reverse. `dmemory`: d encoder
    /// output (decoder; None when the encoder is frozen), and whether it holds later blocks'
    /// parts to add to (else this block writes it). `dprefix`: the prefix table's gradient,
    /// when there is a prefix. With `front`, d block input is wanted at its rows only: dx
    /// becomes (M, C), those rows' (`front_bwd`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_bwd(
        &self,
        be: &B,
        dx: &mut B::Buf,
        dmemory: Option<(&mut B::Buf, bool)>,
        dprefix: Option<&mut B::Buf>,
        a: &T5BlockActs<B>,
        l: usize,
        ctx: StackCtx<B>,
        front: Option<&FrontRows<B>>,
    ) -> Result<()> {
        let w = &ctx.stack.blocks[l];
        let (n, c, f) = (ctx.b * ctx.tq, self.cfg.d_model, self.cfg.d_ff);
        let act = be.act_dtype();
        // feed-forward
        let mut dg = output(be, act, n * f)?;
        be.linear_bwd(&mut dg, dx, &w.ffn.wo, n, f, c, false)?;
        let mut dpre = output(be, act, n * f)?;
        let mut dh = output(be, act, n * c)?;
        match (&a.ffn_lin, &w.ffn.wi_1) {
            (Some(lin), Some(wi_1)) => {
                let mut dlin = output(be, act, n * f)?;
                be.gated_act_bwd(
                    &mut dpre,
                    &mut dlin,
                    &dg,
                    &a.ffn_pre,
                    lin,
                    self.cfg.dense_act,
                    n * f,
                    false,
                )?;
                be.linear_bwd(&mut dh, &dlin, wi_1, n, c, f, false)?;
                be.linear_bwd(&mut dh, &dpre, &w.ffn.wi, n, c, f, true)?;
            }
            _ => {
                be.act_bwd(&mut dpre, &dg, &a.ffn_pre, self.cfg.dense_act, n * f, false)?;
                be.linear_bwd(&mut dh, &dpre, &w.ffn.wi, n, c, f, false)?;
            }
        }
        // the residual stream: dx holds the skip path's gradient
        be.rmsnorm_bwd(dx, &dh, &a.ffn_in, &w.ffn_ln, &a.ffn_rstd, n, c, true)?;
        // cross-attention
        if let (
            Some((cross_in, cross_rstd, cross)),
            Some((cross_ln, cross_w)),
            Some((memory, mem_mask, tk)),
        ) = (&a.cross, &w.cross, ctx.memory)
        {
            let mut dh = output(be, act, n * c)?;
            let dkv = match dmemory {
                Some((dmem, accumulate)) => KvGrad::Memory(dmem, accumulate),
                None => KvGrad::Frozen,
            };
            self.cross_bwd(
                be, &mut dh, dkv, cross_w, cross, dx, memory, mem_mask, ctx.b, ctx.tq, tk,
            )?;
            be.rmsnorm_bwd(dx, &dh, cross_in, cross_ln, cross_rstd, n, c, true)?;
        }
        // self-attention: nothing to do where d block input is wanted at no row (the
        // decoder's first block: its input is the frozen label embeddings) and no prefix
        // block reads the attention's gradient
        if let Some(front) = front.filter(|f| f.m == 0 && ctx.prefix_kv(l).is_none()) {
            *dx = front.gather(be, dx, c)?;
            return Ok(());
        }
        let call = ctx.self_attn(l);
        let dprefix = dprefix.filter(|_| call.prefix.is_some());
        let dqkv = self.attention_grads(be, dprefix, &a.attn, dx, call)?;
        if let Some(front) = front {
            *dx = self.front_bwd(be, front, dx, dqkv, w, a)?;
            return Ok(());
        }
        let mut dh = output(be, act, n * c)?;
        let [dq, dk, dv] = &dqkv;
        self.qkv_bwd(be, &mut dh, [dq, dk, dv], &w.attn, n)?;
        be.rmsnorm_bwd(dx, &dh, &a.attn_in, &w.attn_ln, &a.attn_rstd, n, c, true)?;
        Ok(())
    }
}
