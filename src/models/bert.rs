//! BERT (post-LN encoder) with the prompt rows in front of the input embeddings.
//!
//! Mirrors transformers' `modeling_bert.py` (BertEmbeddings, BertLayer, BertLMPredictionHead)
//! with PEFT's prompt placement: the P prompt rows take positions 0..P-1 and token type 0.
//! Sizes: B batch, T = P + tokens, C hidden, H heads, D = C/H, I intermediate, V vocab.

use super::{hold, linear, load, zeros, Capture, Recompute, TokenBatch};
use crate::backend::{AttnDims, Backend, DType};
use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::weights::WeightSource;

/// One encoder layer, named after the checkpoint keys under `encoder.layer.{l}.`.
pub struct BertLayerWeights<B: Backend> {
    pub query_w: B::Buf,    // (C, C)
    pub query_b: B::Buf,    // (C)
    pub key_w: B::Buf,      // (C, C)
    pub key_b: B::Buf,      // (C)
    pub value_w: B::Buf,    // (C, C)
    pub value_b: B::Buf,    // (C)
    pub attn_out_w: B::Buf, // (C, C)  attention.output.dense
    pub attn_out_b: B::Buf, // (C)
    pub ln1_w: B::Buf,      // (C)     attention.output.LayerNorm
    pub ln1_b: B::Buf,      // (C)
    pub ffn_in_w: B::Buf,   // (I, C)  intermediate.dense
    pub ffn_in_b: B::Buf,   // (I)
    pub ffn_out_w: B::Buf,  // (C, I)  output.dense
    pub ffn_out_b: B::Buf,  // (C)
    pub ln2_w: B::Buf,      // (C)     output.LayerNorm
    pub ln2_b: B::Buf,      // (C)
}

/// The masked-LM head, `cls.predictions.*`.
pub struct BertMlmHead<B: Backend> {
    pub dense_w: B::Buf, // (C, C)  transform.dense
    pub dense_b: B::Buf, // (C)
    pub ln_w: B::Buf,    // (C)     transform.LayerNorm
    pub ln_b: B::Buf,    // (C)
    /// (V, C) `decoder.weight` when untied; None reads the word embeddings
    pub decoder_w: Option<B::Buf>,
    pub bias: B::Buf, // (V)
}

pub struct BertWeights<B: Backend> {
    pub word_embeddings: B::Buf,       // (V, C)
    pub position_embeddings: B::Buf,   // (max_position_embeddings, C)
    pub token_type_embeddings: B::Buf, // (type_vocab_size, C)
    pub emb_ln_w: B::Buf,              // (C)
    pub emb_ln_b: B::Buf,              // (C)
    pub layers: Vec<BertLayerWeights<B>>,
    pub mlm_head: Option<BertMlmHead<B>>,
}

pub struct Bert<B: Backend> {
    pub cfg: BertConfig,
    pub w: BertWeights<B>,
}

/// Resolves checkpoint names with or without the `bert.` prefix, and the old
/// `LayerNorm.gamma/beta` spelling.
struct Names<'a> {
    store: &'a dyn WeightSource,
    prefix: &'static str,
}

impl Names<'_> {
    fn resolve(&self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        if self.store.contains(&full) {
            return full;
        }
        let legacy = full
            .replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta");
        if self.store.contains(&legacy) {
            legacy
        } else {
            full
        }
    }
}

impl<B: Backend> BertLayerWeights<B> {
    fn load(be: &B, n: &Names, cfg: &BertConfig, l: usize) -> Result<Self> {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        let get = |key: &str, shape: &[usize]| {
            load(
                be,
                n.store,
                &n.resolve(&format!("encoder.layer.{l}.{key}")),
                shape,
            )
        };
        Ok(BertLayerWeights {
            query_w: get("attention.self.query.weight", &[c, c])?,
            query_b: get("attention.self.query.bias", &[c])?,
            key_w: get("attention.self.key.weight", &[c, c])?,
            key_b: get("attention.self.key.bias", &[c])?,
            value_w: get("attention.self.value.weight", &[c, c])?,
            value_b: get("attention.self.value.bias", &[c])?,
            attn_out_w: get("attention.output.dense.weight", &[c, c])?,
            attn_out_b: get("attention.output.dense.bias", &[c])?,
            ln1_w: get("attention.output.LayerNorm.weight", &[c])?,
            ln1_b: get("attention.output.LayerNorm.bias", &[c])?,
            ffn_in_w: get("intermediate.dense.weight", &[i, c])?,
            ffn_in_b: get("intermediate.dense.bias", &[i])?,
            ffn_out_w: get("output.dense.weight", &[c, i])?,
            ffn_out_b: get("output.dense.bias", &[c])?,
            ln2_w: get("output.LayerNorm.weight", &[c])?,
            ln2_b: get("output.LayerNorm.bias", &[c])?,
        })
    }
}

impl<B: Backend> BertMlmHead<B> {
    /// None when the folder has no `cls.predictions.transform.dense.weight` (encoder only).
    fn load(be: &B, store: &dyn WeightSource, cfg: &BertConfig) -> Result<Option<Self>> {
        let n = Names {
            store,
            prefix: "cls.predictions.",
        };
        if !store.contains(&n.resolve("transform.dense.weight")) {
            return Ok(None);
        }
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let get = |key: &str, shape: &[usize]| load(be, store, &n.resolve(key), shape);
        let decoder_w =
            if !cfg.tie_word_embeddings && store.contains("cls.predictions.decoder.weight") {
                Some(get("decoder.weight", &[v, c])?)
            } else {
                None
            };
        // transformers ties decoder.bias to cls.predictions.bias; either name may be saved
        let bias_key = if store.contains("cls.predictions.bias") {
            "bias"
        } else {
            "decoder.bias"
        };
        Ok(Some(BertMlmHead {
            dense_w: get("transform.dense.weight", &[c, c])?,
            dense_b: get("transform.dense.bias", &[c])?,
            ln_w: get("transform.LayerNorm.weight", &[c])?,
            ln_b: get("transform.LayerNorm.bias", &[c])?,
            decoder_w,
            bias: get(bias_key, &[v])?,
        }))
    }
}

impl<B: Backend> Bert<B> {
    pub fn load(be: &B, store: &dyn WeightSource, cfg: BertConfig) -> Result<Self> {
        let prefix = if store.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let n = Names { store, prefix };
        let c = cfg.hidden_size;
        let get = |key: &str, shape: &[usize]| load(be, store, &n.resolve(key), shape);
        let w = BertWeights {
            word_embeddings: get("embeddings.word_embeddings.weight", &[cfg.vocab_size, c])?,
            position_embeddings: get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, c],
            )?,
            token_type_embeddings: get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, c],
            )?,
            emb_ln_w: get("embeddings.LayerNorm.weight", &[c])?,
            emb_ln_b: get("embeddings.LayerNorm.bias", &[c])?,
            layers: (0..cfg.num_hidden_layers)
                .map(|l| BertLayerWeights::load(be, &n, &cfg, l))
                .collect::<Result<_>>()?,
            mlm_head: BertMlmHead::load(be, store, &cfg)?,
        };
        Ok(Bert { cfg, w })
    }
}

/// The batch on the device, with the prompt counted in: T = P + tokens.
pub struct BertInputs<B: Backend> {
    pub b: usize,
    /// real-token positions per row (the batch's padded length)
    pub tokens: usize,
    pub p: usize,
    pub ids: B::Buf,              // (B, tokens) I32
    pub type_ids: Option<B::Buf>, // (B, tokens) I32
    pub key_mask: B::Buf,         // (B, P + tokens) I32, prompt rows always 1
}

impl<B: Backend> BertInputs<B> {
    pub fn t(&self) -> usize {
        self.p + self.tokens
    }
}

/// The key mask with the P prompt columns in front: (B, P + T).
pub fn prompt_key_mask(batch: &TokenBatch, p: usize) -> Vec<i32> {
    let mut mask = Vec::with_capacity(batch.b * (p + batch.t));
    for bi in 0..batch.b {
        mask.extend(std::iter::repeat(1).take(p));
        mask.extend(
            batch.mask[bi * batch.t..(bi + 1) * batch.t]
                .iter()
                .map(|&m| (m != 0) as i32),
        );
    }
    mask
}

/// What one layer keeps for backward under `Recompute::None`.
pub struct BertLayerActs<B: Backend> {
    q: B::Buf,        // (B, T, C)  attention input
    k: B::Buf,        // (B, T, C)
    v: B::Buf,        // (B, T, C)
    lse: B::Buf,      // (B, H, T)  F32
    ln1_in: B::Buf,   // (B, T, C)  x + attention output
    ln1_mean: B::Buf, // (B, T)     F32
    ln1_rstd: B::Buf, // (B, T)     F32
    ffn_pre: B::Buf,  // (B, T, I)  activation input
    ln2_in: B::Buf,   // (B, T, C)  ln1 output + ffn output
    ln2_mean: B::Buf, // (B, T)     F32
    ln2_rstd: B::Buf, // (B, T)     F32
}

const LAYER_ACT_NAMES: [&str; 11] = [
    "q", "k", "v", "lse", "ln1_in", "ln1_mean", "ln1_rstd", "ffn_pre", "ln2_in", "ln2_mean",
    "ln2_rstd",
];

enum Saved<B: Backend> {
    Full(BertLayerActs<B>),
    /// (B, T, C) the layer input, under `Recompute::Layer`
    Input(B::Buf),
}

/// Everything the encoder keeps for backward.
pub struct BertActs<B: Backend> {
    emb_in: B::Buf,   // (B, T, C)  word + position + type, before the LayerNorm
    emb_mean: B::Buf, // (B, T)     F32
    emb_rstd: B::Buf, // (B, T)     F32
    layers: Vec<Saved<B>>,
}

impl<B: Backend> Bert<B> {
    fn dims(&self, inp: &BertInputs<B>) -> AttnDims {
        AttnDims {
            b: inp.b,
            tq: inp.t(),
            tk: inp.t(),
            h: self.cfg.num_attention_heads,
            d: self.cfg.head_dim(),
        }
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
        mut capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, BertActs<B>)> {
        let (b, t, p, c) = (inp.b, inp.t(), inp.p, self.cfg.hidden_size);
        let (n, act) = (b * t, be.act_dtype());
        let w = &self.w;
        let mut emb_in = zeros(be, act, n * c)?;
        be.embedding_fwd(
            &mut emb_in,
            prompt,
            &w.word_embeddings,
            Some(&w.position_embeddings),
            Some(&w.token_type_embeddings),
            &inp.ids,
            inp.type_ids.as_ref(),
            b,
            inp.tokens,
            p,
            c,
        )?;
        hold(be, acct, "emb.in".into(), &emb_in);
        let (mut emb_mean, mut emb_rstd) = (zeros(be, DType::F32, n)?, zeros(be, DType::F32, n)?);
        let mut x = zeros(be, act, n * c)?;
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
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in 0..w.layers.len() {
            if let Some(cap) = capture.as_deref_mut() {
                cap.insert(format!("hidden_states.{l}"), be.download(&x)?);
            }
            let (out, saved) = match recompute {
                Recompute::None => {
                    let (out, acts) = self.layer_fwd(be, acct, l, &x, inp, true)?;
                    (
                        out,
                        Saved::Full(
                            acts.ok_or_else(|| Error::Device("layer state missing".into()))?,
                        ),
                    )
                }
                Recompute::Layer => {
                    hold(be, acct, format!("layer.{l}.input"), &x);
                    let (out, _) = self.layer_fwd(be, acct, l, &x, inp, false)?;
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
            },
        ))
    }

    /// One post-LN layer; returns its output (B, T, C) and, when `save`, its saved state.
    fn layer_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        l: usize,
        x: &B::Buf,
        inp: &BertInputs<B>,
        save: bool,
    ) -> Result<(B::Buf, Option<BertLayerActs<B>>)> {
        let lw = &self.w.layers[l];
        let dims = self.dims(inp);
        let (n, c, i, eps) = (
            inp.b * inp.t(),
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
            self.cfg.layer_norm_eps,
        );
        let (act, h) = (be.act_dtype(), self.cfg.num_attention_heads);
        let scale = 1.0 / (dims.d as f64).sqrt();
        let q = linear(be, acct, x, &lw.query_w, Some(&lw.query_b), n, c, c)?;
        let k = linear(be, acct, x, &lw.key_w, Some(&lw.key_b), n, c, c)?;
        let v = linear(be, acct, x, &lw.value_w, Some(&lw.value_b), n, c, c)?;
        let (mut ctx, mut lse) = (
            zeros(be, act, n * c)?,
            zeros(be, DType::F32, inp.b * h * inp.t())?,
        );
        be.attention_fwd(
            &mut ctx,
            &mut lse,
            &q,
            &k,
            &v,
            &inp.key_mask,
            None,
            false,
            scale,
            dims,
        )?;
        let attn_out = linear(
            be,
            acct,
            &ctx,
            &lw.attn_out_w,
            Some(&lw.attn_out_b),
            n,
            c,
            c,
        )?;
        let mut ln1_in = zeros(be, act, n * c)?;
        be.add_fwd(&mut ln1_in, x, &attn_out, n * c)?;
        let (mut ln1_out, mut ln1_mean, mut ln1_rstd) = (
            zeros(be, act, n * c)?,
            zeros(be, DType::F32, n)?,
            zeros(be, DType::F32, n)?,
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
        let mut ffn_act = zeros(be, act, n * i)?;
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
        let mut ln2_in = zeros(be, act, n * c)?;
        be.add_fwd(&mut ln2_in, &ln1_out, &ffn_out, n * c)?;
        let (mut out, mut ln2_mean, mut ln2_rstd) = (
            zeros(be, act, n * c)?,
            zeros(be, DType::F32, n)?,
            zeros(be, DType::F32, n)?,
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

    /// dprompt (P, C) += d loss / d prompt, from dhidden (B, T, C). Consumes the saved state.
    pub fn encoder_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        dhidden: B::Buf,
        acts: BertActs<B>,
        inp: &BertInputs<B>,
    ) -> Result<()> {
        let (n, c) = (inp.b * inp.t(), self.cfg.hidden_size);
        let mut dx = dhidden;
        for (l, saved) in acts.layers.into_iter().enumerate().rev() {
            let layer_acts = match saved {
                Saved::Full(a) => a,
                Saved::Input(x) => {
                    let (_, a) = self.layer_fwd(be, acct, l, &x, inp, true)?;
                    acct.release(&format!("layer.{l}.input"));
                    a.ok_or_else(|| Error::Device("layer state missing".into()))?
                }
            };
            dx = self.layer_bwd(be, &dx, &layer_acts, l, inp)?;
            for name in LAYER_ACT_NAMES {
                acct.release(&format!("layer.{l}.{name}"));
            }
        }
        let mut demb = zeros(be, be.act_dtype(), n * c)?;
        be.layernorm_bwd(
            &mut demb,
            &dx,
            &acts.emb_in,
            &self.w.emb_ln_w,
            &acts.emb_mean,
            &acts.emb_rstd,
            n,
            c,
        )?;
        for name in ["emb.in", "emb.mean", "emb.rstd"] {
            acct.release(name);
        }
        be.prompt_grad_bwd(dprompt, &demb, inp.b, inp.tokens, inp.p, c)
    }

    /// dx (B, T, C) from dout (B, T, C): layer_fwd's ops in exact reverse.
    fn layer_bwd(
        &self,
        be: &B,
        dout: &B::Buf,
        a: &BertLayerActs<B>,
        l: usize,
        inp: &BertInputs<B>,
    ) -> Result<B::Buf> {
        let lw = &self.w.layers[l];
        let dims = self.dims(inp);
        let (n, c, i) = (
            inp.b * inp.t(),
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
        );
        let act = be.act_dtype();
        let scale = 1.0 / (dims.d as f64).sqrt();
        let mut d_ln2_in = zeros(be, act, n * c)?;
        be.layernorm_bwd(
            &mut d_ln2_in,
            dout,
            &a.ln2_in,
            &lw.ln2_w,
            &a.ln2_mean,
            &a.ln2_rstd,
            n,
            c,
        )?;
        let mut d_ffn_act = zeros(be, act, n * i)?;
        be.linear_bwd(&mut d_ffn_act, &d_ln2_in, &lw.ffn_out_w, n, i, c, false)?;
        let mut d_ffn_pre = zeros(be, act, n * i)?;
        be.act_bwd(
            &mut d_ffn_pre,
            &d_ffn_act,
            &a.ffn_pre,
            self.cfg.hidden_act,
            n * i,
        )?;
        // the residual: d ln1_out = d ln2_in + d ffn_pre · W_in, accumulated in place
        let mut d_ln1_out = d_ln2_in;
        be.linear_bwd(&mut d_ln1_out, &d_ffn_pre, &lw.ffn_in_w, n, c, i, true)?;
        let mut d_ln1_in = zeros(be, act, n * c)?;
        be.layernorm_bwd(
            &mut d_ln1_in,
            &d_ln1_out,
            &a.ln1_in,
            &lw.ln1_w,
            &a.ln1_mean,
            &a.ln1_rstd,
            n,
            c,
        )?;
        let mut d_ctx = zeros(be, act, n * c)?;
        be.linear_bwd(&mut d_ctx, &d_ln1_in, &lw.attn_out_w, n, c, c, false)?;
        let (mut dq, mut dk, mut dv) = (
            zeros(be, act, n * c)?,
            zeros(be, act, n * c)?,
            zeros(be, act, n * c)?,
        );
        be.attention_bwd(
            &mut dq,
            &mut dk,
            &mut dv,
            &d_ctx,
            &a.q,
            &a.k,
            &a.v,
            &a.lse,
            &inp.key_mask,
            None,
            false,
            scale,
            dims,
        )?;
        // the residual: dx = d ln1_in + dq·Wq + dk·Wk + dv·Wv
        let mut dx = d_ln1_in;
        be.linear_bwd(&mut dx, &dq, &lw.query_w, n, c, c, true)?;
        be.linear_bwd(&mut dx, &dk, &lw.key_w, n, c, c, true)?;
        be.linear_bwd(&mut dx, &dv, &lw.value_w, n, c, c, true)?;
        Ok(dx)
    }

    /// The MLM head's decoder matrix: `decoder.weight` when untied, else the word embeddings.
    pub fn decoder_weight(&self) -> Result<(&BertMlmHead<B>, &B::Buf)> {
        let head = self.w.mlm_head.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "this BERT checkpoint has no masked-LM head (cls.predictions.*); the mlm and pet \
                 objectives need one: use the cls task instead"
                    .into(),
            )
        })?;
        Ok((
            head,
            head.decoder_w.as_ref().unwrap_or(&self.w.word_embeddings),
        ))
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

/// Uploads a host batch for a prompt of `p` rows, checking ids against the tables.
pub fn upload_inputs<B: Backend>(
    be: &B,
    cfg: &BertConfig,
    batch: &TokenBatch,
    p: usize,
) -> Result<BertInputs<B>> {
    batch.check()?;
    crate::cpu::embedding::check_ids("input_ids", &batch.ids, cfg.vocab_size)?;
    if let Some(types) = &batch.type_ids {
        crate::cpu::embedding::check_ids("token_type_ids", types, cfg.type_vocab_size)?;
    }
    if p + batch.t > cfg.max_position_embeddings {
        return Err(Error::shape(
            "prompt + tokens (BERT max_position_embeddings)",
            format!("<= {}", cfg.max_position_embeddings),
            format!("{} + {}", p, batch.t),
        ));
    }
    Ok(BertInputs {
        b: batch.b,
        tokens: batch.t,
        p,
        ids: be.upload_i32(&batch.ids)?,
        type_ids: batch
            .type_ids
            .as_ref()
            .map(|t| be.upload_i32(t))
            .transpose()?,
        key_mask: be.upload_i32(&prompt_key_mask(batch, p))?,
    })
}
