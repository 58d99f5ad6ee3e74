//! Which model a task, encoded rows and a prompt were made on: a fingerprint of the model
//! folder's config.json and tokenizer file, and the folder, for messages. A task, a row or a
//! prompt used on another model of the same width ran that model's weights on the first one's
//! token ids, labels or trained rows without a word; every use compares the fingerprints.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// The key of the fingerprint in a saved prompt's task.json (16 hex digits). Folders saved
/// before it was recorded, and PEFT's, have none: their prompts run on any model they fit.
pub const FINGERPRINT_KEY: &str = "model_fingerprint";

/// A model's identity: what makes token ids, labels and prompt rows mean the same thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelId {
    /// FNV-1a over config.json and the tokenizer file (two folders holding the same files
    /// are one model)
    pub fingerprint: u64,
    /// the folder it was loaded from (or, for a saved prompt, the one its task.json records)
    pub dir: PathBuf,
}

impl ModelId {
    /// The identity of the model folder `dir` with its loaded `tokenizer` (the weights are
    /// not read again).
    pub fn of_folder(dir: &Path, tokenizer: &Tokenizer) -> Result<ModelId> {
        let mut h = super::checkpoint::FNV_START;
        for path in [dir.join("config.json"), tokenizer.path().to_path_buf()] {
            // the loaders' own read: an ordinary file, capped (a FIFO or /dev/zero is refused)
            let text = crate::fsutil::read_json_text(&path)?;
            h = super::checkpoint::fnv1a_bytes(h, text.as_bytes());
        }
        Ok(ModelId {
            fingerprint: h,
            dir: dir.to_path_buf(),
        })
    }

    /// The fingerprint as task.json records it.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }

    /// A fingerprint task.json recorded (`FINGERPRINT_KEY`), of the model in `dir`; None when
    /// `text` is not 16 hex digits.
    pub fn from_hex(text: &str, dir: PathBuf) -> Option<ModelId> {
        let digits = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
        let fingerprint = u64::from_str_radix(text, 16).ok().filter(|_| digits)?;
        Some(ModelId { fingerprint, dir })
    }

    /// What was made on this model (`what`: "was made on", "row 2 was encoded by"), used on
    /// `model`: an error under `flag` naming both folders and `advice` (how to get one of
    /// `model`) when the fingerprints differ.
    pub fn check(&self, model: &ModelId, flag: &str, what: &str, advice: &str) -> Result<()> {
        match self.differs(model, what) {
            None => Ok(()),
            Some(msg) => Err(Error::arg(flag, format!("{msg}: {advice}"))),
        }
    }

    /// None when `model` is this model, else the words of `check`'s error before the advice.
    pub fn differs(&self, model: &ModelId, what: &str) -> Option<String> {
        if self.fingerprint == model.fingerprint {
            return None;
        }
        let (made, here) = (self.dir.display(), model.dir.display());
        // one folder, spelled alike or not: its files were replaced since (a saved prompt)
        let canonical = |p: &Path| std::fs::canonicalize(p).ok();
        if self.dir == model.dir
            || canonical(&self.dir).is_some_and(|c| canonical(&model.dir) == Some(c))
        {
            return Some(format!(
                "{what} the model in {made}, whose config.json or tokenizer file has changed \
                 since"
            ));
        }
        Some(format!(
            "{what} the model in {made}, and this is the model in {here} (another config.json \
             or tokenizer)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_form_reads_back_and_nothing_else_does() {
        let id = ModelId {
            fingerprint: 0x00ab_cdef_0123_4567,
            dir: PathBuf::from("m"),
        };
        assert_eq!(id.hex(), "00abcdef01234567");
        assert_eq!(ModelId::from_hex(&id.hex(), PathBuf::from("m")), Some(id));
        for bad in [
            "",
            "abc",
            "+0abcdef01234567",
            "00abcdef0123456g",
            "00abcdef012345678",
        ] {
            assert_eq!(ModelId::from_hex(bad, PathBuf::new()), None, "{bad}");
        }
    }
}
