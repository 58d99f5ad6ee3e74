//! `causal` (BLOOM, Llama): a batch's target texts appended to its rows, as PEFT's causal-LM
//! guide builds `input_ids` (the filled template, then the target) and `labels` (-100 on the
//! template, the target's ids on the target); rank classification over the label targets
//! and greedy generation with the KV cache.

use super::decode::no_prompt;
use super::encode::Batch;
use super::model::Model;
use super::step::Params;
use super::task::Task;
use crate::backend::{Backend, IGNORE_INDEX};
use crate::error::{Error, Result};
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

/// Greedy generation of `rows` behind `params`: its prompt, or its prefix-tuning prefix.
pub fn generate_with<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Decoder<B>,
    params: &Params<B>,
    rows: &[Vec<i32>],
    opts: &GenerateOptions,
) -> Result<Generated> {
    match params.prefix {
        Some(spec) => {
            let prefix = model.net.prefix_inputs(be, &params.prompt, spec)?;
            m.generate_prefix(be, &prefix, rows, opts)
        }
        None => m.generate(be, &params.prompt, params.p, rows, opts),
    }
}

impl Task {
    /// `causal`: each label target's log-likelihood after each row (B, K), for rank
    /// classification. Forward only; the head sees the target rows only.
    pub(super) fn causal_rank_scores<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        m: &Decoder<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        let b = batch.tokens.b;
        let k = self.label_targets.len();
        let mut scores = vec![0.0f32; b * k];
        let mut acct = MemoryAccountant::new();
        let none = no_prompt(be, params)?;
        let prompt = none.as_ref().unwrap_or(&params.prompt);
        for (ki, target) in self.label_targets.iter().enumerate() {
            let l = target.len();
            let targets: Vec<i32> = (0..b).flat_map(|_| target.iter().copied()).collect();
            let (tokens, labels) = joined(&batch.tokens, &targets, l, self.pad_id);
            let inp = m.upload_inputs(be, &tokens, params.input_rows(), Some(&labels))?;
            let inp = match params.prefix {
                None => inp,
                Some(spec) => {
                    m.with_prefix(be, inp, model.net.prefix_inputs(be, &params.prompt, spec)?)?
                }
            };
            // every row has exactly l targets, in row order
            let losses = m.target_losses(be, &mut acct, prompt, &inp)?;
            for (bi, row) in losses.chunks(l.max(1)).enumerate() {
                scores[bi * k + ki] = -row.iter().map(|&x| x as f64).sum::<f64>() as f32;
            }
        }
        Ok(scores)
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
            stop: self.stop_ids(&m.cfg),
            ..Default::default()
        };
        let g = generate_with(be, model, m, params, &real_rows(&batch.tokens), &opts)
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
