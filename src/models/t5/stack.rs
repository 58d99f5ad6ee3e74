//! A stack (the encoder or the decoder): embeddings, the blocks and the final norm, forward
//! beside backward, which runs the blocks in exact reverse.

use super::block::{StackCtx, T5BlockActs};
use super::inputs::T5Inputs;
use super::weights::T5;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{hold, output, zeros, Capture, FrontRows, Recompute};

enum Saved<B: Backend> {
    Full(T5BlockActs<B>),
    Input(B::Buf),
}

/// A stack's saved state: its blocks, and the final norm's input and rstd.
pub struct StackActs<B: Backend> {
    blocks: Vec<Saved<B>>,
    final_in: B::Buf,   // (B, Tq, C)
    final_rstd: B::Buf, // (B, Tq) F32
}

impl<B: Backend> T5<B> {
    /// The encoder's blocks: bidirectional self-attention over the prompt and the tokens.
    fn encoder_ctx<'a>(&'a self, inp: &'a T5Inputs<B>) -> StackCtx<'a, B> {
        StackCtx {
            name: "encoder",
            stack: &self.encoder,
            b: inp.b,
            tq: inp.t(),
            mask: &inp.enc_mask,
            buckets: &inp.enc_buckets,
            causal: false,
            memory: None,
            prefix: inp
                .prefix
                .as_ref()
                .map(|pre| (pre, self.encoder.blocks.len())),
        }
    }

    /// The decoder's blocks: causal self-attention, and cross-attention over `enc_out`.
    pub(super) fn decoder_ctx<'a>(
        &'a self,
        inp: &'a T5Inputs<B>,
        enc_out: &'a B::Buf,
    ) -> StackCtx<'a, B> {
        StackCtx {
            name: "decoder",
            stack: &self.decoder,
            b: inp.b,
            tq: inp.l,
            mask: &inp.dec_mask,
            buckets: &inp.dec_buckets,
            causal: true,
            memory: Some((enc_out, &inp.enc_mask, inp.t())),
            prefix: inp
                .prefix
                .as_ref()
                .map(|pre| (pre, self.encoder.blocks.len())),
        }
    }

    /// The stack over x (B, Tq, C). `keep`: what it keeps for backward as `recompute` says;
    /// `None` keeps nothing (a stack with nothing trainable below it runs no backward).
    fn stack_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        mut x: B::Buf,
        ctx: StackCtx<B>,
        keep: Option<Recompute>,
        mut capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, StackActs<B>)> {
        if let Some(recompute) = keep {
            recompute.refuse_mlp("T5")?;
        }
        let n = ctx.b * ctx.tq;
        let c = self.cfg.d_model;
        let mut blocks = Vec::with_capacity(ctx.stack.blocks.len());
        for l in 0..ctx.stack.blocks.len() {
            if let Some(cap) = capture.as_deref_mut() {
                cap.insert(format!("{}_hidden_states.{l}", ctx.name), be.download(&x)?);
            }
            let Some(recompute) = keep else {
                x = self.block_fwd(be, acct, l, x, ctx, false)?.0;
                continue;
            };
            let saved = match recompute {
                // refused above
                Recompute::None | Recompute::Mlp | Recompute::MlpLayers(_) => {
                    let (out, acts) = self.block_fwd(be, acct, l, x, ctx, true)?;
                    x = out;
                    Saved::Full(acts.ok_or_else(|| Error::Device("block state missing".into()))?)
                }
                Recompute::Layer => {
                    let mut input = output(be, be.act_dtype(), n * c)?;
                    be.copy(&mut input, &x)?;
                    hold(be, acct, format!("{}.{l}.input", ctx.name), &input);
                    x = self.block_fwd(be, acct, l, x, ctx, false)?.0;
                    Saved::Input(input)
                }
            };
            blocks.push(saved);
        }
        let final_in = x;
        if keep.is_some() {
            hold(be, acct, format!("{}.final_in", ctx.name), &final_in);
        }
        let (mut out, mut final_rstd) = (
            output(be, be.act_dtype(), n * c)?,
            output(be, DType::F32, n)?,
        );
        be.rmsnorm_fwd(
            &mut out,
            &mut final_rstd,
            &final_in,
            &ctx.stack.final_ln,
            n,
            c,
            self.cfg.layer_norm_epsilon,
        )?;
        if keep.is_some() {
            hold(be, acct, format!("{}.final_rstd", ctx.name), &final_rstd);
        }
        if let Some(cap) = capture {
            cap.insert(
                format!("{}_hidden_states.{}", ctx.name, ctx.stack.blocks.len()),
                be.download(&out)?,
            );
        }
        Ok((
            out,
            StackActs {
                blocks,
                final_in,
                final_rstd,
            },
        ))
    }

    /// d stack input from d stack output; the decoder also fills d memory (its last block
    /// writes it, the others add), and with a prefix every block adds its prefix gradient
    /// into `dprefix`. With `front` (and a block), d stack input is (M, C), at its rows only.
    #[allow(clippy::too_many_arguments)]
    fn stack_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        mut dmemory: Option<&mut B::Buf>,
        mut dprefix: Option<&mut B::Buf>,
        dout: B::Buf,
        acts: StackActs<B>,
        ctx: StackCtx<B>,
        front: Option<&FrontRows<B>>,
    ) -> Result<B::Buf> {
        let (n, c) = (ctx.b * ctx.tq, self.cfg.d_model);
        let mut dx = output(be, be.act_dtype(), n * c)?;
        be.rmsnorm_bwd(
            &mut dx,
            &dout,
            &acts.final_in,
            &ctx.stack.final_ln,
            &acts.final_rstd,
            n,
            c,
            false,
        )?;
        acct.release(&format!("{}.final_in", ctx.name));
        acct.release(&format!("{}.final_rstd", ctx.name));
        drop(acts.final_in);
        let blocks = acts.blocks.len();
        for (l, saved) in acts.blocks.into_iter().enumerate().rev() {
            let block_acts = match saved {
                Saved::Full(a) => a,
                Saved::Input(x) => {
                    acct.release(&format!("{}.{l}.input", ctx.name));
                    self.block_fwd(be, acct, l, x, ctx, true)?
                        .1
                        .ok_or_else(|| Error::Device("block state missing".into()))?
                }
            };
            let dmem = dmemory.as_deref_mut().map(|d| (d, l + 1 < blocks));
            let front = front.filter(|_| l == 0);
            let dpre = dprefix.as_deref_mut();
            self.block_bwd(be, &mut dx, dmem, dpre, &block_acts, l, ctx, front)?;
            for (name, _) in block_acts.named() {
                acct.release(&format!("{}.{l}.{name}", ctx.name));
            }
        }
        Ok(dx)
    }

    /// The encoder: prompt ⧺ shared[ids] → blocks → final norm; returns (B, T, C). The
    /// prompt is (P, C), or the table (K, P, C) whose rows `inp.table` names.
    pub fn encoder_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, StackActs<B>)> {
        self.encoder_keeping(be, acct, prompt, inp, Some(recompute), capture)
    }

    /// The encoder forward alone, keeping nothing for backward: under PEFT's placement a
    /// prefix step has nothing trainable below the decoder (the encoder reads no prefix and
    /// has no prompt rows). Returns (B, T, C).
    pub(super) fn encoder_frozen_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        inp: &T5Inputs<B>,
        capture: Option<&mut Capture>,
    ) -> Result<B::Buf> {
        let no_prompt = zeros(be, DType::F32, 0)?;
        Ok(self
            .encoder_keeping(be, acct, &no_prompt, inp, None, capture)?
            .0)
    }

    fn encoder_keeping(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        keep: Option<Recompute>,
        capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, StackActs<B>)> {
        let (b, t, c) = (inp.b, inp.t(), self.cfg.d_model);
        let mut x = output(be, be.act_dtype(), b * t * c)?;
        be.embedding_fwd(
            &mut x,
            prompt,
            &self.shared,
            None,
            None,
            &inp.ids,
            None,
            inp.table.idx.as_ref(),
            inp.table.lens.as_ref(),
            b,
            inp.tokens,
            inp.table.k,
            inp.p,
            c,
        )?;
        let ctx = self.encoder_ctx(inp);
        self.stack_fwd(be, acct, x, ctx, keep, capture)
    }

    /// The encoder's backward from d enc_out (B, T, C): dprompt (P, C), or the table
    /// (K, P, C), += d loss / d prompt (None: no row reads one, the gradient stops at the
    /// first block); dprefix (the prefix's shape) += d loss / d prefix (None: `inp` reads none).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encoder_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: Option<&mut B::Buf>,
        dprefix: Option<&mut B::Buf>,
        denc_out: B::Buf,
        acts: StackActs<B>,
        inp: &T5Inputs<B>,
    ) -> Result<()> {
        let ctx = self.encoder_ctx(inp);
        let dprefix = inp.prefix.as_ref().and(dprefix);
        // the first block's input gradient is read at the prompt rows only (none without a
        // prompt): (B·P, C) then, the (B, P + 0, C) that prompt_grad_bwd reads
        let p = dprompt.as_ref().map_or(0, |_| inp.p);
        let front = FrontRows::new(be, inp.b, inp.t(), p)?;
        let dx = self.stack_bwd(be, acct, None, dprefix, denc_out, acts, ctx, Some(&front))?;
        let Some(dprompt) = dprompt else {
            return Ok(());
        };
        let t = if self.encoder.blocks.is_empty() {
            inp.tokens
        } else {
            0
        };
        let (b, p, c) = (inp.b, inp.p, self.cfg.d_model);
        let (idx, lens, k) = (inp.table.idx.as_ref(), inp.table.lens.as_ref(), inp.table.k);
        be.prompt_grad_bwd(dprompt, &dx, idx, lens, b, t, k, p, c)
    }

    /// The decoder over `enc_out` (B, T, C): shared[dec_ids] → blocks → final norm (B, L, C).
    pub fn decoder_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        enc_out: &B::Buf,
        inp: &T5Inputs<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, StackActs<B>)> {
        let y = self.decoder_embed(be, &inp.dec_ids, inp.b, inp.l)?;
        let ctx = self.decoder_ctx(inp, enc_out);
        self.stack_fwd(be, acct, y, ctx, Some(recompute), capture)
    }

    /// The decoder's input (B, L, C) = shared[dec_ids], dec_ids (B, L) I32.
    pub(super) fn decoder_embed(
        &self,
        be: &B,
        dec_ids: &B::Buf,
        b: usize,
        l: usize,
    ) -> Result<B::Buf> {
        let c = self.cfg.d_model;
        let no_prompt = zeros(be, DType::F32, 0)?;
        let mut y = output(be, be.act_dtype(), b * l * c)?;
        be.embedding_fwd(
            &mut y,
            &no_prompt,
            &self.shared,
            None,
            None,
            dec_ids,
            None,
            None,
            None,
            b,
            l,
            1,
            0,
            c,
        )?;
        Ok(y)
    }

    /// d encoder output from d decoder output (None: the encoder is frozen, and the
    /// cross-attention's key and value inputs get no gradient); with a prefix, its gradient
    /// into `dprefix`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decoder_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        denc_out: Option<&mut B::Buf>,
        dprefix: Option<&mut B::Buf>,
        ddec_out: B::Buf,
        acts: StackActs<B>,
        enc_out: &B::Buf,
        inp: &T5Inputs<B>,
    ) -> Result<()> {
        let ctx = self.decoder_ctx(inp, enc_out);
        // the decoder's input is the frozen embeddings of its labels: its gradient is wanted
        // at no row, so the first block's self-attention runs backward for a prefix alone
        let front = FrontRows::new(be, inp.b, inp.l, 0)?;
        let _dy = self.stack_bwd(
            be,
            acct,
            denc_out,
            dprefix,
            ddec_out,
            acts,
            ctx,
            Some(&front),
        )?;
        Ok(())
    }
}
