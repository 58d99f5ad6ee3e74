//! The batch on the device, with the P prompt rows in front.

use crate::backend::Backend;
use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::models::common::{mixed_key_mask, prompt_key_mask, TokenBatch};
use crate::models::prefix::PrefixInputs;

/// The batch on the device, with the prompt counted in: T = P + tokens.
pub struct BertInputs<B: Backend> {
    pub b: usize,
    /// real-token positions per row (the batch's padded length)
    pub tokens: usize,
    pub p: usize,
    /// K, the prompts in the table (K, P, C) the batch reads: 1 unless rows mix prompts
    pub prompts: usize,
    /// (B) I32: the prompt of each row, when rows mix prompts (else every row reads prompt 0)
    pub prompt_idx: Option<B::Buf>,
    /// (B) I32: each row's prompt length P_b <= P when rows mix prompts of different lengths
    /// (row b = [its P_b prompt rows, its tokens, P - P_b padding rows]); else every row P
    pub prompt_len: Option<B::Buf>,
    pub ids: B::Buf,              // (B, tokens) I32
    pub type_ids: Option<B::Buf>, // (B, tokens) I32
    pub key_mask: B::Buf,         // (B, P + tokens) I32, prompt rows 1, padding 0
    /// (B, tokens) the host's attention mask: the cls head pools by it
    pub mask: Vec<i32>,
    /// prefix tuning (P = 0 then): the prefix, layer l reading block l, and the position
    /// table the real tokens read, shifted by their first position (P-tuning v2 on
    /// transformers 4 puts them at P..P+T-1)
    pub prefix: Option<(PrefixInputs<B>, B::Buf)>,
}

impl<B: Backend> BertInputs<B> {
    pub fn t(&self) -> usize {
        self.p + self.tokens
    }

    /// The batch with each row reading its own prompt of a table of `prompts` (K, P, C):
    /// row b reads prompt `prompt_idx[b]` (B), each checked against K.
    pub fn with_prompt_index(mut self, be: &B, prompt_idx: &[i32], prompts: usize) -> Result<Self> {
        crate::error::ensure_len("prompt index", self.b, prompt_idx.len())?;
        crate::backend::check_ids("prompt index", prompt_idx, prompts)?;
        self.prompts = prompts;
        self.prompt_idx = Some(be.upload_i32(prompt_idx)?);
        Ok(self)
    }

    /// The batch with row b's prompt `lens[b]` <= P rows long (B): its tokens move up behind
    /// them (positions P_b..), and the key mask hides the P - P_b padding rows at its end, so
    /// the row computes what its prompt's own batch computes.
    pub fn with_prompt_lens(mut self, be: &B, lens: &[usize]) -> Result<Self> {
        crate::error::ensure_len("prompt lengths", self.b, lens.len())?;
        let key_mask = mixed_key_mask(&self.mask, self.tokens, self.p, lens);
        let lens: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        crate::backend::check_prompt_lens(&lens, self.p)?;
        self.key_mask = be.upload_i32(&key_mask)?;
        self.prompt_len = Some(be.upload_i32(&lens)?);
        Ok(self)
    }
}

/// Uploads a host batch for a prompt of `p` rows, checking ids against the tables.
pub fn upload_inputs<B: Backend>(
    be: &B,
    cfg: &BertConfig,
    batch: &TokenBatch,
    p: usize,
) -> Result<BertInputs<B>> {
    batch.check()?;
    crate::backend::check_ids("input_ids", &batch.ids, cfg.vocab_size)?;
    if let Some(types) = &batch.type_ids {
        crate::backend::check_ids("token_type_ids", types, cfg.type_vocab_size)?;
    }
    if p + batch.t > cfg.max_position_embeddings {
        return Err(Error::shape(
            "prompt + tokens (BERT max_position_embeddings)",
            format!("<= {}", cfg.max_position_embeddings),
            format!("{} + {}", p, batch.t),
        ));
    }
    Ok(BertInputs {
        b: batch.b,
        tokens: batch.t,
        p,
        prompts: 1,
        prompt_idx: None,
        prompt_len: None,
        ids: be.upload_i32(&batch.ids)?,
        type_ids: batch
            .type_ids
            .as_ref()
            .map(|t| be.upload_i32(t))
            .transpose()?,
        key_mask: be.upload_i32(&prompt_key_mask(batch, p))?,
        mask: batch.mask.clone(),
        prefix: None,
    })
}
