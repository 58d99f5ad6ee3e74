//! The prefix of a step on any model: its layout (blocks and their width), the table checked
//! and copied to the device, and BERT's inputs behind it. `Model::train_step` builds a prefix
//! step's inputs with these; the scoring paths (`train::decode`, `train::causal`) too. Apart
//! from `models::prefix` because these read `Model`, which reads `prefix` (no import circle).

use super::bert;
use super::common::{mixed_key_mask, TokenBatch};
use super::model::Model;
use super::prefix::{block_count, Placement, PrefixInputs, PrefixSpec};
use crate::backend::Backend;
use crate::error::{Error, Result};

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

    /// Whether a prefix table of any block count fits under `placement`: only T5 under PEFT's
    /// placement reads blocks by a rule that any count fits; every other model reads one block
    /// per layer.
    pub fn reads_any_block_count(&self, placement: Placement) -> bool {
        matches!(self, Model::T5(_)) && placement == Placement::Peft
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
        if blocks != own && !self.reads_any_block_count(spec.placement) {
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

    /// BERT's inputs `inp` (rows mixing prompts: row b behind `lens[b]` front rows) behind
    /// the prefixes `pre` mixes: row b's first `hide[b]` front rows are hidden from every
    /// query (they stand for a prefix row's positions: its tokens sit at their own first
    /// position behind them, `train::mixed_prefix`), the position table unshifted.
    pub fn bert_mixed_prefix_inputs(
        be: &B,
        m: &bert::Bert<B>,
        mut inp: bert::BertInputs<B>,
        pre: PrefixInputs<B>,
        lens: &[usize],
        hide: &[usize],
    ) -> Result<bert::BertInputs<B>> {
        let t = inp.t();
        let mut key_mask = mixed_key_mask(&inp.mask, inp.tokens, inp.p, lens);
        for (row, &h) in key_mask.chunks_mut(t.max(1)).zip(hide) {
            if let Some(front) = row.get_mut(..h) {
                front.fill(0);
            }
        }
        inp.key_mask = be.upload_i32(&key_mask)?;
        let c = m.cfg.hidden_size;
        let positions = shifted_positions(be, &m.w.position_embeddings, 0, t, c)?;
        inp.prefix = Some((pre, positions));
        Ok(inp)
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
