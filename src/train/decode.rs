//! Scores and predictions, forward only: per-label log-probabilities (`pet`, `cls`), rank
//! classification and greedy decoding (`seq2seq`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::Batch;
use super::model::Model;
use super::spec::{Decode, TaskKind};
use super::step::{cls_head, Params};
use super::task::{job, Job, Task};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::bert::{self, weighted_rows, Bert, HeadRows, Tail};
use crate::models::heads::{self, Decoder, Pooling};
use crate::models::t5::{self, T5Inputs, T5};
use crate::models::{Model as Net, Recompute};

impl Task {
    /// Per-label scores (B, K): log-probabilities over the labels (`pet`, `cls`), or each
    /// label target's log-likelihood (`seq2seq`, rank classification). Forward only.
    pub fn scores<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        if self.spec.free_targets {
            return Err(Error::arg(
                "--free-targets",
                "free targets have no label scores: use greedy decoding",
            ));
        }
        match job(self.spec.kind, model)? {
            Job::Pet(m) | Job::Cls(m) => self.class_scores(be, model, m, params, batch),
            Job::Seq2Seq(m) => self.rank_scores(be, model, m, params, batch),
            Job::Causal(m) => self.causal_rank_scores(be, model, m, params, batch),
        }
    }

    /// `pet` and `cls`: log-probabilities over the labels (B, K).
    fn class_scores<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        m: &Bert<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        let inp = match params.prefix {
            None => bert::upload_inputs(be, &m.cfg, &batch.tokens, params.p)?,
            Some(spec) => {
                let pre = model.net.prefix_inputs(be, &params.prompt, spec)?;
                Net::bert_prefix_inputs(be, m, &batch.tokens, pre, spec)?
            }
        };
        let none = no_prompt(be, params)?;
        let all: Vec<usize> = (0..batch.tokens.b).collect();
        let lay = RowLayout {
            p: params.input_rows(),
            lens: None,
        };
        // the last layer at the rows the head reads only
        let read = self.read_rows(&lay, batch, &all)?;
        let tail = Tail::covering(be, &read, inp.b, inp.t())?;
        let prompt = none.as_ref().unwrap_or(&params.prompt);
        let (hidden, tail) = m.encoder_hidden_at(be, prompt, &inp, tail)?;
        let at = HeadRows::new(tail.as_ref(), inp.t());
        self.class_scores_of(be, m, params, &lay, batch, (&hidden, &at), &all)
    }

    /// `pet` and `cls`: the flat rows of the hidden states (B, P+T) the head reads for the
    /// batch rows `rows`: `pet`'s [MASK] rows, the rows the `cls` head pools with a weight.
    pub(super) fn read_rows(
        &self,
        lay: &RowLayout,
        batch: &Batch,
        rows: &[usize],
    ) -> Result<Vec<i32>> {
        if self.spec.kind == TaskKind::Pet {
            return lay.mask_rows(batch, rows);
        }
        let t = batch.tokens.t;
        let all: Vec<usize> = (0..batch.tokens.b).collect();
        let w = lay.pool_weights(&batch.tokens.mask, &all, t, self.spec.pooling);
        let (width, mut mine) = (lay.p + t, vec![false; batch.tokens.b]);
        for &r in rows {
            if let Some(m) = mine.get_mut(r) {
                *m = true;
            }
        }
        Ok((weighted_rows(&w).into_iter())
            .filter(|&r| mine.get(r as usize / width) == Some(&true))
            .collect())
    }

    /// `pet` and `cls`: log-probabilities over the labels (R, K) of the batch rows `rows`
    /// (R), from the encoder's `hidden` (B, S, C), the rows of (B, P+T) where `at` says: this
    /// task's verbalizer or head scores them, whatever prompt each row read, its tokens where
    /// `lay` puts them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn class_scores_of<B: Backend>(
        &self,
        be: &B,
        m: &Bert<B>,
        params: &Params<B>,
        lay: &RowLayout,
        batch: &Batch,
        (hidden, at): (&B::Buf, &HeadRows<'_, B>),
        rows: &[usize],
    ) -> Result<Vec<f32>> {
        let (b, t) = (batch.tokens.b, batch.tokens.t);
        let k = self.spec.labels.len();
        let logits = if self.spec.kind == TaskKind::Pet {
            let decoder = Decoder::Rows(&self.verbalizer_ids);
            // the head's forward alone: prediction wants no loss and no gradient
            let picked = at.rows(&lay.mask_rows(batch, rows)?)?;
            heads::mlm_head_logits(be, m, hidden, &picked, decoder)?
        } else {
            let head = cls_head(params)?;
            let c = m.cfg.hidden_size;
            let all: Vec<usize> = (0..b).collect();
            let w = lay.pool_weights(&batch.tokens.mask, &all, t, self.spec.pooling);
            let pool_w = be.upload(be.act_dtype(), &at.pick("pool weights", w)?)?;
            // mean_pool_fwd writes it whole
            let mut pooled = be.output(be.act_dtype(), b * c)?;
            be.mean_pool_fwd(&mut pooled, hidden, &pool_w, b, at.s(), c)?;
            let all = be.download(&head.logits(be, &pooled, b)?)?;
            let row = |r: usize| all.get(r * k..(r + 1) * k).unwrap_or_default();
            rows.iter().flat_map(|&r| row(r).iter().copied()).collect()
        };
        Ok(log_softmax_rows(&logits, k))
    }

    /// `seq2seq`: each label target's log-likelihood (B, K), for rank classification.
    fn rank_scores<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        m: &T5<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        let b = batch.tokens.b;
        let none = no_prompt(be, params)?;
        let prompt = none.as_ref().unwrap_or(&params.prompt);
        let mut acct = MemoryAccountant::new();
        let k = self.label_targets.len();
        let mut scores = vec![0.0f32; b * k];
        let mut enc_out = None;
        for (ki, target) in self.label_targets.iter().enumerate() {
            let l = target.len();
            let labels: Vec<i32> = (0..b).flat_map(|_| target.iter().copied()).collect();
            let inp = t5_inputs(be, model, m, params, &batch.tokens, &labels, l)?;
            let enc = encoder_once(&mut enc_out, be, m, &mut acct, prompt, &inp)?;
            let (dec_out, _acts) =
                m.decoder_fwd(be, &mut acct, enc, &inp, Recompute::Layer, None)?;
            let losses = m.lm_row_losses(be, &dec_out, &labels, b * l)?;
            // row bi's score for label ki: minus the summed loss of its l target tokens
            for (row, losses) in scores.chunks_mut(k).zip(losses.chunks(l.max(1))) {
                if let Some(s) = row.get_mut(ki) {
                    *s = -losses.iter().map(|&x| x as f64).sum::<f64>() as f32;
                }
            }
        }
        Ok(scores)
    }

    /// `seq2seq` and `causal`: greedy decoding of at most max_target_len tokens per row
    /// (`causal`: with the KV cache, `causal.rs`); returns the ids
    /// (ending with </s> when it was produced) and their summed log-probability.
    pub fn greedy<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<(Vec<i32>, f32)>> {
        let m = match &model.net {
            Net::T5(m) => m,
            Net::Bloom(d) | Net::Llama(d) => {
                return self.causal_greedy(be, model, d, params, batch)
            }
            Net::Bert(_) => {
                return Err(Error::arg(
                    "--decode greedy",
                    "greedy decoding needs a T5 or a decoder-only model",
                ))
            }
        };
        let none = no_prompt(be, params)?;
        let prompt = none.as_ref().unwrap_or(&params.prompt);
        let b = batch.tokens.b;
        let limits = vec![self.spec.max_target_len.max(1); b];
        let ends = vec![self.eos_id; b];
        // the decoder's labels are the cache's to fill: one placeholder position
        let inp = t5_inputs(
            be,
            model,
            m,
            params,
            &batch.tokens,
            &vec![self.pad_id; b],
            1,
        )?;
        t5_greedy(be, m, prompt, &limits, &ends, &inp)
    }

    /// Whether this task's predictions are greedy decoding (free targets, or `--decode
    /// greedy` on a task with targets) rather than label scores.
    pub(super) fn decodes_greedily(&self) -> bool {
        self.spec.free_targets
            || (self.spec.kind.has_targets() && self.spec.decode == Decode::Greedy)
    }

    /// A row's prediction from its greedy output: the `ids` and their summed log-probability
    /// `logp`, its class the label whose target they are (if any; `target_of`).
    pub fn decoded(&self, ids: Vec<i32>, logp: f32) -> Prediction {
        let targets = &self.label_targets;
        let target = self.target_of(&ids, |t| targets.iter().any(|l| l == t));
        let class = targets.iter().position(|t| *t == target);
        Prediction {
            class,
            scores: Vec::new(),
            stopped: ids.last().is_some_and(|last| self.stops.contains(last)),
            ids,
            score: logp,
        }
    }

    /// The target that generated `ids` stand for: themselves when `is_target` says they are
    /// one (a target may end with a stop token itself); else, when they ended at a stop
    /// token, what they gave before it, ended as the targets end, with their end token (none
    /// under `--target-end none`, or on a model without one; any of several stop tokens, as
    /// Llama 3 instruct's, reads as it). A row that generated a target and then stopped
    /// matched no target ending with nothing (hostile pass 16, F1), nor, on a model of
    /// several stop tokens, one ending with another of them.
    pub fn target_of(&self, ids: &[i32], is_target: impl Fn(&[i32]) -> bool) -> Vec<i32> {
        match ids.split_last() {
            Some((last, body)) if !is_target(ids) && self.stops.contains(last) => {
                body.iter().copied().chain(self.end_id).collect()
            }
            _ => ids.to_vec(),
        }
    }

    /// Predictions for a batch: the class index per row (rank or argmax) with its scores, or
    /// for free targets the decoded ids.
    pub fn predict<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<Prediction>> {
        if self.decodes_greedily() {
            let decoded = self.greedy(be, model, params, batch)?;
            return Ok((decoded.into_iter())
                .map(|(ids, logp)| self.decoded(ids, logp))
                .collect());
        }
        let scores = self.scores(be, model, params, batch)?;
        self.classified(&scores)
    }

    /// Each row's class (the argmax) with its scores, from scores (R, K). A row with a score
    /// that is not a finite number is an `Error::Overflow` of that row (r of the R): argmax
    /// would have made a label of it (a negative norm epsilon scored every row NaN, and eval
    /// reported accuracy 0.5; a rank score of -inf lost its label without a word).
    pub(super) fn classified(&self, scores: &[f32]) -> Result<Vec<Prediction>> {
        let k = self.spec.labels.len();
        (scores.chunks(k).enumerate())
            .map(|(r, s)| {
                if !s.iter().all(|x| x.is_finite()) {
                    return Err(self.overflowed(r, s));
                }
                let c = argmax(s);
                Ok(Prediction {
                    class: Some(c),
                    scores: s.to_vec(),
                    ids: Vec::new(),
                    stopped: false,
                    score: s.get(c).copied().unwrap_or(f32::NAN),
                })
            })
            .collect()
    }

    fn overflowed(&self, row: usize, s: &[f32]) -> Error {
        let each: Vec<String> = (self.spec.labels.iter().zip(s))
            .map(|(l, x)| format!("{l}: {x}"))
            .collect();
        Error::overflow(
            row,
            format!(
                "scored its labels {{{}}}: a score that is not a finite number chooses no label",
                each.join(", ")
            ),
        )
    }
}

/// Under prefix tuning, the empty prompt the embeddings read (no row enters the input);
/// None when `params.prompt` is the prompt.
pub(super) fn no_prompt<B: Backend>(be: &B, params: &Params<B>) -> Result<Option<B::Buf>> {
    params
        .prefix
        .map(|_| be.zeros(crate::backend::DType::F32, 0))
        .transpose()
}

/// T5 greedy decoding of the batch of `inp` (B rows; its decoder labels unread): the encoder
/// once, over `prompt` (P, C) or the table (K, P, C) the inputs index, then the decoder one
/// token a step with a cache (`T5::greedy`); row b stops after `limits[b]` tokens or its end
/// token `ends[b]`. Returns each row's ids and their summed log-probability.
pub(super) fn t5_greedy<B: Backend>(
    be: &B,
    m: &T5<B>,
    prompt: &B::Buf,
    limits: &[usize],
    ends: &[i32],
    inp: &T5Inputs<B>,
) -> Result<Vec<(Vec<i32>, f32)>> {
    if limits.iter().all(|&n| n == 0) {
        return Ok(vec![(Vec::new(), 0.0); limits.len()]);
    }
    let mut acct = MemoryAccountant::new();
    let (enc, _acts) = m.encoder_fwd(be, &mut acct, prompt, inp, Recompute::Layer, None)?;
    m.greedy(be, &enc, inp, limits, ends)
}

/// T5's inputs for `tokens` and decoder `labels` (B, L) behind `params`: its prompt rows in
/// front of the encoder's tokens, or its prefix in front of the keys its placement names.
fn t5_inputs<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &T5<B>,
    params: &Params<B>,
    tokens: &crate::models::TokenBatch,
    labels: &[i32],
    l: usize,
) -> Result<T5Inputs<B>> {
    let inp = t5::upload_inputs(be, &m.cfg, tokens, params.input_rows(), labels, l)?;
    match params.prefix {
        None => Ok(inp),
        Some(spec) => {
            let pre = model.net.prefix_inputs(be, &params.prompt, spec)?;
            inp.with_prefix(be, &m.cfg, pre)
        }
    }
}

/// `seq2seq`: the encoder output (B, T, C) of `inp`, computed on the first call and kept in
/// `slot`: the encoder input does not change between the decoder passes of one batch.
pub(super) fn encoder_once<'s, B: Backend>(
    slot: &'s mut Option<B::Buf>,
    be: &B,
    m: &T5<B>,
    acct: &mut MemoryAccountant,
    prompt: &B::Buf,
    inp: &T5Inputs<B>,
) -> Result<&'s B::Buf> {
    if slot.is_none() {
        *slot = Some(
            m.encoder_fwd(be, acct, prompt, inp, Recompute::Layer, None)?
                .0,
        );
    }
    slot.as_ref()
        .ok_or_else(|| Error::Device("encoder output missing".into()))
}

/// One row's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// the predicted class (greedy decoding: the label whose target was produced, if any)
    pub class: Option<usize>,
    /// per-label scores (log-probabilities or log-likelihoods); empty for greedy decoding
    pub scores: Vec<f32>,
    /// greedy decoding: the generated ids
    pub ids: Vec<i32>,
    /// greedy decoding: the row ended at one of the task's stop tokens, the last of `ids`
    pub stopped: bool,
    /// the score of the prediction
    pub score: f32,
}

impl Prediction {
    /// The ids of a greedy prediction's text: `ids` without the stop token that ended them,
    /// which ends the text and is no part of it (a stop token that is an ordinary token, not
    /// a special one that detokenizing drops, printed in the output; hostile pass 18, N4).
    pub fn output_ids(&self) -> &[i32] {
        match (self.stopped, self.ids.split_last()) {
            (true, Some((_, body))) => body,
            _ => &self.ids,
        }
    }

    /// A greedy prediction's label, given the task's `labels` and its generated text
    /// `output`: its class's label; under free targets (no labels) the text itself; else
    /// none (an output that is no label's target was printed as the label, which a text equal
    /// to a label's name made look like that label).
    pub fn greedy_label(&self, labels: &[String], output: &str) -> Option<String> {
        match self.class.and_then(|c| labels.get(c)) {
            Some(label) => Some(label.clone()),
            None => labels.is_empty().then(|| output.to_string()),
        }
    }
}

/// Row-wise log-softmax of (rows, k) logits, in f64.
pub fn log_softmax_rows(logits: &[f32], k: usize) -> Vec<f32> {
    logits
        .chunks(k.max(1))
        .flat_map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            row.iter().map(move |&x| (x as f64 - lse) as f32)
        })
        .collect()
}

/// Index of the largest value, the first on ties.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &x) in xs.iter().enumerate() {
        if x > best.1 || i == 0 {
            best = (i, x);
        }
    }
    best.0
}

/// Where each batch row's tokens start in the encoder's rows (B, P+T, C): behind the P prompt
/// rows, or, in a batch mixing prompts of different lengths, behind row b's own P_b = lens[b]
/// (its P - P_b padding rows at its end).
pub(super) struct RowLayout<'a> {
    /// the prompt rows in front of every row (the longest prompt's)
    pub p: usize,
    /// (B) each row's prompt length, when they differ
    pub lens: Option<&'a [usize]>,
}

impl RowLayout<'_> {
    /// P - P_b: how far batch row `r`'s tokens sit in front of where P puts them.
    fn shift(&self, r: usize) -> usize {
        let pb = self.lens.and_then(|l| l.get(r).copied()).unwrap_or(self.p);
        self.p.saturating_sub(pb)
    }

    /// `pet`: the rows of the hidden states (B, P+T, C) at the [MASK] of batch rows `rows` (R).
    pub fn mask_rows(&self, batch: &Batch, rows: &[usize]) -> Result<Vec<i32>> {
        let (b, t) = (batch.tokens.b, batch.tokens.t);
        let at = heads::pet_rows(&batch.mask_pos, b, t, self.p)?;
        Ok((rows.iter())
            .filter_map(|&r| Some(at.get(r)? - self.shift(r) as i32))
            .collect())
    }

    /// `cls`: the pooling weights (R, P+T) of the batch rows `rows` (R), whose attention masks
    /// `mask` (R, T) holds in that order.
    pub fn pool_weights(
        &self,
        mask: &[i32],
        rows: &[usize],
        t: usize,
        pooling: Pooling,
    ) -> Vec<f32> {
        let (r, width) = (rows.len(), self.p + t);
        let mut w = heads::pool_weights(mask, r, t, self.p, pooling);
        for (i, &row) in rows.iter().enumerate() {
            let shift = self.shift(row);
            if let Some(ws) = w.get_mut(i * width..(i + 1) * width) {
                // the tokens' weights move up behind the row's own prompt
                ws.copy_within(self.p.., self.p - shift);
                if let Some(pad) = ws.get_mut(width - shift..) {
                    pad.fill(0.0);
                }
            }
        }
        w
    }
}
