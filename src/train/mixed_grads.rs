//! Each job's share of a mixed step's one backward (`mixed.rs` for BERT, `mixed_lm.rs` for
//! T5 and the decoders): a batch mixing prompt and prefix jobs fills the prompt table's
//! gradient (K, P, C) and the prefix stack's (K·L, N·2·Hkv·D) in one pass
//! (`Bert::encoder_bwd_split`, `T5::train_step_parts`, `Decoder::train_step_parts`), and each
//! job takes its slice: no other row reads its prompt or its prefix, so the slice is its own.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::mixed::{job_slot, rows_of, Group, JobStep};
use super::mixed_prefix::PrefixStack;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};

/// The gradients one mixed backward adds into, zeroed.
pub(super) struct SplitGrads<B: Backend> {
    /// (K, P, C) F32 the prompt table's, when a job of the group has prompt rows
    pub dtable: Option<B::Buf>,
    /// (K·L, N·2·Hkv·D) F32 the prefix stack's, when a job has a prefix
    pub dstack: Option<B::Buf>,
    /// (P, C)
    table: (usize, usize),
    /// (L, N·2·Hkv·D)
    stack: (usize, usize),
}

impl<B: Backend> SplitGrads<B> {
    /// Zeroed gradients of `gr`'s table of prompts (K, P, C) and of its `stack`.
    pub(super) fn zeros(
        be: &B,
        gr: &Group<'_, '_, B>,
        p: usize,
        c: usize,
        stack: Option<&PrefixStack<B>>,
    ) -> Result<Self> {
        let k = gr.group.len();
        let prompts = (0..k).any(|kj| gr.job(kj).is_ok_and(|(_, pa)| pa.prefix.is_none()));
        let shape = stack.map_or((0, 0), |st| (st.l, st.width));
        Ok(SplitGrads {
            dtable: (prompts.then(|| be.zeros(DType::F32, k * p * c))).transpose()?,
            dstack: (stack.map(|_| be.zeros(DType::F32, k * shape.0 * shape.1))).transpose()?,
            table: (p, c),
            stack: shape,
        })
    }

    /// Each job's loss, its rows' real tokens, and its gradient: a prompt job's slice of
    /// `dtable`, less the padding rows of a shorter prompt (which no row reads): its first
    /// P_k rows; a prefix job's slice of `dstack`: its last L_k rows. Its grads were zero, so
    /// the slice is its own.
    pub(super) fn finish(
        self,
        be: &B,
        gr: &Group<'_, '_, B>,
        losses: &[f64],
        out: &mut [JobStep<B>],
    ) -> Result<()> {
        let (g, (_, job_lens)) = (gr.rows, gr.lens());
        let host = |t: Option<B::Buf>| t.map(|buf| be.download(&buf)).transpose();
        let (prompts, prefixes) = (host(self.dtable)?, host(self.dstack)?);
        let ((p, c), (l, w)) = (self.table, self.stack);
        for k in 0..gr.group.len() {
            let params = gr.job(k)?.1;
            let (grad, rows) = match (params.prefix, &prompts, &prefixes) {
                (Some(_), _, Some(d)) => {
                    (d, k * l * w + (l - params.p.min(l)) * w..(k + 1) * l * w)
                }
                (None, Some(d), _) => {
                    let len = (job_lens.as_ref().and_then(|lens| lens.get(k))).map_or(p, |&n| n);
                    (d, k * p * c..(k * p + len) * c)
                }
                _ => {
                    return Err(Error::arg(
                        "jobs",
                        format!("job {k} of the group has no gradient"),
                    ))
                }
            };
            let slot = job_slot(out, gr.group, k)?;
            slot.loss = losses.get(k).copied().unwrap_or(0.0);
            slot.tokens = (rows_of(&g.slot, k)
                .iter()
                .filter_map(|&r| g.enc.rows.get(r)))
            .map(|r| r.ids.len() + r.target.len())
            .sum();
            slot.grads.prompt = be.upload(DType::F32, grad.get(rows).unwrap_or_default())?;
        }
        Ok(())
    }
}
