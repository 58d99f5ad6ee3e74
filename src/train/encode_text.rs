//! A text's bytes before the tokenizer: a huge line cut by words, and a whitespace-free run
//! shortened so that the words after it stay (encode.rs's `encode_text` uses them).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::borrow::Cow;

/// Bytes of text read per token a row may hold (`byte_cap`, `Model::tokenize`'s bound).
pub(crate) const BYTES_PER_TOKEN: usize = 256;

/// The most bytes a text tokenized whole may hold (`Model::tokenize`'s text, a template, a
/// TEXT init's text): `BYTES_PER_TOKEN` for each of the `MAX_TOKENS` positions a row may
/// hold. The tokenizer keeps about 500 bytes a token: a 60 MB text aborted the process.
pub(crate) const MAX_TOKENIZE_BYTES: usize = BYTES_PER_TOKEN * crate::models::MAX_TOKENS;

/// Refuses a `what` (the flag) of more than `MAX_TOKENIZE_BYTES`, naming its size only.
pub(crate) fn check_tokenize_bytes(text: &str, what: &str) -> crate::error::Result<()> {
    if text.len() <= MAX_TOKENIZE_BYTES {
        return Ok(());
    }
    Err(crate::error::Error::arg(
        what,
        format!(
            "is {} bytes, more than the {MAX_TOKENIZE_BYTES} a text tokenized whole may hold \
             ({BYTES_PER_TOKEN} bytes for each of the {} positions a row may hold)",
            text.len(),
            crate::models::MAX_TOKENS
        ),
    ))
}

/// The most bytes of one text that reach the tokenizer for rows of up to `max_len` tokens:
/// `BYTES_PER_TOKEN` a token (at least 64 KiB). The tokenizer keeps about 500 bytes a token,
/// so a text tokenized whole without a bound (a 60 MB line) aborted the process.
pub(crate) fn byte_cap(max_len: usize) -> usize {
    max_len.saturating_mul(BYTES_PER_TOKEN).max(1 << 16)
}

/// `text` cut to at most `cap` bytes: after its last whitespace character when that lies in
/// the second half (whole words), else at the last character boundary.
pub(super) fn capped(text: &str, cap: usize) -> &str {
    if text.len() <= cap {
        return text;
    }
    let mut at = cap;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let head = text.get(..at).unwrap_or_default();
    match head.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
        Some((i, c)) if i >= at / 2 => text.get(..i + c.len_utf8()).unwrap_or(head),
        _ => head,
    }
}

/// `text` with every run of more than `keep` non-whitespace characters of one kind
/// (alphanumeric, or not) cut to its first `keep`; borrowed when no run is that long.
pub(super) fn shorten_runs(text: &str, keep: usize) -> Cow<'_, str> {
    let mut drop: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut kind, mut n, mut from) = (None, 0usize, None);
    for (i, c) in text.char_indices() {
        let k = (!c.is_whitespace()).then(|| c.is_alphanumeric());
        if k != kind || k.is_none() {
            drop.extend(from.take().map(|f| f..i));
            (kind, n) = (k, 0);
        }
        n += k.is_some() as usize;
        if n == keep + 1 {
            from = Some(i);
        }
    }
    drop.extend(from.map(|f| f..text.len()));
    if drop.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in drop {
        out.push_str(text.get(at..r.start).unwrap_or_default());
        at = r.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Cow::Owned(out)
}

/// The longest prefix of `text` of at most `budget` bytes that ends with a whitespace
/// character, else the shortest longer one; None when `text` has no whitespace at all.
pub(super) fn whitespace_prefix(text: &str, budget: usize) -> Option<&str> {
    let mut at = budget.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let (head, tail) = text.split_at(at);
    let end = match head.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
        Some((i, c)) => i + c.len_utf8(),
        None => {
            let (i, c) = tail.char_indices().find(|(_, c)| c.is_whitespace())?;
            at + i + c.len_utf8()
        }
    };
    text.get(..end)
}
