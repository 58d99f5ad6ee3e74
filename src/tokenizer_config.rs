//! tokenizer_config.json's keys that transformers' tokenizer classes apply over tokenizer.json,
//! so that `AutoTokenizer` and this engine give the same ids for the same folder:
//! - BERT's `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`: `BertTokenizerFast`
//!   rebuilds a `BertNormalizer` from them (transformers' defaults `true`, `null`, `true` where
//!   the keys are absent) when they disagree with tokenizer.json's;
//! - `add_bos_token` / `add_eos_token`: transformers 5 rebuilds the post-processor from them
//!   where tokenizer_config.json names either (an absent one: `false`), and `LlamaTokenizer`
//!   and its kin always do (an absent `add_bos_token`: `true`);
//! - `split_special_tokens`: a special token written in a text is tokenized as text.
//!
//! Each edits tokenizer.json's value before the `tokenizers` crate reads it, except the last,
//! which the crate takes as a setting.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The classes whose `__init__` rebuilds the post-processor whatever tokenizer_config.json says.
const LLAMA_CLASSES: [&str; 4] = [
    "LlamaTokenizer",
    "LlamaTokenizerFast",
    "CodeLlamaTokenizer",
    "CodeLlamaTokenizerFast",
];
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
    let mut edited = false;
    if BERT_CLASSES.contains(&class) {
        edited = bert_normalizer(config.as_ref(), tok)?;
    }
    let llama = LLAMA_CLASSES.contains(&class);
    let (bos, eos) = (keys("add_bos_token")?, keys("add_eos_token")?);
    if llama || bos.is_some() || eos.is_some() {
        let add_bos = bos.unwrap_or(llama);
        let add_eos = eos.unwrap_or(false);
        let path = config.as_ref().map(|c| c.path.clone()).unwrap_or_default();
        post_processor(dir, &path, llama, (add_bos, add_eos), tok)?;
        edited = true;
    }
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

/// `update_post_processor`: `[bos] $A [eos]` for one text, `[bos] $A [eos] [bos] $B [eos]`
/// for a pair, in place of tokenizer.json's post-processor. The tokens are the folder's
/// `bos_token` / `eos_token` (`LlamaTokenizer`'s defaults `<s>` / `</s>`); transformers 5
/// leaves out one the folder does not name. A token the vocabulary lacks is refused naming
/// `config` (transformers would add it as a new token, with an id past the model's table).
fn post_processor(
    dir: &Path,
    config: &Path,
    llama: bool,
    (add_bos, add_eos): (bool, bool),
    tok: &mut Value,
) -> Result<()> {
    let mut ends = Vec::new();
    for (add, key, default) in [
        (add_bos, "bos_token", "<s>"),
        (add_eos, "eos_token", "</s>"),
    ] {
        let named = special_token(dir, key)?;
        let token = match (add, named) {
            (false, _) => None,
            (true, Some((t, _))) => Some(t),
            (true, None) => llama.then(|| default.to_string()),
        };
        let Some(token) = token else {
            ends.push(None);
            continue;
        };
        let flag = format!("add_{key}");
        let id = token_id(tok, &token).ok_or_else(|| {
            Error::file(
                config,
                format!(
                    "`{flag}` adds the {key} {token:?}, which is not in the vocabulary of \
                     {}: name a token it has in `{key}`, or set `{flag}` to false",
                    dir.join("tokenizer.json").display()
                ),
            )
        })?;
        ends.push(Some((token, id)));
    }
    let (bos, eos) = match ends.as_slice() {
        [bos, eos] => (bos.clone(), eos.clone()),
        _ => (None, None),
    };
    let piece = |t: &str, type_id: u8| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |id: &str, type_id: u8| json!({"Sequence": {"id": id, "type_id": type_id}});
    let half = |s: &str, type_id: u8| -> Vec<Value> {
        let mut v: Vec<Value> = bos.iter().map(|(t, _)| piece(t, type_id)).collect();
        v.push(seq(s, type_id));
        v.extend(eos.iter().map(|(t, _)| piece(t, type_id)));
        v
    };
    let single = half("A", 0);
    let mut pair = single.clone();
    pair.extend(half("B", 1));
    let special: serde_json::Map<String, Value> = (bos.iter().chain(eos.iter()))
        .map(|(t, id)| (t.clone(), json!({"id": t, "ids": [id], "tokens": [t]})))
        .collect();
    if let Value::Object(o) = tok {
        o.insert(
            "post_processor".into(),
            json!({"type": "TemplateProcessing", "single": single, "pair": pair,
                   "special_tokens": special}),
        );
    }
    Ok(())
}

/// `token`'s id in tokenizer.json's value: an added token's, else the model's vocabulary's
/// (an object for BPE and WordPiece, a list of [piece, score] for Unigram).
fn token_id(tok: &Value, token: &str) -> Option<u64> {
    let added = tok.get("added_tokens").and_then(Value::as_array);
    let found = added.into_iter().flatten().find_map(|a| {
        (a.get("content").and_then(Value::as_str) == Some(token))
            .then(|| a.get("id").and_then(Value::as_u64))
            .flatten()
    });
    found.or_else(|| match tok.pointer("/model/vocab")? {
        Value::Object(v) => v.get(token).and_then(Value::as_u64),
        Value::Array(v) => v
            .iter()
            .position(|p| p.get(0).and_then(Value::as_str) == Some(token))
            .map(|i| i as u64),
        _ => None,
    })
}
