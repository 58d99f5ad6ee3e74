//! A model folder's files: config keys that would panic or train NaN are refused at load,
//! naming config.json's key; a NaN or missing weight and a tokenizer id past the embedding
//! table are named when the model loads.

use crate::common::{edit_safetensors, refused, RawTensor, ScratchDir};
use crate::{case, edit_json, ok, s, softprompt, strings, train_args};
use serde_json::Value;

fn config_case(name: &str) {
    let c = case("config", name);
    let dir = ScratchDir::new(name);
    let fixture_name = c[0].as_str().expect("fixture");
    let model = dir.copy_model(fixture_name, fixture_name);
    edit_json(&model.join("config.json"), &c[1]);
    // a smaller position table is cut to match, so that only the size is wrong
    if let Some(n) = c[1]["max_position_embeddings"].as_u64() {
        let name = "bert.embeddings.position_embeddings.weight";
        edit_safetensors(&model.join("model.safetensors"), |t| {
            let d = t[name].shape[1];
            let data = t[name].as_f32();
            let rows = n as usize;
            t.insert(
                name.into(),
                RawTensor::f32(vec![rows, d], &data[..rows * d]),
            );
        });
    }
    let needles = strings(&c[2]);
    let needles: Vec<&str> = needles.iter().map(|s| s.as_str()).collect();
    let out = dir.path().join("out");
    let mut args = train_args(&model, &out, &[]);
    if fixture_name.starts_with("t5") {
        args[8] = "seq2seq";
        args[10] = "positive=good,negative=bad";
    }
    refused(&softprompt(&args), &needles);
    // eval and parity read the same loader
    let r = std::fs::read_dir(&model)
        .expect("model")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ref_"))
        })
        .expect("a reference file");
    let out = softprompt(&["parity", "--model", s(&model), "--reference", s(&r)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn config_type_vocab_size_0() {
    config_case("type_vocab_size_0");
}

#[test]
fn config_max_position_embeddings_2() {
    config_case("max_position_embeddings_2");
}

#[test]
fn config_num_hidden_layers_0() {
    config_case("num_hidden_layers_0");
}

#[test]
fn config_t5_num_layers_0() {
    config_case("t5_num_layers_0");
}

/// A config with fewer layers than the weights hold loads the first ones, as transformers
/// does, with a warning naming the key and both counts (it trained on one layer silently).
#[test]
fn config_fewer_layers_than_the_weights_warns() {
    let dir = ScratchDir::new("fewer_layers");
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    edit_json(
        &model.join("config.json"),
        &serde_json::json!({"num_hidden_layers": 1}),
    );
    let out = dir.path().join("out");
    let text = ok(&softprompt(&train_args(&model, &out, &[])));
    assert!(
        text.contains("warning: ")
            && text.contains("config.json: `num_hidden_layers` is 1 but the weights hold 2 layers"),
        "{text}"
    );
}

#[test]
fn config_negative_layer_norm_eps() {
    config_case("negative_layer_norm_eps");
}

#[test]
fn config_t5_negative_layer_norm_epsilon() {
    config_case("t5_negative_layer_norm_epsilon");
}

/// A NaN weight is refused when the model loads, naming the tensor (it used to train, exit 0
/// and save an all-NaN prompt).
#[test]
fn nan_weight_named_at_load() {
    let dir = ScratchDir::new("nan_weight");
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    let name = "bert.encoder.layer.1.output.dense.weight";
    edit_safetensors(&model.join("model.safetensors"), |t| {
        let mut data = t[name].as_f32();
        data[5] = f32::NAN;
        let shape = t[name].shape.clone();
        t.insert(name.into(), RawTensor::f32(shape, &data));
    });
    let out = dir.path().join("out");
    refused(
        &softprompt(&train_args(&model, &out, &[])),
        &[name, "non-finite"],
    );
    assert!(!out.join("adapter_model.safetensors").exists());
}

/// A layer tensor missing from the weights names the file(s) it was looked for in (the
/// error named the tensor only): model.safetensors, or every shard of a sharded model.
#[test]
fn missing_weight_names_the_file() {
    let dir = ScratchDir::new("missing_weight");
    let name = "bert.encoder.layer.1.output.dense.weight";
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    edit_safetensors(&model.join("model.safetensors"), |t| {
        t.remove(name).expect("the tensor");
    });
    let out = dir.path().join("out");
    refused(
        &softprompt(&train_args(&model, &out, &[])),
        &[name, "missing from", "bert_mlm/model.safetensors"],
    );
    let sharded = dir.copy_model("bert_mlm_bf16_sharded", "sharded");
    let mut removed = false;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        // this checkpoint's keys have no `bert.` prefix
        edit_safetensors(&sharded.join(shard), |t| {
            removed |= t.remove(&name["bert.".len()..]).is_some()
        });
    }
    assert!(removed);
    refused(
        &softprompt(&train_args(&sharded, &out, &[])),
        &[
            "layer.1.output.dense.weight",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ],
    );
}

/// A tokenizer id past the model's embedding table is refused at load naming tokenizer.json
/// (it failed at the first step that met the token).
#[test]
fn tokenizer_id_past_the_table_named_at_load() {
    let dir = ScratchDir::new("tok_id");
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    let path = model.join("tokenizer.json");
    let mut tok: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    tok["model"]["vocab"]["great"] = Value::from(100000);
    std::fs::write(&path, serde_json::to_vec(&tok).expect("json")).expect("write");
    let out = dir.path().join("out");
    refused(
        &softprompt(&train_args(&model, &out, &[])),
        &["tokenizer.json", "100000", "139 rows"],
    );
    assert!(!out.join("adapter_model.safetensors").exists());
}
