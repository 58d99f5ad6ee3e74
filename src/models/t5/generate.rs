//! Greedy decoding with a cache, as the decoder-only models generate (decoder/generate.rs):
//! the caller runs the encoder once (`greedy` takes its output); `decode_start` computes each decoder layer's
//! cross-attention keys and values over the encoder output once per batch; `decode_step` runs
//! one token per row through every layer, appending its self-attention key and value to the
//! layer's cache and attending over the cache with `attention_decode`, T5's relative bias
//! included, and over the cross-attention's keys with the encoder's key mask.
//!
//! Row b's self-attention cache is [P prefix rows][its tokens]: under prefix tuning the P
//! rows are the layer's prefix block (row b's own prefix of a stack, its hidden leading rows
//! masked), else P = 0. The cache index is then the position the uncached decoder gives every
//! key (the prefix at 0..P-1, the tokens at P.., `T5Inputs::with_prefix`), so one (Cap, Cap)
//! bucket lookup serves every step: step s is its query row P + s.
//!
//! The cache grows on demand: it holds Cap = P + `FIRST_STEPS` rows per batch row at first
//! (at most Tmax, P + the most tokens a row decodes) and doubles, up to Tmax, when a step
//! finds it full, its filled rows copied on the device (`widen`). Sized for Tmax up front, a
//! t5-base batch of 64 under --max-target-len 8192 took ~19 GB of bf16 before its first token.

use super::inputs::T5Inputs;
use super::weights::{T5AttnWeights, T5};
use crate::backend::attention::bucket_lookup;
use crate::backend::{AttnBias, AttnDims, Backend, BiasRef, DType, PrefixKv};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{linear, output, zeros};
use crate::models::lm_head::{argmax, pick};

/// The self-attention cache's rows per batch row at first, beside the prefix's: most
/// generations end within them, and a longer one doubles the cache a few times.
pub const FIRST_STEPS: usize = 64;

/// One decoder layer's keys and values: its self-attention cache and its cross-attention's.
struct LayerCache<B: Backend> {
    k: B::Buf,       // (B, Cap, A)
    v: B::Buf,       // (B, Cap, A)
    cross_k: B::Buf, // (B, T, A)
    cross_v: B::Buf, // (B, T, A)
}

/// A batch being decoded: every layer's cache and what each step reads besides.
pub struct T5Cache<'a, B: Backend> {
    b: usize,
    /// P: the prefix rows in front of every row's tokens (0 without a prefix)
    p: usize,
    /// the most rows a batch row's cache needs: P + the most tokens a row decodes
    tmax: usize,
    /// the rows each batch row's cache holds now (P + `FIRST_STEPS` at first, at most Tmax)
    cap: usize,
    /// tokens decoded so far
    step: usize,
    layers: Vec<LayerCache<B>>,
    /// the prefix rows each batch row hides (B)
    hidden: Vec<usize>,
    self_mask: B::Buf, // (B, Cap) I32: 0 on the prefix rows a row hides
    buckets: B::Buf,   // (2·Cap − 1) I32: the causal lookup of a (Cap, Cap) attention
    /// T5's relative attention: its buckets and their largest distance
    num_buckets: usize,
    max_distance: usize,
    /// the encoder's key mask (B, T) I32 and T
    enc_mask: &'a B::Buf,
    t: usize,
}

/// What one attention of a decode step reads: keys and values (B, Tk.., A) of `tmax` rows per
/// batch row, the step's new key and value appended at rows `append` (B) first (self-attention)
/// or none (cross-attention).
struct StepKv<'c, B: Backend> {
    k: &'c mut B::Buf,
    v: &'c mut B::Buf,
    append: Option<&'c B::Buf>,
    mask: &'c B::Buf,
    bias: Option<AttnBias<'c, B::Buf>>,
    tk: usize,
    tmax: usize,
}

impl<B: Backend> T5<B> {
    /// Starts decoding the batch of `inp` over the encoder output `enc_out` (B, T, C), at most
    /// `steps` tokens per row: the cross-attention keys and values of every layer, and the
    /// self-attention caches, holding the prefix blocks when `inp` has a prefix.
    pub fn decode_start<'a>(
        &self,
        be: &B,
        enc_out: &B::Buf,
        inp: &'a T5Inputs<B>,
        steps: usize,
    ) -> Result<T5Cache<'a, B>> {
        let (b, t, c, a) = (inp.b, inp.t(), self.cfg.d_model, self.cfg.inner_dim());
        let ctx = self.decoder_ctx(inp, enc_out);
        let blocks: Vec<_> = (0..self.decoder.blocks.len())
            .map(|l| ctx.prefix_kv(l))
            .collect();
        let p = decoder_prefix_rows(&blocks)?;
        let tmax = p + steps;
        let cap = tmax.min(p + FIRST_STEPS);
        let mut acct = MemoryAccountant::new();
        let mut layers = Vec::with_capacity(blocks.len());
        for (w, block) in self.decoder.blocks.iter().zip(&blocks) {
            let (_, cw) = (w.cross.as_ref())
                .ok_or_else(|| Error::Device("decoder block without cross-attention".into()))?;
            let mut cache = LayerCache {
                k: zeros(be, be.act_dtype(), b * cap * a)?,
                v: zeros(be, be.act_dtype(), b * cap * a)?,
                cross_k: linear(be, &mut acct, enc_out, &cw.k, None, b * t, c, a)?,
                cross_v: linear(be, &mut acct, enc_out, &cw.v, None, b * t, c, a)?,
            };
            if let Some(pre) = block {
                prefix_into_cache(be, &mut cache, pre, b, cap, a)?;
            }
            layers.push(cache);
        }
        let hidden: Vec<usize> = (0..b)
            .map(
                |bi| match blocks.first().copied().flatten().and_then(|pre| pre.rows) {
                    Some(rows) => rows.hidden.get(bi).copied().unwrap_or(0),
                    None => 0,
                },
            )
            .collect();
        let (num_buckets, max_distance) = (
            self.cfg.relative_attention_num_buckets,
            self.cfg.relative_attention_max_distance,
        );
        let (self_mask, buckets) = lookups(be, &hidden, cap, num_buckets, max_distance)?;
        Ok(T5Cache {
            b,
            p,
            tmax,
            cap,
            step: 0,
            layers,
            hidden,
            self_mask,
            buckets,
            num_buckets,
            max_distance,
            enc_mask: &inp.enc_mask,
            t,
        })
    }

    /// Greedy decoding of the batch of `inp` (its decoder labels unread) over the encoder
    /// output `enc_out` (B, T, C), one token per row a step against the caches: row b stops
    /// after `limits[b]` tokens or its end token `ends[b]`. Returns each row's ids (ending
    /// with its end token when produced) and their summed log-probability.
    pub fn greedy(
        &self,
        be: &B,
        enc_out: &B::Buf,
        inp: &T5Inputs<B>,
        limits: &[usize],
        ends: &[i32],
    ) -> Result<Vec<(Vec<i32>, f32)>> {
        let b = inp.b;
        crate::error::ensure_len("greedy limits (B)", b, limits.len())?;
        crate::error::ensure_len("greedy end tokens (B)", b, ends.len())?;
        let mut out: Vec<(Vec<i32>, f32)> = vec![(Vec::new(), 0.0); b];
        let mut done: Vec<bool> = limits.iter().map(|&n| n == 0).collect();
        let steps = limits.iter().copied().max().unwrap_or(0);
        if steps == 0 {
            return Ok(out);
        }
        let mut cache = self.decode_start(be, enc_out, inp, steps)?;
        let mut next = vec![self.cfg.decoder_start_token_id as i32; b];
        for step in 0.. {
            if done.iter().all(|&d| d) {
                break;
            }
            let logits = self.decode_step(be, &mut cache, &next)?;
            let rows = logits.chunks(self.cfg.vocab_size.max(1));
            for (bi, (row, (ids, score))) in rows.zip(&mut out).enumerate() {
                if done[bi] {
                    // a finished row's next token is never read: any will do
                    next[bi] = argmax(row) as i32;
                    continue;
                }
                let (best, logprob) = pick(row, bi, step)?;
                next[bi] = best as i32;
                ids.push(best as i32);
                *score += logprob as f32;
                done[bi] = ends[bi] == best as i32 || ids.len() >= limits[bi];
            }
        }
        Ok(out)
    }

    /// One token per row (`tokens` (B): the decoder start token, then each row's last) through
    /// every decoder layer against the caches, which it extends; returns the logits (B, V).
    pub fn decode_step(&self, be: &B, cache: &mut T5Cache<B>, tokens: &[i32]) -> Result<Vec<f32>> {
        let (b, c) = (cache.b, self.cfg.d_model);
        crate::error::ensure_len("decoder tokens (B)", b, tokens.len())?;
        crate::backend::check_ids("decoder_input_ids", tokens, self.cfg.vocab_size)?;
        let row = cache.p + cache.step;
        if row >= cache.tmax {
            return Err(Error::arg(
                "--max-target-len",
                format!("the decoder cache holds {} tokens", cache.tmax - cache.p),
            ));
        }
        if row >= cache.cap {
            cache.grow(be, self.cfg.inner_dim())?;
        }
        let mut x = self.decoder_embed(be, &be.upload_i32(tokens)?, b, 1)?;
        let at: Vec<i32> = (0..b).map(|bi| (bi * cache.cap + row) as i32).collect();
        let at = be.upload_i32(&at)?;
        let mut acct = MemoryAccountant::new();
        let bias = BiasRef {
            table: &self.decoder.rel_bias,
            buckets: &cache.buckets,
        };
        for (w, lc) in self.decoder.blocks.iter().zip(cache.layers.iter_mut()) {
            let (cross_ln, cross_w) = (w.cross.as_ref())
                .ok_or_else(|| Error::Device("decoder block without cross-attention".into()))?;
            let own = StepKv {
                k: &mut lc.k,
                v: &mut lc.v,
                append: Some(&at),
                mask: &cache.self_mask,
                bias: Some(AttnBias::Relative(bias)),
                tk: row + 1,
                tmax: cache.cap,
            };
            let x1 = self.decode_attention(be, &mut acct, &w.attn_ln, &w.attn, &x, own, b)?;
            let memory = StepKv {
                k: &mut lc.cross_k,
                v: &mut lc.cross_v,
                append: None,
                mask: cache.enc_mask,
                bias: None,
                tk: cache.t,
                tmax: cache.t,
            };
            let x2 = self.decode_attention(be, &mut acct, cross_ln, cross_w, &x1, memory, b)?;
            x = self.ffn_fwd(be, &mut acct, w, &x2, b)?.0;
        }
        cache.step += 1;
        let (mut out, mut rstd) = (
            output(be, be.act_dtype(), b * c)?,
            output(be, DType::F32, b)?,
        );
        let (ln, eps) = (&self.decoder.final_ln, self.cfg.layer_norm_epsilon);
        be.rmsnorm_fwd(&mut out, &mut rstd, &x, ln, b, c, eps)?;
        let rows: Vec<i32> = (0..b as i32).collect();
        self.lm_logits(be, &out, &rows)
    }

    /// x + o(attention of q(rms(x)) over `kv`) (B, C) for x (B, C), one query per row; with
    /// `kv.append`, k(rms(x)) and v(rms(x)) are written into the cache first.
    #[allow(clippy::too_many_arguments)]
    fn decode_attention(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        ln: &B::Buf,
        w: &T5AttnWeights<B>,
        x: &B::Buf,
        kv: StepKv<'_, B>,
        b: usize,
    ) -> Result<B::Buf> {
        let (c, a, act) = (self.cfg.d_model, self.cfg.inner_dim(), be.act_dtype());
        let (mut h, mut rstd) = (output(be, act, b * c)?, output(be, DType::F32, b)?);
        be.rmsnorm_fwd(&mut h, &mut rstd, x, ln, b, c, self.cfg.layer_norm_epsilon)?;
        let q = linear(be, acct, &h, &w.q, None, b, c, a)?;
        if let Some(at) = kv.append {
            // the cache's rows at `at` are still zero: adding is writing
            let k = linear(be, acct, &h, &w.k, None, b, c, a)?;
            be.scatter_rows_bwd(kv.k, &k, at, b, a)?;
            let v = linear(be, acct, &h, &w.v, None, b, c, a)?;
            be.scatter_rows_bwd(kv.v, &v, at, b, a)?;
        }
        let dims = AttnDims {
            b,
            tq: 1,
            tk: kv.tk,
            h: self.cfg.num_heads,
            hkv: self.cfg.num_heads,
            d: self.cfg.d_kv,
        };
        let mut ctx = zeros(be, act, b * a)?;
        // T5 scales no attention scores
        be.attention_decode(
            &mut ctx, &q, kv.k, kv.v, kv.mask, kv.bias, 1.0, dims, kv.tmax,
        )?;
        let out = linear(be, acct, &ctx, &w.o, None, b, a, c)?;
        let mut x1 = output(be, act, b * c)?;
        be.add_fwd(&mut x1, x, &out, b * c)?;
        Ok(x1)
    }
}

impl<B: Backend> T5Cache<'_, B> {
    /// The rows each batch row's self-attention cache holds now: P + `FIRST_STEPS` at first,
    /// doubled (up to P + the most tokens a row decodes) each time a step finds it full.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Doubles the cache (at most Tmax rows per batch row): every layer's keys and values
    /// (B, Cap, A) copied on the device into the first Cap rows of each batch row of the
    /// larger one, the mask and the bucket lookup made again for it.
    fn grow(&mut self, be: &B, a: usize) -> Result<()> {
        let (b, cap) = (self.b, self.cap);
        // called when a step's row reaches Cap, below Tmax: the wider cache holds it
        let wider = (2 * cap).min(self.tmax);
        let at: Vec<i32> = (0..b)
            .flat_map(|bi| (0..cap).map(move |r| (bi * wider + r) as i32))
            .collect();
        let at = be.upload_i32(&at)?;
        for lc in &mut self.layers {
            lc.k = widen(be, &lc.k, &at, b * cap, b * wider, a)?;
            lc.v = widen(be, &lc.v, &at, b * cap, b * wider, a)?;
        }
        self.cap = wider;
        (self.self_mask, self.buckets) =
            lookups(be, &self.hidden, wider, self.num_buckets, self.max_distance)?;
        Ok(())
    }
}

/// The self-attention's key mask (B, Cap) I32, 0 on the `hidden` (B) prefix rows each batch
/// row hides, and the causal bucket lookup (2·Cap − 1) of a (Cap, Cap) attention.
fn lookups<B: Backend>(
    be: &B,
    hidden: &[usize],
    cap: usize,
    num_buckets: usize,
    max_distance: usize,
) -> Result<(B::Buf, B::Buf)> {
    let mask: Vec<i32> = (hidden.iter())
        .flat_map(|&h| (0..cap).map(move |r| (r >= h) as i32))
        .collect();
    let lookup = bucket_lookup(cap, cap, false, num_buckets, max_distance);
    Ok((be.upload_i32(&mask)?, be.upload_i32(&lookup)?))
}

/// `rows` rows (of `a`) of `src` in a zeroed buffer of `wider` rows, row i at `at[i]`: one
/// scatter on the device (adding into zeros is writing).
fn widen<B: Backend>(
    be: &B,
    src: &B::Buf,
    at: &B::Buf,
    rows: usize,
    wider: usize,
    a: usize,
) -> Result<B::Buf> {
    let mut out = zeros(be, be.act_dtype(), wider * a)?;
    be.scatter_rows_bwd(&mut out, src, at, rows, a)?;
    Ok(out)
}

/// P, the prefix rows of the decoder's self-attention: every layer reads a block of P rows
/// (the cache puts them at the same positions), or none does (0).
fn decoder_prefix_rows<Buf>(blocks: &[Option<PrefixKv<'_, Buf>>]) -> Result<usize> {
    match blocks.iter().flatten().next() {
        None => Ok(0),
        Some(first) if blocks.iter().all(Option::is_some) => Ok(first.p),
        Some(_) => Err(Error::Unsupported(
            "cached T5 decoding with a prefix in some decoder layers only".into(),
        )),
    }
}

/// Writes the prefix block `pre` into the first P rows of each batch row's self-attention
/// cache (B, Cap, A): row b's own prefix of a stack (its slot), copied on the device from
/// the F32 prefix table (K·P, width), read as rows of A, rounded to the activations' type as
/// the attention op reads it.
fn prefix_into_cache<B: Backend>(
    be: &B,
    cache: &mut LayerCache<B>,
    pre: &PrefixKv<'_, B::Buf>,
    b: usize,
    cap: usize,
    a: usize,
) -> Result<()> {
    pre.check(a)?;
    pre.check_rows(b)?;
    if !(pre.width.is_multiple_of(a) && pre.k_off.is_multiple_of(a) && pre.v_off.is_multiple_of(a))
    {
        return Err(Error::shape(
            "prefix row (width, key and value offsets)",
            format!("multiples of the attention width {a}"),
            format!("{}, {}, {}", pre.width, pre.k_off, pre.v_off),
        ));
    }
    let (p, per_row) = (pre.p, pre.width / a);
    let slot = |bi: usize| pre.rows.and_then(|r| r.slot.get(bi).copied()).unwrap_or(0);
    let dst: Vec<i32> = (0..b)
        .flat_map(|bi| (0..p).map(move |r| (bi * cap + r) as i32))
        .collect();
    let dst = be.upload_i32(&dst)?;
    for (off, out) in [(pre.k_off, &mut cache.k), (pre.v_off, &mut cache.v)] {
        let src: Vec<i32> = (0..b)
            .flat_map(|bi| (0..p).map(move |r| ((slot(bi) * p + r) * per_row + off / a) as i32))
            .collect();
        be.copy_rows(out, pre.table, &be.upload_i32(&src)?, &dst, b * p, a)?;
    }
    Ok(())
}
