//! Damaged tensor files (issues #16/#17, the hostile-input pass): a weight or an expected
//! output of an integer dtype, a safetensors file the crate refuses, a shard index naming no
//! shard. Each is refused with a message naming the file and, where one is at fault, the
//! tensor; the command line exits 2.

mod common;

use common::{
    edit_reference_meta, edit_safetensors, fixture, refused, softprompt, write_raw, RawTensor,
    ScratchDir,
};
use softprompt::prelude::*;
use std::collections::HashMap;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `parity` of `reference` on `model`.
fn parity(model: &Path, reference: &Path) -> std::process::Output {
    softprompt(&["parity", "--model", s(model), "--reference", s(reference)])
}

/// An expected output stored as integers was "missing the expected output `logits`", and a
/// model weight of dtype U8 "missing from model.safetensors": both are there, and each is
/// named with its dtype and the float dtypes expected.
#[test]
fn a_tensor_of_another_dtype_is_named_with_its_dtype() {
    let dir = ScratchDir::new("dtypes");
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    let good = model.join("ref_pet_random.safetensors");
    // a copy of the reference with `name` stored as I64
    let as_ints = |file: &str, name: &str| {
        let r = dir.path().join(file);
        std::fs::copy(&good, &r).expect("copy the reference");
        edit_safetensors(&r, |t| {
            let f = &t[name];
            let ints: Vec<i64> = f.as_f32().iter().map(|&x| x as i64).collect();
            let shape = f.shape.clone();
            t.insert(name.into(), RawTensor::i64(shape, &ints));
        });
        r
    };
    let r = as_ints("logits_i64.safetensors", "logits");
    let err = refused(
        &parity(&model, &r),
        &[
            "logits_i64.safetensors",
            "tensor `logits` is there with dtype I64: expected a float tensor (F32, F16, BF16 or F64)",
        ],
    );
    assert!(!err.contains("missing"), "{err}");
    // an optional output (a layer's hidden states) too: it was skipped unseen
    let r = as_ints("hidden_i64.safetensors", "hidden_states.1");
    refused(
        &parity(&model, &r),
        &[
            "hidden_i64.safetensors",
            "tensor `hidden_states.1` is there with dtype I64",
        ],
    );
    // a model weight of dtype U8
    let name = "bert.encoder.layer.0.attention.self.query.weight";
    edit_safetensors(&model.join("model.safetensors"), |t| {
        let w = &t[name];
        let bytes = vec![1u8; w.shape.iter().product()];
        let shape = w.shape.clone();
        t.insert(
            name.into(),
            RawTensor {
                dtype: safetensors::Dtype::U8,
                shape,
                bytes,
            },
        );
    });
    let want = format!("tensor `{name}`: is there in ");
    let err = refused(
        &parity(&model, &good),
        &[
            &want,
            "model.safetensors with dtype U8: expected a float tensor (F32, F16, BF16 or F64) \
             of shape [48, 48]",
        ],
    );
    assert!(!err.contains("missing"), "{err}");
}

/// The header of a safetensors file as JSON, and where its data starts.
fn header(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
}

/// `bytes` with its header replaced by `h` (padded with spaces to 8 bytes, as the crate
/// writes it).
fn with_header(bytes: &[u8], h: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let (_, data) = header(bytes);
    let mut text = serde_json::to_vec(h).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[data..]);
    out
}

/// The tensor whose data ends last in a safetensors header.
fn last_tensor(h: &serde_json::Map<String, serde_json::Value>) -> String {
    let end = |v: &serde_json::Value| v["data_offsets"][1].as_u64().unwrap_or(0);
    let (name, _) = (h.iter().filter(|(k, _)| *k != "__metadata__"))
        .max_by_key(|(_, v)| end(v))
        .unwrap();
    name.clone()
}

/// A safetensors file the crate refuses was reported in the crate's words, which name no
/// tensor ("incomplete metadata, file not fully covered", "invalid shape, data type, or
/// offset for tensor"): the message names the file and the tensor at fault, or the lengths.
#[test]
fn a_damaged_safetensors_file_names_the_file_and_the_tensor() {
    let dir = ScratchDir::new("damaged_st");
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    let weights = model.join("model.safetensors");
    let good = std::fs::read(&weights).expect("model.safetensors");
    let (h, _) = header(&good);
    let last = last_tensor(&h);
    // the first tensor by offset, whose size is then made wrong
    let first = (h.iter().filter(|(k, _)| *k != "__metadata__"))
        .min_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap();
    let mut wrong_size = h.clone();
    let shape = wrong_size[&first]["shape"].clone();
    let dims: Vec<u64> = serde_json::from_value(shape.clone()).unwrap();
    let mut bigger = dims.clone();
    bigger[0] += 1;
    wrong_size[&first]["shape"] = serde_json::json!(bigger);
    let [a, b] = [0, 1].map(|i| h[&first]["data_offsets"][i].as_u64().unwrap());
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "truncated",
            good[..good.len() - 4].to_vec(),
            format!("tensor `{last}` (data_offsets ["),
        ),
        ("five_bytes", good[..5].to_vec(), "it holds 5 bytes".into()),
        (
            "header_cut",
            good[..200].to_vec(),
            format!(
                "its header length is {} bytes, but only 192 bytes follow it",
                header(&good).1 - 8
            ),
        ),
        (
            "wrong_size",
            with_header(&good, &wrong_size),
            format!(
                "tensor `{first}` (data_offsets [{a}, {b}]): dtype F32 and shape {bigger:?} take {} \
                 bytes, its offsets span {}",
                bigger.iter().product::<u64>() * 4,
                b - a
            ),
        ),
    ];
    for (what, bytes, want) in cases {
        std::fs::write(&weights, &bytes).expect("write");
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{what} loaded"),
            Err(e) => e.to_string(),
        };
        for want in ["model.safetensors", "not a valid safetensors file", &want] {
            assert!(err.contains(want), "{what}: {err}");
        }
        if what == "truncated" {
            assert!(
                err.contains("runs past the end of the file's data"),
                "{err}"
            );
        }
    }
    // a reference file (read whole, as adapters are) and the command line: exit 2
    std::fs::write(&weights, &good).expect("restore");
    let r = model.join("ref_pet_random.safetensors");
    let bytes = std::fs::read(&r).expect("reference");
    let last = last_tensor(&header(&bytes).0);
    std::fs::write(&r, &bytes[..bytes.len() - 4]).expect("truncate");
    let want = format!("tensor `{last}` (data_offsets [");
    refused(
        &parity(&model, &r),
        &[
            "ref_pet_random.safetensors",
            &want,
            "runs past the end of the file's data",
        ],
    );
}

/// A shard index whose `weight_map` is empty named no file: every weight was "missing
/// from " a list of no files. Now the index is named, with what it must hold.
#[test]
fn an_empty_weight_map_names_the_index() {
    let dir = ScratchDir::new("empty_weight_map");
    let model = dir.copy_model("bert_mlm_bf16_sharded", "sharded");
    Model::open(&model, Device::Cpu).expect("the sharded fixture");
    let index = model.join("model.safetensors.index.json");
    std::fs::write(&index, r#"{"metadata": {}, "weight_map": {}}"#).expect("write the index");
    let err = match Model::open(&model, Device::Cpu) {
        Ok(_) => panic!("an empty weight_map loaded"),
        Err(e) => e.to_string(),
    };
    for want in [
        "model.safetensors.index.json",
        "`weight_map` is empty: expected each tensor's name mapped to the shard file",
    ] {
        assert!(err.contains(want), "{err}");
    }
    let r = model.join("ref_pet_random.safetensors");
    refused(
        &parity(&model, &r),
        &["model.safetensors.index.json", "`weight_map` is empty"],
    );
}

/// `num_virtual_tokens` x `num_transformer_submodules` was an unchecked product: 2^63 x 2
/// wrapped to 0 rows in a release build (an overflow panic in a debug one), so a table of 0
/// rows loaded as a prompt of 2^63. A table of width 0, whose rows hold no values and so
/// bound nothing, loaded too. Both are refused, naming the file and the keys or the shape.
#[test]
fn adapter_sizes_that_overflow_are_refused() {
    use serde_json::json;
    use softprompt::internals::prompt::PromptTable;
    let dir = ScratchDir::new("adapter_overflow");
    let prompt = dir.copy_model("bert_mlm/peft_adapter", "prompt");
    let cfg_path = prompt.join("adapter_config.json");
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("adapter_config.json"))
            .expect("JSON");
    let write = |cfg: &serde_json::Value, shape: Vec<usize>| {
        std::fs::write(&cfg_path, cfg.to_string()).expect("write adapter_config.json");
        let table = HashMap::from([("prompt_embeddings".to_string(), RawTensor::f32(shape, &[]))]);
        write_raw(&prompt.join("adapter_model.safetensors"), &table, None);
    };
    // refused, with an error holding every needle
    let refused_with = |needles: &[&str]| {
        let err = match PromptTable::load_peft(&prompt) {
            Ok(t) => panic!("loaded a table of {} rows of {}", t.p, t.d),
            Err(e) => e.to_string(),
        };
        for want in needles {
            assert!(err.contains(want), "{err}");
        }
    };
    let mut cfg = good.clone();
    cfg["num_virtual_tokens"] = json!(1u64 << 63);
    cfg["num_transformer_submodules"] = json!(2);
    write(&cfg, vec![0, 48]);
    refused_with(&[
        "adapter_config.json",
        "num_virtual_tokens 9223372036854775808 x num_transformer_submodules 2 overflows",
    ]);
    // width 0 (token_dim, which would catch it, left out as PEFT may)
    let mut cfg = good.clone();
    cfg.as_object_mut().expect("object").remove("token_dim");
    write(&cfg, vec![5, 0]);
    refused_with(&[
        "adapter_model.safetensors",
        "`prompt_embeddings` has shape [5, 0]: expected [rows, d], d at least 1",
    ]);
}

/// A p-tuning reference's `peft_config` sizes the encoder: an `encoder_hidden_size` of 2^62
/// overflowed the LSTM's u128 parameter count (4 · h · 2h) and its shapes (4 · h wrapped to
/// 0), and a `prompt` of width 0 with 2^63 rows and two submodules wrapped its rows to 0.
/// Each is named in the reference's terms.
#[test]
fn reference_encoder_sizes_that_overflow_are_refused() {
    let dir = ScratchDir::new("reference_overflow");
    let model = fixture("bert_mlm");
    let good = fixture("deep/bert_mlm/ref_pet_ptuning_lstm.safetensors");
    let r = dir.path().join("ref.safetensors");
    std::fs::copy(&good, &r).expect("copy the reference");
    edit_reference_meta(&r, |v| {
        v["peft_config"]["encoder_hidden_size"] = (1u64 << 62).into()
    });
    refused(
        &parity(&model, &r),
        &[
            "ref.safetensors",
            "peft_config's `encoder_hidden_size` is 4611686018427387904: more than this engine \
             supports (2147483647)",
        ],
    );
    std::fs::copy(&good, &r).expect("copy the reference");
    let huge = 1usize << 63;
    edit_reference_meta(&r, |v| {
        v["num_virtual_tokens"] = huge.into();
        v["peft_config"]["num_transformer_submodules"] = 2.into();
    });
    edit_safetensors(&r, |t| {
        t.insert("prompt".into(), RawTensor::f32(vec![huge, 0], &[]));
    });
    refused(
        &parity(&model, &r),
        &[
            "ref.safetensors",
            "`prompt` has shape [9223372036854775808, 0]: expected [9223372036854775808, width] \
             (num_virtual_tokens = 9223372036854775808, width at least 1)",
        ],
    );
}

/// A tensor stored in two shards of a sharded checkpoint: every shard went into one map, the
/// later shard silently winning over the one the index's weight_map names (scores moved by
/// 1.63 with a changed copy). Refused, naming the tensor and both files.
#[test]
fn a_tensor_in_two_shards_is_refused_naming_both() {
    let dir = ScratchDir::new("two_shards");
    let model = dir.copy_model("bert_mlm_bf16_sharded", "sharded");
    let name = "embeddings.token_type_embeddings.weight";
    let (first, second) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    let (tensors, _) = common::read_raw(&model.join(first));
    let copy = tensors[name].clone();
    edit_safetensors(&model.join(second), |t| {
        t.insert(name.into(), copy);
    });
    let err = match Model::open(&model, Device::Cpu) {
        Ok(_) => panic!("a tensor in two shards loaded"),
        Err(e) => e.to_string(),
    };
    let want = format!(
        "tensor `{name}`: stored in two shards, {} and {}: expected each tensor in one shard \
         (the one model.safetensors.index.json's weight_map names)",
        model.join(first).display(),
        model.join(second).display()
    );
    assert!(err.contains(&want), "{err}");
}

/// A GPTQ folder (config.json's `quantization_config`, `q_proj.qweight` I32 and `scales` where
/// `q_proj.weight` was) was refused as "missing" with no word of quantization: the refusal
/// now says the checkpoint is quantized and not read, with its quant_method; the same for a
/// bitsandbytes U8 weight. Without a `quantization_config` the message is as before.
#[test]
fn a_quantized_checkpoint_is_named_as_such() {
    let dir = ScratchDir::new("quantized");
    let name = "model.layers.0.self_attn.q_proj.weight";
    let gptq = dir.copy_model("llama", "gptq");
    edit_safetensors(&gptq.join("model.safetensors"), |t| {
        let w = t.remove(name).unwrap();
        let n = w.shape.iter().product::<usize>() / 8;
        let q = "model.layers.0.self_attn.q_proj";
        let packed = RawTensor {
            dtype: safetensors::Dtype::I32,
            shape: vec![n],
            bytes: vec![0u8; 4 * n],
        };
        t.insert(format!("{q}.qweight"), packed);
        t.insert(format!("{q}.scales"), RawTensor::f32(vec![1], &[1.0]));
    });
    let err_of = |model: &Path| match Model::open(model, Device::Cpu) {
        Ok(_) => panic!("{}: loaded without {name}", model.display()),
        Err(e) => e.to_string(),
    };
    let note = "config.json's quantization_config says quant_method \"gptq\": quantized \
                checkpoints are not read (softprompt reads float weights, F32, F16, BF16 or \
                F64): use the model's unquantized release";
    let plain_err = err_of(&gptq);
    assert!(
        plain_err.contains(&format!("tensor `{name}`: missing from ")),
        "{plain_err}"
    );
    assert!(!plain_err.contains("quant_method"), "{plain_err}");
    let q = serde_json::json!({"quant_method": "gptq", "bits": 4});
    set_config_key(&gptq, "quantization_config", q);
    assert_eq!(err_of(&gptq), format!("{plain_err}; {note}"));
    // bitsandbytes keeps the name and stores U8: named with its dtype and the note
    let bnb = dir.copy_model("llama", "bnb");
    edit_safetensors(&bnb.join("model.safetensors"), |t| {
        let n = t[name].shape.iter().product::<usize>() / 2;
        let packed = RawTensor {
            dtype: safetensors::Dtype::U8,
            shape: vec![n, 1],
            bytes: vec![0u8; n],
        };
        t.insert(name.into(), packed);
    });
    let q = serde_json::json!({"quant_method": "bitsandbytes", "load_in_4bit": true});
    set_config_key(&bnb, "quantization_config", q);
    let err = err_of(&bnb);
    assert!(
        err.contains("with dtype U8: expected a float tensor"),
        "{err}"
    );
    assert!(
        err.contains("quant_method \"bitsandbytes\": quantized checkpoints are not read"),
        "{err}"
    );
}

/// Sets `key` of `dir`/config.json.
fn set_config_key(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

/// A model whose weight files are larger than the memory this process may allocate is
/// refused before they are read, as the host's memory (`Error::HostMemory`, Python's
/// `OutOfMemory`, a `MemoryError`), not as a bad file: no argument makes it smaller. The
/// file is sparse: 4 TB long, no disk spent.
#[test]
fn weights_past_the_memory_are_refused_as_memory() {
    let dir = ScratchDir::new("huge_weights");
    let model = dir.copy_model("bert_mlm", "huge");
    let file = std::fs::File::options()
        .write(true)
        .open(model.join("model.safetensors"))
        .expect("open the weights");
    file.set_len(4_000_000_000_000).expect("a sparse file");
    drop(file);
    match Model::open(&model, Device::Cpu) {
        Err(Error::HostMemory { path, msg }) => {
            assert_eq!(path, model);
            assert!(
                msg.starts_with("its weight files take about 4000.0 GB, but "),
                "{msg}"
            );
            assert!(msg.ends_with("free memory, or raise the limit"), "{msg}");
        }
        Err(e) => panic!("refused as another error: {e}"),
        Ok(_) => panic!("a 4 TB model was loaded"),
    }
}

/// A prompt folder's tensor file made 1 TB long (sparse) was read whole before its header
/// was, and the allocation aborted the process: a server lost every prompt and request to
/// one load (hostile pass 34, F0). Its header is read first: a length the header does not
/// account for is refused unread, and a length past the memory with a header that cannot
/// say is refused as the memory's.
#[test]
fn a_tensor_file_longer_than_its_header_says_is_refused_unread() {
    let dir = ScratchDir::new("huge_adapter");
    let adapter = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter).expect("adapter folder");
    for f in std::fs::read_dir(fixture("bert_mlm").join("peft_adapter")).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, adapter.join(f.file_name().unwrap())).expect("copy");
    }
    let weights = adapter.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).expect("the adapter's weights");
    let lengthen = |len: u64| {
        let file = std::fs::File::options()
            .write(true)
            .open(&weights)
            .expect("open");
        file.set_len(len).expect("a sparse file");
    };
    lengthen(1_000_000_000_000);
    let start = std::time::Instant::now();
    let refusal = || {
        Prompt::load(&adapter)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    };
    let err = refusal();
    let data = 1_000_000_000_000 - 8 - u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert!(
        err.starts_with(&format!("{}: not a valid safetensors file", s(&weights)))
            && err.ends_with(&format!("but the file holds {data} bytes of data")),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    // a header the crate cannot parse, or past its bound, is refused unread too (either was
    // read whole before the crate said so; verification 33, N1)
    let mut garbled = bytes.clone();
    garbled[8] = b'X';
    std::fs::write(&weights, &garbled).expect("write");
    lengthen(1_000_000_000_000);
    let start = std::time::Instant::now();
    let err = refusal();
    assert!(err.contains("invalid JSON in header: "), "{err}");
    std::fs::write(&weights, 200_000_000u64.to_le_bytes()).expect("write");
    lengthen(1_000_000_000_000);
    let err = refusal();
    assert!(
        err.contains("its header length is 200000000 bytes, past the 100000000"),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    // a sound header whose tensor is 4 TB long: past the memory, refused as the memory's
    let header = br#"{"prompt_embeddings":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}}"#;
    let mut huge = (header.len() as u64).to_le_bytes().to_vec();
    huge.extend_from_slice(header);
    std::fs::write(&weights, &huge).expect("write");
    lengthen(huge.len() as u64 + 4_000_000_000_000);
    match Prompt::load(&adapter) {
        Err(Error::HostMemory { path, msg }) => {
            assert_eq!(path, weights);
            assert!(
                msg.starts_with("its tensors take about 4000.0 GB, but "),
                "{msg}"
            );
        }
        Err(e) => panic!("refused as another error: {e}"),
        Ok(_) => panic!("a 4 TB adapter was loaded"),
    }
}
