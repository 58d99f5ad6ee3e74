//! Greedy generation with a KV cache: the prompt's and the inputs' keys and values are
//! computed once (the prefill, one forward over the left-padded batch), then each step runs
//! one token per row through every layer against the cache (`attention_decode`).
//!
//! Left padding puts the prompt directly before each row's first real token
//! (`PromptPlacement::BeforeTokens`): row b of a batch whose longest row has n tokens is
//! [pad × (n − n_b)] [prompt] [its n_b tokens], the pads hidden from every query, and the
//! prompt starts at position 0 in every row, so each row computes what it computes alone.
//! PEFT instead concatenates the prompt in front of the padded row ([prompt] [pads] [tokens],
//! PEFT issue #1093); `PromptPlacement::BeforePads` reproduces that, with positions counted over
//! the whole row (pads included), as PEFT's generate feeds them.

use super::inputs::DecoderInputs;
use super::layer::{Keep, Kept};
use super::weights::Decoder;
use crate::backend::{AttnDims, Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{linear, zeros, PromptRows, MAX_TOKENS};

/// Where the prompt sits in a left-padded row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptPlacement {
    /// [pads] [prompt] [tokens]: every row as it would be alone (the default)
    #[default]
    BeforeTokens,
    /// [prompt] [pads] [tokens], positions over the whole row: PEFT's generate
    BeforePads,
}

impl std::str::FromStr for PromptPlacement {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tokens" => Ok(PromptPlacement::BeforeTokens),
            "peft" => Ok(PromptPlacement::BeforePads),
            other => Err(Error::arg(
                "--prompt-placement",
                format!("\"{other}\": expected tokens (the prompt right before each row's tokens) or peft (before the padding, as PEFT)"),
            )),
        }
    }
}

/// How to generate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateOptions {
    /// tokens to generate per row at most
    pub max_new_tokens: usize,
    /// a row stops after producing one of these (empty: never)
    pub stop: Vec<i32>,
    pub placement: PromptPlacement,
    /// keep each step's logits (V per row and step), as the reference files hold them
    pub keep_logits: bool,
}

/// What generation produced, per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// the new tokens, ending with the stop token when one was produced
    pub ids: Vec<Vec<i32>>,
    /// the summed log-probability of each row's tokens
    pub logprob: Vec<f64>,
    /// with `keep_logits`: per row, the logits (V) of each of its steps
    pub logits: Vec<Vec<Vec<f32>>>,
}

/// One layer's cache: k, v (B, Tmax, Hkv·D), k rotated.
struct LayerCache<B: Backend> {
    k: B::Buf,
    v: B::Buf,
}

/// The left-padded batch: its layout, the cache's key mask and each row's positions.
struct Layout {
    b: usize,
    /// positions of the prefill: P + the longest row
    s0: usize,
    /// the cache's capacity: s0 + max_new_tokens
    tmax: usize,
    /// pads in front of row b's tokens
    pads: Vec<usize>,
    /// (B, Tmax): 0 on pads
    key_mask: Vec<i32>,
    /// (B, Tmax): the position of every cache index (0 on pads)
    pos: Vec<i32>,
}

impl Layout {
    fn new(rows: &[Vec<i32>], p: usize, max_new: usize, placement: PromptPlacement) -> Layout {
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let (b, s0) = (rows.len(), p + longest);
        let tmax = s0 + max_new;
        let pads: Vec<usize> = rows.iter().map(|r| longest - r.len()).collect();
        let mut key_mask = Vec::with_capacity(b * tmax);
        let mut pos = Vec::with_capacity(b * tmax);
        for &np in &pads {
            for s in 0..tmax {
                let (pad, position) = match placement {
                    PromptPlacement::BeforeTokens => (s < np, s.saturating_sub(np)),
                    PromptPlacement::BeforePads => (s >= p && s < p + np, s),
                };
                key_mask.push(!pad as i32);
                pos.push(if pad { 0 } else { position as i32 });
            }
        }
        Layout {
            b,
            s0,
            tmax,
            pads,
            key_mask,
            pos,
        }
    }

    /// (B, len) columns from..from+len of a (B, Tmax) table.
    fn cols(&self, table: &[i32], from: usize, len: usize) -> Vec<i32> {
        (0..self.b)
            .flat_map(|bi| table[bi * self.tmax + from..][..len].iter().copied())
            .collect()
    }
}

impl<B: Backend> Decoder<B> {
    /// Greedy decoding of `rows` (each a row's real token ids) behind a prompt of `p` rows,
    /// in one left-padded batch with a KV cache.
    pub fn generate(
        &self,
        be: &B,
        prompt: &B::Buf,
        p: usize,
        rows: &[Vec<i32>],
        opts: &GenerateOptions,
    ) -> Result<Generated> {
        let mut out = Generated {
            ids: vec![Vec::new(); rows.len()],
            logprob: vec![0.0; rows.len()],
            logits: vec![Vec::new(); rows.len()],
        };
        if rows.is_empty() || opts.max_new_tokens == 0 {
            return Ok(out);
        }
        for r in rows {
            crate::backend::check_ids("input_ids", r, self.cfg.vocab_size)?;
        }
        // the positions the batch reaches at the end, bounded before anything is sized by them
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let reach = p
            .saturating_add(longest)
            .saturating_add(opts.max_new_tokens);
        if reach > MAX_TOKENS {
            return Err(Error::arg(
                "--max-new-tokens",
                format!(
                    "{} new tokens behind a prompt of {p} rows and rows of up to {longest} \
                     tokens reach {reach} positions, past this engine's cap of {MAX_TOKENS}: \
                     use {} or less",
                    opts.max_new_tokens,
                    MAX_TOKENS.saturating_sub(p + longest)
                ),
            ));
        }
        let lay = Layout::new(rows, p, opts.max_new_tokens, opts.placement);
        if p + rows.iter().map(Vec::len).min().unwrap_or(0) == 0 {
            return Err(Error::tensor(
                "input_ids",
                "a row without tokens needs a prompt in front of it to generate from",
            ));
        }
        self.check_length(lay.tmax)?;
        let (mut caches, mut logits) = self.prefill(be, prompt, p, rows, &lay)?;
        let mut done = vec![false; rows.len()];
        let v = self.cfg.vocab_size;
        for step in 0..opts.max_new_tokens {
            let mut next = Vec::with_capacity(rows.len());
            for (bi, row) in logits.chunks(v).enumerate() {
                let best = argmax(row);
                next.push(best as i32);
                if done[bi] {
                    continue;
                }
                out.ids[bi].push(best as i32);
                out.logprob[bi] += log_softmax_at(row, best);
                if opts.keep_logits {
                    out.logits[bi].push(row.to_vec());
                }
                done[bi] = opts.stop.contains(&(best as i32));
            }
            if step + 1 == opts.max_new_tokens || done.iter().all(|&d| d) {
                break;
            }
            logits = self.decode_step(be, &mut caches, &next, lay.s0 + step, &lay)?;
        }
        Ok(out)
    }

    /// The prefill: one forward over the left-padded rows, keeping every layer's keys and
    /// values in the caches; returns them and the logits (B, V) at each row's last position.
    fn prefill(
        &self,
        be: &B,
        prompt: &B::Buf,
        p: usize,
        rows: &[Vec<i32>],
        lay: &Layout,
    ) -> Result<(Vec<LayerCache<B>>, Vec<f32>)> {
        let (b, s0, c) = (lay.b, lay.s0, self.cfg.hidden_size);
        let (t, n) = (s0 - p, b * s0);
        let pad_id = self
            .cfg
            .pad_token_id
            .unwrap_or(0)
            .min(self.cfg.vocab_size - 1) as i32;
        let mut ids = Vec::with_capacity(b * t);
        for (r, &np) in rows.iter().zip(&lay.pads) {
            ids.extend(std::iter::repeat_n(pad_id, np));
            ids.extend(r);
        }
        let ids = be.upload_i32(&ids)?;
        let mut x = self.embed(be, prompt, &ids, b, t, p)?;
        if lay.pads.iter().any(|&np| np > 0) && p > 0 {
            x = self.place_prompt(be, &x, lay, p)?;
        }
        let (mut x, _) = self.embed_norm_fwd(be, x, n)?;
        let inp = DecoderInputs {
            b,
            tokens: t,
            p,
            ids,
            key_mask: be.upload_i32(&lay.cols(&lay.key_mask, 0, s0))?,
            pos: self
                .inv_freq
                .as_ref()
                .map(|_| be.upload_i32(&lay.cols(&lay.pos, 0, s0)))
                .transpose()?,
            rows: Vec::new(),
            targets: Vec::new(),
            table: PromptRows::one(),
            prefix: None,
        };
        let kvw = self.cfg.kv_width();
        let to_cache: Vec<i32> = (0..b)
            .flat_map(|bi| (0..s0).map(move |s| (bi * lay.tmax + s) as i32))
            .collect();
        let to_cache = be.upload_i32(&to_cache)?;
        let mut acct = MemoryAccountant::new();
        let mut caches = Vec::with_capacity(self.w.layers.len());
        for l in 0..self.w.layers.len() {
            let (out, kept) = self.layer_fwd(be, &mut acct, l, x, &inp, None, Keep::KeyValues)?;
            x = out;
            let Kept::KeyValues(k, v) = kept else {
                return Err(Error::Device("prefill keys and values missing".into()));
            };
            let mut cache = LayerCache {
                k: zeros(be, be.act_dtype(), b * lay.tmax * kvw)?,
                v: zeros(be, be.act_dtype(), b * lay.tmax * kvw)?,
            };
            // the cache starts at zero and each row is written once: adding is writing
            be.scatter_rows_bwd(&mut cache.k, &k, &to_cache, n, kvw)?;
            be.scatter_rows_bwd(&mut cache.v, &v, &to_cache, n, kvw)?;
            caches.push(cache);
        }
        let last: Vec<i32> = (0..b).map(|bi| (bi * s0 + s0 - 1) as i32).collect();
        let mut h = zeros(be, be.act_dtype(), b * c)?;
        be.gather_rows(&mut h, &x, &be.upload_i32(&last)?, b, c)?;
        Ok((caches, self.last_logits(be, h, b)?))
    }

    /// [prompt] [pads] [tokens] rows of x (B, S0, C) reordered to [pads] [prompt] [tokens].
    fn place_prompt(&self, be: &B, x: &B::Buf, lay: &Layout, p: usize) -> Result<B::Buf> {
        let (b, s0, c) = (lay.b, lay.s0, self.cfg.hidden_size);
        let mut idx = Vec::with_capacity(b * s0);
        for (bi, &np) in lay.pads.iter().enumerate() {
            for s in 0..s0 {
                let src = if s < np {
                    p + s // a pad's embedding (hidden)
                } else if s < np + p {
                    s - np // the prompt row
                } else {
                    s // the row's tokens stay where they are
                };
                idx.push((bi * s0 + src) as i32);
            }
        }
        let mut out = zeros(be, be.act_dtype(), b * s0 * c)?;
        be.gather_rows(&mut out, x, &be.upload_i32(&idx)?, b * s0, c)?;
        Ok(out)
    }

    /// The final norm and the head over h (B, C): logits (B, V) on the host.
    fn last_logits(&self, be: &B, h: B::Buf, b: usize) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        let (h, _) = self.w.final_norm.fwd(be, h, b, c, self.cfg.norm_eps)?;
        let rows: Vec<i32> = (0..b as i32).collect();
        be.download(&self.head().logits(be, &h, &rows)?)
    }

    /// One token per row (`tokens` (B)) at cache index `t` through every layer against the
    /// caches, which it extends; returns the logits (B, V).
    fn decode_step(
        &self,
        be: &B,
        caches: &mut [LayerCache<B>],
        tokens: &[i32],
        t: usize,
        lay: &Layout,
    ) -> Result<Vec<f32>> {
        let (b, c) = (lay.b, self.cfg.hidden_size);
        let (qw, kvw, act) = (self.cfg.q_width(), self.cfg.kv_width(), be.act_dtype());
        let no_prompt = zeros(be, DType::F32, 0)?;
        let x = self.embed(be, &no_prompt, &be.upload_i32(tokens)?, b, 1, 0)?;
        let (mut x, _) = self.embed_norm_fwd(be, x, b)?;
        let pos = self
            .inv_freq
            .as_ref()
            .map(|_| be.upload_i32(&lay.cols(&lay.pos, t, 1)))
            .transpose()?;
        let at: Vec<i32> = (0..b).map(|bi| (bi * lay.tmax + t) as i32).collect();
        let at = be.upload_i32(&at)?;
        let key_mask = be.upload_i32(&lay.key_mask)?;
        let dims = AttnDims {
            tq: 1,
            tk: t + 1,
            ..self.attn_dims(b, 1, 1)
        };
        let mut acct = MemoryAccountant::new();
        for (w, cache) in self.w.layers.iter().zip(caches.iter_mut()) {
            let (h, attn_norm) = w.attn_norm.fwd(be, x, b, c, self.cfg.norm_eps)?;
            let (q, k, v) = self.qkv_fwd(be, &mut acct, w, &h, pos.as_ref(), b, 1)?;
            be.scatter_rows_bwd(&mut cache.k, &k, &at, b, kvw)?;
            be.scatter_rows_bwd(&mut cache.v, &v, &at, b, kvw)?;
            let mut ctx = zeros(be, act, b * qw)?;
            be.attention_decode(
                &mut ctx,
                &q,
                &cache.k,
                &cache.v,
                &key_mask,
                self.attn_bias(),
                self.attn_scale(),
                dims,
                lay.tmax,
            )?;
            let attn_out = linear(be, &mut acct, &ctx, &w.o.w, w.o.b.as_ref(), b, qw, c)?;
            let mut x1 = zeros(be, act, b * c)?;
            be.add_fwd(&mut x1, &attn_norm.inp, &attn_out, b * c)?;
            x = self.mlp_fwd(be, &mut acct, w, x1, b)?.0;
        }
        self.last_logits(be, x, b)
    }
}

/// Index of the largest value, the first on ties.
fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// log softmax(row)[i], in f64.
fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    row[i] as f64 - lse
}
