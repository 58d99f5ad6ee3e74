//! The tokens transformers 5 adds over tokenizer.json as it loads a folder
//! (`TokenizersBackend.__init__`): tokenizer_config.json's `added_tokens_decoder` entries that
//! tokenizer.json does not hold as they are, then each named special token (`bos_token` ...
//! `mask_token`, then the model's own: other `*_token` keys and a map of
//! `extra_special_tokens`; the pad token of tokenizer.json's `padding` where no file has the
//! key) and each of the `extra_special_tokens` list
//! (`additional_special_tokens`) whose text is not an added token yet. `add_tokens` gives each
//! its id in the vocabulary, or the next new id (the decoder's index is not used: transformers
//! does not use it either). A text naming such a token was tokenized as ordinary text, and a
//! `pad_token` missing from tokenizer.json was refused (hostile pass 27, F2).
//!
//! The keys are read as `_from_pretrained` and `__init__` (tokenization_utils_base.py) pass
//! them on: tokenizer_config.json's in the file's order; its `additional_special_tokens`
//! renamed `extra_special_tokens` where that is not set; its string `*_token` keys (and a map
//! of extra tokens) set aside as the model's own; then, where it has no
//! `added_tokens_decoder`, special_tokens_map.json's keys over it (an extra-token list merged
//! after the config's); the model's own tokens are the remaining `*_token` keys, in order,
//! then those set aside, whose values win (review 25). A class's own defaults
//! (GPT2Tokenizer's `<|endoftext|>`, CodeLlama's `▁<PRE>`) and the classes that rebuild their
//! tokens (Qwen2Tokenizer drops a named token's flags) are not emulated.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

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
const EXTRA: &str = "extra_special_tokens";
const ADDITIONAL: &str = "additional_special_tokens";

/// An added token before transformers settles it: `normalized` unset resolves to
/// `!special` once the token's `special` is final (a named token is made special).
#[derive(Clone, Debug)]
struct Token {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: Option<bool>,
    special: bool,
}

impl Token {
    fn settled(&self) -> AddedToken {
        AddedToken {
            content: self.content.clone(),
            single_word: self.single_word,
            lstrip: self.lstrip,
            rstrip: self.rstrip,
            normalized: self.normalized.unwrap_or(!self.special),
            special: self.special,
        }
    }
}

/// A JSON object's entries in the file's order (serde_json's map sorts them).
type Ordered = Vec<(String, Value)>;

fn get<'a>(kw: &'a Ordered, key: &str) -> Option<&'a Value> {
    kw.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn take(kw: &mut Ordered, key: &str) -> Option<Value> {
    let i = kw.iter().position(|(k, _)| k == key)?;
    Some(kw.remove(i).1)
}

/// `key` set to `v`, in its place where it is there, else last (a dict's update).
fn set(kw: &mut Ordered, key: &str, v: Value) {
    match kw.iter_mut().find(|(k, _)| k == key) {
        Some((_, old)) => *old = v,
        None => kw.push((key.to_string(), v)),
    }
}

/// The tokens to add over tokenizer.json's, whose added tokens are `present` (by id) and whose
/// `padding` names `json_pad`, in the order transformers adds them.
pub(super) fn tokens_to_add(
    dir: &Path,
    present: &[(u32, AddedToken)],
    json_pad: Option<&str>,
) -> Result<Vec<AddedToken>> {
    let config_path = dir.join("tokenizer_config.json");
    let mut kw = read_ordered(&config_path)?.unwrap_or_default();
    // `_from_pretrained`: transformers 4's list under its new name, and the model's own
    // tokens set aside (strings only: an object is not an AddedToken yet)
    if get(&kw, ADDITIONAL).is_some() && !truthy(get(&kw, EXTRA)) {
        rename_additional(&mut kw);
    }
    let (mut own, rest): (Ordered, Ordered) =
        (std::mem::take(&mut kw).into_iter()).partition(|(k, v)| is_own_key(k) && v.is_string());
    kw = rest;
    extra_map_to_own(&mut kw, &mut own);
    let decoder_tokens = match take(&mut kw, "added_tokens_decoder") {
        Some(d) => decoder_entries(&d, &config_path)?,
        // the legacy merge, where tokenizer_config.json has no added_tokens_decoder; then
        // the decoder is added_tokens.json's tokens and tokenizer.json's own
        None => {
            merge_map(dir, &mut kw)?;
            extra_map_to_own(&mut kw, &mut own);
            legacy_decoder(dir, &kw, present)?
        }
    };
    // `TokenizersBackend.__init__`: tokenizer.json's pad token where no file has the key (a
    // null one stays)
    if let Some(pad) = json_pad.filter(|_| get(&kw, "pad_token").is_none()) {
        set(&mut kw, "pad_token", pad.into());
    }
    // `__init__`: the list under its old name where the new one is not there
    if get(&kw, EXTRA).is_none() {
        rename_additional(&mut kw);
    }
    // the seven in their places, then the model's own: the `*_token` keys left that hold a
    // token, then those set aside, whose values win (one of the seven among them replaces
    // its value in its place)
    let mut slots: Ordered = (NAMED.iter())
        .map(|k| (k.to_string(), get(&kw, k).cloned().unwrap_or(Value::Null)))
        .collect();
    for (key, v) in kw
        .iter()
        .filter(|(k, v)| is_own_key(k) && (v.is_string() || is_typed(v)))
    {
        set(&mut slots, key, v.clone());
    }
    for (key, v) in own {
        set(&mut slots, &key, v);
    }
    let mut named = Vec::new();
    for (key, v) in slots.iter().filter(|(_, v)| !v.is_null()) {
        named.push(token_of(v).map_err(|m| bad(&config_path, key, m))?);
    }
    let extra = match get(&kw, EXTRA) {
        Some(Value::Array(list)) => (list.iter())
            .map(|v| token_of(v).map_err(|m| bad(&config_path, EXTRA, m)))
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let present: Vec<&AddedToken> = present.iter().map(|(_, t)| t).collect();
    Ok(to_add(&present, decoder_tokens, &named, &extra))
}

/// `additional_special_tokens` renamed `extra_special_tokens` (with a map's order).
fn rename_additional(kw: &mut Ordered) {
    if let Some(list) = take(kw, ADDITIONAL) {
        set(kw, EXTRA, list);
        if let Some(order) = take(kw, ADDITIONAL_ORDER) {
            set(kw, EXTRA_ORDER, order);
        }
    }
}

/// The decoder `_from_pretrained` passes on without tokenizer_config.json's: added_tokens.json's
/// tokens (special where a named or extra token has its text), then tokenizer.json's added
/// tokens over them, by index.
fn legacy_decoder(dir: &Path, kw: &Ordered, present: &[(u32, AddedToken)]) -> Result<Vec<Token>> {
    let mut by_index: std::collections::BTreeMap<u64, Token> = Default::default();
    let path = dir.join("added_tokens.json");
    if let Some(entries) = read_ordered(&path)? {
        let mut special: Vec<String> = (NAMED.iter())
            .filter_map(|k| get(kw, k).and_then(|v| token_of(v).ok()))
            .map(|t| t.content)
            .collect();
        if let Some(Value::Array(list)) = get(kw, EXTRA).or_else(|| get(kw, ADDITIONAL)) {
            special.extend(
                list.iter()
                    .filter_map(|v| token_of(v).ok())
                    .map(|t| t.content),
            );
        }
        for (content, index) in
            (entries.into_iter()).filter(|(k, _)| k != EXTRA_ORDER && k != ADDITIONAL_ORDER)
        {
            let Some(i) = index.as_u64() else {
                let msg = format!("`{content}` is {index}: expected a token id");
                return Err(Error::file(&path, msg));
            };
            let special = special.contains(&content);
            let token = Token {
                content,
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: Some(!special),
                special,
            };
            by_index.insert(i, token);
        }
    }
    for (id, t) in present {
        let token = Token {
            content: t.content.clone(),
            single_word: t.single_word,
            lstrip: t.lstrip,
            rstrip: t.rstrip,
            normalized: Some(t.normalized),
            special: t.special,
        };
        by_index.insert(u64::from(*id), token);
    }
    Ok(by_index.into_values().collect())
}

fn bad(path: &Path, key: &str, msg: String) -> Error {
    Error::file(path, format!("`{key}`: {msg}"))
}

/// `TokenizersBackend.__init__`'s list: every decoder token (its filter of those tokenizer.json
/// holds compares indices with tokens, so nothing is filtered; identical ones change nothing
/// when added), then the named and the extra tokens whose text is no added token yet and that
/// are not in the list as they are; a token whose text a named token has is special (a named
/// token tokenizer.json holds as a plain added token becomes special; review 26).
fn to_add(
    present: &[&AddedToken],
    decoder: Vec<Token>,
    named: &[Token],
    extra: &[Token],
) -> Vec<AddedToken> {
    let mut add = decoder;
    let encoder: std::collections::HashSet<String> = (present.iter().map(|t| t.content.clone()))
        .chain(add.iter().map(|t| t.content.clone()))
        .collect();
    let mut listed: std::collections::HashSet<AddedToken> = Default::default();
    for token in named.iter().chain(extra) {
        // `AddedToken` hashes by its text and compares every field
        if !encoder.contains(&token.content) && listed.insert(token.settled()) {
            add.push(token.clone());
        }
    }
    for t in add.iter_mut() {
        t.special |= named.iter().any(|n| n.content == t.content);
    }
    // those tokenizer.json holds as they are change nothing (`add_tokens` passes them by)
    let held: std::collections::HashMap<&str, &AddedToken> =
        (present.iter()).map(|t| (t.content.as_str(), *t)).collect();
    (add.iter().map(Token::settled))
        .filter(|t| held.get(t.content.as_str()) != Some(&t))
        .collect()
}

/// Whether `key` names one of the model's own tokens (`image_token`; not the seven).
fn is_own_key(key: &str) -> bool {
    key.ends_with("_token") && !NAMED.contains(&key)
}

/// Whether `v` is an object transformers turns into an AddedToken (`"__type"`).
fn is_typed(v: &Value) -> bool {
    v.get("__type").and_then(Value::as_str) == Some("AddedToken")
}

/// Whether a value is set as Python's `if x:` reads it (absent, null, false, 0, empty: not).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Bool(true)) => true,
    }
}

/// A map of `extra_special_tokens` (names to tokens) joins the model's own tokens, in the
/// file's order (`EXTRA_ORDER`).
fn extra_map_to_own(kw: &mut Ordered, own: &mut Ordered) {
    let order = take(kw, EXTRA_ORDER);
    if !matches!(get(kw, EXTRA), Some(Value::Object(_))) {
        return;
    }
    let (Some(Value::Object(mut map)), Some(Value::Array(order))) = (take(kw, EXTRA), order) else {
        return;
    };
    for key in order.iter().filter_map(Value::as_str) {
        if let Some(v) = map.remove(key) {
            set(own, key, v);
        }
    }
}

/// The entry beside a map of `extra_special_tokens` that holds its keys in the file's order
/// (serde_json's map sorts them; transformers gives new ids in the file's order).
const EXTRA_ORDER: &str = "\u{0}extra_special_tokens order";
/// The same for a map under `additional_special_tokens`, renamed with it.
const ADDITIONAL_ORDER: &str = "\u{0}additional_special_tokens order";

/// `v`, an object of special_tokens_map.json, as transformers makes it an AddedToken: special.
fn special_object(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.insert("__type".into(), "AddedToken".into());
        o.insert("special".into(), true.into());
    }
    v
}

/// special_tokens_map.json's keys over `kw`: an object is a special token, and an
/// extra-token list is merged after the one there.
fn merge_map(dir: &Path, kw: &mut Ordered) -> Result<()> {
    let Some(map) = read_ordered(&dir.join("special_tokens_map.json"))? else {
        return Ok(());
    };
    for (key, v) in map {
        let merged = match (key.as_str(), v) {
            (EXTRA, Value::Array(list)) => {
                let mut have = match get(kw, EXTRA) {
                    Some(Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                // Python's `tok not in existing`: a string and an object of the same text
                // are both kept, and the later one's flags win when added
                for v in list.into_iter().map(special_object) {
                    if !have.contains(&v) {
                        have.push(v);
                    }
                }
                Value::Array(have)
            }
            (EXTRA, v) => v,
            (_, v @ Value::Object(_)) => special_object(v),
            (_, v) => v,
        };
        set(kw, &key, merged);
    }
    Ok(())
}

/// tokenizer_config.json's `added_tokens_decoder`, by index.
fn decoder_entries(decoder: &Value, path: &Path) -> Result<Vec<Token>> {
    let bad = |what: String| Error::file(path, format!("`added_tokens_decoder`: {what}"));
    let entries = match decoder {
        Value::Object(entries) => entries,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(bad(format!(
                "is {other}: expected an object of index: token"
            )))
        }
    };
    let mut tokens = Vec::with_capacity(entries.len());
    for (index, entry) in entries {
        let i: u64 =
            (index.parse()).map_err(|_| bad(format!("the key {index:?} is no token index")))?;
        let token = token_of(entry).map_err(|m| bad(format!("{index}: {m}")))?;
        tokens.push((i, token));
    }
    tokens.sort_by_key(|(i, _)| *i);
    Ok(tokens.into_iter().map(|(_, t)| t).collect())
}

/// A token as transformers reads it: a string is special (`normalized` unset); an object
/// (`content` and the flags) is special where its `special` says so.
fn token_of(v: &Value) -> std::result::Result<Token, String> {
    let obj = match v {
        Value::String(s) => {
            return Ok(Token {
                content: s.clone(),
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: None,
                special: true,
            })
        }
        Value::Object(o) => o,
        other => {
            return Err(format!(
                "is {other}: expected a string or {{\"content\": ...}}"
            ))
        }
    };
    let flag = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(x) => Err(format!("`{key}` is {x}: expected true or false")),
    };
    let Some(Value::String(content)) = obj.get("content") else {
        return Err(format!("is {v}: expected a string or {{\"content\": ...}}"));
    };
    Ok(Token {
        content: content.clone(),
        single_word: flag("single_word")?.unwrap_or(false),
        lstrip: flag("lstrip")?.unwrap_or(false),
        rstrip: flag("rstrip")?.unwrap_or(false),
        normalized: flag("normalized")?,
        special: flag("special")?.unwrap_or(false),
    })
}

/// The JSON object in `path` as its entries in order, read once; None where there is no such
/// file. A map of extra tokens is followed by its keys in the file's order, under a key of its
/// own (`EXTRA_ORDER`, `ADDITIONAL_ORDER`; a key of the file's spelt so is left out: no
/// tokenizer reads it).
fn read_ordered(path: &Path) -> Result<Option<Ordered>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::fsutil::read_json_text(path)?;
    let InOrder(entries) = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("not a JSON object: {e}")))?;
    validate(path, &entries)?;
    Ok(Some(entries))
}

/// Every token a file's `entries` name read as one, so that a bad value is refused naming
/// this file and its key as written (a map's value was named as tokenizer_config.json's, with
/// the fields made for it; review 26).
fn validate(path: &Path, entries: &Ordered) -> Result<()> {
    for (key, v) in entries {
        let values: Vec<&Value> = match (key.as_str(), v) {
            (_, Value::Null) => Vec::new(),
            (EXTRA | ADDITIONAL, Value::Array(list)) => list.iter().collect(),
            (EXTRA | ADDITIONAL, Value::Object(map)) => map.values().collect(),
            (k, v) if NAMED.contains(&k) => vec![v],
            (k, v) if is_own_key(k) && (v.is_string() || v.is_object()) => vec![v],
            _ => Vec::new(),
        };
        for v in values {
            token_of(v).map_err(|m| bad(path, key, m))?;
        }
    }
    Ok(())
}

/// A JSON object's entries in the file's order, then the keys of its extra-token maps.
struct InOrder(Ordered);

impl<'de> serde::Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::IgnoredAny;
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = InOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<InOrder, A::Error> {
                // a key written twice: its last value in its first place, as Python reads it
                let (mut entries, mut orders) = (Vec::new(), Vec::new());
                while let Some(key) = map.next_key::<String>()? {
                    let order_key = match key.as_str() {
                        EXTRA => EXTRA_ORDER,
                        ADDITIONAL => ADDITIONAL_ORDER,
                        EXTRA_ORDER | ADDITIONAL_ORDER => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                        _ => {
                            set(&mut entries, &key, map.next_value::<Value>()?);
                            continue;
                        }
                    };
                    let Keyed(v, keys) = map.next_value()?;
                    take(&mut orders, order_key);
                    if let Some(keys) = keys {
                        orders.push((order_key.to_string(), Value::from(keys)));
                    }
                    set(&mut entries, &key, v);
                }
                entries.extend(orders);
                Ok(InOrder(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A JSON value, with an object's keys in their order (None: another value).
struct Keyed(Value, Option<Vec<String>>);

impl<'de> serde::Deserialize<'de> for Keyed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{MapAccess, SeqAccess, Visitor};
        type R<E> = std::result::Result<Keyed, E>;
        fn plain<E>(v: Value) -> R<E> {
            Ok(Keyed(v, None))
        }
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Keyed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> R<A::Error> {
                let (mut object, mut keys) = (serde_json::Map::new(), Vec::new());
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    // a key written twice keeps its first place (looked up in the map: a
                    // search of the list was quadratic in a hand-made map's size)
                    if !object.contains_key(&k) {
                        keys.push(k.clone());
                    }
                    object.insert(k, v);
                }
                Ok(Keyed(Value::Object(object), Some(keys)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> R<A::Error> {
                let mut list = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    list.push(v);
                }
                plain(Value::Array(list))
            }
            fn visit_str<E>(self, s: &str) -> R<E> {
                plain(Value::from(s))
            }
            fn visit_bool<E>(self, b: bool) -> R<E> {
                plain(Value::from(b))
            }
            fn visit_i64<E>(self, n: i64) -> R<E> {
                plain(Value::from(n))
            }
            fn visit_u64<E>(self, n: u64) -> R<E> {
                plain(Value::from(n))
            }
            fn visit_f64<E>(self, n: f64) -> R<E> {
                plain(Value::from(n))
            }
            fn visit_unit<E>(self) -> R<E> {
                plain(Value::Null)
            }
        }
        d.deserialize_any(Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain added token as tokenizer.json writes it (every flag given).
    fn plain(content: &str) -> Token {
        let v = serde_json::json!({"content": content, "normalized": true, "special": false});
        token_of(&v).unwrap()
    }

    /// A map of extra tokens gives new ids in the file's order (serde_json's map sorts its
    /// keys), read in one pass; a key of the file's spelt as the entry that carries the order
    /// changes nothing (transformers reads no such key; read-back A6).
    #[test]
    fn a_map_of_extra_tokens_keeps_the_files_order() {
        let dir = std::env::temp_dir().join(format!("sp_extra_order_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = r#"{"extra_special_tokens": {"z_token": "<z>", "a_token": "<a>"},
            "\u0000extra_special_tokens order": ["a_token", "z_token"]}"#;
        std::fs::write(dir.join("tokenizer_config.json"), config).unwrap();
        let added = tokens_to_add(&dir, &[], None);
        std::fs::remove_dir_all(&dir).unwrap();
        let texts: Vec<String> = added.unwrap().into_iter().map(|t| t.content).collect();
        assert_eq!(texts, ["<z>", "<a>"]);
    }

    /// A named token tokenizer.json holds as a plain added token becomes special (its text is
    /// left out of decoded text), as transformers re-adds every decoder token and marks the
    /// named ones (review 26, A0); a plain one no key names stays as it is, and nothing
    /// tokenizer.json holds as it is comes back.
    #[test]
    fn a_named_plain_added_token_becomes_special() {
        let (image, other) = (plain("<i1>").settled(), plain("<o1>").settled());
        let present = [&image, &other];
        let decoder = vec![plain("<i1>"), plain("<o1>")];
        let named = [token_of(&"<i1>".into()).unwrap()];
        let add = to_add(&present, decoder, &named, &[]);
        assert_eq!(add.len(), 1, "{add:?}");
        // its other flags as tokenizer.json gives them
        assert!(add[0].content == "<i1>" && add[0].special && add[0].normalized);
    }
}
