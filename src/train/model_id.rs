//! Which model a task, encoded rows and a prompt were made on: a fingerprint of the model
//! folder's config.json and tokenizer file, and the folder, for messages. A task, a row or a
//! prompt used on another model of the same width ran that model's weights on the first one's
//! token ids, labels or trained rows without a word; every use compares the fingerprints.
//!
//! config.json and tokenizer.json count by their content, not their text (`canonical_config`,
//! `canonical_json`): a re-save by a newer transformers or tokenizers (another key order or
//! indent, another `transformers_version`) is the same model. Folders saved before recorded
//! the hash of the raw texts, or of config.json's content and tokenizer.json's raw text,
//! which a model still matches (`ModelId::earlier`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The key of the fingerprint in a saved prompt's task.json (16 hex digits). Folders saved
/// before it was recorded, and PEFT's, have none: their prompts run on any model they fit.
pub const FINGERPRINT_KEY: &str = "model_fingerprint";

/// config.json's keys that record how, when and from where the file was saved, not the
/// model: a re-save by another transformers changes them (`torch_dtype`, the weights'
/// storage type, is `dtype` from 4.56) while token ids, labels and prompt rows keep their
/// meaning.
const BOOKKEEPING: [&str; 7] = [
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "torch_dtype",
    "dtype",
];

/// A model's identity: what makes token ids, labels and prompt rows mean the same thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelId {
    /// FNV-1a over config.json's and the tokenizer file's canonical forms (two folders
    /// holding the same model are one model)
    pub fingerprint: u64,
    /// what earlier saves recorded, which the model still matches: FNV-1a over both raw
    /// texts, and over config.json's canonical form and the tokenizer's raw text. Empty: a
    /// recorded one
    pub earlier: Vec<u64>,
    /// the folder it was loaded from (or, for a saved prompt, the one its task.json records)
    pub dir: PathBuf,
}

/// config.json's content as one string: parsed, the `BOOKKEEPING` keys dropped, every
/// object's keys sorted, no whitespace, numbers as serde_json writes them.
pub fn canonical_config(text: &str) -> std::result::Result<String, serde_json::Error> {
    let mut v: Value = serde_json::from_str(text)?;
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !BOOKKEEPING.contains(&k.as_str()));
    }
    let mut out = String::with_capacity(text.len());
    write_sorted(&mut out, &v);
    Ok(out)
}

/// A JSON file's content as one string (tokenizer.json's): parsed, every object's keys
/// sorted, no whitespace, numbers as serde_json writes them.
pub fn canonical_json(text: &str) -> std::result::Result<String, serde_json::Error> {
    let v: Value = serde_json::from_str(text)?;
    let mut out = String::with_capacity(text.len());
    write_sorted(&mut out, &v);
    Ok(out)
}

/// `v` as compact JSON into `out`, each object's keys in sorted order.
fn write_sorted(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by_key(|(k, _)| *k);
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(out, x);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(out, x);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ModelId {
    /// The identity of the model folder `dir` with its loaded `tokenizer` (the weights are
    /// not read again).
    pub fn of_folder(dir: &Path, tokenizer: &Tokenizer) -> Result<ModelId> {
        let path = dir.join("config.json");
        // the loaders' own read: an ordinary file, capped (a FIFO or /dev/zero is refused)
        let config = crate::fsutil::read_json_text(&path)?;
        let canonical = canonical_config(&config)
            .map_err(|e| Error::file(&path, format!("is not valid JSON: {e}")))?;
        let tok_path = tokenizer.path();
        let tokenizer = crate::fsutil::read_json_text(tok_path)?;
        let tok_canonical = canonical_json(&tokenizer)
            .map_err(|e| Error::file(tok_path, format!("is not valid JSON: {e}")))?;
        let hash = |config: &str, tokenizer: &str| {
            let h = super::checkpoint::fnv1a_bytes(super::checkpoint::FNV_START, config.as_bytes());
            super::checkpoint::fnv1a_bytes(h, tokenizer.as_bytes())
        };
        Ok(ModelId {
            fingerprint: hash(&canonical, &tok_canonical),
            earlier: vec![hash(&config, &tokenizer), hash(&canonical, &tokenizer)],
            dir: dir.to_path_buf(),
        })
    }

    /// Whether `other` is this model: equal fingerprints, or a recorded one (an earlier
    /// save's) equal to one of the model's earlier forms.
    fn matches(&self, other: &ModelId) -> bool {
        self.fingerprint == other.fingerprint
            || self.earlier.contains(&other.fingerprint)
            || other.earlier.contains(&self.fingerprint)
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
        Some(ModelId {
            fingerprint,
            earlier: Vec::new(),
            dir,
        })
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
        if self.matches(model) {
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

/// What a row's fields mean beside its model: the task's kind and template (what its ids
/// hold), its labels in score order (what a label index names) and, for `seq2seq` and
/// `causal`, the label words, free targets and end token (what its target ids are). Rows of
/// one task scored by another of the same model (another label order, template or label
/// set) gave other numbers without a word. The length limits are not part of it: a row
/// within another task's limits is checked against them as a hand-made row is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStamp {
    /// FNV-1a over `fields`
    pub fingerprint: u64,
    /// (name, value) of each setting, for messages
    fields: Vec<(&'static str, String)>,
}

impl TaskStamp {
    /// The stamp of a task of `spec`.
    pub fn of(spec: &super::spec::TaskSpec) -> TaskStamp {
        use super::spec::TaskKind;
        let mut fields = vec![
            ("task", spec.kind.name().to_string()),
            ("template", format!("{:?}", spec.template)),
            ("labels", format!("{:?}", spec.labels)),
        ];
        // pet's verbalizer words are scored from the task, not held by the row
        if matches!(spec.kind, TaskKind::Seq2Seq | TaskKind::Causal) {
            fields.push(("label words", format!("{:?}", spec.label_words)));
            fields.push(("free targets", spec.free_targets.to_string()));
            fields.push(("target end", spec.target_end.name().to_string()));
        }
        let mut h = super::checkpoint::FNV_START;
        for (name, value) in &fields {
            for part in [name.as_bytes(), &[0], value.as_bytes(), &[0]] {
                h = super::checkpoint::fnv1a_bytes(h, part);
            }
        }
        TaskStamp {
            fingerprint: h,
            fields,
        }
    }

    /// The fingerprint as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }

    /// None when `here` is this stamp, else the first setting that differs with both values.
    pub fn differs(&self, here: &TaskStamp) -> Option<String> {
        if self.fingerprint == here.fingerprint {
            return None;
        }
        let mut pairs = self.fields.iter().zip(&here.fields);
        Some(match pairs.find(|((_, a), (_, b))| a != b) {
            Some(((name, a), (_, b))) => format!("its {name} {a}, this task's {b}"),
            // equal settings under another fingerprint: a stamp of another softprompt
            None => format!("its task {}, this task {}", self.hex(), here.hex()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_form_reads_back_and_nothing_else_does() {
        let id = ModelId {
            fingerprint: 0x00ab_cdef_0123_4567,
            earlier: Vec::new(),
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

    const CONFIG: &str = r#"{
  "_name_or_path": "bert-base-uncased",
  "architectures": ["BertForMaskedLM"],
  "hidden_size": 768,
  "layer_norm_eps": 1e-12,
  "model_type": "bert",
  "torch_dtype": "float32",
  "transformers_version": "4.40.0",
  "vocab": {"b": 2, "a": 1}
}"#;

    /// The same content re-saved by a newer transformers (keys in another order, another
    /// indent, another `transformers_version`, `dtype` for `torch_dtype`, another
    /// `_name_or_path`) is one form; a changed hidden size, a changed nested value or an added
    /// key is another.
    #[test]
    fn the_canonical_form_is_the_content_not_the_text() {
        let want = canonical_config(CONFIG).unwrap();
        assert_eq!(
            want,
            r#"{"architectures":["BertForMaskedLM"],"hidden_size":768,"layer_norm_eps":1e-12,"model_type":"bert","vocab":{"a":1,"b":2}}"#
        );
        let resaved = r#"{
    "vocab": {"a": 1, "b": 2}, "model_type": "bert",
    "layer_norm_eps": 1e-12, "hidden_size": 768, "dtype": "float32",
    "architectures": ["BertForMaskedLM"], "transformers_version": "4.57.1",
    "_name_or_path": "/tmp/x"
}
"#;
        assert_eq!(canonical_config(resaved).unwrap(), want);
        for other in [
            CONFIG.replace("768", "384"),
            CONFIG.replace("\"a\": 1", "\"a\": 3"),
            CONFIG.replace("\"bert\",", "\"bert\", \"num_labels\": 3,"),
        ] {
            assert_ne!(canonical_config(&other).unwrap(), want, "{other}");
        }
        assert!(canonical_config("{\"hidden_size\": 768,").is_err());
    }

    /// A fingerprint an earlier save recorded (over the raw texts, or config.json's content
    /// and the tokenizer's raw text) still names the model; a recorded one matches only the
    /// model's own.
    #[test]
    fn a_recorded_earlier_fingerprint_still_matches() {
        let model = ModelId {
            fingerprint: 1,
            earlier: vec![2, 4],
            dir: PathBuf::from("m"),
        };
        let recorded = |f| ModelId::from_hex(&format!("{f:016x}"), PathBuf::from("m")).unwrap();
        for f in [1, 2, 4] {
            assert_eq!(recorded(f).differs(&model, "made on"), None, "{f}");
            assert_eq!(model.differs(&recorded(f), "made on"), None, "{f}");
        }
        assert!(recorded(3).differs(&model, "made on").is_some());
        assert!(recorded(2).differs(&recorded(1), "made on").is_some());
    }
}
