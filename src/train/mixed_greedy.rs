//! Greedy decoding (free targets, `--decode greedy`) of rows of several jobs in shared batches
//! (`mixed.rs` groups them; rank-scored jobs batch apart, `mixed_lm.rs`): each row reads its
//! own prompt, of its own length, from one table (K, P, C), and generates under its own
//! job's limits (`max_target_len`, its end or stop tokens), so it produces the tokens, and
//! the summed log-probability up to the last bits, of its prompt's own batch.
//! T5 `seq2seq`: the encoder once per batch over the table (`T5Inputs::with_prompts`, a
//! prefix job's prefix read from the group's stack, `mixed_prefix.rs`), then the
//! decoder one token a step for all rows together, with a cache (`decode::t5_greedy`, the
//! loop a single prompt's batch runs).
//! Decoder-only `causal`: one left-padded batch with the KV cache
//! (`Decoder::generate_mixed`), row b [pads][its P_b prompt rows][its tokens], the prompt
//! directly before the row's first real token at positions 0.., as its own batch places it;
//! a prefix job's row reads its own prefix of the group's stack, [pads][its L_b prefix
//! rows][its tokens] in the cache (`Decoder::generate_mixed_prefix`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::Batch;
use super::causal::real_rows;
use super::decode::{t5_greedy, Prediction};
use super::mixed::{predict_chunks, row_lens, Group};
use super::mixed_prefix::PrefixStack;
use super::model::Model;
use super::task::Task;
use crate::backend::Backend;
use crate::error::Result;
use crate::models::decoder::{Decoder, MixedGeneration};
use crate::models::t5::{self, T5};
use crate::models::MixedPrompts;

/// `seq2seq` jobs decoded greedily in mixed batches: the encoder once per batch over the
/// group's table, the decoder steps for every row together.
pub(super) fn predict_t5<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &T5<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let table = gr.table(be, gr.lens().0, m.cfg.d_model)?;
    let stack = PrefixStack::of(be, gr)?;
    let pad = gr.job(0)?.0.pad_id;
    predict_greedy(be, model, gr, batch_size, |r| {
        let limits: Vec<usize> = r
            .tasks
            .iter()
            .map(|t| t.spec.max_target_len.max(1))
            .collect();
        let ends: Vec<i32> = r.tasks.iter().map(|t| t.eos_id).collect();
        let tokens = &r.batch.tokens;
        // the decoder's labels are the cache's to fill: one placeholder position
        let labels = vec![pad; tokens.b];
        let inp = t5::upload_inputs(be, &m.cfg, tokens, r.p, &labels, 1)?;
        let inp = inp.with_prompts(be, &r.mix, tokens)?;
        let inp = match &stack {
            Some(st) => inp.with_prefix(be, &m.cfg, st.inputs(be, model, r.mix.idx)?)?,
            None => inp,
        };
        t5_greedy(be, m, &table, &limits, &ends, &inp)
    })
}

/// `causal` jobs decoded greedily in mixed batches: one left-padded batch with the KV cache,
/// each row behind its own prompt (or prefix of the group's stack) and under its own job's
/// limits.
pub(super) fn predict_causal<B: Backend>(
    be: &B,
    model: &Model<B>,
    m: &Decoder<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let table = gr.table(be, gr.lens().0, m.cfg.hidden_size)?;
    let stack = PrefixStack::of(be, gr)?;
    predict_greedy(be, model, gr, batch_size, |r| {
        let max_new: Vec<usize> = r
            .tasks
            .iter()
            .map(|t| t.spec.max_target_len.max(1))
            .collect();
        let stop: Vec<Vec<i32>> = (r.tasks.iter())
            .map(|t| t.stop_ids(&m.cfg))
            .collect::<Result<_>>()?;
        let gen = MixedGeneration {
            mix: r.mix,
            p: r.p,
            max_new: &max_new,
            stop: &stop,
        };
        let rows = real_rows(&r.batch.tokens);
        let g = match &stack {
            Some(st) => {
                let pre = st.inputs(be, model, r.mix.idx)?;
                m.generate_mixed_prefix(be, &table, &pre, &rows, &gen)
            }
            None => m.generate_mixed(be, &table, &rows, &gen),
        };
        let g = g.map_err(super::causal::target_len_flag)?;
        let decoded = (g.ids.into_iter().zip(g.logprob)).map(|(ids, lp)| (ids, lp as f32));
        Ok(decoded.collect())
    })
}

/// One batch of a greedy group: its rows, their prompts in the table of P rows, their tasks.
struct GreedyBatch<'r> {
    batch: &'r Batch,
    mix: MixedPrompts<'r>,
    p: usize,
    /// (B) each row's task
    tasks: Vec<&'r Task>,
}

/// The rows of `gr` in mixed batches, `decode` giving each batch row's ids and summed
/// log-probability, each row's prediction then its own task's.
fn predict_greedy<B: Backend>(
    be: &B,
    model: &Model<B>,
    gr: &Group<'_, '_, B>,
    batch_size: usize,
    mut decode: impl FnMut(&GreedyBatch) -> Result<Vec<(Vec<i32>, f32)>>,
) -> Result<Vec<Prediction>> {
    let ((p, job_lens), k) = (gr.lens(), gr.group.len());
    let longest = longest_target(gr)?;
    predict_chunks(be, model, gr, batch_size, longest, |batch, idx| {
        let lens = row_lens(idx, job_lens.as_deref());
        let lens = lens.as_deref();
        let r = GreedyBatch {
            batch,
            mix: MixedPrompts { idx, k, lens },
            p,
            tasks: gr.row_tasks(idx)?,
        };
        let decoded = decode(&r)?;
        Ok(predictions(&r.tasks, decoded))
    })
}

/// Each row's prediction from its greedy output, by its own task (its class the label whose
/// target it produced, if any).
fn predictions(tasks: &[&Task], decoded: Vec<(Vec<i32>, f32)>) -> Vec<Option<Prediction>> {
    (tasks.iter().zip(decoded))
        .map(|(task, (ids, logp))| Some(task.decoded(ids, logp)))
        .collect()
}

/// The most tokens any job of the group generates (the decoder positions the memory check
/// counts).
fn longest_target<B: Backend>(gr: &Group<'_, '_, B>) -> Result<usize> {
    let mut longest = 0;
    for k in 0..gr.group.len() {
        longest = longest.max(gr.job(k)?.0.spec.max_target_len.max(1));
    }
    Ok(longest)
}
