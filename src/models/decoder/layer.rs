//! One decoder layer, pre-norm: x + o(attention(q, k, v of norm(x))), then + mlp(norm(·)); the
//! forward beside the backward, which runs the same ops in exact reverse. Sizes: N = B·S rows,
//! C hidden, H heads over Hkv key/value heads of D, I the MLP width.
//!
//! Accumulation: the layer's backward takes d output in `dx` and leaves d input there (the
//! residual stream accumulates in place; both norms' backward add into it).

use super::inputs::DecoderInputs;
use super::weights::{Decoder, DecoderLayerWeights, Mlp, Norm};
use crate::backend::{AttnBias, AttnDims, Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{hold, linear, output, zeros, FrontRows};

/// The last `rows` positions of every batch row, where the last layer's output is wanted: a
/// loss that reads only target rows needs nothing else of it, and past its keys and values
/// (which every query reads) the last layer is row-wise: its queries, the attention's output
/// projection, its MLP and the final norm then run on B·rows rows instead of B·S.
pub struct Tail<B: Backend> {
    pub(super) rows: usize,
    idx: B::Buf,         // (B·rows) I32: their flat rows of (B, S)
    pos: Option<B::Buf>, // (B, rows) I32 RoPE positions; None with ALiBi
}

impl<B: Backend> Tail<B> {
    /// The tail that holds every row of `rows` (flat rows of (B, S)), or None when that is
    /// every position (or no row is read: the whole stack runs as before).
    pub(super) fn covering(
        be: &B,
        rows: &[i32],
        inp: &DecoderInputs<B>,
    ) -> Result<Option<Tail<B>>> {
        let (b, s) = (inp.b, inp.s());
        let first = rows.iter().map(|&r| r as usize % s.max(1)).min();
        let Some(first) = first.filter(|&f| f > 0) else {
            return Ok(None);
        };
        let tail = s - first;
        let idx: Vec<i32> = (0..b)
            .flat_map(|bi| (bi * s + first..(bi + 1) * s).map(|r| r as i32))
            .collect();
        // RoPE positions run from the row's prefix length (0 without one) along each row
        let base = |bi| inp.prefix.as_ref().map_or(0, |pre| pre.row_len(bi)) + first;
        let pos: Vec<i32> = (0..b)
            .flat_map(|bi| base(bi)..base(bi) + tail)
            .map(|x| x as i32)
            .collect();
        Ok(Some(Tail {
            rows: tail,
            idx: be.upload_i32(&idx)?,
            pos: inp.pos.as_ref().map(|_| be.upload_i32(&pos)).transpose()?,
        }))
    }

    /// Its index buffers by name, as the accountant sees them (kept until the last layer's
    /// backward).
    pub(super) fn named(&self) -> impl Iterator<Item = (&'static str, &B::Buf)> {
        [
            ("tail.idx", Some(&self.idx)),
            ("tail.pos", self.pos.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, buf)| Some((name, buf?)))
    }

    /// Flat rows of (B, S), all in the tail, as rows of the tail's (B·rows) output.
    pub(super) fn rows_of(&self, rows: &[i32], s: usize) -> Vec<i32> {
        let (s, first) = (s as i32, (s - self.rows) as i32);
        (rows.iter())
            .map(|&r| r / s * self.rows as i32 + r % s - first)
            .collect()
    }

    /// out (B·rows, C) = x (B·S, C) at the tail's rows.
    fn gather(&self, be: &B, x: &B::Buf, m: usize, c: usize) -> Result<B::Buf> {
        let mut out = output(be, be.act_dtype(), m * c)?;
        be.gather_rows(&mut out, x, &self.idx, m, c)?;
        Ok(out)
    }

    /// dx (B·S, C) += d (B·rows, C) at the tail's rows.
    fn scatter(&self, be: &B, dx: &mut B::Buf, d: &B::Buf, m: usize, c: usize) -> Result<()> {
        be.scatter_rows_bwd(dx, d, &self.idx, m, c)
    }
}

/// What a norm keeps for backward: its input and statistics.
pub struct NormActs<B: Backend> {
    pub(super) inp: B::Buf,          // (N, C)
    pub(super) mean: Option<B::Buf>, // (N) F32, LayerNorm only
    pub(super) rstd: B::Buf,         // (N) F32
}

impl<B: Backend> NormActs<B> {
    pub(super) fn named(&self, prefix: &str) -> Vec<(String, &B::Buf)> {
        let mut v = vec![
            (format!("{prefix}_in"), &self.inp),
            (format!("{prefix}_rstd"), &self.rstd),
        ];
        if let Some(m) = &self.mean {
            v.push((format!("{prefix}_mean"), m));
        }
        v
    }
}

impl<B: Backend> Norm<B> {
    /// out (N, C) = norm(x); takes x as the saved input.
    pub(super) fn fwd(
        &self,
        be: &B,
        x: B::Buf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<(B::Buf, NormActs<B>)> {
        let (out, mean, rstd) = self.apply(be, &x, n, c, eps)?;
        Ok((out, NormActs { inp: x, mean, rstd }))
    }

    /// out (N, C) = norm(x), with the statistics: mean (N, LayerNorm only) and rstd (N).
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        be: &B,
        x: &B::Buf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<(B::Buf, Option<B::Buf>, B::Buf)> {
        let mut out = output(be, be.act_dtype(), n * c)?;
        let mut rstd = output(be, DType::F32, n)?;
        let mean = match self {
            Norm::Layer { w, b } => {
                let mut mean = output(be, DType::F32, n)?;
                be.layernorm_fwd(&mut out, &mut mean, &mut rstd, x, w, b, n, c, eps)?;
                Some(mean)
            }
            Norm::Rms { w } => {
                be.rmsnorm_fwd(&mut out, &mut rstd, x, w, n, c, eps)?;
                None
            }
        };
        Ok((out, mean, rstd))
    }

    /// dx (N, C) += the norm's backward of dout (N, C) with `accumulate` (the residual
    /// stream), else dx = it, written whole.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bwd(
        &self,
        be: &B,
        dx: &mut B::Buf,
        dout: &B::Buf,
        a: &NormActs<B>,
        n: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        match self {
            Norm::Layer { w, .. } => {
                let mean = a
                    .mean
                    .as_ref()
                    .ok_or_else(|| Error::Device("layernorm mean missing".into()))?;
                be.layernorm_bwd(dx, dout, &a.inp, w, mean, &a.rstd, n, c, accumulate)
            }
            Norm::Rms { w } => be.rmsnorm_bwd(dx, dout, &a.inp, w, &a.rstd, n, c, accumulate),
        }
    }
}

/// What a layer's forward keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keep {
    /// nothing (a forward under `Recompute::Layer`, scoring)
    Nothing,
    /// the state for backward; without a gated MLP's up branch when `up` is false
    /// (`Recompute::Mlp`: backward recomputes it)
    State { up: bool },
    /// the rotated keys and values, for a KV cache
    KeyValues,
}

/// What a layer's forward kept.
pub(super) enum Kept<B: Backend> {
    Nothing,
    State(DecoderLayerActs<B>),
    /// k, v (N, Hkv·D), k rotated
    KeyValues(B::Buf, B::Buf),
}

/// What one layer keeps for backward under `Recompute::None`: the nonlinear state only
/// (`Recompute::Mlp` leaves out `mlp_up`).
pub struct DecoderLayerActs<B: Backend> {
    attn_norm: NormActs<B>, // the layer input (N, C) and its statistics
    q: B::Buf,              // (N, H·D) rotated
    k: B::Buf,              // (N, Hkv·D) rotated
    v: B::Buf,              // (N, Hkv·D)
    lse: B::Buf,            // (B, H, S) F32
    mlp_norm: NormActs<B>,  // x + attention (N, C) and its statistics
    mlp_pre: B::Buf,        // (N, I) the activation's input (the gate when gated)
    mlp_up: Option<B::Buf>, // (N, I) the gated MLP's up branch, unless recomputed
}

impl<B: Backend> DecoderLayerActs<B> {
    /// Every saved tensor by name, as the memory accountant knows them.
    pub(super) fn named(&self) -> Vec<(String, &B::Buf)> {
        let mut v = self.attn_norm.named("attn_norm");
        v.extend([
            ("q".to_string(), &self.q),
            ("k".to_string(), &self.k),
            ("v".to_string(), &self.v),
            ("lse".to_string(), &self.lse),
            ("mlp_pre".to_string(), &self.mlp_pre),
        ]);
        v.extend(self.mlp_norm.named("mlp_norm"));
        if let Some(up) = &self.mlp_up {
            v.push(("mlp_up".to_string(), up));
        }
        v
    }
}

impl<B: Backend> Decoder<B> {
    /// Attention over (B, S) with the prompt in front: causal, H over Hkv heads.
    pub(super) fn attn_dims(&self, b: usize, tq: usize, tk: usize) -> AttnDims {
        AttnDims {
            b,
            tq,
            tk,
            h: self.cfg.num_heads,
            hkv: self.cfg.num_kv_heads,
            d: self.cfg.head_dim,
        }
    }

    /// ALiBi for BLOOM, none for RoPE models (their positions are in q and k).
    pub(super) fn attn_bias(&self) -> Option<AttnBias<'_, B::Buf>> {
        self.inv_freq.is_none().then_some(AttnBias::Alibi)
    }

    pub(super) fn attn_scale(&self) -> f64 {
        1.0 / (self.cfg.head_dim as f64).sqrt()
    }

    /// Rotates x (B, S, heads, D) in place at positions `pos` (B, S); nothing with ALiBi.
    pub(super) fn rope(
        &self,
        be: &B,
        x: &mut B::Buf,
        pos: Option<&B::Buf>,
        (b, s, heads): (usize, usize, usize),
        backward: bool,
    ) -> Result<()> {
        let (Some(inv), Some(pos)) = (&self.inv_freq, pos) else {
            return Ok(());
        };
        let d = self.cfg.head_dim;
        if backward {
            be.rope_bwd(x, inv, pos, b, s, heads, d)
        } else {
            be.rope_fwd(x, inv, pos, b, s, heads, d)
        }
    }

    /// q (N, H·D), k, v (N, Hkv·D) of the normed rows h (N, C), q and k rotated at `pos`
    /// (B, S): the projections every forward shares (training, prefill, the decode step).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn qkv_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &DecoderLayerWeights<B>,
        h: &B::Buf,
        pos: Option<&B::Buf>,
        b: usize,
        s: usize,
    ) -> Result<(B::Buf, B::Buf, B::Buf)> {
        let q = self.q_fwd(be, acct, w, h, pos, b, s)?;
        let (k, v) = self.kv_fwd(be, acct, w, h, pos, b, s)?;
        Ok((q, k, v))
    }

    /// q (N, H·D) of the normed rows h (N, C), rotated at `pos` (B, S).
    #[allow(clippy::too_many_arguments)]
    fn q_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &DecoderLayerWeights<B>,
        h: &B::Buf,
        pos: Option<&B::Buf>,
        b: usize,
        s: usize,
    ) -> Result<B::Buf> {
        let (n, c, qw) = (b * s, self.cfg.hidden_size, self.cfg.q_width());
        let mut q = linear(be, acct, h, &w.q.w, w.q.b.as_ref(), n, c, qw)?;
        self.rope(be, &mut q, pos, (b, s, self.cfg.num_heads), false)?;
        Ok(q)
    }

    /// k, v (N, Hkv·D) of the normed rows h (N, C), k rotated at `pos` (B, S).
    #[allow(clippy::too_many_arguments)]
    fn kv_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &DecoderLayerWeights<B>,
        h: &B::Buf,
        pos: Option<&B::Buf>,
        b: usize,
        s: usize,
    ) -> Result<(B::Buf, B::Buf)> {
        let (n, c, kvw) = (b * s, self.cfg.hidden_size, self.cfg.kv_width());
        let mut k = linear(be, acct, h, &w.k.w, w.k.b.as_ref(), n, c, kvw)?;
        let v = linear(be, acct, h, &w.v.w, w.v.b.as_ref(), n, c, kvw)?;
        self.rope(be, &mut k, pos, (b, s, self.cfg.num_kv_heads), false)?;
        Ok((k, v))
    }

    /// The MLP half of a layer on x1 (N, C), which it takes over: out = x1 + mlp(norm(x1)),
    /// the norm's state, the activation's input (the gate) and the gated MLP's up branch.
    #[allow(clippy::type_complexity)]
    pub(super) fn mlp_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &DecoderLayerWeights<B>,
        x1: B::Buf,
        n: usize,
    ) -> Result<(B::Buf, NormActs<B>, B::Buf, Option<B::Buf>)> {
        let (c, i, act) = (
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
            be.act_dtype(),
        );
        // out = x1 + down(act(up h2)) or x1 + down(act(gate h2) · up h2), h2 = norm(x1)
        let (h2, mlp_norm) = w.mlp_norm.fwd(be, x1, n, c, self.cfg.norm_eps)?;
        let mut g = output(be, act, n * i)?;
        let (pre, up_branch, down) = match &w.mlp {
            Mlp::Plain { up, down } => {
                let pre = linear(be, acct, &h2, &up.w, up.b.as_ref(), n, c, i)?;
                be.act_fwd(&mut g, &pre, self.act(), n * i)?;
                (pre, None, down)
            }
            Mlp::Gated { gate, up, down } => {
                let pre = linear(be, acct, &h2, &gate.w, gate.b.as_ref(), n, c, i)?;
                let lin = linear(be, acct, &h2, &up.w, up.b.as_ref(), n, c, i)?;
                be.gated_act_fwd(&mut g, &pre, &lin, self.act(), n * i)?;
                (pre, Some(lin), down)
            }
        };
        drop(h2);
        let mlp_out = linear(be, acct, &g, &down.w, down.b.as_ref(), n, i, c)?;
        let mut out = output(be, act, n * c)?;
        be.add_fwd(&mut out, &mlp_norm.inp, &mlp_out, n * c)?;
        Ok((out, mlp_norm, pre, up_branch))
    }

    /// The gated MLP's up branch (N, I) = up(norm(x1)), recomputed from the MLP norm's saved
    /// input x1 (N, C) under `Recompute::Mlp`: the same ops on the same values as the forward,
    /// so the same bits.
    fn mlp_up_fwd(
        &self,
        be: &B,
        w: &DecoderLayerWeights<B>,
        mlp_norm: &NormActs<B>,
        n: usize,
    ) -> Result<B::Buf> {
        let Mlp::Gated { up, .. } = &w.mlp else {
            return Err(Error::Device(
                "the up branch of an MLP that is not gated".into(),
            ));
        };
        let (c, i) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let (h2, _, _) = w
            .mlp_norm
            .apply(be, &mlp_norm.inp, n, c, self.cfg.norm_eps)?;
        // not through `linear`: the accountant follows the forward's products only
        let mut lin = be.output(be.act_dtype(), n * i)?;
        be.linear_fwd(&mut lin, &h2, &up.w, up.b.as_ref(), n, c, i)?;
        Ok(lin)
    }

    /// One layer on x (N, C), which it takes over as the residual stream: its output (at the
    /// `tail`'s rows only, (B·rows, C), when given) and what `keep` asks for (the saved state
    /// for backward, or the rotated keys and values for a KV cache).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        l: usize,
        x: B::Buf,
        inp: &DecoderInputs<B>,
        tail: Option<&Tail<B>>,
        keep: Keep,
    ) -> Result<(B::Buf, Kept<B>)> {
        let w = &self.w.layers[l];
        let (b, s) = (inp.b, inp.s());
        let (n, c, qw) = (b * s, self.cfg.hidden_size, self.cfg.q_width());
        let tq = tail.map_or(s, |t| t.rows);
        let (nq, act) = (b * tq, be.act_dtype());
        // attention: x1 = x + o(attention(rope(q h), rope(k h), v h)), h = norm(x), with the
        // queries (and all that follows) at the tail's rows only
        let (h, attn_norm) = w.attn_norm.fwd(be, x, n, c, self.cfg.norm_eps)?;
        let (q, k, v) = match tail {
            None => self.qkv_fwd(be, acct, w, &h, inp.pos.as_ref(), b, s)?,
            Some(t) => {
                let ht = t.gather(be, &h, nq, c)?;
                let q = self.q_fwd(be, acct, w, &ht, t.pos.as_ref(), b, tq)?;
                let (k, v) = self.kv_fwd(be, acct, w, &h, inp.pos.as_ref(), b, s)?;
                (q, k, v)
            }
        };
        drop(h);
        let dims = self.attn_dims(b, tq, s);
        let (mut ctx, mut lse) = (
            output(be, act, nq * qw)?,
            output(be, DType::F32, b * dims.h * tq)?,
        );
        be.attention_fwd(
            &mut ctx,
            &mut lse,
            &q,
            &k,
            &v,
            inp.prefix.as_ref().map(|pre| pre.block(l)),
            &inp.key_mask,
            self.attn_bias(),
            true,
            self.attn_scale(),
            dims,
        )?;
        let attn_out = linear(be, acct, &ctx, &w.o.w, w.o.b.as_ref(), nq, qw, c)?;
        drop(ctx);
        let mut x1 = output(be, act, nq * c)?;
        match tail {
            None => be.add_fwd(&mut x1, &attn_norm.inp, &attn_out, n * c)?,
            Some(t) => be.add_fwd(
                &mut x1,
                &t.gather(be, &attn_norm.inp, nq, c)?,
                &attn_out,
                nq * c,
            )?,
        }
        drop(attn_out);
        let (out, mlp_norm, mlp_pre, mlp_up) = self.mlp_fwd(be, acct, w, x1, nq)?;
        let kept = match keep {
            Keep::Nothing => Kept::Nothing,
            Keep::KeyValues => Kept::KeyValues(k, v),
            Keep::State { up } => {
                let acts = DecoderLayerActs {
                    attn_norm,
                    q,
                    k,
                    v,
                    lse,
                    mlp_norm,
                    mlp_pre,
                    mlp_up: mlp_up.filter(|_| up),
                };
                for (name, buf) in acts.named() {
                    hold(be, acct, format!("layer.{l}.{name}"), buf);
                }
                Kept::State(acts)
            }
        };
        Ok((out, kept))
    }

    /// dx (N, C) holds d layer output on entry and d layer input on exit: layer_fwd's ops in
    /// exact reverse. With a `tail`, dx holds (B·rows, C) on entry (the output's rows) and
    /// becomes (N, C). With a prefix, `dprefix` (its table's shape) += block l's gradient.
    /// With `front` (and no tail), d layer input is wanted at its rows only: dx becomes
    /// (M, C), those rows' (`front_bwd`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_bwd(
        &self,
        be: &B,
        dx: &mut B::Buf,
        dprefix: Option<&mut B::Buf>,
        a: &DecoderLayerActs<B>,
        l: usize,
        inp: &DecoderInputs<B>,
        tail: Option<&Tail<B>>,
        front: Option<&FrontRows<B>>,
    ) -> Result<()> {
        let w: &DecoderLayerWeights<B> = &self.w.layers[l];
        let (b, s) = (inp.b, inp.s());
        let (n, c, qw) = (b * s, self.cfg.hidden_size, self.cfg.q_width());
        let tq = tail.map_or(s, |t| t.rows);
        let (nq, act) = (b * tq, be.act_dtype());
        self.mlp_bwd(be, dx, w, a, nq)?;
        // attention
        let mut dctx = output(be, act, nq * qw)?;
        be.linear_bwd(&mut dctx, dx, &w.o.w, nq, qw, c, false)?;
        let dims = self.attn_dims(b, tq, s);
        let kvw = self.cfg.kv_width();
        let (mut dq, mut dk, mut dv) = (
            output(be, act, nq * qw)?,
            output(be, act, n * kvw)?,
            output(be, act, n * kvw)?,
        );
        be.attention_bwd(
            &mut dq,
            &mut dk,
            &mut dv,
            dprefix,
            &dctx,
            &a.q,
            &a.k,
            &a.v,
            inp.prefix.as_ref().map(|pre| pre.block(l)),
            &a.lse,
            &inp.key_mask,
            self.attn_bias(),
            true,
            self.attn_scale(),
            dims,
            false,
        )?;
        drop(dctx);
        let kv_heads = (b, s, self.cfg.num_kv_heads);
        self.rope(be, &mut dk, inp.pos.as_ref(), kv_heads, true)?;
        let q_pos = tail.map_or(inp.pos.as_ref(), |t| t.pos.as_ref());
        self.rope(be, &mut dq, q_pos, (b, tq, self.cfg.num_heads), true)?;
        if let Some(front) = front.filter(|_| tail.is_none()) {
            *dx = self.front_bwd(be, front, dx, [dq, dk, dv], w, a)?;
            return Ok(());
        }
        let mut dh = output(be, act, n * c)?;
        be.linear_bwd(&mut dh, &dv, &w.v.w, n, c, kvw, false)?;
        be.linear_bwd(&mut dh, &dk, &w.k.w, n, c, kvw, true)?;
        if let Some(t) = tail {
            // the queries' and the residual's gradients, at the tail's rows, into (N, C)
            let mut dht = output(be, act, nq * c)?;
            be.linear_bwd(&mut dht, &dq, &w.q.w, nq, c, qw, false)?;
            t.scatter(be, &mut dh, &dht, nq, c)?;
            let mut dfull = zeros(be, act, n * c)?;
            t.scatter(be, &mut dfull, dx, nq, c)?;
            *dx = dfull;
        } else {
            be.linear_bwd(&mut dh, &dq, &w.q.w, n, c, qw, true)?;
        }
        w.attn_norm.bwd(be, dx, &dh, &a.attn_norm, n, c, true)
    }

    /// d layer input (M, C) at the `front` rows only, from dx (N, C) (d of the attention
    /// half's output) and [dq (N, H·D), dk, dv (N, Hkv·D)] (rotated back): the residual's part
    /// there, and the attention norm's backward of the value, key and query products, run at
    /// those rows alone (both are row-wise).
    fn front_bwd(
        &self,
        be: &B,
        front: &FrontRows<B>,
        dx: &B::Buf,
        [dq, dk, dv]: [B::Buf; 3],
        w: &DecoderLayerWeights<B>,
        a: &DecoderLayerActs<B>,
    ) -> Result<B::Buf> {
        let (m, c, eps) = (front.m, self.cfg.hidden_size, self.cfg.norm_eps);
        let (qw, kvw) = (self.cfg.q_width(), self.cfg.kv_width());
        let mut d = front.gather(be, dx, c)?;
        if m == 0 {
            return Ok(d);
        }
        let mut dh = output(be, be.act_dtype(), m * c)?;
        let parts = [(&dv, &w.v.w, kvw), (&dk, &w.k.w, kvw), (&dq, &w.q.w, qw)];
        for (i, (g, wt, width)) in parts.into_iter().enumerate() {
            be.linear_bwd(
                &mut dh,
                &front.gather(be, g, width)?,
                wt,
                m,
                c,
                width,
                i > 0,
            )?;
        }
        // the norm's statistics at those rows, recomputed: the forward's ops on the same rows
        let x = front.gather(be, &a.attn_norm.inp, c)?;
        let (_, norm) = w.attn_norm.fwd(be, x, m, c, eps)?;
        w.attn_norm.bwd(be, &mut d, &dh, &norm, m, c, true)?;
        Ok(d)
    }

    /// dx (N, C) += the MLP half's backward of dx (its output's gradient, the residual
    /// stream): layer_fwd's MLP ops in exact reverse, recomputing the up branch if not kept.
    fn mlp_bwd(
        &self,
        be: &B,
        dx: &mut B::Buf,
        w: &DecoderLayerWeights<B>,
        a: &DecoderLayerActs<B>,
        n: usize,
    ) -> Result<()> {
        let (c, i, act) = (
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
            be.act_dtype(),
        );
        let down = match &w.mlp {
            Mlp::Plain { down, .. } | Mlp::Gated { down, .. } => down,
        };
        let mut dg = output(be, act, n * i)?;
        be.linear_bwd(&mut dg, dx, &down.w, n, i, c, false)?;
        let mut dh2 = output(be, act, n * c)?;
        let mut dpre = output(be, act, n * i)?;
        match &w.mlp {
            Mlp::Gated { gate, up, .. } => {
                let recomputed;
                let lin = match &a.mlp_up {
                    Some(lin) => lin,
                    None => {
                        recomputed = self.mlp_up_fwd(be, w, &a.mlp_norm, n)?;
                        &recomputed
                    }
                };
                let mut dlin = output(be, act, n * i)?;
                be.gated_act_bwd(
                    &mut dpre,
                    &mut dlin,
                    &dg,
                    &a.mlp_pre,
                    lin,
                    self.act(),
                    n * i,
                    false,
                )?;
                be.linear_bwd(&mut dh2, &dlin, &up.w, n, c, i, false)?;
                be.linear_bwd(&mut dh2, &dpre, &gate.w, n, c, i, true)?;
            }
            Mlp::Plain { up, .. } => {
                be.act_bwd(&mut dpre, &dg, &a.mlp_pre, self.act(), n * i, false)?;
                be.linear_bwd(&mut dh2, &dpre, &up.w, n, c, i, false)?;
            }
        }
        drop((dg, dpre));
        w.mlp_norm.bwd(be, dx, &dh2, &a.mlp_norm, n, c, true)
    }
}
