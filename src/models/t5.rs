//! T5 (pre-RMS-norm encoder-decoder) with the prompt in front of the encoder input only, as
//! PEFT feeds it. Mirrors transformers' `modeling_t5.py`: no attention scaling, the relative
//! position bias of block 0 shared by every block of a stack (bidirectional in the encoder,
//! causal in the decoder, none in cross-attention), gated or plain feed-forward, and the
//! decoder output scaled by d_model^-0.5 when the config says so.
//! Sizes: B batch, T = P + encoder tokens, L decoder length, C = d_model, A = num_heads·d_kv
//! (the inner width), F = d_ff, V vocab.

use super::{hold, linear, load, zeros, Capture, Recompute, TokenBatch};
use crate::backend::{AttnDims, Backend, BiasRef, DType};
use crate::config::T5Config;
use crate::cpu::attention::bucket_lookup;
use crate::cpu::loss::IGNORE_INDEX;
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::weights::WeightSource;

/// q, k, v (A, C) and o (C, A): `SelfAttention.*` or `EncDecAttention.*`, no biases.
pub struct T5AttnWeights<B: Backend> {
    pub q: B::Buf,
    pub k: B::Buf,
    pub v: B::Buf,
    pub o: B::Buf,
}

/// `DenseReluDense`: wi (F, C) or wi_0 and wi_1 (F, C) when gated; wo (C, F).
pub struct T5FfnWeights<B: Backend> {
    pub wi: B::Buf,
    pub wi_1: Option<B::Buf>,
    pub wo: B::Buf,
}

pub struct T5BlockWeights<B: Backend> {
    pub attn_ln: B::Buf, // (C) layer.0.layer_norm
    pub attn: T5AttnWeights<B>,
    /// decoder only: layer.1.layer_norm and EncDecAttention
    pub cross: Option<(B::Buf, T5AttnWeights<B>)>,
    pub ffn_ln: B::Buf, // (C) the last layer's layer_norm
    pub ffn: T5FfnWeights<B>,
}

pub struct T5Stack<B: Backend> {
    pub blocks: Vec<T5BlockWeights<B>>,
    pub rel_bias: B::Buf, // (num_buckets, H) block.0.layer.0.SelfAttention.relative_attention_bias
    pub final_ln: B::Buf, // (C)
}

pub struct T5<B: Backend> {
    pub cfg: T5Config,
    pub shared: B::Buf, // (V, C) the input embeddings of both stacks
    /// (V, C) `lm_head.weight` when the checkpoint has one, else None: read `shared`
    pub lm_head: Option<B::Buf>,
    pub encoder: T5Stack<B>,
    pub decoder: T5Stack<B>,
    /// bytes of float32 logits the LM loss may hold at once (it runs in row chunks)
    pub lm_chunk_bytes: usize,
}

impl<B: Backend> T5<B> {
    pub fn load(be: &B, store: &dyn WeightSource, cfg: T5Config) -> Result<Self> {
        let (c, v) = (cfg.d_model, cfg.vocab_size);
        let shared = if store.contains("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let lm_head = if store.contains("lm_head.weight") {
            Some(load(be, store, "lm_head.weight", &[v, c])?)
        } else {
            None
        };
        Ok(T5 {
            shared: load(be, store, shared, &[v, c])?,
            lm_head,
            encoder: T5Stack::load(be, store, &cfg, "encoder", cfg.num_layers)?,
            decoder: T5Stack::load(be, store, &cfg, "decoder", cfg.num_decoder_layers)?,
            lm_chunk_bytes: 64 << 20,
            cfg,
        })
    }

    fn lm_head_weight(&self) -> &B::Buf {
        self.lm_head.as_ref().unwrap_or(&self.shared)
    }
}

impl<B: Backend> T5Stack<B> {
    fn load(
        be: &B,
        store: &dyn WeightSource,
        cfg: &T5Config,
        stack: &str,
        layers: usize,
    ) -> Result<Self> {
        let (c, a, f, h) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff, cfg.num_heads);
        let get = |key: &str, shape: &[usize]| load(be, store, &format!("{stack}.{key}"), shape);
        let attn = |prefix: &str| -> Result<T5AttnWeights<B>> {
            Ok(T5AttnWeights {
                q: get(&format!("{prefix}.q.weight"), &[a, c])?,
                k: get(&format!("{prefix}.k.weight"), &[a, c])?,
                v: get(&format!("{prefix}.v.weight"), &[a, c])?,
                o: get(&format!("{prefix}.o.weight"), &[c, a])?,
            })
        };
        let decoder = stack == "decoder";
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let ffn_layer = if decoder { 2 } else { 1 };
            let ffn_key = format!("block.{l}.layer.{ffn_layer}.DenseReluDense");
            let ffn = if cfg.is_gated_act {
                T5FfnWeights {
                    wi: get(&format!("{ffn_key}.wi_0.weight"), &[f, c])?,
                    wi_1: Some(get(&format!("{ffn_key}.wi_1.weight"), &[f, c])?),
                    wo: get(&format!("{ffn_key}.wo.weight"), &[c, f])?,
                }
            } else {
                T5FfnWeights {
                    wi: get(&format!("{ffn_key}.wi.weight"), &[f, c])?,
                    wi_1: None,
                    wo: get(&format!("{ffn_key}.wo.weight"), &[c, f])?,
                }
            };
            let cross = if decoder {
                Some((
                    get(&format!("block.{l}.layer.1.layer_norm.weight"), &[c])?,
                    attn(&format!("block.{l}.layer.1.EncDecAttention"))?,
                ))
            } else {
                None
            };
            blocks.push(T5BlockWeights {
                attn_ln: get(&format!("block.{l}.layer.0.layer_norm.weight"), &[c])?,
                attn: attn(&format!("block.{l}.layer.0.SelfAttention"))?,
                cross,
                ffn_ln: get(
                    &format!("block.{l}.layer.{ffn_layer}.layer_norm.weight"),
                    &[c],
                )?,
                ffn,
            });
        }
        Ok(T5Stack {
            blocks,
            rel_bias: get(
                "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                &[cfg.relative_attention_num_buckets, h],
            )?,
            final_ln: get("final_layer_norm.weight", &[c])?,
        })
    }
}

/// The batch on the device.
pub struct T5Inputs<B: Backend> {
    pub b: usize,
    /// encoder tokens per row (without the prompt)
    pub tokens: usize,
    pub p: usize,
    /// decoder length
    pub l: usize,
    pub ids: B::Buf,         // (B, tokens) I32
    pub enc_mask: B::Buf,    // (B, P + tokens) I32, prompt columns 1
    pub dec_ids: B::Buf,     // (B, L) I32: labels shifted right
    pub dec_mask: B::Buf,    // (B, L) I32, all 1: the decoder's only mask is causal
    pub enc_buckets: B::Buf, // (2T - 1) I32 bidirectional bucket lookup
    pub dec_buckets: B::Buf, // (2L - 1) I32 causal bucket lookup
}

impl<B: Backend> T5Inputs<B> {
    pub fn t(&self) -> usize {
        self.p + self.tokens
    }
}

/// Decoder inputs: labels (B, L) shifted right, `start` first, -100 replaced by `pad`.
pub fn shift_right(labels: &[i32], b: usize, l: usize, start: i32, pad: i32) -> Vec<i32> {
    let mut out = Vec::with_capacity(b * l);
    for bi in 0..b {
        out.push(start);
        for s in 0..l.saturating_sub(1) {
            let x = labels[bi * l + s];
            out.push(if x == IGNORE_INDEX { pad } else { x });
        }
    }
    out
}

/// Uploads an encoder batch and decoder labels (B, L) for a prompt of `p` rows.
pub fn upload_inputs<B: Backend>(
    be: &B,
    cfg: &T5Config,
    batch: &TokenBatch,
    p: usize,
    labels: &[i32],
    l: usize,
) -> Result<T5Inputs<B>> {
    batch.check()?;
    crate::error::ensure_len("labels (B*L)", batch.b * l, labels.len())?;
    if l == 0 {
        return Err(Error::tensor(
            "labels",
            "the decoder needs at least one target position",
        ));
    }
    crate::cpu::embedding::check_ids("input_ids", &batch.ids, cfg.vocab_size)?;
    let dec_ids = shift_right(
        labels,
        batch.b,
        l,
        cfg.decoder_start_token_id as i32,
        cfg.pad_token_id as i32,
    );
    crate::cpu::embedding::check_ids(
        "decoder_input_ids (labels shifted right)",
        &dec_ids,
        cfg.vocab_size,
    )?;
    let t = p + batch.t;
    if t == 0 {
        return Err(Error::tensor(
            "input_ids",
            "the encoder needs at least one position (prompt rows plus tokens)",
        ));
    }
    let (nb, md) = (
        cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance,
    );
    Ok(T5Inputs {
        b: batch.b,
        tokens: batch.t,
        p,
        l,
        ids: be.upload_i32(&batch.ids)?,
        enc_mask: be.upload_i32(&super::bert::prompt_key_mask(batch, p))?,
        dec_ids: be.upload_i32(&dec_ids)?,
        dec_mask: be.upload_i32(&vec![1; batch.b * l])?,
        enc_buckets: be.upload_i32(&bucket_lookup(t, t, true, nb, md))?,
        dec_buckets: be.upload_i32(&bucket_lookup(l, l, false, nb, md))?,
    })
}

/// One attention sub-layer's saved state.
pub struct AttnActs<B: Backend> {
    q: B::Buf,   // (B, Tq, A)
    k: B::Buf,   // (B, Tk, A)
    v: B::Buf,   // (B, Tk, A)
    lse: B::Buf, // (B, H, Tq) F32
}

/// What one block keeps for backward under `Recompute::None`.
pub struct T5BlockActs<B: Backend> {
    attn_in: B::Buf,   // (B, Tq, C)  block input = rms-norm input
    attn_rstd: B::Buf, // (B, Tq)     F32
    attn: AttnActs<B>,
    /// decoder: (cross-attention rms-norm input (B, L, C), its rstd (B, L), cross-attention state)
    cross: Option<(B::Buf, B::Buf, AttnActs<B>)>,
    ffn_in: B::Buf,          // (B, Tq, C)  rms-norm input
    ffn_rstd: B::Buf,        // (B, Tq)     F32
    ffn_pre: B::Buf,         // (B, Tq, F)  activation input (the gate when gated)
    ffn_lin: Option<B::Buf>, // (B, Tq, F) the ungated branch
}

impl<B: Backend> T5BlockActs<B> {
    fn named(&self) -> Vec<(&'static str, &B::Buf)> {
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
            v.extend([
                ("cross_in", x),
                ("cross_rstd", r),
                ("cross_q", &a.q),
                ("cross_k", &a.k),
                ("cross_v", &a.v),
                ("cross_lse", &a.lse),
            ]);
        }
        v
    }
}

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

/// Which stack a block belongs to, with what its attention reads.
struct StackCtx<'a, B: Backend> {
    name: &'static str,
    stack: &'a T5Stack<B>,
    b: usize,
    tq: usize,
    mask: &'a B::Buf,
    buckets: &'a B::Buf,
    causal: bool,
    /// decoder: the encoder output (B, T, C), its key mask (B, T), and T
    memory: Option<(&'a B::Buf, &'a B::Buf, usize)>,
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
            d: self.cfg.d_kv,
        }
    }

    /// Full forward and backward of one batch: the loss, d loss / d prompt added into
    /// `dprompt`, and the per-row losses. `capture` collects hidden states and logits for
    /// parity.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        labels: &[i32],
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
    ) -> Result<f64> {
        let (enc_out, enc_acts) =
            self.encoder_fwd(be, acct, prompt, inp, recompute, capture.as_deref_mut())?;
        let (dec_out, dec_acts) =
            self.decoder_fwd(be, acct, &enc_out, inp, recompute, capture.as_deref_mut())?;
        acct.end_forward();
        let (loss, ddec_out) =
            self.lm_loss_fwd_bwd(be, &dec_out, labels, inp.b * inp.l, capture)?;
        drop(dec_out);
        let mut denc_out = zeros(be, be.act_dtype(), be.len(&enc_out))?;
        self.decoder_bwd(be, acct, &mut denc_out, ddec_out, dec_acts, &enc_out, inp)?;
        drop(enc_out);
        self.encoder_bwd(be, acct, dprompt, denc_out, enc_acts, inp)?;
        Ok(loss)
    }

    /// The encoder: prompt ⧺ shared[ids] → blocks → final norm; returns (B, T, C).
    pub fn encoder_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, StackActs<B>)> {
        let (b, t, c) = (inp.b, inp.t(), self.cfg.d_model);
        let mut x = zeros(be, be.act_dtype(), b * t * c)?;
        be.embedding_fwd(
            &mut x,
            prompt,
            &self.shared,
            None,
            None,
            &inp.ids,
            None,
            b,
            inp.tokens,
            inp.p,
            c,
        )?;
        let ctx = StackCtx {
            name: "encoder",
            stack: &self.encoder,
            b,
            tq: t,
            mask: &inp.enc_mask,
            buckets: &inp.enc_buckets,
            causal: false,
            memory: None,
        };
        self.stack_fwd(be, acct, x, ctx, recompute, capture)
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
        let (b, l, c) = (inp.b, inp.l, self.cfg.d_model);
        let no_prompt = zeros(be, DType::F32, 0)?;
        let mut y = zeros(be, be.act_dtype(), b * l * c)?;
        be.embedding_fwd(
            &mut y,
            &no_prompt,
            &self.shared,
            None,
            None,
            &inp.dec_ids,
            None,
            b,
            l,
            0,
            c,
        )?;
        let ctx = StackCtx {
            name: "decoder",
            stack: &self.decoder,
            b,
            tq: l,
            mask: &inp.dec_mask,
            buckets: &inp.dec_buckets,
            causal: true,
            memory: Some((enc_out, &inp.enc_mask, inp.t())),
        };
        self.stack_fwd(be, acct, y, ctx, recompute, capture)
    }

    fn stack_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        mut x: B::Buf,
        ctx: StackCtx<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, StackActs<B>)> {
        let n = ctx.b * ctx.tq;
        let c = self.cfg.d_model;
        let mut blocks = Vec::with_capacity(ctx.stack.blocks.len());
        for l in 0..ctx.stack.blocks.len() {
            if let Some(cap) = capture.as_deref_mut() {
                cap.insert(format!("{}_hidden_states.{l}", ctx.name), be.download(&x)?);
            }
            let saved = match recompute {
                Recompute::None => {
                    let (out, acts) = self.block_fwd(be, acct, l, x, ctx, true)?;
                    x = out;
                    Saved::Full(acts.ok_or_else(|| Error::Device("block state missing".into()))?)
                }
                Recompute::Layer => {
                    let mut input = zeros(be, be.act_dtype(), n * c)?;
                    be.copy(&mut input, &x)?;
                    hold(be, acct, format!("{}.{l}.input", ctx.name), &input);
                    x = self.block_fwd(be, acct, l, x, ctx, false)?.0;
                    Saved::Input(input)
                }
            };
            blocks.push(saved);
        }
        let final_in = x;
        hold(be, acct, format!("{}.final_in", ctx.name), &final_in);
        let (mut out, mut final_rstd) =
            (zeros(be, be.act_dtype(), n * c)?, zeros(be, DType::F32, n)?);
        be.rmsnorm_fwd(
            &mut out,
            &mut final_rstd,
            &final_in,
            &ctx.stack.final_ln,
            n,
            c,
            self.cfg.layer_norm_epsilon,
        )?;
        hold(be, acct, format!("{}.final_rstd", ctx.name), &final_rstd);
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

    /// One pre-norm block on x (B, Tq, C), which it takes over as the residual stream.
    fn block_fwd(
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
        let (mut h, mut attn_rstd) = (zeros(be, act, n * c)?, zeros(be, DType::F32, n)?);
        be.rmsnorm_fwd(&mut h, &mut attn_rstd, &attn_in, &w.attn_ln, n, c, eps)?;
        let bias = BiasRef {
            table: &ctx.stack.rel_bias,
            buckets: ctx.buckets,
        };
        let (attn_out, attn) = self.attention_fwd(
            be,
            acct,
            &w.attn,
            &h,
            &h,
            ctx.mask,
            Some(bias),
            ctx.causal,
            ctx.b,
            ctx.tq,
            ctx.tq,
        )?;
        let mut x1 = zeros(be, act, n * c)?;
        be.add_fwd(&mut x1, &attn_in, &attn_out, n * c)?;
        // cross-attention (decoder): x2 = x1 + o(attn(rms(x1), memory))
        let (x2, cross) = match (&w.cross, ctx.memory) {
            (Some((cross_ln, cross_w)), Some((memory, mem_mask, tk))) => {
                if save {
                    hold(be, acct, format!("{}.{l}.cross_in", ctx.name), &x1);
                }
                let (mut h, mut rstd) = (zeros(be, act, n * c)?, zeros(be, DType::F32, n)?);
                be.rmsnorm_fwd(&mut h, &mut rstd, &x1, cross_ln, n, c, eps)?;
                let (out, a) = self.attention_fwd(
                    be, acct, cross_w, &h, memory, mem_mask, None, false, ctx.b, ctx.tq, tk,
                )?;
                let mut x2 = zeros(be, act, n * c)?;
                be.add_fwd(&mut x2, &x1, &out, n * c)?;
                (x2, Some((x1, rstd, a)))
            }
            _ => (x1, None),
        };
        // feed-forward: out = x2 + wo(act(wi_0 h) * wi_1 h) or x2 + wo(act(wi h))
        let ffn_in = x2;
        if save {
            hold(be, acct, format!("{}.{l}.ffn_in", ctx.name), &ffn_in);
        }
        let (mut h, mut ffn_rstd) = (zeros(be, act, n * c)?, zeros(be, DType::F32, n)?);
        be.rmsnorm_fwd(&mut h, &mut ffn_rstd, &ffn_in, &w.ffn_ln, n, c, eps)?;
        let f = self.cfg.d_ff;
        let ffn_pre = linear(be, acct, &h, &w.ffn.wi, None, n, c, f)?;
        let ffn_lin = w
            .ffn
            .wi_1
            .as_ref()
            .map(|wi_1| linear(be, acct, &h, wi_1, None, n, c, f))
            .transpose()?;
        let mut g = zeros(be, act, n * f)?;
        match &ffn_lin {
            Some(lin) => be.gated_act_fwd(&mut g, &ffn_pre, lin, self.cfg.dense_act, n * f)?,
            None => be.act_fwd(&mut g, &ffn_pre, self.cfg.dense_act, n * f)?,
        }
        let ffn_out = linear(be, acct, &g, &w.ffn.wo, None, n, f, c)?;
        let mut out = zeros(be, act, n * c)?;
        be.add_fwd(&mut out, &ffn_in, &ffn_out, n * c)?;
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

    /// out (B, Tq, C) = o(attention(q(hq), k(hkv), v(hkv))), keeping q, k, v and lse.
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        w: &T5AttnWeights<B>,
        hq: &B::Buf,
        hkv: &B::Buf,
        mask: &B::Buf,
        bias: Option<BiasRef<B::Buf>>,
        causal: bool,
        b: usize,
        tq: usize,
        tk: usize,
    ) -> Result<(B::Buf, AttnActs<B>)> {
        let (c, a) = (self.cfg.d_model, self.cfg.inner_dim());
        let dims = self.attn_dims(b, tq, tk);
        let q = linear(be, acct, hq, &w.q, None, b * tq, c, a)?;
        let k = linear(be, acct, hkv, &w.k, None, b * tk, c, a)?;
        let v = linear(be, acct, hkv, &w.v, None, b * tk, c, a)?;
        let (mut ctx, mut lse) = (
            zeros(be, be.act_dtype(), b * tq * a)?,
            zeros(be, DType::F32, b * dims.h * tq)?,
        );
        be.attention_fwd(
            &mut ctx, &mut lse, &q, &k, &v, mask, bias, causal, 1.0, dims,
        )?;
        let out = linear(be, acct, &ctx, &w.o, None, b * tq, a, c)?;
        Ok((out, AttnActs { q, k, v, lse }))
    }

    /// The LM head and mean cross-entropy over labels != -100, in row chunks so that no
    /// (B·L, V) float32 logits tensor ever exists. Returns the loss and d loss / d dec_out.
    pub fn lm_loss_fwd_bwd(
        &self,
        be: &B,
        dec_out: &B::Buf,
        labels: &[i32],
        rows: usize,
        capture: Option<&mut Capture>,
    ) -> Result<(f64, B::Buf)> {
        let (c, v) = (self.cfg.d_model, self.cfg.vocab_size);
        let act = be.act_dtype();
        let scale = if self.cfg.scale_decoder_outputs {
            (c as f64).powf(-0.5)
        } else {
            1.0
        };
        let count = labels.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let grad_scale = 1.0 / count.max(1) as f64;
        let mut y = zeros(be, act, rows * c)?;
        be.copy(&mut y, dec_out)?;
        be.scale_inplace(&mut y, scale, rows * c)?;
        let mut dy = zeros(be, act, rows * c)?;
        let chunk = lm_chunk_rows(self.lm_chunk_bytes, v, rows);
        let mut loss = 0.0f64;
        let mut all_logits = Vec::new();
        for start in (0..rows).step_by(chunk) {
            let m = chunk.min(rows - start);
            let idx: Vec<i32> = (start..start + m).map(|r| r as i32).collect();
            let idx = be.upload_i32(&idx)?;
            let mut h = zeros(be, act, m * c)?;
            be.gather_rows(&mut h, &y, &idx, m, c)?;
            let mut logits = zeros(be, DType::F32, m * v)?;
            be.linear_fwd(&mut logits, &h, self.lm_head_weight(), None, m, c, v)?;
            if capture.is_some() {
                all_logits.extend(be.download(&logits)?);
            }
            let targets = be.upload_i32(&labels[start..start + m])?;
            let mut losses = zeros(be, DType::F32, m)?;
            be.cross_entropy_fwd_bwd(&mut logits, &mut losses, &targets, m, v, grad_scale)?;
            loss += be.download_f64(&losses)?.iter().sum::<f64>();
            let mut dh = zeros(be, act, m * c)?;
            be.linear_bwd(&mut dh, &logits, self.lm_head_weight(), m, c, v, false)?;
            be.scatter_rows_bwd(&mut dy, &dh, &idx, m, c)?;
        }
        be.scale_inplace(&mut dy, scale, rows * c)?;
        if let Some(cap) = capture {
            cap.insert("logits".into(), all_logits);
        }
        Ok((loss * grad_scale, dy))
    }

    /// Forward only, for rank classification: each row's cross-entropy (rows), 0 where the
    /// label is -100, in the same row chunks as `lm_loss_fwd_bwd`. dec_out is (rows, C).
    pub fn lm_row_losses(
        &self,
        be: &B,
        dec_out: &B::Buf,
        labels: &[i32],
        rows: usize,
    ) -> Result<Vec<f32>> {
        crate::error::ensure_len("labels (rows)", rows, labels.len())?;
        let mut out = Vec::with_capacity(rows);
        for start in (0..rows).step_by(lm_chunk_rows(
            self.lm_chunk_bytes,
            self.cfg.vocab_size,
            rows,
        )) {
            let m = lm_chunk_rows(self.lm_chunk_bytes, self.cfg.vocab_size, rows).min(rows - start);
            let idx: Vec<i32> = (start..start + m).map(|r| r as i32).collect();
            let mut logits = self.lm_logits_buf(be, dec_out, &idx)?;
            let targets = be.upload_i32(&labels[start..start + m])?;
            let mut losses = zeros(be, DType::F32, m)?;
            be.cross_entropy_fwd_bwd(
                &mut logits,
                &mut losses,
                &targets,
                m,
                self.cfg.vocab_size,
                1.0,
            )?;
            out.extend(be.download(&losses)?);
        }
        Ok(out)
    }

    /// Forward only, for greedy decoding: (M, V) float32 logits at the decoder rows `idx`.
    pub fn lm_logits(&self, be: &B, dec_out: &B::Buf, idx: &[i32]) -> Result<Vec<f32>> {
        be.download(&self.lm_logits_buf(be, dec_out, idx)?)
    }

    /// (M, V) logits of the (scaled) decoder rows `idx` of dec_out.
    fn lm_logits_buf(&self, be: &B, dec_out: &B::Buf, idx: &[i32]) -> Result<B::Buf> {
        let (c, v, m) = (self.cfg.d_model, self.cfg.vocab_size, idx.len());
        let scale = if self.cfg.scale_decoder_outputs {
            (c as f64).powf(-0.5)
        } else {
            1.0
        };
        let idx = be.upload_i32(idx)?;
        let mut h = zeros(be, be.act_dtype(), m * c)?;
        be.gather_rows(&mut h, dec_out, &idx, m, c)?;
        be.scale_inplace(&mut h, scale, m * c)?;
        let mut logits = zeros(be, DType::F32, m * v)?;
        be.linear_fwd(&mut logits, &h, self.lm_head_weight(), None, m, c, v)?;
        Ok(logits)
    }

    #[allow(clippy::too_many_arguments)]
    fn decoder_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        denc_out: &mut B::Buf,
        ddec_out: B::Buf,
        acts: StackActs<B>,
        enc_out: &B::Buf,
        inp: &T5Inputs<B>,
    ) -> Result<()> {
        let ctx = StackCtx {
            name: "decoder",
            stack: &self.decoder,
            b: inp.b,
            tq: inp.l,
            mask: &inp.dec_mask,
            buckets: &inp.dec_buckets,
            causal: true,
            memory: Some((enc_out, &inp.enc_mask, inp.t())),
        };
        let _dy = self.stack_bwd(be, acct, Some(denc_out), ddec_out, acts, ctx)?;
        Ok(())
    }

    fn encoder_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        denc_out: B::Buf,
        acts: StackActs<B>,
        inp: &T5Inputs<B>,
    ) -> Result<()> {
        let ctx = StackCtx {
            name: "encoder",
            stack: &self.encoder,
            b: inp.b,
            tq: inp.t(),
            mask: &inp.enc_mask,
            buckets: &inp.enc_buckets,
            causal: false,
            memory: None,
        };
        let dx = self.stack_bwd(be, acct, None, denc_out, acts, ctx)?;
        be.prompt_grad_bwd(dprompt, &dx, inp.b, inp.tokens, inp.p, self.cfg.d_model)
    }

    /// d stack input from d stack output; the decoder also adds into d memory.
    fn stack_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        mut dmemory: Option<&mut B::Buf>,
        dout: B::Buf,
        acts: StackActs<B>,
        ctx: StackCtx<B>,
    ) -> Result<B::Buf> {
        let (n, c) = (ctx.b * ctx.tq, self.cfg.d_model);
        let mut dx = zeros(be, be.act_dtype(), n * c)?;
        be.rmsnorm_bwd(
            &mut dx,
            &dout,
            &acts.final_in,
            &ctx.stack.final_ln,
            &acts.final_rstd,
            n,
            c,
        )?;
        acct.release(&format!("{}.final_in", ctx.name));
        acct.release(&format!("{}.final_rstd", ctx.name));
        drop(acts.final_in);
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
            self.block_bwd(be, &mut dx, dmemory.as_deref_mut(), &block_acts, l, ctx)?;
            for (name, _) in block_acts.named() {
                acct.release(&format!("{}.{l}.{name}", ctx.name));
            }
        }
        Ok(dx)
    }

    /// dx (B, Tq, C) holds d block output on entry and d block input on exit (the residual
    /// stream accumulates in place); block_fwd's ops in exact reverse.
    fn block_bwd(
        &self,
        be: &B,
        dx: &mut B::Buf,
        dmemory: Option<&mut B::Buf>,
        a: &T5BlockActs<B>,
        l: usize,
        ctx: StackCtx<B>,
    ) -> Result<()> {
        let w = &ctx.stack.blocks[l];
        let (n, c, f) = (ctx.b * ctx.tq, self.cfg.d_model, self.cfg.d_ff);
        let act = be.act_dtype();
        // feed-forward
        let mut dg = zeros(be, act, n * f)?;
        be.linear_bwd(&mut dg, dx, &w.ffn.wo, n, f, c, false)?;
        let mut dpre = zeros(be, act, n * f)?;
        let mut dh = zeros(be, act, n * c)?;
        match (&a.ffn_lin, &w.ffn.wi_1) {
            (Some(lin), Some(wi_1)) => {
                let mut dlin = zeros(be, act, n * f)?;
                be.gated_act_bwd(
                    &mut dpre,
                    &mut dlin,
                    &dg,
                    &a.ffn_pre,
                    lin,
                    self.cfg.dense_act,
                    n * f,
                )?;
                be.linear_bwd(&mut dh, &dlin, wi_1, n, c, f, false)?;
                be.linear_bwd(&mut dh, &dpre, &w.ffn.wi, n, c, f, true)?;
            }
            _ => {
                be.act_bwd(&mut dpre, &dg, &a.ffn_pre, self.cfg.dense_act, n * f)?;
                be.linear_bwd(&mut dh, &dpre, &w.ffn.wi, n, c, f, false)?;
            }
        }
        be.rmsnorm_bwd(dx, &dh, &a.ffn_in, &w.ffn_ln, &a.ffn_rstd, n, c)?;
        // cross-attention
        if let (
            Some((cross_in, cross_rstd, cross)),
            Some((cross_ln, cross_w)),
            Some((memory, mem_mask, tk)),
            Some(dmem),
        ) = (&a.cross, &w.cross, ctx.memory, dmemory)
        {
            let mut dh = zeros(be, act, n * c)?;
            self.attention_bwd(
                be,
                &mut dh,
                Some(dmem),
                cross_w,
                cross,
                dx,
                mem_mask,
                None,
                false,
                ctx.b,
                ctx.tq,
                tk,
            )?;
            let _ = memory;
            be.rmsnorm_bwd(dx, &dh, cross_in, cross_ln, cross_rstd, n, c)?;
        }
        // self-attention
        let mut dh = zeros(be, act, n * c)?;
        let bias = BiasRef {
            table: &ctx.stack.rel_bias,
            buckets: ctx.buckets,
        };
        self.attention_bwd(
            be,
            &mut dh,
            None,
            &w.attn,
            &a.attn,
            dx,
            ctx.mask,
            Some(bias),
            ctx.causal,
            ctx.b,
            ctx.tq,
            ctx.tq,
        )?;
        be.rmsnorm_bwd(dx, &dh, &a.attn_in, &w.attn_ln, &a.attn_rstd, n, c)?;
        Ok(())
    }

    /// dhq (B, Tq, C) = d of the query input; d of the key/value input is added into `dhkv`
    /// (cross-attention's memory) or, when None, into dhq (self-attention).
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        be: &B,
        dhq: &mut B::Buf,
        dhkv: Option<&mut B::Buf>,
        w: &T5AttnWeights<B>,
        a: &AttnActs<B>,
        dout: &B::Buf,
        mask: &B::Buf,
        bias: Option<BiasRef<B::Buf>>,
        causal: bool,
        b: usize,
        tq: usize,
        tk: usize,
    ) -> Result<()> {
        let (c, at) = (self.cfg.d_model, self.cfg.inner_dim());
        let act = be.act_dtype();
        let dims = self.attn_dims(b, tq, tk);
        let mut dctx = zeros(be, act, b * tq * at)?;
        be.linear_bwd(&mut dctx, dout, &w.o, b * tq, at, c, false)?;
        let (mut dq, mut dk, mut dv) = (
            zeros(be, act, b * tq * at)?,
            zeros(be, act, b * tk * at)?,
            zeros(be, act, b * tk * at)?,
        );
        be.attention_bwd(
            &mut dq, &mut dk, &mut dv, &dctx, &a.q, &a.k, &a.v, &a.lse, mask, bias, causal, 1.0,
            dims,
        )?;
        be.linear_bwd(dhq, &dq, &w.q, b * tq, c, at, false)?;
        let dkv = match dhkv {
            Some(d) => d,
            None => dhq,
        };
        be.linear_bwd(dkv, &dk, &w.k, b * tk, c, at, true)?;
        be.linear_bwd(dkv, &dv, &w.v, b * tk, c, at, true)?;
        Ok(())
    }
}

/// Rows of decoder output per LM-head chunk: `budget` bytes of float32 logits at a time.
pub fn lm_chunk_rows(budget: usize, v: usize, rows: usize) -> usize {
    (budget / (4 * v.max(1))).clamp(1, rows.max(1))
}
