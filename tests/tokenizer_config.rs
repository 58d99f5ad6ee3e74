//! tokenizer_config.json's keys that transformers' tokenizer classes apply over tokenizer.json
//! (`src/tokenizer_config.rs`): each edited copy of a fixture tokenizes as `AutoTokenizer`
//! would, and a key of the wrong type, or a token the rebuild needs and the vocabulary lacks,
//! is refused naming tokenizer_config.json and the key.

mod common;

use common::ScratchDir;
use softprompt::internals::tokenizer::Tokenizer;
use std::path::Path;

/// Sets `edits` in the copy's tokenizer_config.json (null removes a key).
fn edit_config(dir: &Path, edits: serde_json::Value) {
    let path = dir.join("tokenizer_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, x) in edits.as_object().unwrap() {
        match x.is_null() {
            true => v.as_object_mut().unwrap().remove(k),
            false => v.as_object_mut().unwrap().insert(k.clone(), x.clone()),
        };
    }
    std::fs::write(&path, v.to_string()).unwrap();
}

fn ids(dir: &Path, text: &str, special: bool) -> Vec<i32> {
    Tokenizer::load(dir).unwrap().encode(text, special).unwrap()
}

fn refused(dir: &Path, want: &[&str]) {
    let err = Tokenizer::load(dir).err().expect("refused").to_string();
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// BertTokenizerFast rebuilds tokenizer.json's BertNormalizer (lowercase: true) from
/// `do_lower_case`, `strip_accents` and `tokenize_chinese_chars`: with `do_lower_case: false`
/// "The Music Was Lovely" keeps its capitals, which this lowercase vocabulary lacks ([UNK]);
/// with `strip_accents: false` "é" stays "é"; with `tokenize_chinese_chars: false` two CJK
/// characters are one word, not two. A folder that names no tokenizer_class is BERT's by
/// config.json's model_type, as AutoTokenizer picks it.
#[test]
fn bert_keys_rebuild_the_normalizer() {
    let scratch = ScratchDir::new("tokcfg-bert");
    let canon = scratch.copy_model("bert_mlm", "canon");
    let tok = Tokenizer::load(&canon).unwrap();
    let (cls, sep, unk) = (
        tok.token_to_id("[CLS]").unwrap(),
        tok.token_to_id("[SEP]").unwrap(),
        tok.unk_id().unwrap(),
    );
    let text = "The Music Was Lovely";
    assert_eq!(
        ids(&canon, text, true),
        ids(&canon, "the music was lovely", true)
    );
    assert!(!ids(&canon, text, true).contains(&unk));

    let cased = scratch.copy_model("bert_mlm", "cased");
    edit_config(&cased, serde_json::json!({"do_lower_case": false}));
    let cased_ids = vec![cls, unk, unk, unk, unk, sep];
    assert_eq!(ids(&cased, text, true), cased_ids);
    edit_config(&cased, serde_json::json!({"tokenizer_class": null}));
    assert_eq!(ids(&cased, text, true), vec![cls, unk, unk, unk, unk, sep]);
    // a class transformers builds as BertTokenizer named there or in config.json: BERT's still
    // (review 21, R21-1); a generic class, or one transformers does not know, reads
    // tokenizer.json as it is (review 22)
    let lower = ids(&canon, text, true);
    for (file, class, want) in [
        (
            "tokenizer_config.json",
            "DistilBertTokenizerFast",
            &cased_ids,
        ),
        ("config.json", "DistilBertTokenizer", &cased_ids),
        ("config.json", "ElectraTokenizerFast", &cased_ids),
        ("tokenizer_config.json", "LayoutLMTokenizer", &cased_ids),
        ("tokenizer_config.json", "ConvBertTokenizer", &lower),
        ("tokenizer_config.json", "DPRReaderTokenizer", &lower),
        ("config.json", "PreTrainedTokenizerFast", &lower),
        ("tokenizer_config.json", "TokenizersBackend", &lower),
        ("config.json", "NoSuchTokenizer", &lower),
    ] {
        let named = scratch.copy_model("bert_mlm", &format!("named-{class}-{file}"));
        edit_config(
            &named,
            serde_json::json!({"do_lower_case": false, "tokenizer_class": null}),
        );
        let path = named.join(file);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["tokenizer_class"] = class.into();
        std::fs::write(&path, v.to_string()).unwrap();
        assert_eq!(&ids(&named, text, true), want, "{class} in {file}");
    }

    assert_eq!(ids(&canon, "é", false), ids(&canon, "e", false));
    let accents = scratch.copy_model("bert_mlm", "accents");
    edit_config(&accents, serde_json::json!({"strip_accents": false}));
    assert_eq!(ids(&accents, "é", false), vec![unk]);

    assert_eq!(ids(&canon, "中文", false), vec![unk, unk]);
    let cjk = scratch.copy_model("bert_mlm", "cjk");
    edit_config(&cjk, serde_json::json!({"tokenize_chinese_chars": false}));
    assert_eq!(ids(&cjk, "中文", false), vec![unk]);

    edit_config(&cjk, serde_json::json!({"do_lower_case": "no"}));
    refused(
        &cjk,
        &[
            "tokenizer_config.json",
            "`do_lower_case` is \"no\": expected true or false",
        ],
    );
}

/// `add_bos_token` / `add_eos_token` are dropped by transformers 5 wherever a tokenizer.json
/// is there, for every class (LlamaTokenizerFast included), and tokenizer.json's
/// post-processor kept: the engine rebuilt it from them, an EOS added or a BOS dropped on
/// every row, BERT's [CLS] and [SEP] both dropped (hostile pass 26, F1). The Llama fixture's
/// tokenizer.json adds "<|begin_of_text|>" (0) only.
#[test]
fn add_bos_and_eos_are_ignored_as_transformers_5_ignores_them() {
    let scratch = ScratchDir::new("tokcfg-llama");
    let canon = scratch.copy_model("llama", "canon");
    let text = "the movie";
    let base = ids(&canon, text, true);
    assert_eq!(base[0], 0);
    let body = ids(&canon, text, false);
    assert_eq!(base[1..], body[..]);
    let d = scratch.copy_model("llama", "keys");
    for keys in [
        serde_json::json!({"tokenizer_class": "LlamaTokenizerFast"}),
        serde_json::json!({"add_eos_token": true}),
        serde_json::json!({"add_eos_token": false, "add_bos_token": false}),
        serde_json::json!({"add_eos_token": true, "add_bos_token": true, "bos_token": "<s>"}),
    ] {
        edit_config(&d, keys.clone());
        assert_eq!(ids(&d, text, true), base, "{keys}");
        assert_eq!(ids(&d, text, false), body, "{keys}");
    }
    let bert = scratch.copy_model("bert_mlm", "bert");
    let kept = ids(&bert, text, true);
    edit_config(&bert, serde_json::json!({"add_eos_token": true}));
    assert_eq!(ids(&bert, text, true), kept);
}

/// `split_special_tokens: true` (any fast tokenizer; Qwen2's tokenizer_config.json carries the
/// key): "<|endoftext|>" written in a text is tokenized as text, not as the special token 0.
#[test]
fn split_special_tokens_tokenizes_them_as_text() {
    let scratch = ScratchDir::new("tokcfg-qwen2");
    let d = scratch.copy_model("qwen2", "qwen2");
    let text = "a <|endoftext|> b";
    assert!(ids(&d, text, false).contains(&0));
    edit_config(&d, serde_json::json!({"split_special_tokens": true}));
    let split = ids(&d, text, false);
    assert!(!split.contains(&0), "{split:?}");
    assert!(split.len() > 3, "{split:?}");
}

/// `clean_up_tokenization_spaces: true` (the T5 and BERT fixtures carry it, as their hub
/// folders do): transformers' decode takes out the space before punctuation and English
/// contractions, and a BPE model's never (hostile pass 27, F3: generated text kept them).
#[test]
fn decoded_text_is_cleaned_up_where_the_config_says() {
    let scratch = ScratchDir::new("tokcfg-clean");
    let text = "i 'm here , you 're there . do n't go ?";
    let decoded = |d: &Path| {
        let tok = Tokenizer::load(d).unwrap();
        tok.decode(&tok.encode(text, false).unwrap(), true).unwrap()
    };
    let t5 = scratch.copy_model("t5_flan", "t5");
    assert_eq!(decoded(&t5), "i'm here, you're there. don't go?");
    edit_config(
        &t5,
        serde_json::json!({"clean_up_tokenization_spaces": false}),
    );
    assert_eq!(decoded(&t5), text);
    // a BPE model keeps them, unless told to clean up anyway
    let llama = scratch.copy_model("llama", "llama");
    edit_config(
        &llama,
        serde_json::json!({"clean_up_tokenization_spaces": true}),
    );
    assert_eq!(decoded(&llama), text);
    let forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output";
    edit_config(&llama, serde_json::json!({ (forced): true }));
    assert_eq!(decoded(&llama), "i'm here, you're there. don't go?");
}

/// A `llama` model whose tokenizer_config.json names `LlamaTokenizer` over a SentencePiece
/// tokenizer.json (Llama 2's layout): transformers 5 rebuilds the pipeline (no normalizer, a
/// `Metaspace` prepending "▁" as `add_prefix_space` and `legacy` say), and the file's own
/// `Prepend` + `Replace` normalizer gave an extra "▁" before a leading space and after a
/// special token: a causal target " pos" was two tokens (hostile pass 27, F1). The fixture's
/// expected.json holds AutoTokenizer's ids and decoded texts for each config variant
/// (`scripts/make_llama2_tokenizer.py`), `CodeLlamaTokenizer`'s among them (review 20, R20-1),
/// with its `legacy`, a null `bos_token` and one in special_tokens_map.json (review 21), and
/// tokens the folder names that tokenizer.json lacks, which transformers adds (hostile pass
/// 27, F2); the pad token, tokenizer.json's `padding`'s where no file has the key (review 26,
/// A0c).
#[test]
fn a_llama_tokenizer_is_rebuilt_as_transformers_5_rebuilds_it() {
    let scratch = ScratchDir::new("tokcfg-llama2");
    let fixture = common::fixture("llama2_tok");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let texts = expected["texts"].as_array().unwrap();
    for (name, variant) in expected["variants"].as_object().unwrap() {
        let d = scratch.copy_model("llama2_tok", name);
        let mut edit = variant["edit"].clone();
        if let Some(keys) = edit.as_object_mut().unwrap().remove("config_json") {
            // the class named in config.json instead (review 20, R20-2)
            let path = d.join("config.json");
            let mut model: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            model
                .as_object_mut()
                .unwrap()
                .extend(keys.as_object().unwrap().clone());
            std::fs::write(&path, model.to_string()).unwrap();
        }
        let nulls = edit.as_object_mut().unwrap().remove("null");
        let map = edit.as_object_mut().unwrap().remove("special_tokens_map");
        if let Some(pad) = edit.as_object_mut().unwrap().remove("json_padding") {
            // tokenizer.json's `padding`, as `Tokenizer.enable_padding(pad_token=...)` writes it
            let path = d.join("tokenizer.json");
            let mut tok: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            tok["padding"] = serde_json::json!({"strategy": "BatchLongest", "direction": "Right",
                "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": pad});
            std::fs::write(&path, tok.to_string()).unwrap();
        }
        if let Some(added) = edit.as_object_mut().unwrap().remove("added_tokens_file") {
            std::fs::write(d.join("added_tokens.json"), added.to_string()).unwrap();
        }
        edit_config(&d, edit);
        // keys named null (review 21, R21-4), and a special_tokens_map.json
        if let Some(keys) = nulls {
            let path = d.join("tokenizer_config.json");
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for k in keys.as_array().unwrap() {
                v[k.as_str().unwrap()] = serde_json::Value::Null;
            }
            std::fs::write(&path, v.to_string()).unwrap();
        }
        if let Some(map) = map {
            std::fs::write(d.join("special_tokens_map.json"), map.to_string()).unwrap();
        }
        let tok = Tokenizer::load(&d).unwrap();
        let pad: Option<i32> = serde_json::from_value(variant["pad_token_id"].clone()).unwrap();
        assert_eq!(tok.pad_id().unwrap(), pad, "{name}: pad_token_id");
        for (i, text) in texts.iter().enumerate() {
            let text = text.as_str().unwrap();
            let want: Vec<i32> = serde_json::from_value(variant["ids"][i].clone()).unwrap();
            let got = tok.encode(text, true).unwrap();
            assert_eq!(got, want, "{name}: {text:?}");
            let decoded = tok.decode(&got, true).unwrap();
            assert_eq!(
                decoded,
                variant["decoded"][i].as_str().unwrap(),
                "{name}: {text:?}"
            );
        }
    }
    // the same files under another model type are read as they are (transformers reads
    // them so for mistral): " pos" keeps its extra "▁"
    let mistral = scratch.copy_model("llama2_tok", "mistral");
    std::fs::write(mistral.join("config.json"), r#"{"model_type": "mistral"}"#).unwrap();
    assert_eq!(ids(&mistral, " pos", false), vec![259, 265]);
    // code of its own for AutoTokenizer (which transformers runs only when trusted): read as
    // it is; an auto_map for other classes only changes nothing (review 21, R21-7)
    let remote = scratch.copy_model("llama2_tok", "remote");
    edit_config(
        &remote,
        serde_json::json!({"auto_map": {"AutoTokenizer": ["tok.Mine", null]}}),
    );
    assert_eq!(ids(&remote, " pos", false), vec![259, 265]);
    edit_config(
        &remote,
        serde_json::json!({"auto_map": {"AutoConfig": "cfg.Mine", "AutoTokenizer": null}}),
    );
    assert_eq!(ids(&remote, " pos", false), vec![265]);
}

/// A special token named in both files is special_tokens_map.json's where
/// tokenizer_config.json has no `added_tokens_decoder` (transformers 5's legacy merge, which
/// wins), else tokenizer_config.json's; a pad token named null is none (review 21, R21-4:
/// tokenizer_config.json's was taken first, and the map read beside added_tokens_decoder).
/// BLOOM's fixture: `<pad>` 3 in both files, `</s>` 2.
#[test]
fn special_tokens_are_read_as_transformers_merges_the_files() {
    let scratch = ScratchDir::new("tokcfg-special");
    let bloom = scratch.copy_model("bloom", "bloom");
    let pad = |dir: &Path| Tokenizer::load(dir).unwrap().pad_id().unwrap();
    assert_eq!(pad(&bloom), Some(3));
    edit_config(&bloom, serde_json::json!({"pad_token": "</s>"}));
    assert_eq!(pad(&bloom), Some(3), "special_tokens_map.json's wins");
    edit_config(&bloom, serde_json::json!({"added_tokens_decoder": {}}));
    assert_eq!(
        pad(&bloom),
        Some(2),
        "beside added_tokens_decoder the map is not read"
    );
    std::fs::write(
        bloom.join("tokenizer_config.json"),
        r#"{"pad_token": null, "added_tokens_decoder": {}}"#,
    )
    .unwrap();
    assert_eq!(pad(&bloom), None, "named null");
}
