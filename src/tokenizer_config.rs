//! tokenizer_config.json's keys that transformers' tokenizer classes apply over tokenizer.json,
//! so that `AutoTokenizer` and this engine give the same ids for the same folder:
//! - BERT's `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`: `BertTokenizer` (and
//!   its aliases) rebuilds a `BertNormalizer` from them (transformers' defaults `true`, `null`,
//!   `true` where the keys are absent) when they disagree with tokenizer.json's;
//! - `LlamaTokenizer` and `CodeLlamaTokenizer` for a `llama` model (CodeLlama's over any
//!   file, Llama's over one that is not byte-level, Llama 2's): the normalizer, pre-tokenizer
//!   and decoder rebuilt as their `__init__` builds them, from `add_prefix_space` and
//!   `legacy`, and CodeLlama's `<s> $A` post-processor;
//! - `split_special_tokens`: a special token written in a text is tokenized as text;
//! - the tokens the folder names that tokenizer.json lacks are added (`tokenizer_added.rs`);
//! - `clean_up_tokenization_spaces`: decoded text loses the space before `.`, `,`, `?`, `!`
//!   and English contractions (T5's and BERT's folders set it; hostile pass 27, F3).
//!
//! The first two edit tokenizer.json's value before the `tokenizers` crate reads it, the
//! others are settings. `add_bos_token` / `add_eos_token` are not among them: transformers 5
//! drops both from tokenizer_config.json wherever a tokenizer.json is there
//! (`_from_pretrained`), and keeps its post-processor, for every class but a few that set
//! their own (`CodeLlamaTokenizer`'s `<s> $A`, done here; `BertTokenizer`'s, `T5Tokenizer`'s:
//! not done, where a file's post-processor other than the class's would differ); applying them
//! added or dropped a BOS or an EOS on every row, and BERT's [CLS] and [SEP] (hostile pass
//! 26, F1).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The classes transformers 5 builds as `BertTokenizer`, with its `do_lower_case` (aliases
/// and subclasses that keep its `__init__`; its other subclasses, `ConvBertTokenizer` and
/// the DPR classes, read tokenizer.json's normalizer as it is), and their `Fast` names.
const BERT_CLASSES: [&str; 7] = [
    "BertTokenizer",
    "DistilBertTokenizer",
    "MobileBertTokenizer",
    "SqueezeBertTokenizer",
    "ElectraTokenizer",
    "LayoutLMTokenizer",
    "LxmertTokenizer",
];

/// Whether `class` (a `...Fast` name too) is built as `BertTokenizer`.
fn is_bert_class(class: &str) -> bool {
    BERT_CLASSES.contains(&class.trim_end_matches("Fast"))
}

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

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
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

    /// `key` as a special token (`token`), told apart from null: None when absent, Some(None)
    /// when null.
    fn named(&self, key: &str) -> Result<Option<Option<&str>>> {
        match self.v.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(_) => self.token(key).map(Some),
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

/// The special token `key` names, as transformers 5 reads the folder (`_from_pretrained`):
/// special_tokens_map.json's where tokenizer_config.json has no `added_tokens_decoder` and
/// the map has the key (its legacy merge, which wins), else tokenizer_config.json's; with the
/// file that named it, and None for a token named null there (no such token: a class's
/// default is not taken). tokenizer_config.json's was taken first, and the map read beside
/// `added_tokens_decoder` (review 21, R21-4).
pub(super) fn special_token(dir: &Path, key: &str) -> Result<Option<(Option<String>, PathBuf)>> {
    for file in special_sources(dir)? {
        let named = file.named(key)?.map(|t| t.map(String::from));
        if let Some(token) = named {
            return Ok(Some((token, file.path)));
        }
    }
    Ok(None)
}

/// The files special tokens are read from, in the order they win (`special_token`):
/// special_tokens_map.json where tokenizer_config.json has no `added_tokens_decoder`, then
/// tokenizer_config.json; those there.
pub(super) fn special_sources(dir: &Path) -> Result<Vec<Json>> {
    let config = Json::read(dir, "tokenizer_config.json")?;
    let legacy = (config.as_ref()).is_none_or(|c| c.v.get("added_tokens_decoder").is_none());
    let map = match legacy {
        true => Json::read(dir, "special_tokens_map.json")?,
        false => None,
    };
    Ok([map, config].into_iter().flatten().collect())
}

/// What `apply` did and leaves to the caller.
pub(super) struct Applied {
    /// `tok` was edited, and is to be read from its new text
    pub(super) edited: bool,
    /// special tokens written in a text are tokenized as text (`split_special_tokens`)
    pub(super) split_special: bool,
    /// decoded text has the spaces before punctuation and contractions taken out
    /// (`clean_up_tokenization_spaces`, as transformers 5 applies it: not to a BPE model
    /// unless `clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`)
    pub(super) clean_up_spaces: bool,
}

/// Applies tokenizer_config.json's keys to tokenizer.json's value `tok`.
/// `text` is tokenizer.json's text, as read (transformers looks for words in it).
pub(super) fn apply(dir: &Path, text: &str, tok: &mut Value) -> Result<Applied> {
    let config = Json::read(dir, "tokenizer_config.json")?;
    let class = match config.as_ref().and_then(|c| c.get("tokenizer_class")) {
        Some(Value::String(c)) => Some(c.clone()),
        _ => model_type_class(dir),
    };
    let class = class.as_deref().unwrap_or_default();
    let keys = |key: &str| -> Result<Option<bool>> {
        config.as_ref().map_or(Ok(None), |c| c.bool_opt(key))
    };
    let mut edited = is_bert_class(class) && bert_normalizer(config.as_ref(), tok)?;
    let llama = match class.trim_end_matches("Fast") {
        "LlamaTokenizer" => Some(false),
        "CodeLlamaTokenizer" => Some(true),
        _ => None,
    };
    if let Some(code) = llama.filter(|&code| llama_class_applies(dir, config.as_ref(), text, code))
    {
        llama_pipeline(dir, config.as_ref(), tok, code)?;
        edited = true;
    }
    let bpe = tok.pointer("/model/type").and_then(Value::as_str) == Some("BPE");
    let forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output";
    let clean_up = keys("clean_up_tokenization_spaces")?.unwrap_or(false);
    Ok(Applied {
        edited,
        split_special: keys("split_special_tokens")?.unwrap_or(false),
        clean_up_spaces: clean_up && (!bpe || keys(forced)?.unwrap_or(false)),
    })
}

/// Whether `AutoTokenizer` builds `LlamaTokenizer` (`code`: `CodeLlamaTokenizer`) itself for
/// a folder whose tokenizer_config.json (or config.json) names it: for a `llama` model
/// (other types map it to their own class, or read tokenizer.json as it is), over a
/// tokenizer.json that is not byte-level (Llama 3's, which it reads as it is; transformers
/// looks for `"ByteLevel"` anywhere in the file, and redirects `LlamaTokenizer` only). A
/// folder with code of its own for the class (`auto_map`'s `AutoTokenizer`) is read as it is:
/// transformers runs that code under `trust_remote_code=True`, which this engine cannot, and
/// builds its own class without it (review 21, R21-6: a stand-in, not transformers' default).
fn llama_class_applies(dir: &Path, config: Option<&Json>, text: &str, code: bool) -> bool {
    let Ok(Some(model)) = Json::read(dir, "config.json") else {
        return false;
    };
    let remote = config
        .and_then(|c| c.get("auto_map"))
        .is_some_and(|m| match m {
            Value::Array(_) => true,
            m => m.get("AutoTokenizer").is_some_and(|a| !a.is_null()),
        });
    model.get("model_type").and_then(Value::as_str) == Some("llama")
        && !remote
        && (code || !text.contains("\"ByteLevel\""))
}

/// `LlamaTokenizer.__init__` (transformers 5): tokenizer.json's vocabulary, merges, added
/// tokens and post-processor are kept, and the rest rebuilt: no normalizer, a `Metaspace`
/// pre-tokenizer that prepends "▁" as `add_prefix_space` (default true) and `legacy`
/// (default false: the text's first piece only) say, and the SentencePiece decoder. A
/// Llama 2 file's own `Prepend` + `Replace` normalizer put an extra "▁" before a text's
/// leading space and after each special token written in it: a causal target " positive" was
/// two tokens where transformers has one (hostile pass 27, F1).
/// `CodeLlamaTokenizer` (`code`) builds the same without `legacy` (its ▁ goes before the
/// first piece only), strips the decoded text's first space always, and sets its own
/// post-processor, `<s> $A` (its `add_bos_token` passed explicitly), whatever the file's.
fn llama_pipeline(dir: &Path, config: Option<&Json>, tok: &mut Value, code: bool) -> Result<()> {
    let key = |k: &str| config.map_or(Ok(None), |c| c.bool_opt(k));
    let add_prefix_space = key("add_prefix_space")?.unwrap_or(true);
    let legacy = !code && key("legacy")?.unwrap_or(false);
    let scheme = match (add_prefix_space, legacy) {
        (false, _) => "never",
        (true, true) => "always",
        (true, false) => "first",
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_prefix_space || code {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    if code {
        // the class's default where the folder names none; named null: none
        let bos = match special_token(dir, "bos_token")? {
            Some((named, _)) => named,
            None => Some("<s>".to_string()),
        };
        bos_post_processor(bos.as_deref(), tok);
    }
    if let Value::Object(o) = tok {
        o.insert("normalizer".into(), Value::Null);
        o.insert(
            "pre_tokenizer".into(),
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": scheme,
                   "split": false}),
        );
        o.insert(
            "decoder".into(),
            json!({"type": "Sequence", "decoders": decoders}),
        );
    }
    if let Some(Value::Object(m)) = tok.get_mut("model") {
        m.insert("fuse_unk".into(), json!(true));
        m.insert("byte_fallback".into(), json!(true));
    }
    Ok(())
}

/// `update_post_processor` with `add_bos_token` alone: `<s> $A` (a pair `<s> $A <s> $B`), with
/// the folder's `bos_token`; `$A` (`$A $B`) where it is named null, as transformers turns
/// `add_bos_token` off then. A token the vocabulary lacks leaves the file's post-processor
/// (transformers would add it at a new id).
fn bos_post_processor(bos: Option<&str>, tok: &mut Value) {
    let seq = |s: &str, type_id: u8| json!({"Sequence": {"id": s, "type_id": type_id}});
    let (single, pair, special) = match bos {
        None => (
            json!([seq("A", 0)]),
            json!([seq("A", 0), seq("B", 1)]),
            json!({}),
        ),
        Some(bos) => {
            let Some(id) = token_id(tok, bos) else {
                return;
            };
            let piece = |type_id: u8| json!({"SpecialToken": {"id": bos, "type_id": type_id}});
            (
                json!([piece(0), seq("A", 0)]),
                json!([piece(0), seq("A", 0), piece(1), seq("B", 1)]),
                json!({ bos: {"id": bos, "ids": [id], "tokens": [bos]} }),
            )
        }
    };
    if let Value::Object(o) = tok {
        o.insert(
            "post_processor".into(),
            json!({"type": "TemplateProcessing", "single": single, "pair": pair,
                   "special_tokens": special}),
        );
    }
}

/// `token`'s id in tokenizer.json's value: an added token's, else the model's vocabulary's.
fn token_id(tok: &Value, token: &str) -> Option<u64> {
    let added = tok.get("added_tokens").and_then(Value::as_array);
    let found = added.into_iter().flatten().find_map(|a| {
        (a.get("content").and_then(Value::as_str) == Some(token))
            .then(|| a.get("id").and_then(Value::as_u64))
            .flatten()
    });
    found.or_else(|| tok.pointer("/model/vocab")?.get(token)?.as_u64())
}

/// The class `AutoTokenizer` takes when tokenizer_config.json names none: config.json's
/// `tokenizer_class`, else its `model_type`'s (only BERT's matters here); None when
/// config.json is absent or unreadable (its own reader reports that). A class named in either
/// file that transformers builds as none of the classes rebuilt here (`PreTrainedTokenizerFast`,
/// a name it does not know: `TokenizersBackend` then) reads tokenizer.json as it is; the
/// aliases of `BertTokenizer` it builds as that (`ElectraTokenizerFast`) are BERT's
/// (`BERT_CLASSES`: a BERT folder naming one lost its `do_lower_case`; reviews 21 and 22).
fn model_type_class(dir: &Path) -> Option<String> {
    let config = Json::read(dir, "config.json").ok()??;
    if let Some(Value::String(c)) = config.get("tokenizer_class") {
        return Some(c.clone());
    }
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
