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

    /// Why a prefix table of `blocks` blocks does not fit under `placement`, or None when it
    /// does: every model reads one block per layer, but T5 under PEFT's placement, whose
    /// decoder layer l reads block `2l mod N` of any N from its decoder's layer count up
    /// (PEFT has no block for a decoder layer past N: transformers fails there).
    pub fn prefix_blocks_misfit(&self, blocks: usize, placement: Placement) -> Option<String> {
        let (own, _) = self.prefix_layout(placement);
        match self {
            Model::T5(m) if placement == Placement::Peft => {
                let dec = m.cfg.num_decoder_layers;
                (blocks < dec).then(|| {
                    format!(
                        "`num_layers` is {blocks}, but config.json's `num_decoder_layers` is \
                         {dec} (`num_layers` {}): under placement peft decoder layer l reads \
                         block 2l mod num_layers, and PEFT has none for the decoder's layers \
                         from num_layers on (transformers fails there): expected at least \
                         {dec} (placement papers reads {} blocks)",
                        m.cfg.num_layers,
                        m.cfg.num_layers + dec
                    )
                })
            }
            _ => (blocks != own).then(|| {
                format!(
                    "`num_layers` is {blocks}, but this model reads one block of keys and \
                     values per layer under placement {}: expected {own}",
                    placement.name()
                )
            }),
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
        if let Some(why) = self.prefix_blocks_misfit(blocks, spec.placement) {
            return Err(Error::arg("prefix num_layers", why));
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
        let first = spec.bert_first_position.unwrap_or(spec.p);
        // the tokens sit behind the prefix: each row's must fit the table from `first` on
        bert::check_positions(&m.cfg, batch, "prefix", |_| first)?;
        let mut inp = bert::upload_inputs(be, &m.cfg, batch, 0)?;
        inp.first_position = first;
        inp.prefix = Some(pre);
        Ok(inp)
    }

    /// BERT's inputs `inp` (rows mixing prompts: row b behind `lens[b]` front rows) behind
    /// the prefixes `pre` mixes: row b's first `hide[b]` front rows are hidden from every
    /// query (they stand for a prefix row's positions: its tokens sit at their own first
    /// position behind them, `train::mixed_prefix`), the position table unshifted.
    pub fn bert_mixed_prefix_inputs(
        be: &B,
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
        inp.prefix = Some(pre);
        Ok(inp)
    }
}
