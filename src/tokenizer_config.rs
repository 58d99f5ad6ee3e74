//! tokenizer_config.json's keys that transformers' tokenizer classes apply over tokenizer.json,
//! so that `AutoTokenizer` and this engine give the same ids for the same folder:
//! - BERT's `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`: `BertTokenizerFast`
//!   rebuilds a `BertNormalizer` from them (transformers' defaults `true`, `null`, `true` where
//!   the keys are absent) when they disagree with tokenizer.json's;
//! - `split_special_tokens`: a special token written in a text is tokenized as text.
//!
//! Each edits tokenizer.json's value before the `tokenizers` crate reads it, except the last,
//! which the crate takes as a setting. `add_bos_token` / `add_eos_token` are not among them:
//! transformers 5 drops both from tokenizer_config.json wherever a tokenizer.json is there
//! (`_from_pretrained`), and keeps its post-processor, for every class; applying them added
//! or dropped a BOS or an EOS on every row, and BERT's [CLS] and [SEP] (hostile pass 26, F1).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const BERT_CLASSES: [&str; 2] = ["BertTokenizer", "BertTokenizerFast"];

/// One of the folder's tokenizer JSON files (tokenizer_config.json, special_tokens_map.json).
pub(super) struct Json {
    pub(super) path: PathBuf,
    pub(super) v: Value,
}

impl Json {
    /// `<dir>/<name>`, None when there is no such file; one that is there but no ordinary
    /// file (a FIFO) is refused by the read, not skipped.
    pub(super) fn read(dir: &Path, name: &str) -> Result<Option<Json>> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let text = crate::fsutil::read_json_text(&path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
        Ok(Some(Json { path, v }))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|x| !x.is_null())
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(x) => Err(Error::file(
                &self.path,
                format!("`{key}` is {x}: expected true or false"),
            )),
        }
    }

    /// A special token's text (`pad_token`, `bos_token`): a string, or an object with its
    /// `content` (an AddedToken); None when the key is absent or null.
    pub(super) fn token(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(t)) => Ok(Some(t)),
            Some(x) => match x.get("content").and_then(Value::as_str) {
                Some(t) => Ok(Some(t)),
                None => Err(Error::file(
                    &self.path,
                    format!("`{key}` is {x}: expected a string or {{\"content\": ...}}"),
                )),
            },
        }
    }
}

/// The special token `key` names, as transformers finds it: tokenizer_config.json's, else
/// special_tokens_map.json's; with the file that named it.
pub(super) fn special_token(dir: &Path, key: &str) -> Result<Option<(String, PathBuf)>> {
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Some(file) = Json::read(dir, name)? else {
            continue;
        };
        if let Some(t) = file.token(key)? {
            return Ok(Some((t.to_string(), file.path)));
        }
    }
    Ok(None)
}

/// What `apply` did and leaves to the caller.
pub(super) struct Applied {
    /// `tok` was edited, and is to be read from its new text
    pub(super) edited: bool,
    /// special tokens written in a text are tokenized as text (`split_special_tokens`)
    pub(super) split_special: bool,
}

/// Applies tokenizer_config.json's keys to tokenizer.json's value `tok`.
pub(super) fn apply(dir: &Path, tok: &mut Value) -> Result<Applied> {
    let config = Json::read(dir, "tokenizer_config.json")?;
    let class = match config.as_ref().and_then(|c| c.get("tokenizer_class")) {
        Some(Value::String(c)) => Some(c.clone()),
        _ => model_type_class(dir),
    };
    let class = class.as_deref().unwrap_or_default();
    let keys = |key: &str| -> Result<Option<bool>> {
        config.as_ref().map_or(Ok(None), |c| c.bool_opt(key))
    };
    let edited = BERT_CLASSES.contains(&class) && bert_normalizer(config.as_ref(), tok)?;
    Ok(Applied {
        edited,
        split_special: keys("split_special_tokens")?.unwrap_or(false),
    })
}

/// The class `AutoTokenizer` picks from config.json's `model_type` when tokenizer_config.json
/// names none (only BERT's matters here); None when config.json is absent or unreadable (its
/// own reader reports that).
fn model_type_class(dir: &Path) -> Option<String> {
    let config = Json::read(dir, "config.json").ok()??;
    match config.get("model_type").and_then(Value::as_str) {
        Some("bert") => Some("BertTokenizerFast".into()),
        _ => None,
    }
}

/// `BertTokenizerFast.__init__`: a `BertNormalizer` whose `lowercase`, `strip_accents` or
/// `handle_chinese_chars` disagree with `do_lower_case`, `strip_accents`,
/// `tokenize_chinese_chars` is rebuilt with them (its `clean_text` kept). A normalizer of
/// another type is kept, as transformers 4 keeps it. Whether anything changed.
fn bert_normalizer(config: Option<&Json>, tok: &mut Value) -> Result<bool> {
    let Some(Value::Object(norm)) = tok.get_mut("normalizer") else {
        return Ok(false);
    };
    if norm.get("type").and_then(Value::as_str) != Some("BertNormalizer") {
        return Ok(false);
    }
    let key = |k: &str| config.map_or(Ok(None), |c| c.bool_opt(k));
    let lowercase = key("do_lower_case")?.unwrap_or(true);
    let strip_accents = key("strip_accents")?;
    let chinese = key("tokenize_chinese_chars")?.unwrap_or(true);
    let mut changed = false;
    for (k, want) in [
        ("lowercase", json!(lowercase)),
        ("strip_accents", json!(strip_accents)),
        ("handle_chinese_chars", json!(chinese)),
    ] {
        if norm.get(k).unwrap_or(&Value::Null) != &want {
            norm.insert(k.into(), want);
            changed = true;
        }
    }
    Ok(changed)
}
