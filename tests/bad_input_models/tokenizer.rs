//! tokenizer.json: BPE dropout switched off, and added tokens past the embedding table
//! refused only where a text, template or label word uses them.

use crate::common::{fixture, ScratchDir};
use softprompt::prelude::*;
use std::path::Path;

/// A BPE tokenizer.json with `dropout` 0.5 split words at random: the same text scored
/// differently from run to run (labels flipped). Dropout is switched off at load, as padding
/// and truncation are: every encoding equals the fixture's own (dropout null).
#[test]
fn bpe_dropout_is_switched_off() {
    use softprompt::internals::tokenizer::Tokenizer;
    let dir = ScratchDir::new("bpe_dropout");
    let model = dir.copy_model("llama", "llama_dropout");
    let path = model.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    v["model"]["dropout"] = 0.5.into();
    std::fs::write(&path, v.to_string()).expect("write tokenizer.json");
    let text = "the music was lovely and the story slow, unbelievably understated";
    let want = Tokenizer::load(&fixture("llama"))
        .unwrap()
        .encode(text, false)
        .unwrap();
    let damaged = Tokenizer::load(&model).unwrap();
    for _ in 0..20 {
        assert_eq!(damaged.encode(text, false).unwrap(), want);
    }
}

/// `tokenizer.json` of the BERT fixture (139 rows) with `edit` applied.
fn edit_tokenizer(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    edit(&mut v);
    std::fs::write(&path, v.to_string()).expect("write tokenizer.json");
}

/// A tokenizer.json holding added tokens past the model's embedding table (a fine-tune that
/// added a pad token without resizing the embeddings) was refused at load as another model's;
/// transformers loads such a model and fails only where the token is used. It loads and
/// scores as the model without the tokens does; a text, template or label word that encodes
/// to one is refused, naming the token. A vocabulary proper larger than the table is still
/// another model's.
#[test]
fn added_tokens_past_the_embedding_table_are_refused_only_where_used() {
    use serde_json::json;
    let dir = ScratchDir::new("added_past_table");
    let added = dir.copy_model("bert_mlm", "added");
    let token = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    edit_tokenizer(&added, |v| {
        let list = v["added_tokens"].as_array_mut().expect("added_tokens");
        list.extend([token(139, "[PAD2]", true), token(140, "newword", false)]);
    });
    let words = |w: &str| {
        vec![
            ("negative".into(), "terrible".into()),
            ("positive".into(), w.into()),
        ]
    };
    let opts = |template: Option<&str>, word: &str| TaskOptions {
        verbalizer: Some(words(word)),
        template: template.map(String::from),
        max_len: Some(24),
        ..TaskOptions::default()
    };
    let data =
        |texts: &[&str]| Dataset::from_pairs("mem", texts.iter().map(|&t| (t, None::<&str>)));
    let scores = |dir: &Path| {
        let model = Model::open(dir, Device::Cpu).expect("the model loads");
        let task = model.task(&opts(None, "good"), None, 4).expect("task");
        let prompt = (model.new_prompt(&task, 4, &PromptInit::Random { std: 0.5 }, 1)).unwrap();
        let enc = model
            .encode(&task, &data(&["a good film", "dull"]))
            .unwrap();
        let preds = model.predict(&task, &prompt, &enc, 8).unwrap();
        preds
            .into_iter()
            .flat_map(|p| p.scores)
            .collect::<Vec<f32>>()
    };
    assert_eq!(scores(&added), scores(&fixture("bert_mlm")));

    let model = Model::open(&added, Device::Cpu).expect("added tokens past the table load");
    let past = |id: u32, content: &str| {
        format!("the token {content:?} (id {id}), past the model's embedding table of 139 rows")
    };
    let task = model.task(&opts(None, "good"), None, 4).unwrap();
    let err = model
        .encode(&task, &data(&["fine", "a newword film"]))
        .unwrap_err();
    let err = err.to_string();
    for want in ["mem:2: the text encodes to", &past(140, "newword")] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    let template = Some("{text} [PAD2] It was [MASK].");
    let err = model
        .task(&opts(template, "good"), None, 4)
        .unwrap_err()
        .to_string();
    for want in ["invalid argument --template", &past(139, "[PAD2]")] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    let err = model
        .task(&opts(None, "newword"), None, 4)
        .unwrap_err()
        .to_string();
    for want in [
        "invalid argument --verbalizer",
        "\"positive\"",
        &past(140, "newword"),
    ] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }

    let regular = dir.copy_model("bert_mlm", "regular");
    edit_tokenizer(&regular, |v| {
        v["model"]["vocab"]["zzzword"] = json!(139);
    });
    let err = match Model::open(&regular, Device::Cpu) {
        Ok(_) => panic!("a vocabulary past the table loaded"),
        Err(e) => e.to_string(),
    };
    for want in [
        "tokenizer.json",
        "holds token id 139",
        "belongs to another model",
    ] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
}
