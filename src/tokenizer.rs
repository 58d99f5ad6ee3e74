//! `tokenizer.json` through the `tokenizers` crate, with any padding or truncation baked into
//! the file switched off: the engine pads batches itself and reports truncation explicitly.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Token ids with where each came from in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpans {
    pub ids: Vec<i32>,
    /// byte span of each token in the text ((0, 0) for added special tokens)
    pub offsets: Vec<(usize, usize)>,
    /// added by the post-processor ([CLS], [SEP], </s>)
    pub special: Vec<bool>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Reads `<dir>/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::file(
                &path,
                "missing: the model folder needs a tokenizer.json",
            ));
        }
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        Ok(Tokenizer { inner, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`, with the tokenizer's special tokens ([CLS] ... [SEP], or ... </s>)
    /// when `special` is set.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<i32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("encoding {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i32).collect())
    }

    /// Ids of `text` with special tokens, each token's byte span in `text`, and whether the
    /// post-processor added it ([CLS], [SEP], </s>).
    pub fn encode_with_offsets(&self, text: &str) -> Result<TokenSpans> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("encoding {text:?}: {e}"),
            })?;
        Ok(TokenSpans {
            ids: enc.get_ids().iter().map(|&i| i as i32).collect(),
            offsets: enc.get_offsets().to_vec(),
            special: enc
                .get_special_tokens_mask()
                .iter()
                .map(|&m| m != 0)
                .collect(),
        })
    }

    /// Ids and token types of a sentence pair (BERT's [CLS] a [SEP] b [SEP]).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<(Vec<i32>, Vec<i32>)> {
        let enc = self
            .inner
            .encode((a, b), true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("encoding a pair: {e}"),
            })?;
        Ok((
            enc.get_ids().iter().map(|&i| i as i32).collect(),
            enc.get_type_ids().iter().map(|&i| i as i32).collect(),
        ))
    }

    pub fn token_to_id(&self, token: &str) -> Option<i32> {
        self.inner.token_to_id(token).map(|i| i as i32)
    }

    /// The unknown token's id ([UNK] or <unk>), if the vocabulary has one.
    pub fn unk_id(&self) -> Option<i32> {
        ["[UNK]", "<unk>"].iter().find_map(|t| self.token_to_id(t))
    }

    pub fn decode(&self, ids: &[i32], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i.max(0) as u32).collect();
        self.inner
            .decode(&ids, skip_special)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("decoding: {e}"),
            })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
