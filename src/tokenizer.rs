//! `tokenizer.json` through the `tokenizers` crate, with any padding or truncation baked into
//! the file switched off: the engine pads batches itself and reports truncation explicitly.
//! A BPE model's dropout is switched off too: it splits words at random, so the same text
//! would score differently from run to run.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[path = "tokenizer_added.rs"]
mod added;
#[path = "tokenizer_config.rs"]
mod config;

/// Token ids with where each came from in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpans {
    pub ids: Vec<i32>,
    /// byte span of each token in the text ((0, 0) for added special tokens)
    pub offsets: Vec<(usize, usize)>,
    /// added by the post-processor ([CLS], [SEP], </s>)
    pub special: Vec<bool>,
}

/// transformers' `clean_up_tokenization`: the spaces its WordPiece and Unigram decoders leave
/// before punctuation and English contractions, taken out, in its order.
fn clean_up_tokenization(text: &str) -> String {
    const CLEAN: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    CLEAN
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// tokenizer_config.json's `clean_up_tokenization_spaces`, where transformers applies it
    clean_up_spaces: bool,
    /// the pad token of tokenizer.json's `padding`, which transformers takes where neither
    /// tokenizer_config.json nor special_tokens_map.json has a `pad_token` key
    json_pad: Option<String>,
}

impl Tokenizer {
    /// Reads `<dir>/tokenizer.json`, with the keys of tokenizer_config.json that transformers'
    /// tokenizer classes apply over it (`tokenizer_config.rs`).
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::file(
                &path,
                "missing: the model folder needs a tokenizer.json (for a folder with only \
                 vocab.txt or spiece.model, `AutoTokenizer.from_pretrained(DIR)\
                 .save_pretrained(DIR)` writes one)",
            ));
        }
        let mut text = crate::fsutil::read_json_text(&path)?;
        let (mut split_special, mut clean_up_spaces) = (false, false);
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) {
            check_templates(&v).map_err(|msg| Error::Tokenizer {
                path: path.clone(),
                msg,
            })?;
            let applied = config::apply(dir, &text, &mut v)?;
            split_special = applied.split_special;
            clean_up_spaces = applied.clean_up_spaces;
            let mut edited = applied.edited;
            if let Some(dropout) = v.pointer_mut("/model/dropout").filter(|d| !d.is_null()) {
                *dropout = serde_json::Value::Null;
                edited = true;
            }
            if edited {
                text = v.to_string();
            }
        }
        let mut inner = guarded(&path, String::new, || text.parse::<tokenizers::Tokenizer>())?;
        let mut present: Vec<_> = inner.get_added_tokens_decoder().into_iter().collect();
        present.sort_by_key(|(id, _)| *id);
        let json_pad = inner.get_padding().map(|p| p.pad_token.clone());
        let named = added::tokens_to_add(dir, &present, json_pad.as_deref())?;
        if !named.is_empty() {
            let what = || "adding the tokens tokenizer_config.json names".to_string();
            guarded(&path, what, || inner.add_tokens(named))?;
        }
        inner.set_encode_special_tokens(split_special);
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        Ok(Tokenizer {
            inner,
            path,
            clean_up_spaces,
            json_pad,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`, with the tokenizer's special tokens ([CLS] ... [SEP], or ... </s>)
    /// when `special` is set.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<i32>> {
        let enc = self.call(|| format!("encoding {text:?}"), |t| t.encode(text, special))?;
        Ok(enc.get_ids().iter().map(|&i| i as i32).collect())
    }

    /// Ids of `text` with special tokens, each token's byte span in `text`, and whether the
    /// post-processor added it ([CLS], [SEP], </s>).
    pub fn encode_with_offsets(&self, text: &str) -> Result<TokenSpans> {
        let enc = self.call(|| format!("encoding {text:?}"), |t| t.encode(text, true))?;
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
        let enc = self.call(|| "encoding a pair".into(), |t| t.encode((a, b), true))?;
        Ok((
            enc.get_ids().iter().map(|&i| i as i32).collect(),
            enc.get_type_ids().iter().map(|&i| i as i32).collect(),
        ))
    }

    pub fn token_to_id(&self, token: &str) -> Option<i32> {
        self.inner.token_to_id(token).map(|i| i as i32)
    }

    /// The pad token transformers' `AutoTokenizer` has (`tokenizer.pad_token_id`): the
    /// `pad_token` of special_tokens_map.json where tokenizer_config.json has no
    /// `added_tokens_decoder`, else of tokenizer_config.json (a string, or an object with its
    /// `content`; `config::special_token`); where neither has the key, the pad token of
    /// tokenizer.json's `padding` (`TokenizersBackend.__init__`'s `setdefault`); None when none
    /// names one, or it is null. A token the vocabulary lacks is an error naming the file.
    pub fn pad_id(&self) -> Result<Option<i32>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let named = match config::special_token(dir, "pad_token")? {
            None => (self.json_pad.clone()).map(|t| (Some(t), self.path.clone())),
            named => named,
        };
        let Some((Some(token), path)) = named else {
            return Ok(None);
        };
        let id = self.token_to_id(&token).ok_or_else(|| {
            Error::file(
                &path,
                format!(
                    "`pad_token` {token:?} is not in the vocabulary of {}",
                    self.path.display()
                ),
            )
        })?;
        Ok(Some(id))
    }

    /// The unknown token's id ([UNK] or <unk>), if the vocabulary has one.
    pub fn unk_id(&self) -> Option<i32> {
        ["[UNK]", "<unk>"].iter().find_map(|t| self.token_to_id(t))
    }

    /// The text of `ids`, as transformers' `decode` gives it: with the spaces before
    /// punctuation taken out where tokenizer_config.json's `clean_up_tokenization_spaces`
    /// says so (T5's and BERT's folders; a BPE model's never).
    pub fn decode(&self, ids: &[i32], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i.max(0) as u32).collect();
        let text = self.call(|| "decoding".into(), |t| t.decode(&ids, skip_special))?;
        Ok(match self.clean_up_spaces {
            true => clean_up_tokenization(&text),
            false => text,
        })
    }

    /// Whether `id` is one of the vocabulary's special tokens ([CLS], [MASK], </s>, ...).
    pub fn is_special(&self, id: i32) -> bool {
        u32::try_from(id).is_ok_and(|id| {
            self.inner
                .get_added_tokens_decoder()
                .get(&id)
                .is_some_and(|t| t.special)
        })
    }

    /// Runs `f` on the inner tokenizer, its error or panic an error naming the file and `what`.
    fn call<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&tokenizers::Tokenizer) -> tokenizers::Result<T>,
    ) -> Result<T> {
        guarded(&self.path, what, || f(&self.inner))
    }

    /// The largest id the tokenizer can produce (added tokens included).
    pub fn max_id(&self) -> Option<i32> {
        self.inner
            .get_vocab(true)
            .into_values()
            .max()
            .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
    }

    /// The largest id of the vocabulary proper, added tokens left out: a fine-tune may add
    /// tokens (a pad token) past the model's embedding table without resizing it.
    pub fn max_vocab_id(&self) -> Option<i32> {
        self.inner
            .get_vocab(false)
            .into_values()
            .max()
            .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The `tokenizers` crate reads a TemplateProcessing post-processor without checking that its
/// templates' special tokens are defined, and then panics on the first encode: check it here.
fn check_templates(v: &serde_json::Value) -> std::result::Result<(), String> {
    match v {
        serde_json::Value::Object(o) => {
            // TemplateProcessing is read untagged: any object with templates is one
            if o.contains_key("single") || o.contains_key("pair") {
                let defined = o.get("special_tokens").and_then(|s| s.as_object());
                for key in ["single", "pair"] {
                    let pieces = o.get(key).and_then(|p| p.as_array());
                    for piece in pieces.into_iter().flatten() {
                        let Some(id) = piece.pointer("/SpecialToken/id") else {
                            continue;
                        };
                        let name = id.as_str().unwrap_or_default();
                        if !defined.is_some_and(|d| d.contains_key(name)) {
                            return Err(format!("the post_processor's `{key}` template uses the special token {id} that its `special_tokens` does not define"));
                        }
                    }
                }
            }
            o.values().try_for_each(check_templates)
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_templates),
        _ => Ok(()),
    }
}

thread_local! {
    /// Set while this thread is inside `guarded`: its panic becomes our error, and the
    /// default hook's "thread panicked at ..." above it would only confuse.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
static HOOK: std::sync::Once = std::sync::Once::new();

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// A panic hook that says nothing for a panic inside `guarded` on the panicking thread and
/// hands every other panic to `prev` (installed once, over whatever hook was set before).
fn quiet_hook(prev: PanicHook) -> PanicHook {
    Box::new(move |info| {
        if !QUIET.with(|q| q.get()) {
            prev(info)
        }
    })
}

/// Runs a call into the tokenizers crate. The crate panics on some inputs it accepted at load
/// (templates naming tokens it lacks were one, now refused at load); a panic that still gets
/// through becomes an error naming the file, so the library does not abort on a user's file.
fn guarded<T>(
    path: &Path,
    what: impl Fn() -> String,
    f: impl FnOnce() -> tokenizers::Result<T>,
) -> Result<T> {
    let err = |msg: String| Error::Tokenizer {
        path: path.to_path_buf(),
        msg: match what() {
            w if w.is_empty() => msg,
            w => format!("{w}: {msg}"),
        },
    };
    HOOK.call_once(|| std::panic::set_hook(quiet_hook(std::panic::take_hook())));
    QUIET.with(|q| q.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(err(format!(
                "the tokenizers crate failed on this file ({text})"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static SEEN: Cell<u32> = const { Cell::new(0) };
    }

    /// A panic inside the guard becomes an error naming the file and reaches no hook (the
    /// default hook printed "thread panicked at" above our error); a panic outside it still
    /// reaches the hook below ours.
    #[test]
    fn guarded_panic_is_an_error_and_prints_nothing() {
        std::panic::set_hook(quiet_hook(Box::new(|_| SEEN.with(|s| s.set(s.get() + 1)))));
        let err = guarded(
            Path::new("tok/tokenizer.json"),
            String::new,
            || -> tokenizers::Result<()> { panic!("boom") },
        )
        .unwrap_err()
        .to_string();
        let seen_in_guard = SEEN.with(|s| s.get());
        let outside = std::panic::catch_unwind(|| panic!("not ours"));
        let seen_outside = SEEN.with(|s| s.get());
        // back to the default hook for the other tests
        drop(std::panic::take_hook());
        assert!(
            err.contains("tok/tokenizer.json") && err.contains("boom"),
            "{err}"
        );
        assert_eq!(seen_in_guard, 0);
        assert!(outside.is_err());
        assert_eq!(seen_outside, 1);
    }
}
