//! Prefix tuning (P-tuning v2, PEFT `PREFIX_TUNING`): P trainable key and value rows in front
//! of the keys of self-attention layers. The prefix is one (P, N·2·Hkv·D) F32 table, PEFT's
//! `prompt_embeddings` layout (each row N blocks `[k v]`, each Hkv·D head-major); the attention
//! op reads a layer's block in place (`PrefixKv`) and its backward adds the block's gradient,
//! summed over the batch, straight into the table's gradient. Nothing enters the embeddings:
//! the models' outputs cover the real tokens only.
//!
//! Which layer reads which block is the placement:
//! - `Papers` (the default): every self-attention layer reads its own block, in layer order;
//!   for T5 the encoder's L_enc blocks, then the decoder's L_dec (N = L_enc + L_dec).
//! - `Peft`: what PEFT 0.21 does with transformers 5. Decoder-only models and BERT as
//!   `Papers` (N = layers); for T5 the encoder reads nothing and decoder layer l reads block
//!   `2l mod N` of the N blocks PEFT stores (N = `num_layers` of its config; its
//!   cross-attention half is dropped). PEFT gives decoder layer l the l-th of N cache entries,
//!   so a decoder of more than N layers fails there (IndexError): PEFT's default N, config.json's
//!   `num_layers` (L_enc), fits only when L_dec <= L_enc, and a table trained here has
//!   N = max(L_enc, L_dec), which its adapter_config.json names.

use crate::backend::{Backend, DType, PrefixKv, PrefixRows};
use crate::error::{Error, Result};
use std::ops::Range;
use std::str::FromStr;

/// Where the prefix blocks go (module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    #[default]
    Papers,
    Peft,
}

impl FromStr for Placement {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "papers" => Ok(Placement::Papers),
            "peft" => Ok(Placement::Peft),
            _ => Err(Error::arg(
                "--prefix-placement",
                format!("{s:?}: expected papers or peft"),
            )),
        }
    }
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Papers => "papers",
            Placement::Peft => "peft",
        }
    }
}

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

/// The prefix of one step on the device: its table (a copy the inputs own, so that the
/// recomputation under `--recompute layer` reads the same rows) and its layout.
pub struct PrefixInputs<B: Backend> {
    /// (P, blocks · 2 · kv_width) F32
    pub table: B::Buf,
    pub p: usize,
    pub blocks: usize,
    /// Hkv · D: one key (or value) row of one layer
    pub kv_width: usize,
    pub placement: Placement,
    /// batch rows mixing the prefixes of a stack (`with_rows`)
    pub rows: Option<MixedPrefix>,
}

/// Batch rows mixing the K prefixes of a stack (K·P, N·2·Hkv·D), each left-padded to P rows:
/// the prefix each row reads and how many of its leading rows it hides (`PrefixRows`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixedPrefix {
    /// (B) the prefix each batch row reads
    pub slot: Vec<usize>,
    /// (B) the leading rows of that prefix the row hides: P − its length, or P without one
    pub hidden: Vec<usize>,
    /// K
    pub prefixes: usize,
}

impl<B: Backend> PrefixInputs<B> {
    /// Copies `prefix` (P, blocks · 2 · kv_width) F32 for one step, checking its length.
    pub fn new(
        be: &B,
        prefix: &B::Buf,
        p: usize,
        blocks: usize,
        kv_width: usize,
        placement: Placement,
    ) -> Result<Self> {
        let len = p * blocks * 2 * kv_width;
        if p == 0 || be.len(prefix) != len {
            return Err(Error::shape(
                "prefix (P, N·2·Hkv·D)",
                format!("{p} x {blocks}·2·{kv_width} = {len} elements, P >= 1"),
                be.len(prefix),
            ));
        }
        let mut table = be.zeros(DType::F32, len)?;
        be.copy(&mut table, prefix)?;
        Ok(PrefixInputs {
            table,
            p,
            blocks,
            kv_width,
            placement,
            rows: None,
        })
    }

    /// These inputs, made over the whole stack of K prefixes (K·P rows), as rows mixing
    /// them: P = the stack's rows / K, row b reading prefix `rows.slot[b]`.
    pub fn with_rows(mut self, rows: MixedPrefix) -> Result<Self> {
        let k = rows.prefixes.max(1);
        if !self.p.is_multiple_of(k) {
            return Err(Error::shape(
                "prefix stack (K prefixes of P rows)",
                format!("a multiple of K = {k} rows"),
                self.p,
            ));
        }
        self.p /= k;
        self.rows = Some(rows);
        Ok(self)
    }

    /// The prefix rows batch row `bi` reads: P, less the rows it hides when rows mix prefixes.
    pub fn row_len(&self, bi: usize) -> usize {
        let hidden = self.rows.as_ref().and_then(|r| r.hidden.get(bi).copied());
        self.p - hidden.unwrap_or(0).min(self.p)
    }

    /// The table rows batch row `bi` reads: the end of its slot's P (the one prefix's
    /// without `rows`), less the leading rows it hides.
    pub fn visible_rows(&self, bi: usize) -> Range<usize> {
        let slot = self.rows.as_ref().and_then(|r| r.slot.get(bi).copied());
        let end = (slot.unwrap_or(0) + 1) * self.p;
        end - self.row_len(bi)..end
    }

    /// Copies each batch row's visible rows (`visible_rows`) into `store` on the device, cast
    /// to the store's type (the activations' or F32): batch row b's from store row `at[b]` on.
    /// The store's rows are whole table rows (`part` None, N·2·Hkv·D wide) or one block's
    /// keys or values (`part` Some((block, 0 keys | 1 values)), Hkv·D wide).
    pub fn copy_visible(
        &self,
        be: &B,
        store: &mut B::Buf,
        at: &[usize],
        part: Option<(usize, usize)>,
    ) -> Result<()> {
        self.check_rows(at.len())?;
        // (source, store) rows, a source row `unit` rows of the store's width
        let (unit, off, c) = match part {
            None => (1, 0, self.width()),
            Some((block, half)) => (2 * self.blocks, 2 * block + half, self.kv_width),
        };
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        for (bi, &first) in at.iter().enumerate() {
            for (j, r) in self.visible_rows(bi).enumerate() {
                src.push((r * unit + off) as i32);
                dst.push((first + j) as i32);
            }
        }
        if src.is_empty() {
            return Ok(());
        }
        let (src, dst, m) = (be.upload_i32(&src)?, be.upload_i32(&dst)?, dst.len());
        be.copy_rows(store, &self.table, &src, &dst, m, c)
    }

    /// Mixed rows name a prefix of the stack for each of the batch's `b` rows (a short list
    /// would read prefix 0 unhidden for the rest).
    fn check_rows(&self, b: usize) -> Result<()> {
        let Some(rows) = &self.rows else {
            return Ok(());
        };
        if rows.slot.len() < b || rows.hidden.len() < b {
            return Err(Error::shape(
                "mixed prefix rows (slot, hidden)",
                format!("{b} entries each, one per batch row"),
                rows.slot.len().min(rows.hidden.len()),
            ));
        }
        match rows.slot.iter().find(|&&s| s >= rows.prefixes.max(1)) {
            Some(s) => Err(Error::shape(
                "mixed prefix rows (slot)",
                format!("prefixes below K = {}", rows.prefixes),
                *s,
            )),
            None => Ok(()),
        }
    }

    /// The row width, N · 2 · Hkv · D.
    pub fn width(&self) -> usize {
        self.blocks * 2 * self.kv_width
    }

    /// Block `n` as the attention op reads it.
    pub fn block(&self, n: usize) -> PrefixKv<'_, B::Buf> {
        let k_off = n * 2 * self.kv_width;
        PrefixKv {
            table: &self.table,
            p: self.p,
            width: self.width(),
            k_off,
            v_off: k_off + self.kv_width,
            rows: self.rows.as_ref().map(|r| PrefixRows {
                slot: &r.slot,
                hidden: &r.hidden,
                prefixes: r.prefixes,
            }),
        }
    }
}

/// The number of blocks a model with `enc` encoder (or only) layers and `dec` decoder layers
/// stores under `placement`: T5 under `Peft` one per encoder layer, PEFT's default, or one per
/// decoder layer where the decoder has more (fewer leave its last layers without a block).
pub fn block_count(enc: usize, dec: usize, placement: Placement) -> usize {
    match placement {
        Placement::Papers => enc + dec,
        Placement::Peft => enc.max(dec),
    }
}

/// The block T5's layer `l` reads: `decoder` says which stack, `enc` is the encoder's layer
/// count and `blocks` the table's; None when it reads none.
pub fn t5_block(
    placement: Placement,
    decoder: bool,
    l: usize,
    enc: usize,
    blocks: usize,
) -> Option<usize> {
    match (placement, decoder) {
        (Placement::Papers, false) => Some(l),
        (Placement::Papers, true) => Some(enc + l),
        (Placement::Peft, false) => None,
        (Placement::Peft, true) => Some((2 * l) % blocks.max(1)),
    }
}
