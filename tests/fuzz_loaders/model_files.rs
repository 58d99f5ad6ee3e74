//! Fuzz targets for a model's files: config.json, the safetensors header, the sharded index
//! and the tokenizer.json hand-off.

use crate::common::ScratchDir;
use crate::{apply, edit_st, edits, fuzz, read_json, st_edit, verdict, write_json};
use proptest::prelude::*;
use serde_json::{json, Value};
use softprompt::internals::train::Model;
use softprompt::internals::CpuBackend;
use std::path::PathBuf;

/// config.json of a BERT and a T5 fixture with one or two keys wrong, then the whole model
/// load (the sizes in config.json decide every tensor's expected shape).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
fn fuzz_config_json() {
    let dir = ScratchDir::new("fuzz_config");
    let be = CpuBackend::<f32>::new();
    let models: Vec<(PathBuf, Value)> = ["bert_mlm", "t5_flan"]
        .iter()
        .map(|m| {
            let path = dir.copy_model(m, m);
            let cfg = read_json(&path.join("config.json"));
            (path, cfg)
        })
        .collect();
    fuzz("config_json", 1000, (any::<bool>(), edits()), |(t5, e)| {
        let (path, base) = &models[t5 as usize];
        write_json(&path.join("config.json"), &apply(base, &e));
        verdict(Model::load(&be, path))
    });
}

/// model.safetensors with one header field wrong (dtype, shape, offsets, header length,
/// metadata, a tensor gone, the file cut short), through the model load.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
fn fuzz_safetensors_header() {
    let dir = ScratchDir::new("fuzz_st");
    let be = CpuBackend::<f32>::new();
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    let base = std::fs::read(model.join("model.safetensors")).expect("read");
    let file = model.join("model.safetensors");
    fuzz("safetensors_header", 1000, st_edit(), |e| {
        std::fs::write(&file, edit_st(&base, &e)).expect("write");
        let one = softprompt::internals::weights::TensorFile::read(&file).map(|_| ());
        let all = Model::load(&be, &model).map(|_| ());
        Ok(verdict(one)? & verdict(all)?)
    });
}

/// The sharded layout: model.safetensors.index.json with one entry wrong (another file, a
/// path outside the folder, a non-string), or a shard's header wrong.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
fn fuzz_sharded_index() {
    let dir = ScratchDir::new("fuzz_shards");
    let be = CpuBackend::<f32>::new();
    let model = dir.copy_model("bert_mlm_bf16_sharded", "m");
    let index = model.join("model.safetensors.index.json");
    let base = read_json(&index);
    let shard = model.join("model-00002-of-00002.safetensors");
    let shard_bytes = std::fs::read(&shard).expect("read");
    let names = prop::sample::select(vec![
        json!("model-00001-of-00002.safetensors"),
        json!("model-00003-of-00002.safetensors"),
        json!("../m/model-00001-of-00002.safetensors"),
        json!("/dev/zero"),
        json!("config.json"),
        json!(""),
        json!("."),
        json!(7),
        json!(null),
    ]);
    fuzz(
        "sharded_index",
        1000,
        (
            any::<usize>(),
            names,
            prop::option::of(edits()),
            prop::option::of(st_edit()),
        ),
        |(i, file, e, st)| {
            let mut v = apply(&base, &e.unwrap_or_default());
            if let Some(map) = v.get_mut("weight_map").and_then(|m| m.as_object_mut()) {
                if !map.is_empty() {
                    let key = map.keys().nth(i % map.len()).cloned().unwrap_or_default();
                    map.insert(key, file);
                }
            }
            write_json(&index, &v);
            let bytes = match &st {
                Some(st) => edit_st(&shard_bytes, st),
                None => shard_bytes.clone(),
            };
            std::fs::write(&shard, bytes).expect("write");
            verdict(Model::load(&be, &model))
        },
    );
}

/// tokenizer.json with one field wrong, handed to the tokenizers crate, then used the way a
/// task uses it (encode with offsets, decode, the mask and unknown tokens).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
fn fuzz_tokenizer_json() {
    let dir = ScratchDir::new("fuzz_tok");
    let models: Vec<(PathBuf, Value)> = ["bert_mlm", "t5_flan"]
        .iter()
        .map(|m| {
            let path = dir.copy_model(m, m);
            let tok = read_json(&path.join("tokenizer.json"));
            (path, tok)
        })
        .collect();
    fuzz(
        "tokenizer_json",
        1000,
        (any::<bool>(), edits()),
        |(t5, e)| {
            let (path, base) = &models[t5 as usize];
            write_json(&path.join("tokenizer.json"), &apply(base, &e));
            let tok = match softprompt::internals::tokenizer::Tokenizer::load(path) {
                Ok(t) => t,
                Err(e) => return Err(e.to_string()),
            };
            let ids = tok
                .encode_with_offsets("the movie was great. It was [MASK].")
                .map_err(|e| e.to_string())?;
            tok.decode(&ids.ids, false).map_err(|e| e.to_string())?;
            tok.decode(&[-1, i32::MAX], true)
                .map_err(|e| e.to_string())?;
            let _ = (tok.unk_id(), tok.vocab_size());
            Ok(true)
        },
    );
}
