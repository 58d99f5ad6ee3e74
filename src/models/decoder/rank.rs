//! Rank classification with a cached prefill: a batch's prompt rows and tokens run through
//! the stack once (`rank_prefill`), keeping every layer's keys and values, and each label's
//! target then runs as a continuation batch of its own tokens only (`rank_losses`), reading
//! those keys and values as a per-row prefix: the stack of the rows' caches
//! (B·Ls, N·2·Hkv·D) F32, row b's L_b + P_b + n_b rows (its prefix-tuning prefix's, its
//! prompt's, its tokens') at the end of its slot of Ls rows, the leading ones hidden
//! (`PrefixRows`). The attention op places each row's prefix keys right before its first real
//! key, and the continuation's positions start at the row's own length, so ALiBi and RoPE read
//! every target token where the full forward over [prompt][tokens][target] reads it
//! (`target_losses`): K labels cost one forward over the rows and K over the targets, not K
//! over both. The keys are stored rotated (as the op reads a prefix's keys: unrotated by it).
//! The first target token is predicted by the prefill's last position, the others by the
//! continuation's.

use super::layer::{Keep, Kept};
use super::weights::Decoder;
use crate::backend::{Backend, DType, IGNORE_INDEX};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{zeros, MixedPrompts, TokenBatch};
use crate::models::prefix::{MixedPrefix, Placement, PrefixInputs};

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
        let act = be.act_dtype();
        let mut table = zeros(be, act, b * ls * blocks * 2 * kvw)?;
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
                let mut rows = zeros(be, act, m * kvw)?;
                be.gather_rows(&mut rows, &kv, &src, m, kvw)?;
                let dst: Vec<i32> = (at.iter())
                    .map(|&r| ((r * blocks + l) * 2 + half) as i32)
                    .collect();
                // the table starts at zero and each row is written once: adding is writing
                be.scatter_rows_bwd(&mut table, &rows, &be.upload_i32(&dst)?, m, kvw)?;
            }
        }
        let pairs = (inp.prefix.as_ref())
            .map_or_else(Vec::new, |pre| prefix_rows(pre, &pre_lens, &lens, ls));
        match (&inp.prefix, act) {
            (Some(pre), DType::F32) => copy_rows(be, &mut table, &pre.table, &pairs, pre.width())?,
            (Some(pre), _) => table = host_copy_rows(be, &table, &pre.table, &pairs, pre.width())?,
            (None, DType::F32) => {}
            (None, _) => table = be.upload(DType::F32, &be.download(&table)?)?,
        }
        let last: Vec<i32> = (0..b)
            .map(|bi| (bi * s + real[bi].max(1) - 1) as i32)
            .collect();
        let mut h = zeros(be, act, b * c)?;
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
        })
    }

    /// Every row's target token losses for `targets` (B, K, L), -100 padded (row b's K
    /// targets; an empty one scores nothing), after the prefill `pre`: as `target_losses` over
    /// each row joined with each target gives them. All B·K targets run as one continuation
    /// batch (row b·K + k reads row b's cache) and reach the head once with the first tokens
    /// (the prefill's last positions predict them). Returns (b·K + k, loss) pairs in that
    /// order, each target's in token order.
    pub fn rank_losses(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        pre: &mut RankPrefill<B>,
        targets: &[i32],
        k: usize,
        l: usize,
    ) -> Result<(Vec<i32>, Vec<f32>)> {
        let (b, c) = (pre.lens.len(), self.cfg.hidden_size);
        crate::error::ensure_len("rank targets (B*K*L)", b * k * l, targets.len())?;
        let target = |r: usize| -> Vec<i32> {
            let row = targets.get(r * l..(r + 1) * l).unwrap_or_default();
            let real = row.iter().copied().take_while(|&x| x != IGNORE_INDEX);
            real.collect()
        };
        let tg: Vec<Vec<i32>> = (0..b * k).map(target).collect();
        // each target but its last token as a continuation, position j predicting token j + 1
        let t = tg
            .iter()
            .map(|r| r.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let (hidden, cont_rows) = match t {
            0 => (None, Vec::new()),
            _ => {
                let (h, rows, n) = self.continuation(be, acct, pre, &tg, k, t)?;
                (Some((h, n)), rows)
            }
        };
        // the head's rows: [the prefill's last positions (B)][the continuation's (N)]
        let joint = match hidden {
            None => None,
            Some((h, n)) => {
                let mut joint = zeros(be, be.act_dtype(), (b + n) * c)?;
                let first: Vec<i32> = (0..b as i32).collect();
                be.scatter_rows_bwd(&mut joint, &pre.last, &be.upload_i32(&first)?, b, c)?;
                let rest: Vec<i32> = (b..b + n).map(|r| r as i32).collect();
                be.scatter_rows_bwd(&mut joint, &h, &be.upload_i32(&rest)?, n, c)?;
                Some(joint)
            }
        };
        let (mut owner, mut rows, mut want) = (Vec::new(), Vec::new(), Vec::new());
        let mut next = cont_rows.iter();
        for (r, row) in tg.iter().enumerate() {
            if pre.first[r / k.max(1)] && !row.is_empty() {
                owner.push(r as i32);
                rows.push((r / k.max(1)) as i32);
                want.push(row[0]);
            }
            for (&tok, &at) in row.iter().skip(1).zip(next.by_ref()) {
                owner.push(r as i32);
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

    /// The continuation of the B·K targets `tg` (each but its last token, right-padded to
    /// `t`; an empty one a pad, unscored) behind their rows' caches: the final norm's output
    /// (N, C) at the target rows' tail, the target rows as rows of it (in target and token
    /// order, target token 1.. of each), and N.
    fn continuation(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        pre: &mut RankPrefill<B>,
        tg: &[Vec<i32>],
        k: usize,
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
        inp.targets = vec![0; inp_rows.len()]; // unread: the head runs in `rank_losses`
        inp.rows = inp_rows;
        if let Some(mut kv) = pre.kv.take() {
            let ls = kv.p;
            // row r reads row r / K's cache
            let owner = |r: usize| r / k.max(1);
            kv.rows = Some(MixedPrefix {
                slot: (0..n).map(owner).collect(),
                hidden: (0..n).map(|r| ls - pre.lens[owner(r)]).collect(),
                prefixes: pre.lens.len(),
            });
            let lens: Vec<usize> = (0..n).map(|r| pre.lens[owner(r)]).collect();
            inp = self.with_mixed_prefix(be, inp, kv, &lens)?;
        }
        let out = self.target_hidden(be, acct, &zeros(be, DType::F32, 0)?, &inp);
        pre.kv = inp.prefix.take();
        out
    }
}

/// (source row of `pre`'s table, stack row) of every row b's prefix rows: the `pre_lens[b]`
/// its slot does not hide, at the front of its cache, stack rows b·Ls + Ls − lens[b]...
fn prefix_rows<B: Backend>(
    pre: &PrefixInputs<B>,
    pre_lens: &[usize],
    lens: &[usize],
    ls: usize,
) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (bi, (&l, &n)) in pre_lens.iter().zip(lens).enumerate() {
        let slot = pre.rows.as_ref().and_then(|r| r.slot.get(bi).copied());
        let first = slot.unwrap_or(0) * pre.p + pre.p - l;
        pairs.extend((0..l).map(|j| (first + j, bi * ls + ls - n + j)));
    }
    pairs
}

/// `table` (rows of `width`) F32 gets the rows `pairs` name of `src` (F32), on the device.
fn copy_rows<B: Backend>(
    be: &B,
    table: &mut B::Buf,
    src: &B::Buf,
    pairs: &[(usize, usize)],
    width: usize,
) -> Result<()> {
    let m = pairs.len();
    if m == 0 {
        return Ok(());
    }
    let (from, to): (Vec<i32>, Vec<i32>) =
        (pairs.iter()).map(|&(s, d)| (s as i32, d as i32)).unzip();
    let mut rows = zeros(be, DType::F32, m * width)?;
    be.gather_rows(&mut rows, src, &be.upload_i32(&from)?, m, width)?;
    // those rows of the table are zero: adding is writing
    be.scatter_rows_bwd(table, &rows, &be.upload_i32(&to)?, m, width)
}

/// `table` (in the activations' type) as F32 with `copy_rows`' rows, through the host: the
/// row ops take one type, and the attention op reads a prefix in F32.
fn host_copy_rows<B: Backend>(
    be: &B,
    table: &B::Buf,
    src: &B::Buf,
    pairs: &[(usize, usize)],
    width: usize,
) -> Result<B::Buf> {
    let (mut host, src) = (be.download(table)?, be.download(src)?);
    for &(s, d) in pairs {
        let row = src.get(s * width..(s + 1) * width);
        let dst = host.get_mut(d * width..(d + 1) * width);
        if let (Some(row), Some(dst)) = (row, dst) {
            dst.copy_from_slice(row);
        }
    }
    be.upload(DType::F32, &host)
}
