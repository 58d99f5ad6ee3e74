//! TEXT init reproduces PEFT's prompt for every `ref_*_text` fixture (tokenize with special
//! tokens, repeat or cut to P, take the word-embedding rows), and the tokenizer gives the ids
//! the fixture script recorded, with baked-in padding and truncation switched off.

mod common;

use common::{fixture, reference_files};
use softprompt::internals::prompt::{PromptInit, PromptTable};
use softprompt::internals::reference::Reference;
use softprompt::internals::rng::Rng;
use softprompt::internals::tokenizer::Tokenizer;
use softprompt::internals::weights::WeightSource;
use softprompt::internals::weights::{HostTensor, WeightStore};
use std::path::Path;

/// The model's input embedding table: BERT word embeddings (with or without `bert.`), T5
/// `shared`, BLOOM's `word_embeddings`, the Llama family's `embed_tokens`.
fn word_embeddings(dir: &Path) -> HostTensor {
    let store = WeightStore::open(dir).unwrap();
    let name = [
        "bert.embeddings.word_embeddings.weight",
        "embeddings.word_embeddings.weight",
        "shared.weight",
        "word_embeddings.weight",
        "model.embed_tokens.weight",
    ]
    .into_iter()
    .find(|n| store.contains(n))
    .expect("word embeddings");
    let shape = store.info(name).unwrap().1.to_vec();
    store.get(name, &shape).unwrap()
}

#[test]
fn text_init_reproduces_every_text_fixture() {
    let mut seen = 0;
    for (dir, file) in reference_files() {
        let r = Reference::read(&file).unwrap();
        if r.metadata["prompt_tuning_init"] != "TEXT" {
            continue;
        }
        seen += 1;
        let text = r.metadata["prompt_tuning_init_text"]
            .as_str()
            .expect("init text");
        let tok = Tokenizer::load(&dir).unwrap();
        let emb = word_embeddings(&dir);
        let t = PromptTable::init(
            r.p(),
            &PromptInit::Text(text.into()),
            &emb,
            Some(&tok),
            &mut Rng::new(0),
        )
        .unwrap();
        assert_eq!((t.p, t.d), (r.p(), r.d()), "{}", file.display());
        assert_eq!(t.init, "TEXT");
        assert_eq!(t.init_text.as_deref(), Some(text));
        // bitwise: the rows are copies of embedding rows (bf16 ones upcast exactly)
        assert!(
            t.data == r.prompt.data,
            "{}: TEXT init differs from PEFT's prompt",
            file.display()
        );
    }
    // one per folder except bert_mlm and bert_mlm_bf16_sharded, which have two each, and
    // mistral, which has none
    assert_eq!(seen, 11);
}

#[test]
fn text_init_repeats_and_cuts_like_peft() {
    // "great movie" is [CLS] great movie [SEP]: 4 ids, repeated to 7 rows and to 10, cut to 2
    let dir = fixture("bert_mlm");
    let tok = Tokenizer::load(&dir).unwrap();
    let emb = word_embeddings(&dir);
    let ids = tok.encode("great movie", true).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!((ids[0], ids[3]), (4, 5), "[CLS] … [SEP]");
    let d = emb.shape[1];
    for p in [2usize, 4, 7, 10] {
        let t = PromptTable::init(
            p,
            &PromptInit::Text("great movie".into()),
            &emb,
            Some(&tok),
            &mut Rng::new(0),
        )
        .unwrap();
        for row in 0..p {
            let id = ids[row % ids.len()] as usize;
            assert_eq!(
                t.data[row * d..(row + 1) * d],
                emb.data[id * d..(id + 1) * d],
                "P {p} row {row}"
            );
        }
    }
    // T5 appends </s> (id 1)
    let dir = fixture("t5_v1_0");
    let ids = Tokenizer::load(&dir)
        .unwrap()
        .encode("summarize:", true)
        .unwrap();
    assert_eq!(ids.last(), Some(&1), "{ids:?}");
    assert_eq!(ids.len(), 3);
}

#[test]
fn text_init_errors() {
    let dir = fixture("bert_mlm");
    let emb = word_embeddings(&dir);
    let err = PromptTable::init(
        5,
        &PromptInit::Text("x".into()),
        &emb,
        None,
        &mut Rng::new(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("tokenizer"), "{err}");
    let tok = Tokenizer::load(&dir).unwrap();
    let err = PromptTable::init(
        0,
        &PromptInit::Text("x".into()),
        &emb,
        Some(&tok),
        &mut Rng::new(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--prompt-len"), "{err}");
}

#[test]
fn tokenizer_matches_recorded_ids_without_baked_padding() {
    let mut differs = 0;
    for folder in [
        "bert_mlm",
        "bert_mlm_bf16_sharded",
        "bert_nohead",
        "t5_v1_0",
        "t5_v1_1",
        "t5_flan",
        "bloom",
        "llama",
        "qwen2",
        "mistral",
    ] {
        let dir = fixture(folder);
        let tok = Tokenizer::load(&dir).unwrap();
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokenization.json")).unwrap())
                .unwrap();
        let singles = rec["single"].as_array().unwrap();
        assert!(!singles.is_empty());
        for s in singles {
            let text = s["text"].as_str().unwrap();
            let want: Vec<i32> = serde_json::from_value(s["ids"].clone()).unwrap();
            assert_eq!(tok.encode(text, true).unwrap(), want, "{folder}: {text:?}");
            if let Some(baked) = s.get("ids_with_baked_padding_truncation") {
                let baked: Vec<i32> = serde_json::from_value(baked.clone()).unwrap();
                differs += (baked != want) as usize;
            }
        }
        for pair in rec
            .get("pair")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let (a, b) = (
                pair["text_a"].as_str().unwrap(),
                pair["text_b"].as_str().unwrap(),
            );
            let ids: Vec<i32> = serde_json::from_value(pair["ids"].clone()).unwrap();
            let types: Vec<i32> = serde_json::from_value(pair["type_ids"].clone()).unwrap();
            assert_eq!(
                tok.encode_pair(a, b).unwrap(),
                (ids, types),
                "{folder}: ({a:?}, {b:?})"
            );
        }
    }
    // bert_nohead's sentences are padded to 16 or cut at 16 by its tokenizer.json as shipped:
    // every one of them differs from what a correct (padding/truncation off) engine gives
    assert!(
        differs >= 3,
        "only {differs} sentences exercise the baked-in padding/truncation"
    );
}
