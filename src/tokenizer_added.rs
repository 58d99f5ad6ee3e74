//! The tokens transformers 5 adds over tokenizer.json as it loads a folder
//! (`TokenizersBackend.__init__`): tokenizer_config.json's `added_tokens_decoder` entries that
//! tokenizer.json does not hold as they are, then each named special token (`bos_token` ...
//! `mask_token`, then the folder's other `*_token` keys) and each of `extra_special_tokens`
//! (`additional_special_tokens`) whose text is not an added token yet. `add_tokens` gives each
//! its id in the vocabulary, or the next new id (the decoder's index is not used: transformers
//! does not use it either). A text naming such a token was tokenized as ordinary text, and a
//! `pad_token` missing from tokenizer.json was refused (hostile pass 27, F2). A class's own
//! defaults (GPT2Tokenizer's `<|endoftext|>`, CodeLlama's `▁<PRE>`) are not added: only what
//! the folder's files name.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::config::{special_sources, Json};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::AddedToken;

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order (the order new ids are given in).
const NAMED: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The tokens to add over tokenizer.json's, whose added tokens are `present`, in the order
/// transformers adds them.
pub(super) fn tokens_to_add(dir: &Path, present: &[AddedToken]) -> Result<Vec<AddedToken>> {
    let sources = special_sources(dir)?;
    let config = sources
        .iter()
        .find(|s| s.path.ends_with("tokenizer_config.json"));
    let mut add: Vec<AddedToken> = match config {
        Some(c) => decoder_tokens(c)?,
        None => Vec::new(),
    };
    add.retain(|t| !present.contains(t));
    let named = named_tokens(dir, &sources)?;
    let extra = extra_tokens(&sources)?;
    for token in named.iter().chain(&extra) {
        let known = |t: &AddedToken| t.content == token.content;
        if !present.iter().any(known) && !add.iter().any(known) {
            add.push(token.clone());
        }
    }
    // a token a named one's text is special, whatever its entry said
    for t in add.iter_mut() {
        t.special |= named.iter().any(|n| n.content == t.content);
    }
    Ok(add)
}

/// tokenizer_config.json's `added_tokens_decoder`, by index.
fn decoder_tokens(config: &Json) -> Result<Vec<AddedToken>> {
    let Some(decoder) = config.get("added_tokens_decoder") else {
        return Ok(Vec::new());
    };
    let bad = |what: String| Error::file(&config.path, format!("`added_tokens_decoder`: {what}"));
    let Value::Object(entries) = decoder else {
        return Err(bad(format!(
            "is {decoder}: expected an object of index: token"
        )));
    };
    let mut tokens = Vec::with_capacity(entries.len());
    for (index, entry) in entries {
        let i: u64 =
            (index.parse()).map_err(|_| bad(format!("the key {index:?} is no token index")))?;
        let token = added_token(entry, false).map_err(|m| bad(format!("{index}: {m}")))?;
        tokens.push((i, token));
    }
    tokens.sort_by_key(|(i, _)| *i);
    Ok(tokens.into_iter().map(|(_, t)| t).collect())
}

/// The named special tokens, `NAMED` then the folder's other `*_token` keys (tokenizer_config.json's
/// in its order, then special_tokens_map.json's), each from the first of `sources` naming it
/// (null: none).
fn named_tokens(dir: &Path, sources: &[Json]) -> Result<Vec<AddedToken>> {
    let mut keys: Vec<String> = NAMED.iter().map(|k| k.to_string()).collect();
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        for key in ordered_keys(&dir.join(name))? {
            if key.ends_with("_token") && !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    let mut tokens = Vec::new();
    for key in &keys {
        let Some(file) = sources.iter().find(|s| s.v.get(key.as_str()).is_some()) else {
            continue;
        };
        let Some(value) = file.get(key) else {
            continue;
        };
        // transformers takes a `*_token` key of another kind (`add_bos_token`) for a setting
        let a_token = value.is_string() || value.is_object();
        if !(a_token || NAMED.contains(&key.as_str())) {
            continue;
        }
        let from_map = file.path.ends_with("special_tokens_map.json");
        let mut token = added_token(value, from_map)
            .map_err(|m| Error::file(&file.path, format!("`{key}`: {m}")))?;
        token.special = true;
        tokens.push(token);
    }
    Ok(tokens)
}

/// `extra_special_tokens` (transformers 4's `additional_special_tokens` where that is absent),
/// from the first of `sources` naming it.
fn extra_tokens(sources: &[Json]) -> Result<Vec<AddedToken>> {
    for key in ["extra_special_tokens", "additional_special_tokens"] {
        let Some(file) = sources.iter().find(|s| s.get(key).is_some()) else {
            continue;
        };
        // a map of names (a model's own tokens) is not a list of tokens
        let Some(Value::Array(list)) = file.get(key) else {
            return Ok(Vec::new());
        };
        let from_map = file.path.ends_with("special_tokens_map.json");
        let bad = |m: String| Error::file(&file.path, format!("`{key}`: {m}"));
        return (list.iter())
            .map(|v| added_token(v, from_map || v.is_string()).map_err(bad))
            .collect();
    }
    Ok(Vec::new())
}

/// An added token as transformers reads it: a string is special; an object (`content` and
/// the flags) takes `special` from `special_map` (special_tokens_map.json's are special) or
/// from the object (default false), and `normalized` from the object, else `!special`.
fn added_token(v: &Value, special_map: bool) -> std::result::Result<AddedToken, String> {
    let obj = match v {
        Value::String(s) => return Ok(AddedToken::from(s.clone(), true)),
        Value::Object(o) => o,
        other => {
            return Err(format!(
                "is {other}: expected a string or {{\"content\": ...}}"
            ))
        }
    };
    let flag = |key: &str, default: bool| match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(x) => Err(format!("`{key}` is {x}: expected true or false")),
    };
    let Some(Value::String(content)) = obj.get("content") else {
        return Err(format!("is {v}: expected a string or {{\"content\": ...}}"));
    };
    let special = special_map || flag("special", false)?;
    Ok(AddedToken {
        content: content.clone(),
        single_word: flag("single_word", false)?,
        lstrip: flag("lstrip", false)?,
        rstrip: flag("rstrip", false)?,
        normalized: flag("normalized", !special)?,
        special,
    })
}

/// The top-level keys of the JSON object in `path`, in the file's order (serde_json's map
/// sorts them; transformers gives new ids in the file's order). None there: none.
fn ordered_keys(path: &Path) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = crate::fsutil::read_json_text(path)?;
    let keys: KeysInOrder = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("not a JSON object: {e}")))?;
    Ok(keys.0)
}

/// A JSON object's keys in their order, the values skipped.
struct KeysInOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeysInOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = KeysInOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<KeysInOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(KeysInOrder(keys))
            }
        }
        d.deserialize_map(Visit)
    }
}
