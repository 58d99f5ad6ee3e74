//! The batch on the device: the encoder ids behind the prompt, the decoder ids (the labels
//! shifted right), and the relative-position bucket lookups of both stacks.

use crate::backend::attention::{bucket_lookup, prefix_bucket_lookup};
use crate::backend::Backend;
use crate::backend::IGNORE_INDEX;
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::models::common::{
    mixed_key_mask, prompt_key_mask, MixedPrompts, PromptRows, TokenBatch,
};
use crate::models::prefix::PrefixInputs;

/// The batch on the device.
pub struct T5Inputs<B: Backend> {
    pub b: usize,
    /// encoder tokens per row (without the prompt)
    pub tokens: usize,
    pub p: usize,
    /// decoder length
    pub l: usize,
    pub ids: B::Buf,         // (B, tokens) I32
    pub enc_mask: B::Buf,    // (B, P + tokens) I32, prompt columns 1
    pub dec_ids: B::Buf,     // (B, L) I32: labels shifted right
    pub dec_mask: B::Buf,    // (B, L) I32, all 1: the decoder's only mask is causal
    pub enc_buckets: B::Buf, // (2T - 1) I32 bidirectional bucket lookup
    pub dec_buckets: B::Buf, // (2L - 1) I32 causal bucket lookup
    /// which prompt of the table (K, P, C) each row reads, and how many of its rows
    pub table: PromptRows<B>,
    /// prefix tuning (P = 0 then): the prefix, its blocks read as its placement says
    /// (`models::prefix`); the bucket lookups then span the prefix keys too
    pub prefix: Option<PrefixInputs<B>>,
}

impl<B: Backend> T5Inputs<B> {
    pub fn t(&self) -> usize {
        self.p + self.tokens
    }
}

/// Decoder inputs: labels (B, L) shifted right, `start` first, -100 replaced by `pad`.
pub fn shift_right(labels: &[i32], b: usize, l: usize, start: i32, pad: i32) -> Vec<i32> {
    let mut out = Vec::with_capacity(b * l);
    for bi in 0..b {
        out.push(start);
        for s in 0..l.saturating_sub(1) {
            let x = labels[bi * l + s];
            out.push(if x == IGNORE_INDEX { pad } else { x });
        }
    }
    out
}

/// Uploads an encoder batch and decoder labels (B, L) for a prompt of `p` rows.
pub fn upload_inputs<B: Backend>(
    be: &B,
    cfg: &T5Config,
    batch: &TokenBatch,
    p: usize,
    labels: &[i32],
    l: usize,
) -> Result<T5Inputs<B>> {
    batch.check()?;
    crate::error::ensure_len("labels (B*L)", batch.b * l, labels.len())?;
    if l == 0 {
        return Err(Error::tensor(
            "labels",
            "the decoder needs at least one target position",
        ));
    }
    crate::backend::check_ids("input_ids", &batch.ids, cfg.vocab_size)?;
    let dec_ids = shift_right(
        labels,
        batch.b,
        l,
        cfg.decoder_start_token_id as i32,
        cfg.pad_token_id as i32,
    );
    crate::backend::check_ids(
        "decoder_input_ids (labels shifted right)",
        &dec_ids,
        cfg.vocab_size,
    )?;
    let t = p + batch.t;
    if t == 0 {
        return Err(Error::tensor(
            "input_ids",
            "the encoder needs at least one position (prompt rows plus tokens)",
        ));
    }
    let (nb, md) = (
        cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance,
    );
    Ok(T5Inputs {
        b: batch.b,
        tokens: batch.t,
        p,
        l,
        ids: be.upload_i32(&batch.ids)?,
        enc_mask: be.upload_i32(&prompt_key_mask(batch, p))?,
        dec_ids: be.upload_i32(&dec_ids)?,
        dec_mask: be.upload_i32(&vec![1; batch.b * l])?,
        enc_buckets: be.upload_i32(&bucket_lookup(t, t, true, nb, md))?,
        dec_buckets: be.upload_i32(&bucket_lookup(l, l, false, nb, md))?,
        table: PromptRows::one(),
        prefix: None,
    })
}

impl<B: Backend> T5Inputs<B> {
    /// The batch (uploaded from `batch`) with rows mixing the prompts of a table: row b
    /// reads its own prompt, of its own length (its tokens then from position P_b on, the
    /// P - P_b padding rows at its end masked as keys of both the encoder and the decoder's
    /// cross-attention). The relative position bias sees each row as its prompt's own batch.
    pub fn with_prompts(mut self, be: &B, mix: &MixedPrompts, batch: &TokenBatch) -> Result<Self> {
        self.table = PromptRows::upload(be, mix, self.b, self.p)?;
        if let Some(lens) = mix.lens {
            let key_mask = mixed_key_mask(&batch.mask, batch.t, self.p, lens);
            self.enc_mask = be.upload_i32(&key_mask)?;
        }
        Ok(self)
    }

    /// Puts `prefix` in front of the self-attention keys its placement names: the bucket
    /// lookups of a stack that reads it then cover P + T keys, the prefix at positions
    /// 0..P-1 and the tokens at P.. (as transformers 5 places a cache of P rows).
    pub fn with_prefix(mut self, be: &B, cfg: &T5Config, prefix: PrefixInputs<B>) -> Result<Self> {
        use crate::models::prefix::t5_block;
        let (nb, md, p) = (
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
            prefix.p,
        );
        let enc_layers = cfg.num_layers;
        if t5_block(prefix.placement, false, 0, enc_layers, prefix.blocks).is_some() {
            let t = self.t();
            self.enc_buckets = be.upload_i32(&prefix_bucket_lookup(t, p, true, nb, md))?;
        }
        if t5_block(prefix.placement, true, 0, enc_layers, prefix.blocks).is_some() {
            let l = self.l;
            self.dec_buckets = be.upload_i32(&prefix_bucket_lookup(l, p, false, nb, md))?;
        }
        self.prefix = Some(prefix);
        Ok(self)
    }
}
