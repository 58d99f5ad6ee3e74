//! The training step of prefix tuning on any model: the batch uploaded without prompt rows,
//! the prefix put in front of the keys its placement names (`models::prefix`), and the same
//! forward and backward as prompt tuning, whose gradient then stops at the prefix table.

use super::bert;
use super::common::{Capture, Recompute, TokenBatch};
use super::model::Model;
use super::objective::{Objective, StepOutput};
use super::prefix::{block_count, Placement, PrefixInputs};
use super::t5;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;

/// What a prefix-tuning step needs besides the table itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixSpec {
    /// P, the prefix rows
    pub p: usize,
    pub placement: Placement,
    /// BERT only: the position of the first real token. P-tuning v2 ran on transformers 4,
    /// whose BERT puts the tokens behind a cache of P rows at P..P+T-1 (`None` means that);
    /// `Some(0)` keeps them at 0..T-1.
    pub bert_first_position: Option<usize>,
    /// N, the blocks of the table, when not the model's own count (`prefix_layout`): a PEFT
    /// config may set `num_layers` for T5
    pub blocks: Option<usize>,
}

impl<B: Backend> Model<B> {
    /// (N blocks, Hkv·D) of the prefix table under `placement`: its rows are N·2·Hkv·D wide.
    pub fn prefix_layout(&self, placement: Placement) -> (usize, usize) {
        match self {
            Model::Bert(m) => (
                m.cfg.num_hidden_layers,
                m.cfg.num_attention_heads * m.cfg.head_dim(),
            ),
            Model::T5(m) => (
                block_count(m.cfg.num_layers, m.cfg.num_decoder_layers, placement),
                m.cfg.num_heads * m.cfg.d_kv,
            ),
            Model::Bloom(m) | Model::Llama(m) => (m.cfg.num_layers, m.cfg.kv_width()),
        }
    }

    /// The prefix of one step on the device, checked against this model's layout: `prefix`
    /// (P, N·2·Hkv·D) F32, N the model's own block count unless `spec.blocks` says otherwise
    /// (only T5 under PEFT's placement reads any count).
    pub fn prefix_inputs(
        &self,
        be: &B,
        prefix: &B::Buf,
        spec: PrefixSpec,
    ) -> Result<PrefixInputs<B>> {
        let (own, kv_width) = self.prefix_layout(spec.placement);
        let blocks = spec.blocks.unwrap_or(own);
        // only T5 under PEFT's placement reads blocks by a rule that any count fits
        let free = matches!(self, Model::T5(_)) && spec.placement == Placement::Peft;
        if blocks != own && !free {
            return Err(Error::arg(
                "prefix num_layers",
                format!("{blocks}: this model reads one block per layer, {own}"),
            ));
        }
        PrefixInputs::new(be, prefix, spec.p, blocks, kv_width, spec.placement)
    }

    /// BERT's inputs for `batch` behind the prefix `pre`: no prompt rows, the tokens at the
    /// positions `spec` gives.
    pub fn bert_prefix_inputs(
        be: &B,
        m: &bert::Bert<B>,
        batch: &TokenBatch,
        pre: PrefixInputs<B>,
        spec: PrefixSpec,
    ) -> Result<bert::BertInputs<B>> {
        let mut inp = bert::upload_inputs(be, &m.cfg, batch, 0)?;
        let first = spec.bert_first_position.unwrap_or(spec.p);
        let c = m.cfg.hidden_size;
        let positions = shifted_positions(be, &m.w.position_embeddings, first, batch.t, c)?;
        inp.prefix = Some((pre, positions));
        Ok(inp)
    }

    /// One forward and backward of `batch` with the prefix table `prefix` (P, N·2·Hkv·D) F32
    /// (`prefix_layout`): adds d loss / d prefix into `dprefix` (the same shape) and returns
    /// the loss. Logits and hidden states in `capture` cover the real tokens only.
    #[allow(clippy::too_many_arguments)]
    pub fn prefix_step(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprefix: &mut B::Buf,
        prefix: &B::Buf,
        batch: &TokenBatch,
        spec: PrefixSpec,
        objective: &Objective<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<StepOutput<B>> {
        let pre = self.prefix_inputs(be, prefix, spec)?;
        crate::error::ensure_len(
            "prefix gradient (P, N·2·Hkv·D)",
            be.len(prefix),
            be.len(dprefix),
        )?;
        let no_prompt = be.zeros(DType::F32, 0)?;
        match self {
            Model::Bert(m) => {
                let inp = Self::bert_prefix_inputs(be, m, batch, pre, spec)?;
                m.train_step(
                    be, acct, dprefix, &no_prompt, &inp, objective, recompute, capture,
                )
            }
            Model::T5(m) => {
                let Objective::Seq2Seq { labels, l } = *objective else {
                    return Err(objective.unsupported("T5"));
                };
                let inp = t5::upload_inputs(be, &m.cfg, batch, 0, labels, l)?
                    .with_prefix(be, &m.cfg, pre)?;
                let loss = m.train_step(
                    be, acct, dprefix, &no_prompt, &inp, labels, recompute, capture,
                )?;
                Ok(StepOutput {
                    loss,
                    head_grads: None,
                })
            }
            Model::Bloom(m) | Model::Llama(m) => {
                let Objective::Causal { labels } = *objective else {
                    return Err(objective.unsupported(self.arch_name()));
                };
                let inp = m.upload_inputs(be, batch, 0, Some(labels))?;
                let inp = m.with_prefix(be, inp, pre)?;
                let loss = m.train_step(be, acct, dprefix, &no_prompt, &inp, recompute, capture)?;
                Ok(StepOutput {
                    loss,
                    head_grads: None,
                })
            }
        }
    }
}

/// BERT's position table from row `first` on, so that token t reads position first + t:
/// (max_position_embeddings - first, C) in the weights' type.
fn shifted_positions<B: Backend>(
    be: &B,
    table: &B::Buf,
    first: usize,
    t: usize,
    c: usize,
) -> Result<B::Buf> {
    let rows = be.len(table) / c.max(1);
    if first + t > rows {
        return Err(Error::shape(
            "prefix + tokens (BERT max_position_embeddings: the tokens sit behind the prefix)",
            format!("<= {rows}"),
            format!("{first} + {t}"),
        ));
    }
    let host = be.download(table)?;
    be.upload(be.dtype(table), host.get(first * c..).unwrap_or_default())
}
