//! The batch on the device for training and scoring: right-padded rows with the P prompt rows
//! in front (PEFT's CAUSAL_LM placement: prompt at positions 0..P-1, real tokens at
//! P..P+T-1 in every row, key mask `cat(ones(P), attention_mask)`), and the causal-LM targets.

use super::weights::Decoder;
use crate::backend::{Backend, IGNORE_INDEX};
use crate::error::{Error, Result};
use crate::models::common::{
    mixed_key_mask, prompt_key_mask, MixedPrompts, PromptRows, TokenBatch,
};
use crate::models::prefix::PrefixInputs;

/// The batch on the device. S = P + tokens positions per row.
pub struct DecoderInputs<B: Backend> {
    pub b: usize,
    /// real-token positions per row (the batch's padded length)
    pub tokens: usize,
    pub p: usize,
    pub ids: B::Buf,      // (B, tokens) I32
    pub key_mask: B::Buf, // (B, S) I32, prompt columns 1
    /// which prompt of the table (K, P, C) each row reads, and how many of its rows
    pub table: PromptRows<B>,
    /// (B, S) I32 RoPE positions 0..S-1; None with ALiBi
    pub pos: Option<B::Buf>,
    /// flat rows of (B, S) whose next token is a target, and those targets (host)
    pub rows: Vec<i32>,
    pub targets: Vec<i32>,
    /// prefix tuning (P = 0 then): layer l reads block l; RoPE positions start at P
    pub prefix: Option<PrefixInputs<B>>,
    /// (B) the positions each row's own prompt rows and tokens take (P_b + its last real
    /// token), which a prefix in front extends: what a sliding window must hold, row by row
    pub row_ends: Vec<usize>,
}

impl<B: Backend> DecoderInputs<B> {
    pub fn s(&self) -> usize {
        self.p + self.tokens
    }
}

/// PEFT's CAUSAL_LM loss rows: labels (B, T) get P labels of -100 in front, and position s of
/// the P+T predicts label s+1 (transformers' shift). So the last prompt row predicts label 0,
/// real token t predicts label t+1, and the last position predicts nothing. Returns the flat
/// rows of (B, P+T) that predict a label, and those labels, in row order. With `lens` (B),
/// row b's prompt is P_b <= P rows (rows mixing prompts): its tokens sit from P_b on.
pub fn causal_targets(
    labels: &[i32],
    b: usize,
    t: usize,
    p: usize,
    lens: Option<&[usize]>,
) -> (Vec<i32>, Vec<i32>) {
    let s = p + t;
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for bi in 0..b {
        let pb = lens.and_then(|l| l.get(bi).copied()).unwrap_or(p);
        for ti in 0..t {
            let label = labels[bi * t + ti];
            // label ti sits at position pb + ti and is predicted by the position before it
            if label != IGNORE_INDEX && pb + ti >= 1 {
                rows.push((bi * s + pb + ti - 1) as i32);
                targets.push(label);
            }
        }
    }
    (rows, targets)
}

impl<B: Backend> Decoder<B> {
    /// Uploads a right-padded batch behind a prompt of `p` rows, with causal-LM `labels`
    /// (B, T) (-100 ignored) or none (forward only).
    pub fn upload_inputs(
        &self,
        be: &B,
        batch: &TokenBatch,
        p: usize,
        labels: Option<&[i32]>,
    ) -> Result<DecoderInputs<B>> {
        self.upload_mixed_inputs(be, batch, p, labels, None)
    }

    /// `upload_inputs` for rows mixing the prompts of a table (K, P, C) as `mix` says: row b
    /// reads its own prompt, of its own P_b rows; its tokens (and targets) then sit at
    /// positions P_b.. (RoPE rotates them by those, ALiBi reads them there) and its P - P_b
    /// padding rows at its end are masked keys, which the causal mask hides from its tokens
    /// anyway: each row computes what its prompt's own batch computes (PEFT's placement).
    pub fn upload_mixed_inputs(
        &self,
        be: &B,
        batch: &TokenBatch,
        p: usize,
        labels: Option<&[i32]>,
        mix: Option<&MixedPrompts>,
    ) -> Result<DecoderInputs<B>> {
        let lens = mix.and_then(|m| m.lens);
        batch.check()?;
        crate::backend::check_ids("input_ids", &batch.ids, self.cfg.vocab_size)?;
        let s = p + batch.t;
        // a window bounds each row's own positions (P_b + its tokens), not the batch's P + T:
        // a shorter prompt's row may be padded past it, only its padding lies there (#17)
        let front = |bi: usize| lens.and_then(|l| l.get(bi).copied()).unwrap_or(p);
        let row_ends: Vec<usize> = (0..batch.b)
            .map(|bi| front(bi) + batch.extent(bi))
            .collect();
        let span = row_ends.iter().copied().max().unwrap_or(0);
        self.check_length(if s == 0 { 0 } else { span.max(1) })?;
        let (rows, targets) = match labels {
            Some(labels) => {
                crate::error::ensure_len("labels (B*T)", batch.b * batch.t, labels.len())?;
                crate::backend::loss::check_targets(labels, self.cfg.vocab_size)?;
                causal_targets(labels, batch.b, batch.t, p, lens)
            }
            None => (Vec::new(), Vec::new()),
        };
        let pos = self
            .inv_freq
            .as_ref()
            .map(|_| {
                let pos: Vec<i32> = (0..batch.b).flat_map(|_| 0..s as i32).collect();
                be.upload_i32(&pos)
            })
            .transpose()?;
        Ok(DecoderInputs {
            b: batch.b,
            tokens: batch.t,
            p,
            ids: be.upload_i32(&batch.ids)?,
            key_mask: be.upload_i32(&match lens {
                Some(lens) => mixed_key_mask(&batch.mask, batch.t, p, lens),
                None => prompt_key_mask(batch, p),
            })?,
            pos,
            table: match mix {
                Some(mix) => PromptRows::upload(be, mix, batch.b, p)?,
                None => PromptRows::one(),
            },
            rows,
            targets,
            prefix: None,
            row_ends,
        })
    }

    /// Puts `prefix` in front of every layer's keys (PEFT's CAUSAL_LM placement): the real
    /// tokens then sit at positions P..P+T-1, which RoPE rotates them by (the prefix keys are
    /// stored as they are, unrotated) and ALiBi reads through the op's end alignment.
    pub fn with_prefix(
        &self,
        be: &B,
        mut inp: DecoderInputs<B>,
        prefix: PrefixInputs<B>,
    ) -> Result<DecoderInputs<B>> {
        let span = inp.row_ends.iter().map(|&e| prefix.p + e).max();
        self.check_length(span.unwrap_or(prefix.p).max(1))?;
        if inp.pos.is_some() {
            let (p, t) = (prefix.p as i32, inp.tokens as i32);
            let pos: Vec<i32> = (0..inp.b).flat_map(|_| p..p + t).collect();
            inp.pos = Some(be.upload_i32(&pos)?);
        }
        inp.prefix = Some(prefix);
        Ok(inp)
    }

    /// `with_prefix` for rows mixing the prefixes of a stack (`prefix.rows`): row b's prefix
    /// is `lens[b]` rows (0: a prompt row, no prefix), so its positions start at lens[b]
    /// (RoPE rotates its prompt rows and tokens as that prefix's own batch does).
    pub fn with_mixed_prefix(
        &self,
        be: &B,
        mut inp: DecoderInputs<B>,
        prefix: PrefixInputs<B>,
        lens: &[usize],
    ) -> Result<DecoderInputs<B>> {
        let s = inp.s();
        crate::error::ensure_len("prefix lengths", inp.b, lens.len())?;
        // row b's own positions behind its own prefix: a shorter prefix's row (or a row
        // with none) may reach further into the batch's columns, which only its padding fills
        let span = (lens.iter().zip(&inp.row_ends)).map(|(l, e)| l + e).max();
        self.check_length(span.unwrap_or(prefix.p).max(1))?;
        if inp.pos.is_some() {
            let pos: Vec<i32> = (lens.iter())
                .flat_map(|&l| (l..l + s).map(|x| x as i32))
                .collect();
            inp.pos = Some(be.upload_i32(&pos)?);
        }
        inp.prefix = Some(prefix);
        Ok(inp)
    }

    /// Rejects sequences the model cannot attend over as configured: empty ones, and ones
    /// longer than a sliding attention window (which this engine does not implement).
    pub fn check_length(&self, s: usize) -> Result<()> {
        if s == 0 {
            return Err(Error::tensor(
                "input_ids",
                "the model needs at least one position (prompt rows plus tokens)",
            ));
        }
        if let Some(w) = self.cfg.sliding_window {
            if s > w {
                return Err(Error::Unsupported(format!(
                    "{s} positions with sliding_window {w}: sequences longer than the attention window"
                )));
            }
        }
        Ok(())
    }
}
