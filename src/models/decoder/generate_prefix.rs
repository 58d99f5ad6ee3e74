//! Greedy generation behind prefix tuning's prefixes (PEFT's CAUSAL_LM placement: every
//! layer's keys and values start with the prefix's L rows, unrotated, and the tokens sit at
//! positions L..): one prefix for every row (`generate_prefix`), or rows mixing the prefixes
//! of a stack and the prompts of a table (`generate_mixed_prefix`, the mixed prediction's
//! greedy batches). The prefill runs the rows right-padded behind the prefix, as the training
//! forward does (ALiBi and RoPE then see each row as alone: the attention op places each row's
//! prefix keys right before its first real key), and the cache then holds row b as
//! [pads][its L_b prefix rows][its P_b prompt rows][its tokens], which decodes as a prompt of
//! L_b + P_b rows does (`generate.rs`).

use super::generate::{GenerateOptions, Generated, MixedGeneration, PromptPlacement};
use super::generate::{LayerCache, Layout, Plan};
use super::inputs::DecoderInputs;
use super::weights::Decoder;
use crate::backend::{Backend, DType};
use crate::error::{Error, GoOn, Result};
use crate::models::common::{zeros, PromptRows};
use crate::models::prefix::PrefixInputs;

impl<B: Backend> Decoder<B> {
    /// `generate` behind prefix tuning's `prefix`, one for every row.
    pub fn generate_prefix(
        &self,
        be: &B,
        prefix: &PrefixInputs<B>,
        rows: &[Vec<i32>],
        opts: &GenerateOptions,
    ) -> Result<Generated> {
        self.generate_prefix_until(be, prefix, rows, opts, &mut |_| true)
    }

    /// As [`Decoder::generate_prefix`], asking `go_on` as [`Decoder::generate_until`] does.
    pub fn generate_prefix_until(
        &self,
        be: &B,
        prefix: &PrefixInputs<B>,
        rows: &[Vec<i32>],
        opts: &GenerateOptions,
        go_on: GoOn<'_>,
    ) -> Result<Generated> {
        if opts.placement != PromptPlacement::BeforeTokens {
            return Err(Error::arg(
                "--prompt-placement",
                "peft places a prompt-tuning prompt before the padding; a prefix always sits \
                 right before each row's tokens",
            ));
        }
        if prefix.rows.is_some() {
            return Err(Error::arg(
                "prefix",
                "a stack of prefixes read per row: generate_mixed_prefix generates behind it",
            ));
        }
        self.check_prefix(prefix, rows)?;
        let none = zeros(be, DType::F32, 0)?;
        let plan = Plan {
            prompt: &none,
            tab: PromptRows::one(),
            p: 0,
            lens: vec![0; rows.len()],
            max_new: vec![opts.max_new_tokens; rows.len()],
            stop: vec![&opts.stop; rows.len()],
            placement: opts.placement,
            keep_logits: opts.keep_logits,
            prefix: Some(prefix),
        };
        self.generate_plan(be, rows, &plan, go_on)
    }

    /// `generate_mixed` over rows that also mix the prefixes of the stack `prefix` (its
    /// `rows`: each batch row's slot, and the leading rows it hides, all L for a prompt row):
    /// row b reads its own prefix of L_b rows, or its own prompt of `table` (K, P, C), and
    /// computes what it computes alone (`generate_prefix`, `generate`).
    pub fn generate_mixed_prefix(
        &self,
        be: &B,
        table: &B::Buf,
        prefix: &PrefixInputs<B>,
        rows: &[Vec<i32>],
        gen: &MixedGeneration,
    ) -> Result<Generated> {
        self.check_prefix(prefix, rows)?;
        let plan = Plan::mixed(be, table, rows.len(), gen, Some(prefix))?;
        self.generate_plan(be, rows, &plan, &mut |_| true)
    }

    /// Rejects a prefix whose block count is not the layer count.
    pub(super) fn check_prefix_blocks(&self, prefix: &PrefixInputs<B>) -> Result<()> {
        if prefix.blocks != self.w.layers.len() {
            return Err(Error::shape(
                "prefix blocks (one per layer)",
                format!("{} blocks", self.w.layers.len()),
                prefix.blocks,
            ));
        }
        Ok(())
    }

    /// Rejects a prefix of another block count, rows that do not match its stack, and a row
    /// behind a prefix without tokens.
    fn check_prefix(&self, prefix: &PrefixInputs<B>, rows: &[Vec<i32>]) -> Result<()> {
        self.check_prefix_blocks(prefix)?;
        prefix.block(0).check_rows(rows.len())?;
        let empty =
            (rows.iter().enumerate()).find(|(bi, r)| r.is_empty() && prefix.row_len(*bi) > 0);
        if let Some((bi, _)) = empty {
            return Err(Error::tensor(
                "input_ids",
                format!(
                    "row {bi} has no tokens: a prefix holds keys, not a position to generate from"
                ),
            ));
        }
        Ok(())
    }

    /// The prefill behind prefixes: one forward over the rows right-padded to P + T (row b
    /// [its P_b prompt rows][its n_b tokens][pads], positions from its L_b on; the pads after
    /// its tokens, which no real token sees), the caches filled as the left-padded layout `lay`
    /// says: row b's prefix keys and values (block l of the table, cast on the device) in
    /// front of its P_b + n_b rows, at its pads' end; its pad rows in the slots in front (its
    /// pads, masked; `Layout::new`'s `min_s0` leaves room for them). Returns the caches and the
    /// logits (B, V) at each row's last token.
    pub(super) fn prefill_prefix(
        &self,
        be: &B,
        plan: &Plan<B>,
        pre: &PrefixInputs<B>,
        rows: &[Vec<i32>],
        lay: &Layout,
    ) -> Result<(Vec<LayerCache<B>>, Vec<f32>)> {
        let (b, c, p) = (lay.b, self.cfg.hidden_size, plan.p);
        let t = rows.iter().map(Vec::len).max().unwrap_or(0);
        let s = p + t;
        let ids = self.right_padded(be, rows, t)?;
        let x = self.embed_rows(be, plan.prompt, &ids, &plan.tab, b, t, p)?;
        let (x, _) = self.embed_norm_fwd(be, x, b * s)?;
        // (B) row b's prefix rows L_b, and its real rows P_b + n_b
        let pre_lens: Vec<usize> = (0..b).map(|bi| pre.row_len(bi)).collect();
        let real: Vec<usize> = (rows.iter().zip(&plan.lens))
            .map(|(r, &pb)| pb + r.len())
            .collect();
        let key_mask: Vec<i32> = (real.iter())
            .flat_map(|&n| (0..s).map(move |i| (i < n) as i32))
            .collect();
        let pos: Vec<i32> = (pre_lens.iter())
            .flat_map(|&l| (l..l + s).map(|x| x as i32))
            .collect();
        let inp = DecoderInputs {
            b,
            tokens: t,
            p,
            ids,
            key_mask: be.upload_i32(&key_mask)?,
            pos: (self.inv_freq.as_ref())
                .map(|_| be.upload_i32(&pos))
                .transpose()?,
            rows: Vec::new(),
            targets: Vec::new(),
            table: PromptRows::one(),
            prefix: Some(own_copy(be, pre)?),
            row_ends: real.clone(),
        };
        // position i of row b: after its pads and its prefix; a pad: in a masked slot in front
        let to_cache: Vec<i32> = (0..b)
            .flat_map(|bi| {
                let (nb, front, at) = (real[bi], lay.pads[bi] + pre_lens[bi], bi * lay.tmax);
                (0..s).map(move |i| (at + if i < nb { front + i } else { i - nb }) as i32)
            })
            .collect();
        // row b's prefix rows (the stack's rows it does not hide) at its pads' end
        let prefix_at: Vec<usize> = (0..b).map(|bi| bi * lay.tmax + lay.pads[bi]).collect();
        let (x, caches) = self.prefill_layers(be, x, &inp, &to_cache, lay, |l, cache| {
            pre.copy_visible(be, &mut cache.k, &prefix_at, Some((l, 0)))?;
            pre.copy_visible(be, &mut cache.v, &prefix_at, Some((l, 1)))
        })?;
        let last: Vec<i32> = (real.iter().enumerate())
            .map(|(bi, &n)| (bi * s + n.saturating_sub(1)) as i32)
            .collect();
        let mut h = zeros(be, be.act_dtype(), b * c)?;
        be.gather_rows(&mut h, &x, &be.upload_i32(&last)?, b, c)?;
        Ok((caches, self.last_logits(be, h, b)?))
    }
}

/// A copy of `pre` for the prefill's inputs, which own theirs.
fn own_copy<B: Backend>(be: &B, pre: &PrefixInputs<B>) -> Result<PrefixInputs<B>> {
    let k = pre.rows.as_ref().map_or(1, |r| r.prefixes);
    let own = PrefixInputs::new(
        be,
        &pre.table,
        k * pre.p,
        pre.blocks,
        pre.kv_width,
        pre.placement,
    )?;
    match &pre.rows {
        Some(rows) => own.with_rows(rows.clone()),
        None => Ok(own),
    }
}
