//! The whole training step of a causal LM: the stack forward, the LM head's cross-entropy at
//! the target rows only (forward and backward in one call, in row chunks), the stack backward.

use super::inputs::DecoderInputs;
use super::layer::Tail;
use super::weights::Decoder;
use crate::backend::Backend;
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{Capture, Recompute};
use crate::models::lm_head::{LmHead, LossRows};

impl<B: Backend> Decoder<B> {
    /// The LM head: `lm_head.weight` or the tied input embeddings.
    pub(crate) fn head(&self) -> LmHead<'_, B> {
        LmHead {
            w: self.lm_head_weight(),
            c: self.cfg.hidden_size,
            v: self.cfg.vocab_size,
            scale: 1.0,
            budget: self.lm_chunk_bytes,
        }
    }

    /// Full forward and backward of one batch against its causal-LM targets (`inp.rows`,
    /// `inp.targets`): returns the mean loss over the targets and adds d loss / d prompt into
    /// `dprompt` (P, C). `capture` collects the hidden states and the logits at every
    /// real-token position (B, T, V) for parity; without it only the target rows reach the head.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        prompt: &B::Buf,
        inp: &DecoderInputs<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
    ) -> Result<f64> {
        // the last layer runs at the target rows' tail, unless every position is captured
        let tail = match capture {
            Some(_) => None,
            None => Tail::covering(be, &inp.rows, inp)?,
        };
        let cap = capture.as_deref_mut();
        let (hidden, acts) = self.stack_fwd_at(be, acct, prompt, inp, recompute, cap, tail)?;
        acct.end_forward();
        if let Some(cap) = capture {
            cap.insert("logits".into(), self.token_logits(be, &hidden, inp)?);
        }
        let (n, rows) = tail_rows(acts.tail.as_ref(), inp, &inp.rows);
        let (loss, dhidden) =
            (self.head()).mean_loss_fwd_bwd(be, &hidden, n, &rows, &inp.targets, None)?;
        drop(hidden);
        self.stack_bwd(be, acct, dprompt, dhidden, acts, inp)?;
        Ok(loss)
    }

    /// The step over a batch whose rows mix the prompts of the table (K, P, C) (`inp.table`)
    /// and the prefixes of a stack (`inp.prefix` with its rows, `PrefixRows`): each part's
    /// (one job's) mean loss over its target rows (`split_by_job` of `inp.rows`), one backward
    /// adding d (Σ of the parts' means) / d table into `dtable` (K, P, C) (None: no row reads
    /// a prompt) and / d stack into `dstack` (K·L, N·2·Hkv·D) (None: `inp` reads none). Each
    /// prompt's and each prefix's slice is its own job's gradient, as no other row reads it.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_parts(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dtable: Option<&mut B::Buf>,
        dstack: Option<&mut B::Buf>,
        table: &B::Buf,
        inp: &DecoderInputs<B>,
        parts: &[LossRows],
        recompute: Recompute,
    ) -> Result<Vec<f64>> {
        let all: Vec<i32> = parts
            .iter()
            .flat_map(|pt| pt.rows.iter().copied())
            .collect();
        let tail = Tail::covering(be, &all, inp)?;
        let (hidden, acts) = self.stack_fwd_at(be, acct, table, inp, recompute, None, tail)?;
        acct.end_forward();
        let tail = acts.tail.as_ref();
        let (n, _) = tail_rows(tail, inp, &[]);
        let parts: Vec<LossRows> = (parts.iter())
            .map(|pt| LossRows {
                rows: tail_rows(tail, inp, &pt.rows).1,
                targets: pt.targets.clone(),
            })
            .collect();
        let (losses, dhidden) = self.head().parts_loss_fwd_bwd(be, &hidden, n, &parts)?;
        drop(hidden);
        self.stack_bwd_split(be, acct, dtable, dstack, dhidden, acts, inp)?;
        Ok(losses)
    }

    /// Forward only, for rank classification: the cross-entropy at each of `inp.rows` (flat
    /// rows of (B, S)) against `inp.targets`, the last layer and final norm run at those rows'
    /// tail as in the step. `prompt` is the prompt (P, C), or the table of a mixed batch.
    pub fn target_losses(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &DecoderInputs<B>,
    ) -> Result<Vec<f32>> {
        let (hidden, rows, _) = self.target_hidden(be, acct, prompt, inp)?;
        self.head().row_losses(be, &hidden, &rows, &inp.targets)
    }

    /// `target_losses`' hidden states: the final norm's output (N, C) at the tail covering
    /// `inp.rows`, those rows as rows of it, and N.
    pub(super) fn target_hidden(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &DecoderInputs<B>,
    ) -> Result<(B::Buf, Vec<i32>, usize)> {
        let tail = Tail::covering(be, &inp.rows, inp)?;
        let recompute = Recompute::Layer;
        let (hidden, acts) = self.stack_fwd_at(be, acct, prompt, inp, recompute, None, tail)?;
        let (n, rows) = tail_rows(acts.tail.as_ref(), inp, &inp.rows);
        Ok((hidden, rows, n))
    }

    /// (B, T, V) float32 logits at every real-token position (the prompt rows excluded), as
    /// PEFT's output holds them after `[:, P:]`; in row chunks, on the host.
    fn token_logits(&self, be: &B, hidden: &B::Buf, inp: &DecoderInputs<B>) -> Result<Vec<f32>> {
        let s = inp.s();
        let rows: Vec<i32> = (0..inp.b)
            .flat_map(|bi| (inp.p..s).map(move |t| (bi * s + t) as i32))
            .collect();
        let head = self.head();
        let chunk = crate::models::lm_head::lm_chunk_rows(head.budget, head.v, rows.len());
        let mut out = Vec::with_capacity(rows.len() * head.v);
        for part in rows.chunks(chunk) {
            out.extend(be.download(&head.logits(be, hidden, part)?)?);
        }
        Ok(out)
    }
}

/// The hidden states' row count with the `tail` (B·rows; B·S without one), and `rows` (flat
/// rows of (B, S)) as rows of them.
fn tail_rows<B: Backend>(
    tail: Option<&Tail<B>>,
    inp: &DecoderInputs<B>,
    rows: &[i32],
) -> (usize, Vec<i32>) {
    match tail {
        Some(t) => (inp.b * t.rows, t.rows_of(rows, inp.s())),
        None => (inp.b * inp.s(), rows.to_vec()),
    }
}
