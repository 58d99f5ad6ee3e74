//! Prefix-tuning jobs in mixed batches (`mixed.rs`, `mixed_lm.rs`), beside prompt-tuning
//! jobs and each other: the group's prefixes stacked into one table (K·L, N·2·Hkv·D), L the
//! longest, each left-padded to L rows, and every attention layer reading each batch row's
//! own prefix of the stack (`PrefixRows`: the row hides its L − L_b padding rows, a prompt
//! job's row all L). Left padding keeps each prefix key's distance to the real keys, so T5's
//! relative bias and ALiBi see what the prefix's own batch sees. Positions: a decoder row's
//! tokens start at its own L_b (RoPE, `Decoder::with_mixed_prefix`); a BERT row's tokens sit
//! at their first position behind as many front rows of the prompt table, hidden from every
//! query (the embedding gives each row's slot its position). The step runs prefix and prompt
//! jobs in one batch on every family: its one backward fills the prompt table's gradient
//! (K, P, C) and the stack's (K·L, width) at once (`Bert::encoder_bwd_split`,
//! `T5::train_step_parts`, `Decoder::train_step_parts`), each prefix job's last L_k rows of
//! the stack its prefix's (`mixed_grads.rs`). The CPU reference and the CUDA kernels
//! (kernels/ATTENTION.md) both read a stack.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::mixed::Group;
use super::model::Model;
use crate::backend::{Backend, DType};
use crate::error::Result;
use crate::models::bert::BertInputs;
use crate::models::prefix::{MixedPrefix, PrefixInputs};
use crate::models::{Model as Net, PrefixSpec};

/// The prefixes of a group's jobs stacked on the device.
pub(super) struct PrefixStack<B: Backend> {
    /// (K·L, N·2·Hkv·D) F32: job k's prefix in rows k·L + L − L_k .. (k + 1)·L, zeros above
    table: B::Buf,
    /// L, the longest prefix
    pub(super) l: usize,
    /// N·2·Hkv·D
    pub(super) width: usize,
    /// the layout every prefix of the group shares (`mixed_groups::groups`)
    spec: PrefixSpec,
    /// (K) each job's prefix rows, 0 for a prompt job
    lens: Vec<usize>,
}

impl<B: Backend> PrefixStack<B> {
    /// The stack of `gr`'s prefixes; None when no job of it has one.
    pub(super) fn of(be: &B, gr: &Group<'_, '_, B>) -> Result<Option<Self>> {
        let mut jobs = Vec::with_capacity(gr.group.len());
        for k in 0..gr.group.len() {
            jobs.push(gr.job(k)?.1);
        }
        let Some(spec) = jobs.iter().find_map(|params| params.prefix) else {
            return Ok(None);
        };
        let lens: Vec<usize> = (jobs.iter())
            .map(|params| params.prefix.map_or(0, |_| params.p))
            .collect();
        let (l, width) = (
            lens.iter().copied().max().unwrap_or(0),
            (jobs.iter())
                .find(|params| params.prefix.is_some())
                .map_or(0, |params| params.d),
        );
        let mut table = Vec::with_capacity(jobs.len() * l * width);
        for (params, &len) in jobs.iter().zip(&lens) {
            table.resize(table.len() + (l - len) * width, 0.0);
            if params.prefix.is_some() {
                table.extend(be.download(&params.prompt)?);
            }
        }
        Ok(Some(PrefixStack {
            table: be.upload(DType::F32, &table)?,
            l,
            width,
            spec,
            lens,
        }))
    }

    /// Each batch row's prefix rows (B) from its slot `idx` (B): 0 for a prompt job's.
    pub(super) fn row_lens(&self, idx: &[i32]) -> Vec<usize> {
        (idx.iter())
            .map(|&s| self.lens.get(s as usize).copied().unwrap_or(0))
            .collect()
    }

    /// The prefix inputs of a batch whose row b reads the prefix of slot `idx[b]`.
    pub(super) fn inputs(&self, be: &B, model: &Model<B>, idx: &[i32]) -> Result<PrefixInputs<B>> {
        let k = self.lens.len();
        let spec = PrefixSpec {
            p: k * self.l,
            ..self.spec
        };
        let rows = MixedPrefix {
            slot: idx.iter().map(|&s| s.max(0) as usize).collect(),
            hidden: self.row_lens(idx).iter().map(|&n| self.l - n).collect(),
            prefixes: k,
        };
        model
            .net
            .prefix_inputs(be, &self.table, spec)?
            .with_rows(rows)
    }

    /// BERT's mixed inputs `inp` (row b behind `lens[b]` front rows, else P) behind the
    /// stack: a prefix row's front rows hidden from every query.
    pub(super) fn bert_inputs(
        &self,
        be: &B,
        model: &Model<B>,
        inp: BertInputs<B>,
        idx: &[i32],
        lens: Option<&[usize]>,
    ) -> Result<BertInputs<B>> {
        let all_p = vec![inp.p; idx.len()];
        let lens = lens.unwrap_or(&all_p);
        let hide: Vec<usize> = (self.row_lens(idx).iter().zip(lens))
            .map(|(&pre, &front)| if pre > 0 { front } else { 0 })
            .collect();
        let pre = self.inputs(be, model, idx)?;
        Net::bert_mixed_prefix_inputs(be, inp, pre, lens, &hide)
    }
}
