//! Rank classification with a cached prefill: a batch's prompt rows and tokens run through
//! the stack once (`rank_prefill`), keeping every layer's keys and values, and each label's
//! target then runs as a continuation batch of its own tokens only (`rank_losses`), reading
//! those keys and values as a per-row prefix: the stack of the rows' caches
//! (B·Ls, N·2·Hkv·D) F32, row b's L_b + P_b + n_b rows (its prefix-tuning prefix's, its
//! prompt's, its tokens') at the end of its slot of Ls rows, the leading ones hidden
//! (`PrefixRows`), written on the device (`copy_rows` casts the activations to F32). The
//! attention op places each row's prefix keys right before its first real key, and the
//! continuation's positions start at the row's own length, so ALiBi and RoPE read every target
//! token where the full forward over [prompt][tokens][target] reads it (`target_losses`): K
//! labels cost one forward over the rows and K over the targets, not K over both. The B·K
//! targets run in chunks of rows that together span no more positions than the prefill did
//! (or fewer, `RankPrefill::set_chunk_rows`), so memory does not grow with K; every chunk
//! reads the same stack. The keys are stored rotated (as the op reads a prefix's keys:
//! unrotated by it). The first target token is predicted by the prefill's last position, the
//! others by the continuation's.

use super::layer::{Keep, Kept};
use super::weights::Decoder;
use crate::backend::{Backend, DType, IGNORE_INDEX};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{zeros, MixedPrompts, TokenBatch};
use crate::models::prefix::{MixedPrefix, Placement, PrefixInputs};
use std::ops::Range;

/// A batch's rows run once for rank classification: their keys and values, which every
/// label's continuation reads, and the state that predicts a target's first token.
pub struct RankPrefill<B: Backend> {
    /// the stack (B·Ls, N·2·Hkv·D) F32 (slot b: row b's cache at its end), as the
    /// continuation's prefix, its `rows` set by each; None when no row has a position
    kv: Option<PrefixInputs<B>>,
    /// (B) row b's cached rows: L_b + P_b + n_b
    lens: Vec<usize>,
    /// (B) whether a position precedes row b's target (P_b + n_b > 0; a prefix does not
    /// predict, as in `causal_targets`)
    first: Vec<bool>,
    /// (B, C) the final norm's output at row b's last position
    last: B::Buf,
    /// B·S, the prefill's positions: a continuation chunk spans no more by default
    positions: usize,
    /// the most targets one continuation chunk runs, when set (`set_chunk_rows`)
    chunk: Option<usize>,
}

impl<B: Backend> RankPrefill<B> {
    /// Runs `rank_losses`' continuation `rows` targets at a time at most (1 at least), in
    /// place of as many as span the prefill's positions.
    pub fn set_chunk_rows(&mut self, rows: usize) {
        self.chunk = Some(rows.max(1));
    }

    /// The targets one continuation chunk runs when each spans `t` positions: as set, else
    /// as many as fit in the prefill's positions, and B at least.
    fn chunk_rows(&self, t: usize) -> usize {
        let fit = (self.positions / t.max(1)).max(self.lens.len());
        self.chunk.unwrap_or(fit).max(1)
    }
}

impl<B: Backend> Decoder<B> {
    /// The prefill of `batch` behind a prompt of `p` rows (the prompt, or the table `mix`
    /// indexes) and prefix tuning's `prefix` if any (one, or a stack with its rows): the
    /// rows right-padded as `upload_mixed_inputs` lays them out, run once.
    pub fn rank_prefill(
        &self,
        be: &B,
        prompt: &B::Buf,
        batch: &TokenBatch,
        p: usize,
        mix: Option<&MixedPrompts>,
        prefix: Option<PrefixInputs<B>>,
    ) -> Result<RankPrefill<B>> {
        // the row lengths below read the mask: a hand-made batch is checked first
        batch.check()?;
        let (b, kvw, c) = (batch.b, self.cfg.kv_width(), self.cfg.hidden_size);
        let blocks = self.w.layers.len();
        let fronts = (mix.and_then(|m| m.lens)).map_or_else(|| vec![p; b], <[usize]>::to_vec);
        crate::error::ensure_len("prompt lengths", b, fronts.len())?;
        // (B) P_b + n_b, and L_b
        let real: Vec<usize> = (0..b).map(|bi| fronts[bi] + batch.row_len(bi)).collect();
        let pre_lens: Vec<usize> = (0..b)
            .map(|bi| prefix.as_ref().map_or(0, |pre| pre.row_len(bi)))
            .collect();
        if p + batch.t == 0 {
            // nothing to cache: the targets run alone, their first tokens unscored
            if prefix.is_some() {
                return Err(Error::tensor(
                    "input_ids",
                    "rank classification behind a prefix: every row of the batch is empty",
                ));
            }
            return Ok(RankPrefill {
                kv: None,
                lens: vec![0; b],
                first: vec![false; b],
                last: zeros(be, be.act_dtype(), b * c)?,
                positions: 0,
                chunk: None,
            });
        }
        let mut inp = self.upload_mixed_inputs(be, batch, p, None, mix)?;
        if let Some(pre) = prefix {
            self.check_prefix_blocks(&pre)?;
            inp = self.with_mixed_prefix(be, inp, pre, &pre_lens)?;
        }
        let lens: Vec<usize> = (real.iter().zip(&pre_lens)).map(|(r, l)| r + l).collect();
        let ls = lens.iter().copied().max().unwrap_or(0);
        // (B·Ls·N·2, Hkv·D) rows: row b's position i at stack row b·Ls + Ls − (P_b + n_b) + i
        let at: Vec<usize> = (real.iter().enumerate())
            .flat_map(|(bi, &n)| (0..n).map(move |i| bi * ls + ls - n + i))
            .collect();
        let s = inp.s();
        let src: Vec<i32> = (real.iter().enumerate())
            .flat_map(|(bi, &n)| (0..n).map(move |i| (bi * s + i) as i32))
            .collect();
        let (src, m) = (be.upload_i32(&src)?, at.len());
        let mut table = zeros(be, DType::F32, b * ls * blocks * 2 * kvw)?;
        let x = self.embed_rows(be, prompt, &inp.ids, &inp.table, b, inp.tokens, inp.p)?;
        let (mut x, _) = self.embed_norm_fwd(be, x, b * s)?;
        let mut acct = MemoryAccountant::new();
        for l in 0..blocks {
            let (out, kept) = self.layer_fwd(be, &mut acct, l, x, &inp, None, Keep::KeyValues)?;
            x = out;
            let Kept::KeyValues(k, v) = kept else {
                return Err(Error::Device("prefill keys and values missing".into()));
            };
            for (half, kv) in [(0, k), (1, v)] {
                // the table as (B·Ls·N·2, Hkv·D) rows
                let dst: Vec<i32> = (at.iter())
                    .map(|&r| ((r * blocks + l) * 2 + half) as i32)
                    .collect();
                be.copy_rows(&mut table, &kv, &src, &be.upload_i32(&dst)?, m, kvw)?;
            }
        }
        if let Some(pre) = &inp.prefix {
            // row b's prefix rows in front of its P_b + n_b: from stack row b·Ls + Ls − lens[b]
            let first: Vec<usize> = (lens.iter().enumerate())
                .map(|(bi, &n)| bi * ls + ls - n)
                .collect();
            pre.copy_visible(be, &mut table, &first, None)?;
        }
        let last: Vec<i32> = (0..b)
            .map(|bi| (bi * s + real[bi].max(1) - 1) as i32)
            .collect();
        let mut h = zeros(be, be.act_dtype(), b * c)?;
        be.gather_rows(&mut h, &x, &be.upload_i32(&last)?, b, c)?;
        let (last, _) = self.w.final_norm.fwd(be, h, b, c, self.cfg.norm_eps)?;
        let stack = PrefixInputs::new(be, &table, b * ls, blocks, kvw, Placement::Peft)?;
        let rows = MixedPrefix {
            slot: (0..b).collect(),
            hidden: lens.iter().map(|&n| ls - n).collect(),
            prefixes: b,
        };
        Ok(RankPrefill {
            kv: Some(stack.with_rows(rows)?),
            lens,
            first: real.iter().map(|&n| n > 0).collect(),
            last,
            positions: b * s,
            chunk: None,
        })
    }

    /// Every row's target token losses for `targets` (B, K, L), -100 padded (row b's K
    /// targets; an empty one scores nothing), after the prefill `pre`: as `target_losses` over
    /// each row joined with each target gives them. The B·K targets run in chunks of
    /// continuation rows (target b·K + k reads row b's cache; `RankPrefill::chunk_rows`), each
    /// reaching the head once with its first tokens (the prefill's last positions predict
    /// them). Returns (b·K + k, loss) pairs in that order, each target's in token order.
    pub fn rank_losses(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        pre: &mut RankPrefill<B>,
        targets: &[i32],
        k: usize,
        l: usize,
    ) -> Result<(Vec<i32>, Vec<f32>)> {
        let b = pre.lens.len();
        crate::error::ensure_len("rank targets (B*K*L)", b * k * l, targets.len())?;
        let target = |r: usize| -> Vec<i32> {
            let row = targets.get(r * l..(r + 1) * l).unwrap_or_default();
            let real = row.iter().copied().take_while(|&x| x != IGNORE_INDEX);
            real.collect()
        };
        let tg: Vec<Vec<i32>> = (0..b * k).map(target).collect();
        let chunk = pre.chunk_rows(continued(&tg));
        let (mut owner, mut losses) = (Vec::new(), Vec::new());
        for (i, part) in tg.chunks(chunk).enumerate() {
            let (o, x) = self.rank_chunk(be, acct, pre, part, i * chunk, k)?;
            owner.extend(o);
            losses.extend(x);
        }
        Ok((owner, losses))
    }

    /// `rank_losses` of the targets `tg`, targets r0.. of the B·K: one continuation batch,
    /// then the head once over its rows and the first tokens'.
    fn rank_chunk(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        pre: &mut RankPrefill<B>,
        tg: &[Vec<i32>],
        r0: usize,
        k: usize,
    ) -> Result<(Vec<i32>, Vec<f32>)> {
        let (b, c) = (pre.lens.len(), self.cfg.hidden_size);
        let row_of = |r: usize| (r0 + r) / k.max(1);
        let (joint, cont_rows) = match continued(tg) {
            0 => (None, Vec::new()),
            t => {
                let (h, rows, n) = self.continuation(be, acct, pre, tg, &row_of, t)?;
                // the head's rows: [the prefill's last positions (B)][the continuation's (N)]
                let mut joint = be.output(be.act_dtype(), (b + n) * c)?;
                let ids = |r: Range<usize>| be.upload_i32(&r.map(|x| x as i32).collect::<Vec<_>>());
                let first = ids(0..b)?;
                be.copy_rows(&mut joint, &pre.last, &first, &first, b, c)?;
                be.copy_rows(&mut joint, &h, &ids(0..n)?, &ids(b..b + n)?, n, c)?;
                (Some(joint), rows)
            }
        };
        let (mut owner, mut rows, mut want) = (Vec::new(), Vec::new(), Vec::new());
        let mut next = cont_rows.iter();
        for (r, row) in tg.iter().enumerate() {
            if pre.first[row_of(r)] && !row.is_empty() {
                owner.push((r0 + r) as i32);
                rows.push(row_of(r) as i32);
                want.push(row[0]);
            }
            for (&tok, &at) in row.iter().skip(1).zip(next.by_ref()) {
                owner.push((r0 + r) as i32);
                rows.push((b as i32) + at);
                want.push(tok);
            }
        }
        if rows.is_empty() {
            return Ok((owner, Vec::new()));
        }
        let hidden = joint.as_ref().unwrap_or(&pre.last);
        Ok((owner, self.head().row_losses(be, hidden, &rows, &want)?))
    }

    /// The continuation of the targets `tg` (each but its last token, right-padded to `t`; an
    /// empty one a pad, unscored), target r behind the cache of batch row `row_of(r)`: the
    /// final norm's output (N, C) at the target rows' tail, the target rows as rows of it (in
    /// target and token order, target token 1.. of each), and N.
    fn continuation(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        pre: &mut RankPrefill<B>,
        tg: &[Vec<i32>],
        row_of: &dyn Fn(usize) -> usize,
        t: usize,
    ) -> Result<(B::Buf, Vec<i32>, usize)> {
        let n = tg.len();
        let pad = self.pad_id();
        let mut batch = TokenBatch {
            b: n,
            t,
            ids: vec![pad; n * t],
            mask: vec![0; n * t],
            type_ids: None,
        };
        let mut inp_rows = Vec::new();
        for (r, row) in tg.iter().enumerate() {
            let cont = row.get(..row.len().saturating_sub(1)).unwrap_or_default();
            batch.ids[r * t..][..cont.len()].copy_from_slice(cont);
            batch.mask[r * t..][..cont.len().max(1)].fill(1);
            inp_rows.extend((0..cont.len()).map(|j| (r * t + j) as i32));
        }
        let mut inp = self.upload_mixed_inputs(be, &batch, 0, None, None)?;
        inp.targets = vec![0; inp_rows.len()]; // unread: the head runs in `rank_chunk`
        inp.rows = inp_rows;
        match pre.kv.take() {
            Some(mut kv) => {
                let ls = kv.p;
                kv.rows = Some(MixedPrefix {
                    slot: (0..n).map(row_of).collect(),
                    hidden: (0..n).map(|r| ls - pre.lens[row_of(r)]).collect(),
                    prefixes: pre.lens.len(),
                });
                let lens: Vec<usize> = (0..n).map(|r| pre.lens[row_of(r)]).collect();
                inp = self.with_mixed_prefix(be, inp, kv, &lens)?;
            }
            // an error between the take and the return below dropped the stack
            None if pre.lens.iter().any(|&n| n > 0) => {
                return Err(Error::tensor(
                    "rank prefill",
                    "its keys and values were lost to an earlier error: run rank_prefill again",
                ));
            }
            None => {}
        }
        let out = self.target_hidden(be, acct, &zeros(be, DType::F32, 0)?, &inp);
        // the next chunk reads the same stack
        pre.kv = inp.prefix.take();
        out
    }
}

/// The continuation's positions for the targets `tg`: the longest but its last token.
fn continued(tg: &[Vec<i32>]) -> usize {
    tg.iter()
        .map(|r| r.len().saturating_sub(1))
        .max()
        .unwrap_or(0)
}
