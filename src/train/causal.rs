//! `causal` (BLOOM, Llama): a batch's target texts appended to its rows, as PEFT's causal-LM
//! guide builds `input_ids` (the filled template, then the target) and `labels` (-100 on the
//! template, the target's ids on the target); rank classification over the label targets
//! (the rows run once, `Decoder::rank_prefill`) and greedy generation with the KV cache.

use super::batch::Batch;
use super::decode::no_prompt;
use super::model::Model;
use super::step::Params;
use super::task::Task;
use crate::backend::{Backend, IGNORE_INDEX};
use crate::error::{Error, GoOn, Result};
use crate::memory::MemoryAccountant;
use crate::models::decoder::{Decoder, GenerateOptions, Generated};
use crate::models::TokenBatch;

/// Row b's real tokens (B rows of a right-padded batch).
pub fn real_rows(tokens: &TokenBatch) -> Vec<Vec<i32>> {
    (0..tokens.b)
        .map(|bi| tokens.ids[bi * tokens.t..][..tokens.row_len(bi)].to_vec())
        .collect()
}

/// Each row's real tokens followed by its target (`targets` (B, L), -100 padded), right
/// padded with `pad`, and the causal-LM labels (B, T'): -100 on the row's own tokens and on
/// padding, the target ids on the target positions.
pub fn joined(tokens: &TokenBatch, targets: &[i32], l: usize, pad: i32) -> (TokenBatch, Vec<i32>) {
    let rows = real_rows(tokens);
    let target = |bi: usize| -> Vec<i32> {
        targets[bi * l..(bi + 1) * l]
            .iter()
            .copied()
            .take_while(|&x| x != IGNORE_INDEX)
            .collect()
    };
    let t = (0..tokens.b)
        .map(|bi| rows[bi].len() + target(bi).len())
        .max()
        .unwrap_or(1)
        .max(1);
    let b = tokens.b;
    let mut out = TokenBatch {
        b,
        t,
        ids: vec![pad; b * t],
        mask: vec![0; b * t],
        type_ids: None,
    };
    let mut labels = vec![IGNORE_INDEX; b * t];
    for (bi, row) in rows.iter().enumerate() {
        let tg = target(bi);
        let (n, m) = (row.len(), tg.len());
        out.ids[bi * t..][..n].copy_from_slice(row);
        out.ids[bi * t + n..][..m].copy_from_slice(&tg);
        out.mask[bi * t..][..n + m].fill(1);
        labels[bi * t + n..][..m].copy_from_slice(&tg);
    }
    (out, labels)
}

/// Greedy generation of `rows` behind `params`: its prompt, or its prefix-tuning prefix;
/// `go_on` asked after each token (`Decoder::generate_until`).
pub fn generate_with<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Decoder<B>,
    params: &Params<B>,
    rows: &[Vec<i32>],
    opts: &GenerateOptions,
    go_on: GoOn<'_>,
) -> Result<Generated> {
    match params.prefix {
        Some(spec) => {
            let prefix = model.net.prefix_inputs(be, &params.prompt, spec)?;
            m.generate_prefix_until(be, &prefix, rows, opts, go_on)
        }
        None => m.generate_until(be, &params.prompt, params.p, rows, opts, go_on),
    }
}

impl Task {
    /// `causal`: each label target's log-likelihood after each row (B, K), for rank
    /// classification. Forward only: the rows once (`Decoder::rank_prefill`), then every
    /// label's target tokens in one batch against their keys and values
    /// (`Decoder::rank_losses`); the head sees the target rows only.
    pub(super) fn causal_rank_scores<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        m: &Decoder<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        let (b, k) = (batch.tokens.b, self.label_targets.len());
        let none = no_prompt(be, params)?;
        let prompt = none.as_ref().unwrap_or(&params.prompt);
        let prefix = (params.prefix)
            .map(|spec| model.net.prefix_inputs(be, &params.prompt, spec))
            .transpose()?;
        let (p, tokens) = (params.input_rows(), &batch.tokens);
        let mut pre = m.rank_prefill(be, prompt, tokens, p, None, prefix)?;
        // (B, K, L): every row's K label targets, -100 padded
        let l = self.label_targets.iter().map(Vec::len).max().unwrap_or(0);
        let mut targets = vec![IGNORE_INDEX; b * k * l];
        for (row, target) in (targets.chunks_mut(l.max(1))).zip(self.label_targets.iter().cycle()) {
            row[..target.len()].copy_from_slice(target);
        }
        let mut acct = MemoryAccountant::new();
        let (rows, losses) = m.rank_losses(be, &mut acct, &mut pre, &targets, k, l)?;
        let mut sums = vec![0.0f64; b * k];
        for (&r, &loss) in rows.iter().zip(&losses) {
            sums[r as usize] += loss as f64;
        }
        Ok(sums.iter().map(|&s| -s as f32).collect())
    }

    /// `causal`: greedy generation of at most max_target_len tokens after each row, in one
    /// left-padded batch with the KV cache; the ids (ending with the stop token, `stop_ids`,
    /// when it was produced) and their summed log-probability.
    pub(super) fn causal_greedy<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        m: &Decoder<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<(Vec<i32>, f32)>> {
        let opts = GenerateOptions {
            max_new_tokens: self.spec.max_target_len.max(1),
            stop: self.stop_ids(&m.cfg)?,
            ..Default::default()
        };
        let rows = real_rows(&batch.tokens);
        let g = generate_with(be, model, m, params, &rows, &opts, &mut |_| true)
            .map_err(target_len_flag)?;
        Ok(g.ids
            .into_iter()
            .zip(g.logprob)
            .map(|(ids, lp)| (ids, lp as f32))
            .collect())
    }
}

/// Prediction bounds generation by the task's --max-target-len, which `generate` calls
/// --max-new-tokens: an error about the bound names the flag the command line took.
pub(super) fn target_len_flag(e: Error) -> Error {
    match e {
        Error::Arg { flag, msg } if flag == "--max-new-tokens" => {
            Error::arg("--max-target-len", msg)
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_each_rows_real_tokens() {
        let tokens = TokenBatch {
            b: 2,
            t: 3,
            ids: vec![5, 6, 7, 8, 0, 0],
            mask: vec![1, 1, 1, 1, 0, 0],
            type_ids: None,
        };
        let targets = vec![9, 2, 10, IGNORE_INDEX];
        let (joined, labels) = joined(&tokens, &targets, 2, 0);
        assert_eq!((joined.b, joined.t), (2, 5));
        assert_eq!(joined.ids, [5, 6, 7, 9, 2, 8, 10, 0, 0, 0]);
        assert_eq!(joined.mask, [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
        let ig = IGNORE_INDEX;
        assert_eq!(labels, [ig, ig, ig, 9, 2, ig, 10, ig, ig, ig]);
    }
}
