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
use crate::error::{Error, GoOn, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{linear, zeros, MixedPrompts, PromptRows, MAX_TOKENS};
use crate::models::lm_head::{argmax, pick};
use crate::models::prefix::PrefixInputs;

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

/// `n` new tokens behind `front` rows of prompt and a row of `tokens` tokens reach past
/// `limit` positions (`what`): the bound on new tokens that fits (--max-new-tokens, which
/// prediction calls --max-target-len), or, when not one fits behind a row that long, the
/// --max-len that leaves the `n` room (one new token, when even that row is too short for a
/// text: max_len is 2 at least). `last_fed`: the last new token takes a position too (the
/// KV cache sizes one for it); within a sliding window it does not, as it is never fed back.
fn reach_error(
    (front, tokens, n): (usize, usize, usize),
    (limit, last_fed): (usize, bool),
    what: &str,
) -> Error {
    let unfed = usize::from(!last_fed);
    let note = if last_fed {
        ""
    } else {
        " (the last new token takes none)"
    };
    let head = format!(
        "{n} new tokens behind a prompt of {front} rows and rows of up to {tokens} tokens \
         reach {} positions{note}, past {what}",
        crate::error::sum_text(&[front, tokens, n.saturating_sub(unfed)])
    );
    let limit = limit.saturating_add(unfed);
    let left = limit.saturating_sub(front.saturating_add(tokens));
    if left > 0 {
        return Error::arg("--max-new-tokens", format!("{head}: use {left} or less"));
    }
    let room = limit.saturating_sub(front);
    let advice = match room.checked_sub(n) {
        Some(fits) if fits >= 2 => format!("use --max-len {fits} or less"),
        _ if room > 2 => format!("use --max-len {} or less, and 1 new token", room - 1),
        _ => "shorten the prompt".to_string(),
    };
    Error::arg(
        "--max-len",
        format!("{head}, and not one new token fits behind rows that long: {advice}"),
    )
}

/// One layer's cache: k, v (B, Tmax, Hkv·D), k rotated.
pub(super) struct LayerCache<B: Backend> {
    pub(super) k: B::Buf,
    pub(super) v: B::Buf,
}

/// Rows of one batch mixing the prompts of a table (K, P, C), each generating under its own
/// job's limits: row b reads prompt `mix.idx[b]`, of `mix.lens[b]` rows (all P without), and
/// stops after `max_new[b]` tokens or one of `stop[b]`.
pub struct MixedGeneration<'a> {
    pub mix: MixedPrompts<'a>,
    /// P, the table's prompt rows
    pub p: usize,
    pub max_new: &'a [usize], // (B)
    pub stop: &'a [Vec<i32>], // (B)
}

/// What a batch generates behind: the prompt (P, C) or table (K, P, C) `tab` indexes, each
/// row's prompt length, its limits, and prefix tuning's prefixes.
pub(super) struct Plan<'a, B: Backend> {
    pub(super) prompt: &'a B::Buf,
    pub(super) tab: PromptRows<B>,
    /// P, the table's rows
    pub(super) p: usize,
    /// (B) each row's prompt rows P_b <= P
    pub(super) lens: Vec<usize>,
    /// (B) tokens each row generates at most
    pub(super) max_new: Vec<usize>,
    /// (B) each row's stop tokens
    pub(super) stop: Vec<&'a [i32]>,
    pub(super) placement: PromptPlacement,
    pub(super) keep_logits: bool,
    /// prefix tuning's prefix (L rows in every layer's keys and values), one for every row or
    /// a stack each row reads its own of (`rows`; a row reading none hides all L)
    pub(super) prefix: Option<&'a PrefixInputs<B>>,
}

impl<'a, B: Backend> Plan<'a, B> {
    /// The plan of `b` rows mixing the prompts of `table` (K, P, C) as `gen` says, behind
    /// the prefixes of `prefix` if any.
    pub(super) fn mixed(
        be: &B,
        table: &'a B::Buf,
        b: usize,
        gen: &'a MixedGeneration,
        prefix: Option<&'a PrefixInputs<B>>,
    ) -> Result<Self> {
        crate::error::ensure_len("max new tokens", b, gen.max_new.len())?;
        crate::error::ensure_len("stop tokens", b, gen.stop.len())?;
        Ok(Plan {
            prompt: table,
            tab: PromptRows::upload(be, &gen.mix, b, gen.p)?,
            p: gen.p,
            lens: (gen.mix.lens).map_or_else(|| vec![gen.p; b], <[usize]>::to_vec),
            max_new: gen.max_new.to_vec(),
            stop: gen.stop.iter().map(Vec::as_slice).collect(),
            placement: PromptPlacement::BeforeTokens,
            keep_logits: false,
            prefix,
        })
    }

    /// (B) the rows in front of row b's tokens in the cache: its prefix's L_b and its P_b.
    fn fronts(&self) -> Vec<usize> {
        let pre = |bi| self.prefix.map_or(0, |pre| pre.row_len(bi));
        (self.lens.iter().enumerate())
            .map(|(bi, &l)| pre(bi) + l)
            .collect()
    }

    /// The positions in front of the longest row: behind a prefix, its L and the whole
    /// table's P (the prefill runs the rows right-padded to P + T behind it, and every row's
    /// P + T positions land in the cache behind its prefix, `prefill_prefix`).
    fn front(&self) -> usize {
        self.p + self.prefix.map_or(0, |pre| pre.p)
    }
}

/// The left-padded batch: its layout, the cache's key mask and each row's positions.
pub(super) struct Layout {
    pub(super) b: usize,
    /// positions of the prefill: the longest row with its prompt (or more, `Layout::new`)
    pub(super) s0: usize,
    /// the cache's capacity: s0 + the most tokens a row generates
    pub(super) tmax: usize,
    /// (B) the rows in front of row b's tokens: its prompt's P_b (and its prefix's L_b)
    lens: Vec<usize>,
    /// (B) row b's tokens
    n: Vec<usize>,
    /// pads in front of row b's tokens ([pads][prompt][tokens]) or prompt ([prompt][pads][tokens])
    pub(super) pads: Vec<usize>,
    placement: PromptPlacement,
    /// (B, Tmax): 0 on pads
    key_mask: Vec<i32>,
    /// (B, Tmax): the position of every cache index (0 on pads)
    pos: Vec<i32>,
}

impl Layout {
    /// `rows`' layout behind `lens` (B) front rows; BeforePads takes one prompt length. The
    /// prefill spans `min_s0` positions at least.
    fn new(
        rows: &[Vec<i32>],
        lens: &[usize],
        max_new: usize,
        placement: PromptPlacement,
        min_s0: usize,
    ) -> Layout {
        let n: Vec<usize> = rows.iter().map(Vec::len).collect();
        let longest = (n.iter().zip(lens)).map(|(n, l)| n + l).max().unwrap_or(0);
        let s0 = longest.max(min_s0);
        let (b, tmax) = (rows.len(), s0 + max_new);
        let pads: Vec<usize> = (n.iter().zip(lens)).map(|(n, l)| s0 - n - l).collect();
        let mut key_mask = Vec::with_capacity(b * tmax);
        let mut pos = Vec::with_capacity(b * tmax);
        for (&np, &p) in pads.iter().zip(lens) {
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
            lens: lens.to_vec(),
            n,
            pads,
            placement,
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

    /// The row of row b's embedding ([P_b prompt rows][its tokens][pads], as `embedding_fwd`
    /// lays a right-padded row out) that prefill position s holds; a hidden pad's any row.
    fn src(&self, bi: usize, s: usize) -> usize {
        let (p, n, np) = (self.lens[bi], self.n[bi], self.pads[bi]);
        match self.placement {
            PromptPlacement::BeforeTokens if s < np => s, // hidden
            PromptPlacement::BeforeTokens => s - np,
            PromptPlacement::BeforePads if s < p => s,
            PromptPlacement::BeforePads if s < p + np => p + n + (s - p), // a pad, hidden
            PromptPlacement::BeforePads => s - np,
        }
    }
}

impl<B: Backend> Decoder<B> {
    /// The sliding window against each row's own positions, `spans` (B) of (the rows in
    /// front of its tokens: its prefix and prompt; its tokens; the tokens it generates at
    /// most). Rows of a batch share its left-padded layout, but a row's pads are masked keys:
    /// only its own positions must fit (the engine attends over the whole sequence, so it
    /// generates within the window only). The error names the longest row that does not fit,
    /// so that its advice fits every row.
    fn check_window(&self, spans: &[(usize, usize, usize)]) -> Result<()> {
        let Some(w) = self.cfg.sliding_window else {
            return Ok(());
        };
        // the last new token is never fed back: n tokens take n - 1 positions past the row's
        // (one more was counted, and a length that fits refused; hostile pass 26, F3)
        let fed =
            |f: usize, t: usize, n: usize| f.saturating_add(t).saturating_add(n).saturating_sub(1);
        let over = (spans.iter()).filter(|&&(f, t, n)| fed(f, t, n) > w);
        if let Some(&(f, t, n)) = over.max_by_key(|&&(f, t, _)| f.saturating_add(t)) {
            let what = format!(
                "sliding_window {w} (the engine attends over the whole sequence, so it \
                 generates within the window only)"
            );
            return Err(reach_error((f, t, n), (w, false), &what));
        }
        let longest = spans.iter().map(|&(f, t, _)| f + t).max().unwrap_or(0);
        self.check_length(longest.max(1))
    }

    /// `n` new tokens behind `front` rows of prompt (and prefix) and rows of up to `tokens`
    /// tokens fit this engine's cap and the sliding window, if any: the check a caller that
    /// knows its longest row runs before any batch, for advice that fits every row.
    pub fn check_reach(&self, front: usize, tokens: usize, n: usize) -> Result<()> {
        let reach = front.saturating_add(tokens).saturating_add(n);
        if reach > MAX_TOKENS {
            let what = format!("this engine's cap of {MAX_TOKENS}");
            return Err(reach_error((front, tokens, n), (MAX_TOKENS, true), &what));
        }
        self.check_window(&[(front, tokens, n)])
    }

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
        self.generate_until(be, prompt, p, rows, opts, &mut |_| true)
    }

    /// As [`Decoder::generate`], asking `go_on` with the tokens generated after each step
    /// that leaves a step to run.
    pub fn generate_until(
        &self,
        be: &B,
        prompt: &B::Buf,
        p: usize,
        rows: &[Vec<i32>],
        opts: &GenerateOptions,
        go_on: GoOn<'_>,
    ) -> Result<Generated> {
        let plan = Plan {
            prompt,
            tab: PromptRows::one(),
            p,
            lens: vec![p; rows.len()],
            max_new: vec![opts.max_new_tokens; rows.len()],
            stop: vec![&opts.stop; rows.len()],
            placement: opts.placement,
            keep_logits: opts.keep_logits,
            prefix: None,
        };
        self.generate_plan(be, rows, &plan, go_on)
    }

    /// `generate` over rows mixing the prompts of `table` (K, P, C) as `gen` says, each row
    /// placed [pads][its own P_b prompt rows][its tokens] (so it computes what it computes in
    /// its own prompt's batch) and stopping under its own limits.
    pub fn generate_mixed(
        &self,
        be: &B,
        table: &B::Buf,
        rows: &[Vec<i32>],
        gen: &MixedGeneration,
    ) -> Result<Generated> {
        let plan = Plan::mixed(be, table, rows.len(), gen, None)?;
        self.generate_plan(be, rows, &plan, &mut |_| true)
    }

    /// Greedy decoding of `rows` as `plan` says: the prefill, then one step a token, `go_on`
    /// asked before each step after the first.
    pub(super) fn generate_plan(
        &self,
        be: &B,
        rows: &[Vec<i32>],
        plan: &Plan<B>,
        go_on: GoOn<'_>,
    ) -> Result<Generated> {
        let mut out = Generated {
            ids: vec![Vec::new(); rows.len()],
            logprob: vec![0.0; rows.len()],
            logits: vec![Vec::new(); rows.len()],
        };
        let max_new = plan.max_new.iter().copied().max().unwrap_or(0);
        if rows.is_empty() || max_new == 0 {
            return Ok(out);
        }
        for r in rows {
            crate::backend::check_ids("input_ids", r, self.cfg.vocab_size)?;
        }
        // the positions the batch reaches at the end, bounded before anything is sized by them
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let p = plan.front();
        if p.saturating_add(longest).saturating_add(max_new) > MAX_TOKENS {
            let what = format!("this engine's cap of {MAX_TOKENS}");
            return Err(reach_error(
                (p, longest, max_new),
                (MAX_TOKENS, true),
                &what,
            ));
        }
        let fronts = plan.fronts();
        if (rows.iter().zip(&fronts)).any(|(r, &l)| l + r.len() == 0) {
            return Err(Error::tensor(
                "input_ids",
                "a row without tokens needs a prompt in front of it to generate from",
            ));
        }
        // behind a prefix every row's P + T prefill positions fit behind its own prefix
        let min_s0 = plan.prefix.map_or(0, |_| p + longest);
        let lay = Layout::new(rows, &fronts, max_new, plan.placement, min_s0);
        let spans: Vec<(usize, usize, usize)> = (rows.iter().zip(&fronts).zip(&plan.max_new))
            .map(|((r, &f), &n)| (f, r.len(), n))
            .collect();
        self.check_window(&spans)?;
        let (mut caches, mut logits) = match plan.prefix {
            Some(pre) => self.prefill_prefix(be, plan, pre, rows, &lay)?,
            None => self.prefill(be, plan, rows, &lay)?,
        };
        let mut done: Vec<bool> = plan.max_new.iter().map(|&n| n == 0).collect();
        let v = self.cfg.vocab_size;
        for step in 0..max_new {
            let mut next = Vec::with_capacity(rows.len());
            for (bi, row) in logits.chunks(v).enumerate() {
                if done[bi] {
                    // a finished row's next token is never read: any will do
                    next.push(argmax(row) as i32);
                    continue;
                }
                let (best, logprob) = pick(row, bi, step)?;
                next.push(best as i32);
                out.ids[bi].push(best as i32);
                out.logprob[bi] += logprob;
                if plan.keep_logits {
                    out.logits[bi].push(row.to_vec());
                }
                done[bi] =
                    plan.stop[bi].contains(&(best as i32)) || out.ids[bi].len() >= plan.max_new[bi];
            }
            if step + 1 == max_new || done.iter().all(|&d| d) {
                break;
            }
            crate::error::ask(go_on, step + 1, max_new, "tokens")?;
            logits = self.decode_step(be, &mut caches, &next, lay.s0 + step, &lay)?;
        }
        Ok(out)
    }

    /// The prefill: one forward over the left-padded rows, keeping every layer's keys and
    /// values in the caches; returns them and the logits (B, V) at each row's last position.
    fn prefill(
        &self,
        be: &B,
        plan: &Plan<B>,
        rows: &[Vec<i32>],
        lay: &Layout,
    ) -> Result<(Vec<LayerCache<B>>, Vec<f32>)> {
        let (b, s0, c) = (lay.b, lay.s0, self.cfg.hidden_size);
        let n = b * s0;
        let (x, ids) = self.embed_placed(be, plan, rows, lay)?;
        let (x, _) = self.embed_norm_fwd(be, x, n)?;
        let inp = DecoderInputs {
            b,
            tokens: s0,
            p: 0,
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
            row_ends: (lay.lens.iter().zip(&lay.n)).map(|(l, n)| l + n).collect(),
        };
        let to_cache: Vec<i32> = (0..b)
            .flat_map(|bi| (0..s0).map(move |s| (bi * lay.tmax + s) as i32))
            .collect();
        let (x, caches) = self.prefill_layers(be, x, &inp, &to_cache, lay, |_, _| Ok(()))?;
        let last: Vec<i32> = (0..b).map(|bi| (bi * s0 + s0 - 1) as i32).collect();
        let mut h = zeros(be, be.act_dtype(), b * c)?;
        be.gather_rows(&mut h, &x, &be.upload_i32(&last)?, b, c)?;
        Ok((caches, self.last_logits(be, h, b)?))
    }

    /// The prefill's layers over x (B·S, C) as `inp` says, each layer's keys and values
    /// written into its zeroed cache (B, Tmax, Hkv·D) at the cache rows `to_cache` (B·S),
    /// then `fill(layer, cache)`; returns the last layer's output and the caches.
    pub(super) fn prefill_layers(
        &self,
        be: &B,
        mut x: B::Buf,
        inp: &DecoderInputs<B>,
        to_cache: &[i32],
        lay: &Layout,
        mut fill: impl FnMut(usize, &mut LayerCache<B>) -> Result<()>,
    ) -> Result<(B::Buf, Vec<LayerCache<B>>)> {
        let (n, kvw, len) = (to_cache.len(), self.cfg.kv_width(), lay.b * lay.tmax);
        let to_cache = be.upload_i32(to_cache)?;
        let mut acct = MemoryAccountant::new();
        let mut caches = Vec::with_capacity(self.w.layers.len());
        for l in 0..self.w.layers.len() {
            let (out, kept) = self.layer_fwd(be, &mut acct, l, x, inp, None, Keep::KeyValues)?;
            x = out;
            let Kept::KeyValues(k, v) = kept else {
                return Err(Error::Device("prefill keys and values missing".into()));
            };
            let mut cache = LayerCache {
                k: zeros(be, be.act_dtype(), len * kvw)?,
                v: zeros(be, be.act_dtype(), len * kvw)?,
            };
            // the cache starts at zero and each row is written once: adding is writing
            be.scatter_rows_bwd(&mut cache.k, &k, &to_cache, n, kvw)?;
            be.scatter_rows_bwd(&mut cache.v, &v, &to_cache, n, kvw)?;
            fill(l, &mut cache)?;
            caches.push(cache);
        }
        Ok((x, caches))
    }

    /// The prefill's input x (B, S0, C): each row's prompt rows and tokens embedded
    /// right-padded ([P_b prompt rows][tokens][pads], P + T rows), then placed as `lay` says;
    /// and the right-padded ids (B, T).
    fn embed_placed(
        &self,
        be: &B,
        plan: &Plan<B>,
        rows: &[Vec<i32>],
        lay: &Layout,
    ) -> Result<(B::Buf, B::Buf)> {
        let (b, s0, c, p) = (lay.b, lay.s0, self.cfg.hidden_size, plan.p);
        let t = rows.iter().map(Vec::len).max().unwrap_or(0);
        let ids = self.right_padded(be, rows, t)?;
        let x = self.embed_rows(be, plan.prompt, &ids, &plan.tab, b, t, p)?;
        let idx: Vec<i32> = (0..b)
            .flat_map(|bi| (0..s0).map(move |s| (bi * (p + t) + lay.src(bi, s)) as i32))
            .collect();
        if s0 == p + t && idx.iter().enumerate().all(|(i, &j)| i as i32 == j) {
            return Ok((x, ids));
        }
        let mut out = zeros(be, be.act_dtype(), b * s0 * c)?;
        be.gather_rows(&mut out, &x, &be.upload_i32(&idx)?, b * s0, c)?;
        Ok((out, ids))
    }

    /// The id padding fills rows with: the pad token, else 0, within the vocabulary (a
    /// `pad_token_id` of `vocab_size` or more reads as the last row; padding is masked
    /// wherever it stands, so its embedding row never counts).
    pub(crate) fn pad_id(&self) -> i32 {
        (self.cfg.pad_token_id.unwrap_or(0)).min(self.cfg.vocab_size.saturating_sub(1)) as i32
    }

    /// The ids (B, T) of `rows`, each right-padded to `t` with the pad token.
    pub(super) fn right_padded(&self, be: &B, rows: &[Vec<i32>], t: usize) -> Result<B::Buf> {
        let pad_id = self.pad_id();
        let mut ids = Vec::with_capacity(rows.len() * t);
        for r in rows {
            ids.extend(r);
            ids.extend(std::iter::repeat_n(pad_id, t - r.len()));
        }
        be.upload_i32(&ids)
    }

    /// The final norm and the head over h (B, C): logits (B, V) on the host.
    pub(super) fn last_logits(&self, be: &B, h: B::Buf, b: usize) -> Result<Vec<f32>> {
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
