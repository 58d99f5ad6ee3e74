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
    /// The model's position of the layout's first row: 0, but under prefix tuning the
    /// tokens' (P-tuning v2 on transformers 4 puts them at P..P+T-1). The embedding reads
    /// `position_table`'s.
    pub first_position: usize,
    /// prefix tuning (P = 0 then, or a mixed batch's hidden front rows): the prefix, layer l
    /// reading block l
    pub prefix: Option<PrefixInputs<B>>,
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
}

/// Uploads a host batch for a prompt of `p` rows, checking ids against the tables.
pub fn upload_inputs<B: Backend>(
    be: &B,
    cfg: &BertConfig,
    batch: &TokenBatch,
    p: usize,
) -> Result<BertInputs<B>> {
    upload_rows(be, cfg, batch, p, None)
}

/// Uploads a host batch for a table of `p` prompt rows, row b's prompt `lens[b]` <= P rows
/// long (None: every row P): its tokens move up behind them (positions P_b..), and the key
/// mask hides the P - P_b padding rows at its end, so the row computes what its prompt's own
/// batch computes. Each row's real tokens must fit the position table behind its own prompt
/// (P_b + its tokens, `check_positions`); the batch's P + T may run past it (a short prompt's
/// row padded to a long prompt's longest row), and then reads `position_table`'s.
pub fn upload_rows<B: Backend>(
    be: &B,
    cfg: &BertConfig,
    batch: &TokenBatch,
    p: usize,
    lens: Option<&[usize]>,
) -> Result<BertInputs<B>> {
    batch.check()?;
    crate::backend::check_ids("input_ids", &batch.ids, cfg.vocab_size)?;
    if let Some(types) = &batch.type_ids {
        crate::backend::check_ids("token_type_ids", types, cfg.type_vocab_size)?;
    }
    let (key_mask, prompt_len) = match lens {
        None => (prompt_key_mask(batch, p), None),
        Some(lens) => {
            crate::error::ensure_len("prompt lengths", batch.b, lens.len())?;
            let key_mask = mixed_key_mask(&batch.mask, batch.t, p, lens);
            let lens: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
            crate::backend::check_prompt_lens(&lens, p)?;
            (key_mask, Some(be.upload_i32(&lens)?))
        }
    };
    let first = |bi: usize| lens.and_then(|l| l.get(bi).copied()).unwrap_or(p);
    check_positions(cfg, batch, "prompt", first)?;
    Ok(BertInputs {
        b: batch.b,
        tokens: batch.t,
        p,
        prompts: 1,
        prompt_idx: None,
        prompt_len,
        ids: be.upload_i32(&batch.ids)?,
        type_ids: batch
            .type_ids
            .as_ref()
            .map(|t| be.upload_i32(t))
            .transpose()?,
        key_mask: be.upload_i32(&key_mask)?,
        mask: batch.mask.clone(),
        first_position: 0,
        prefix: None,
    })
}

/// Checks that each row's real tokens fit BERT's position table behind the `first(b)` rows in
/// front of them (its own prompt's, or a prefix's positions), naming the row that does not:
/// a row's padding may run past the table (its slots are masked keys, never read), its real
/// tokens may not.
pub fn check_positions(
    cfg: &BertConfig,
    batch: &TokenBatch,
    front: &str,
    first: impl Fn(usize) -> usize,
) -> Result<()> {
    let max = cfg.max_position_embeddings;
    match batch.furthest_row(first) {
        Some((bi, f, n)) if f + n > max => Err(Error::shape(
            format!("{front} + tokens of batch row {bi} (BERT max_position_embeddings)"),
            format!("<= {max}"),
            format!("{f} + {n}"),
        )),
        _ => Ok(()),
    }
}

/// The position table a layout of `t` rows reads, its row 0 the model's position `first`:
/// None when that is the model's own `table` (first 0, t within it); else the table's rows
/// from `first` on, then zero rows up to t where the layout runs past it (rows of different
/// prompt lengths in one batch: a short prompt's row padded to a long prompt's longest).
/// Only padding reads those: `check_positions` keeps every real token inside the table, and no
/// kernel reads a position past the table it is given.
pub(super) fn position_table<B: Backend>(
    be: &B,
    table: &B::Buf,
    first: usize,
    t: usize,
    c: usize,
) -> Result<Option<B::Buf>> {
    let rows = be.len(table) / c.max(1);
    if first == 0 && t <= rows {
        return Ok(None);
    }
    let mut host = be.download(table)?;
    host.drain(..(first * c).min(host.len()));
    host.resize(t * c, 0.0);
    be.upload(be.dtype(table), &host).map(Some)
}
