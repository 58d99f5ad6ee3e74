//! The encoder: each layer's forward and backward side by side, then the whole stack's.
//! Sizes: B batch, T = P + tokens, C hidden, H heads, I intermediate.

use super::inputs::{position_table, BertInputs};
use super::packed::{check_unsaved, Packing};
use super::tail::{Tail, Wanted};
use super::weights::Bert;
use crate::backend::{AttnDims, Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{hold, linear, output, prompt_or_prefix, Capture, Recompute};

/// What one layer keeps for backward under `Recompute::None`. Tq = T, or the tail's R rows
/// per batch row in the last layer when it runs at a tail (`tail.rs`).
pub struct BertLayerActs<B: Backend> {
    q: B::Buf,        // (B, Tq, C)  attention input
    k: B::Buf,        // (B, T, C)
    v: B::Buf,        // (B, T, C)
    lse: B::Buf,      // (B, H, Tq)  F32
    ln1_in: B::Buf,   // (B, Tq, C)  x + attention output
    ln1_mean: B::Buf, // (B, Tq)     F32
    ln1_rstd: B::Buf, // (B, Tq)     F32
    ffn_pre: B::Buf,  // (B, Tq, I)  activation input
    ln2_in: B::Buf,   // (B, Tq, C)  ln1 output + ffn output
    ln2_mean: B::Buf, // (B, Tq)     F32
    ln2_rstd: B::Buf, // (B, Tq)     F32
}

const LAYER_ACT_NAMES: [&str; 11] = [
    "q", "k", "v", "lse", "ln1_in", "ln1_mean", "ln1_rstd", "ffn_pre", "ln2_in", "ln2_mean",
    "ln2_rstd",
];

impl<B: Backend> BertActs<B> {
    /// The rows the last layer ran at (None: every row).
    pub fn tail(&self) -> Option<&Tail<B>> {
        self.tail.as_ref()
    }
}

impl<B: Backend> BertLayerActs<B> {
    fn bufs(&self) -> [&B::Buf; 11] {
        [
            &self.q,
            &self.k,
            &self.v,
            &self.lse,
            &self.ln1_in,
            &self.ln1_mean,
            &self.ln1_rstd,
            &self.ffn_pre,
            &self.ln2_in,
            &self.ln2_mean,
            &self.ln2_rstd,
        ]
    }
}

enum Saved<B: Backend> {
    Full(BertLayerActs<B>),
    /// (B, T, C) the layer input, under `Recompute::Layer`
    Input(B::Buf),
}

/// The embedding's output and what its backward reads.
pub(super) struct Embedded<B: Backend> {
    emb_in: B::Buf,   // (B, T, C)  word + position + type, before the LayerNorm
    emb_mean: B::Buf, // (B, T)     F32
    emb_rstd: B::Buf, // (B, T)     F32
    pub x: B::Buf,    // (B, T, C)  the first layer's input
}

/// Everything the encoder keeps for backward.
pub struct BertActs<B: Backend> {
    emb_in: B::Buf,   // (B, T, C)  word + position + type, before the LayerNorm
    emb_mean: B::Buf, // (B, T)     F32
    emb_rstd: B::Buf, // (B, T)     F32
    layers: Vec<Saved<B>>,
    /// the rows the last layer ran at, when not every row
    tail: Option<Tail<B>>,
}

impl<B: Backend> Bert<B> {
    /// The attention's sizes with `tq` queries per batch row over every row's keys.
    fn dims(&self, inp: &BertInputs<B>, tq: usize) -> AttnDims {
        AttnDims {
            b: inp.b,
            tq,
            tk: inp.t(),
            h: self.cfg.num_attention_heads,
            hkv: self.cfg.num_attention_heads,
            d: self.cfg.head_dim(),
        }
    }

    /// One post-LN layer; returns its output (B, T, C) and, when `save`, its saved state.
    /// With `packing`, x and the output are the real positions only (N, C), unpacked around
    /// attention alone (nothing saved). With a `tail`, the keys and values alone run at every
    /// row and the output is the tail's rows (B·R, C).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        l: usize,
        x: &B::Buf,
        inp: &BertInputs<B>,
        save: bool,
        packing: Option<&Packing<B>>,
        tail: Option<&Tail<B>>,
    ) -> Result<(B::Buf, Option<BertLayerActs<B>>)> {
        check_unsaved(save, packing)?;
        let lw = &self.w.layers[l];
        let (c, i, eps) = (
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
            self.cfg.layer_norm_eps,
        );
        let tq = tail.map_or(inp.t(), |tl| tl.r);
        let dims = self.dims(inp, tq);
        // n rows of x; nq of the queries and all that follows
        let n = packing.map_or(inp.b * inp.t(), |pk| pk.n);
        let nq = tail.map_or(n, |_| inp.b * tq);
        let (act, h) = (be.act_dtype(), self.cfg.num_attention_heads);
        let scale = 1.0 / (dims.d as f64).sqrt();
        let xq = match (tail, packing) {
            (Some(tl), Some(pk)) => Some(pk.gather_tail(be, x, tl, c)?),
            (Some(tl), None) => Some(tl.gather(be, x, c)?),
            (None, _) => None,
        };
        let xq = xq.as_ref().unwrap_or(x);
        let q = linear(be, acct, xq, &lw.query_w, Some(&lw.query_b), nq, c, c)?;
        let k = linear(be, acct, x, &lw.key_w, Some(&lw.key_b), n, c, c)?;
        let v = linear(be, acct, x, &lw.value_w, Some(&lw.value_b), n, c, c)?;
        let (mut ctx, mut lse) = (
            output(be, act, inp.b * tq * c)?,
            output(be, DType::F32, inp.b * h * tq)?,
        );
        // (B·T, C) each: attention reads the padded layout (a tail's queries are in it)
        let unpack = |buf: &B::Buf| packing.map(|pk| pk.unpack(be, buf, c)).transpose();
        let qu = match tail {
            Some(_) => None,
            None => unpack(&q)?,
        };
        let unpacked = [qu, unpack(&k)?, unpack(&v)?];
        let [qa, ka, va] = &unpacked;
        let (qa, ka, va) = (
            qa.as_ref().unwrap_or(&q),
            ka.as_ref().unwrap_or(&k),
            va.as_ref().unwrap_or(&v),
        );
        be.attention_fwd(
            &mut ctx,
            &mut lse,
            qa,
            ka,
            va,
            inp.prefix.as_ref().map(|pre| pre.block(l)),
            &inp.key_mask,
            None,
            false,
            scale,
            dims,
        )?;
        drop(unpacked);
        let ctx = match (packing, tail) {
            (Some(pk), None) => pk.pack(be, &ctx, c)?,
            _ => ctx,
        };
        let attn_out = linear(
            be,
            acct,
            &ctx,
            &lw.attn_out_w,
            Some(&lw.attn_out_b),
            nq,
            c,
            c,
        )?;
        // past the attention, every op is row-wise: the queries' rows only
        let n = nq;
        let mut ln1_in = output(be, act, n * c)?;
        be.add_fwd(&mut ln1_in, xq, &attn_out, n * c)?;
        let (mut ln1_out, mut ln1_mean, mut ln1_rstd) = (
            output(be, act, n * c)?,
            output(be, DType::F32, n)?,
            output(be, DType::F32, n)?,
        );
        be.layernorm_fwd(
            &mut ln1_out,
            &mut ln1_mean,
            &mut ln1_rstd,
            &ln1_in,
            &lw.ln1_w,
            &lw.ln1_b,
            n,
            c,
            eps,
        )?;
        let ffn_pre = linear(
            be,
            acct,
            &ln1_out,
            &lw.ffn_in_w,
            Some(&lw.ffn_in_b),
            n,
            c,
            i,
        )?;
        let mut ffn_act = output(be, act, n * i)?;
        be.act_fwd(&mut ffn_act, &ffn_pre, self.cfg.hidden_act, n * i)?;
        let ffn_out = linear(
            be,
            acct,
            &ffn_act,
            &lw.ffn_out_w,
            Some(&lw.ffn_out_b),
            n,
            i,
            c,
        )?;
        let mut ln2_in = output(be, act, n * c)?;
        be.add_fwd(&mut ln2_in, &ln1_out, &ffn_out, n * c)?;
        let (mut out, mut ln2_mean, mut ln2_rstd) = (
            output(be, act, n * c)?,
            output(be, DType::F32, n)?,
            output(be, DType::F32, n)?,
        );
        be.layernorm_fwd(
            &mut out,
            &mut ln2_mean,
            &mut ln2_rstd,
            &ln2_in,
            &lw.ln2_w,
            &lw.ln2_b,
            n,
            c,
            eps,
        )?;
        if !save {
            return Ok((out, None));
        }
        let acts = BertLayerActs {
            q,
            k,
            v,
            lse,
            ln1_in,
            ln1_mean,
            ln1_rstd,
            ffn_pre,
            ln2_in,
            ln2_mean,
            ln2_rstd,
        };
        for (name, buf) in LAYER_ACT_NAMES.iter().zip(acts.bufs()) {
            hold(be, acct, format!("layer.{l}.{name}"), buf);
        }
        Ok((out, Some(acts)))
    }

    /// dx (B, T, C) from dout (B, T, C): layer_fwd's ops in exact reverse. With a prefix,
    /// `dprefix` (its table's shape) += the gradient of block l. With a `tail`, dout is the
    /// tail's rows (B·R, C). Without a tail, `wanted` says where dx is complete: at every
    /// row, at some rows (the queries', keys' and values' parts go to them alone), or nowhere
    /// (those parts are left out: nothing reads dx).
    #[allow(clippy::too_many_arguments)]
    fn layer_bwd(
        &self,
        be: &B,
        dprefix: Option<&mut B::Buf>,
        dout: &B::Buf,
        a: &BertLayerActs<B>,
        l: usize,
        inp: &BertInputs<B>,
        tail: Option<&Tail<B>>,
        wanted: Wanted<'_, B>,
    ) -> Result<B::Buf> {
        let lw = &self.w.layers[l];
        let tq = tail.map_or(inp.t(), |tl| tl.r);
        let dims = self.dims(inp, tq);
        // n rows of the queries and all that follows (up to the attention); nk of the keys
        let (n, nk, c, i) = (
            inp.b * tq,
            inp.b * inp.t(),
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
        );
        let act = be.act_dtype();
        let scale = 1.0 / (dims.d as f64).sqrt();
        let mut d_ln2_in = output(be, act, n * c)?;
        be.layernorm_bwd(
            &mut d_ln2_in,
            dout,
            &a.ln2_in,
            &lw.ln2_w,
            &a.ln2_mean,
            &a.ln2_rstd,
            n,
            c,
            false,
        )?;
        let mut d_ffn_act = output(be, act, n * i)?;
        be.linear_bwd(&mut d_ffn_act, &d_ln2_in, &lw.ffn_out_w, n, i, c, false)?;
        let mut d_ffn_pre = output(be, act, n * i)?;
        be.act_bwd(
            &mut d_ffn_pre,
            &d_ffn_act,
            &a.ffn_pre,
            self.cfg.hidden_act,
            n * i,
            false,
        )?;
        // the residual: d ln1_out = d ln2_in + d ffn_pre · W_in, accumulated in place
        let mut d_ln1_out = d_ln2_in;
        be.linear_bwd(&mut d_ln1_out, &d_ffn_pre, &lw.ffn_in_w, n, c, i, true)?;
        let mut d_ln1_in = output(be, act, n * c)?;
        be.layernorm_bwd(
            &mut d_ln1_in,
            &d_ln1_out,
            &a.ln1_in,
            &lw.ln1_w,
            &a.ln1_mean,
            &a.ln1_rstd,
            n,
            c,
            false,
        )?;
        let mut d_ctx = output(be, act, n * c)?;
        be.linear_bwd(&mut d_ctx, &d_ln1_in, &lw.attn_out_w, n, c, c, false)?;
        let (mut dq, mut dk, mut dv) = (
            output(be, act, n * c)?,
            output(be, act, nk * c)?,
            output(be, act, nk * c)?,
        );
        be.attention_bwd(
            &mut dq,
            &mut dk,
            &mut dv,
            dprefix,
            &d_ctx,
            &a.q,
            &a.k,
            &a.v,
            inp.prefix.as_ref().map(|pre| pre.block(l)),
            &a.lse,
            &inp.key_mask,
            None,
            false,
            scale,
            dims,
            false,
        )?;
        // the residual: dx = d ln1_in + dq·Wq + dk·Wk + dv·Wv
        let Some(tl) = tail else {
            let mut dx = d_ln1_in;
            let rows = match wanted {
                Wanted::All => {
                    be.linear_bwd(&mut dx, &dq, &lw.query_w, n, c, c, true)?;
                    be.linear_bwd(&mut dx, &dk, &lw.key_w, n, c, c, true)?;
                    be.linear_bwd(&mut dx, &dv, &lw.value_w, n, c, c, true)?;
                    return Ok(dx);
                }
                Wanted::Nothing => return Ok(dx),
                Wanted::Rows(rows) => rows,
            };
            // (M, C) the three parts at the wanted rows, added onto d ln1_in there
            let m = rows.count();
            let mut part = output(be, act, m * c)?;
            be.linear_bwd(
                &mut part,
                &rows.gather(be, &dq, c)?,
                &lw.query_w,
                m,
                c,
                c,
                false,
            )?;
            be.linear_bwd(
                &mut part,
                &rows.gather(be, &dk, c)?,
                &lw.key_w,
                m,
                c,
                c,
                true,
            )?;
            be.linear_bwd(
                &mut part,
                &rows.gather(be, &dv, c)?,
                &lw.value_w,
                m,
                c,
                c,
                true,
            )?;
            rows.scatter(be, &mut dx, &part, c)?;
            return Ok(dx);
        };
        // at a tail: the keys' and values' part at every row, the rest at the tail's rows
        let mut dx = output(be, act, nk * c)?;
        be.linear_bwd(&mut dx, &dk, &lw.key_w, nk, c, c, false)?;
        be.linear_bwd(&mut dx, &dv, &lw.value_w, nk, c, c, true)?;
        let mut dxq = d_ln1_in;
        be.linear_bwd(&mut dxq, &dq, &lw.query_w, n, c, c, true)?;
        tl.scatter(be, &mut dx, &dxq, c)?;
        Ok(dx)
    }

    /// The embeddings (B, T, C) of `inp` behind the prompt (or the table), before and after
    /// their LayerNorm, with its statistics (held for backward).
    pub(super) fn embed(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &BertInputs<B>,
    ) -> Result<Embedded<B>> {
        let (b, t, p, c) = (inp.b, inp.t(), inp.p, self.cfg.hidden_size);
        let w = &self.w;
        let (n, act) = (b * t, be.act_dtype());
        let mut emb_in = output(be, act, n * c)?;
        let positions = position_table(be, &w.position_embeddings, inp.first_position, t, c)?;
        be.embedding_fwd(
            &mut emb_in,
            prompt,
            &w.word_embeddings,
            Some(positions.as_ref().unwrap_or(&w.position_embeddings)),
            Some(&w.token_type_embeddings),
            &inp.ids,
            inp.type_ids.as_ref(),
            inp.prompt_idx.as_ref(),
            inp.prompt_len.as_ref(),
            b,
            inp.tokens,
            inp.prompts,
            p,
            c,
        )?;
        hold(be, acct, "emb.in".into(), &emb_in);
        let (mut emb_mean, mut emb_rstd) = (output(be, DType::F32, n)?, output(be, DType::F32, n)?);
        let mut x = output(be, act, n * c)?;
        be.layernorm_fwd(
            &mut x,
            &mut emb_mean,
            &mut emb_rstd,
            &emb_in,
            &w.emb_ln_w,
            &w.emb_ln_b,
            n,
            c,
            self.cfg.layer_norm_eps,
        )?;
        hold(be, acct, "emb.mean".into(), &emb_mean);
        hold(be, acct, "emb.rstd".into(), &emb_rstd);
        Ok(Embedded {
            emb_in,
            emb_mean,
            emb_rstd,
            x,
        })
    }

    /// hidden (B, T, C) and the saved state. `capture` receives `hidden_states.{i}` as
    /// transformers' `output_hidden_states` does: the embedding output, then each layer's.
    pub fn encoder_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &BertInputs<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, BertActs<B>)> {
        self.encoder_fwd_at(be, acct, prompt, inp, recompute, capture, None)
    }

    /// `encoder_fwd` with the last layer at the `tail`'s rows: hidden is (B·R, C) then
    /// (`BertActs::tail` says which). A `capture` wants every row's hidden state, so with one
    /// the tail is dropped and every row runs.
    #[allow(clippy::too_many_arguments)]
    pub fn encoder_fwd_at(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &BertInputs<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
        tail: Option<Tail<B>>,
    ) -> Result<(B::Buf, BertActs<B>)> {
        recompute.refuse_mlp("BERT")?;
        let tail = tail.filter(|_| capture.is_none());
        let last = self.w.layers.len().saturating_sub(1);
        let w = &self.w;
        let Embedded {
            emb_in,
            emb_mean,
            emb_rstd,
            mut x,
        } = self.embed(be, acct, prompt, inp)?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in 0..w.layers.len() {
            if let Some(cap) = capture.as_deref_mut() {
                cap.insert(format!("hidden_states.{l}"), be.download(&x)?);
            }
            let at = tail.as_ref().filter(|_| l == last);
            let (out, saved) = match recompute {
                // refused above
                Recompute::None | Recompute::Mlp | Recompute::MlpLayers(_) => {
                    let (out, acts) = self.layer_fwd(be, acct, l, &x, inp, true, None, at)?;
                    (
                        out,
                        Saved::Full(
                            acts.ok_or_else(|| Error::Device("layer state missing".into()))?,
                        ),
                    )
                }
                Recompute::Layer => {
                    hold(be, acct, format!("layer.{l}.input"), &x);
                    let (out, _) = self.layer_fwd(be, acct, l, &x, inp, false, None, at)?;
                    (out, Saved::Input(x))
                }
            };
            layers.push(saved);
            x = out;
        }
        if let Some(cap) = capture {
            cap.insert(
                format!("hidden_states.{}", w.layers.len()),
                be.download(&x)?,
            );
        }
        acct.end_forward();
        Ok((
            x,
            BertActs {
                emb_in,
                emb_mean,
                emb_rstd,
                layers,
                tail,
            },
        ))
    }

    /// dprompt (P, C) += d loss / d prompt, from dhidden (B, T, C); with a prefix, dprompt is
    /// the prefix table's gradient instead. Consumes the saved state.
    pub fn encoder_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        dhidden: B::Buf,
        acts: BertActs<B>,
        inp: &BertInputs<B>,
    ) -> Result<()> {
        let (dprompt, dprefix) = prompt_or_prefix(inp.prefix.is_some(), dprompt);
        self.encoder_bwd_split(be, acct, dprompt, dprefix, dhidden, acts, inp)
    }

    /// `encoder_bwd` into both tables of a batch that reads both (a mixed step's prompt rows
    /// and prefix rows): dprompt (K, P, C) += d loss / d prompt table (None: the gradient stops
    /// at the first layer), dprefix (the prefix's shape) += d loss / d prefix (None: `inp`
    /// reads none).
    #[allow(clippy::too_many_arguments)]
    pub fn encoder_bwd_split(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: Option<&mut B::Buf>,
        mut dprefix: Option<&mut B::Buf>,
        dhidden: B::Buf,
        acts: BertActs<B>,
        inp: &BertInputs<B>,
    ) -> Result<()> {
        let (n, c) = (inp.b * inp.t(), self.cfg.hidden_size);
        let last = acts.layers.len().saturating_sub(1);
        // the first layer's input gradient reaches the prompt only, at rows 0..P of each row
        // (a shorter prompt's padding rows behind it, in a mixed batch, are read by nothing)
        let prompt_rows: Vec<i32> = (0..inp.b)
            .flat_map(|bi| (bi * inp.t()..bi * inp.t() + inp.p).map(|r| r as i32))
            .collect();
        let to_prompt = dprompt.is_some();
        let wanted = match to_prompt {
            true => Tail::covering(be, &prompt_rows, inp.b, inp.t())?,
            false => None,
        };
        let mut dx = dhidden;
        for (l, saved) in acts.layers.into_iter().enumerate().rev() {
            let at = acts.tail.as_ref().filter(|_| l == last);
            let layer_acts = match saved {
                Saved::Full(a) => a,
                Saved::Input(x) => {
                    let (_, a) = self.layer_fwd(be, acct, l, &x, inp, true, None, at)?;
                    acct.release(&format!("layer.{l}.input"));
                    a.ok_or_else(|| Error::Device("layer state missing".into()))?
                }
            };
            let dpre = inp.prefix.as_ref().and(dprefix.as_deref_mut());
            let want = match (l, &wanted) {
                (0, Some(rows)) => Wanted::Rows(rows),
                (0, None) if !to_prompt => Wanted::Nothing,
                _ => Wanted::All,
            };
            dx = self.layer_bwd(be, dpre, &dx, &layer_acts, l, inp, at, want)?;
            for name in LAYER_ACT_NAMES {
                acct.release(&format!("layer.{l}.{name}"));
            }
        }
        let Some(dprompt) = dprompt else {
            // the gradient stops at the prefix: nothing trainable below the first layer
            for name in ["emb.in", "emb.mean", "emb.rstd"] {
                acct.release(name);
            }
            return Ok(());
        };
        let mut demb = output(be, be.act_dtype(), n * c)?;
        be.layernorm_bwd(
            &mut demb,
            &dx,
            &acts.emb_in,
            &self.w.emb_ln_w,
            &acts.emb_mean,
            &acts.emb_rstd,
            n,
            c,
            false,
        )?;
        for name in ["emb.in", "emb.mean", "emb.rstd"] {
            acct.release(name);
        }
        let (b, t, k, p) = (inp.b, inp.tokens, inp.prompts, inp.p);
        let (idx, lens) = (inp.prompt_idx.as_ref(), inp.prompt_len.as_ref());
        be.prompt_grad_bwd(dprompt, &demb, idx, lens, b, t, k, p, c)
    }
}
