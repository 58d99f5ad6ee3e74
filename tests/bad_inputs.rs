//! Bad inputs give a clear error, never a panic: the library returns `Err` (checked under
//! `catch_unwind`) and `softprompt parity` exits 2 with a message that names the file, the
//! tensor or the flag at fault. Each case builds a broken copy of a fixture in a scratch
//! folder.

mod common;

use common::{edit_reference_meta, edit_safetensors, fixture, RawTensor, ScratchDir};
use softprompt::internals::parity;
use softprompt::internals::reference::Reference;
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs parity through the library and through the binary; both must fail cleanly with a
/// message that contains every needle.
fn expect_unusable(model: &Path, reference: &Path, needles: &[&str]) {
    let lib = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let r = Reference::read(reference)?;
        parity::run(&CpuBackend::<f32>::new(), model, &r, 1e-4)
    }));
    let err = match lib {
        Err(_) => panic!(
            "the library panicked on {} / {}",
            model.display(),
            reference.display()
        ),
        Ok(Ok(report)) => panic!("the library accepted a broken input:\n{}", report.table()),
        Ok(Err(e)) => e.to_string(),
    };
    for needle in needles {
        assert!(
            err.contains(needle),
            "library error lacks {needle:?}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(["parity", "--model"])
        .arg(model)
        .arg("--reference")
        .arg(reference)
        .output()
        .expect("run softprompt");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "binary error lacks {needle:?}: {stderr}"
        );
    }
    assert!(!stdout.contains("PASS"));
}

/// A scratch copy of a fixture folder and of one of its reference files.
fn broken_copy(folder: &str, reference: &str) -> (ScratchDir, PathBuf, PathBuf) {
    let dir = ScratchDir::new(folder);
    let model = dir.copy_model(folder, folder);
    let r = model.join(reference);
    (dir, model, r)
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn edit_config(model: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = model.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Sets one element of an I64 tensor of a reference file.
fn set_int(reference: &Path, name: &str, index: usize, value: i64) {
    edit_safetensors(reference, |t| {
        let mut data = t[name].as_i64();
        data[index] = value;
        let shape = t[name].shape.clone();
        t.insert(name.into(), RawTensor::i64(shape, &data));
    });
}

// ---------------------------------------------------------------------------------------------
// Broken files

#[test]
fn truncated_model_safetensors() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    truncate(&model.join("model.safetensors"));
    expect_unusable(&model, &r, &["model.safetensors", "truncated or corrupt"]);
}

#[test]
fn empty_model_safetensors() {
    let (_d, model, r) = broken_copy("t5_v1_0", "ref_seq2seq_random.safetensors");
    std::fs::write(model.join("model.safetensors"), b"").unwrap();
    expect_unusable(
        &model,
        &r,
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn truncated_and_missing_shards() {
    let (_d, model, r) = broken_copy("bert_mlm_bf16_sharded", "ref_pet_random.safetensors");
    let shard = model.join("model-00002-of-00002.safetensors");
    truncate(&shard);
    expect_unusable(
        &model,
        &r,
        &["model-00002-of-00002.safetensors", "truncated or corrupt"],
    );
    std::fs::remove_file(&shard).unwrap();
    expect_unusable(&model, &r, &["model-00002-of-00002.safetensors"]);
}

#[test]
fn truncated_reference_file() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_pet_random.safetensors");
    truncate(&r);
    expect_unusable(
        &model,
        &r,
        &["ref_pet_random.safetensors", "truncated or corrupt"],
    );
}

#[test]
fn model_file_given_as_reference() {
    let model = fixture("bert_mlm");
    expect_unusable(
        &model,
        &model.join("model.safetensors"),
        &["model.safetensors", "softprompt"],
    );
}

#[test]
fn stale_reference_format() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    edit_reference_meta(&r, |m| m["format"] = 2.into());
    expect_unusable(
        &model,
        &r,
        &[
            "ref_mlm_random.safetensors",
            "`format` is 2",
            "expected 1",
            "reference-format.md",
            "torch_reference.py",
        ],
    );
}

/// A `format` that is missing or not an integer was read as format 0 ("reference format 0"),
/// naming neither the key nor what it takes.
#[test]
fn reference_format_missing_or_mistyped() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &[&str]); 3] = [
        (
            "missing",
            |m| {
                m.as_object_mut().unwrap().remove("format");
            },
            &["no `format` key", "expected 1"],
        ),
        (
            "string",
            |m| m["format"] = "1".into(),
            &["`format` is \"1\"", "expected the integer 1"],
        ),
        (
            "fraction",
            |m| m["format"] = 1.5.into(),
            &["`format` is 1.5", "expected the integer 1"],
        ),
    ];
    for (what, edit, needles) in cases {
        let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
        edit_reference_meta(&r, edit);
        let mut all = vec!["ref_mlm_random.safetensors", "`softprompt` metadata"];
        all.extend_from_slice(needles);
        all.push("reference-format.md");
        println!("{what}");
        expect_unusable(&model, &r, &all);
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints that do not match their config

#[test]
fn tensor_with_wrong_shape() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    let name = "bert.encoder.layer.1.attention.self.key.weight";
    edit_safetensors(&model.join("model.safetensors"), |t| {
        let data = t[name].as_f32();
        t.insert(name.into(), RawTensor::f32(vec![48, 47], &data[..48 * 47]));
    });
    expect_unusable(&model, &r, &[name, "[48, 47]", "[48, 48]"]);
}

#[test]
fn t5_bias_table_with_wrong_shape() {
    let (_d, model, r) = broken_copy("t5_v1_0", "ref_seq2seq_text.safetensors");
    let name = "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
    edit_safetensors(&model.join("model.safetensors"), |t| {
        let data = t[name].as_f32();
        t.insert(name.into(), RawTensor::f32(vec![4, 16], &data));
    });
    expect_unusable(&model, &r, &[name, "[4, 16]", "[16, 4]"]);
}

#[test]
fn missing_tensor() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    let name = "bert.encoder.layer.0.output.LayerNorm.bias";
    edit_safetensors(&model.join("model.safetensors"), |t| {
        t.remove(name);
    });
    expect_unusable(&model, &r, &[name, "missing"]);
}

#[test]
fn missing_t5_gated_branch() {
    let (_d, model, r) = broken_copy("t5_v1_1", "ref_seq2seq_random.safetensors");
    let name = "decoder.block.2.layer.2.DenseReluDense.wi_1.weight";
    edit_safetensors(&model.join("model.safetensors"), |t| {
        t.remove(name);
    });
    expect_unusable(&model, &r, &[name, "missing"]);
}

// ---------------------------------------------------------------------------------------------
// Config problems

#[test]
fn missing_config_json() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    std::fs::remove_file(model.join("config.json")).unwrap();
    expect_unusable(&model, &r, &["config.json"]);
}

#[test]
fn config_json_not_json() {
    let (_d, model, r) = broken_copy("t5_flan", "ref_seq2seq_random.safetensors");
    std::fs::write(model.join("config.json"), "{\"model_type\": \"t5\",").unwrap();
    expect_unusable(&model, &r, &["config.json", "not valid JSON"]);
}

#[test]
fn unsupported_hidden_act() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    edit_config(&model, |c| c["hidden_act"] = "quick_gelu".into());
    expect_unusable(&model, &r, &["config.json", "hidden_act", "quick_gelu"]);
}

#[test]
fn unknown_t5_feed_forward_proj() {
    let (_d, model, r) = broken_copy("t5_v1_1", "ref_seq2seq_random.safetensors");
    for proj in ["gated-mish", "relu-gated-gelu", "swiglu"] {
        edit_config(&model, |c| c["feed_forward_proj"] = proj.into());
        expect_unusable(&model, &r, &["config.json", "feed_forward_proj", proj]);
    }
    edit_config(&model, |c| {
        c["feed_forward_proj"] = "gated-gelu".into();
        c["dense_act_fn"] = "quick_gelu".into();
    });
    expect_unusable(&model, &r, &["config.json", "dense_act_fn", "quick_gelu"]);
}

#[test]
fn unsupported_model_type() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    edit_config(&model, |c| c["model_type"] = "gpt2".into());
    expect_unusable(&model, &r, &["config.json", "model_type", "gpt2"]);
}

#[test]
fn degenerate_t5_buckets_rejected() {
    let (_d, model, r) = broken_copy("t5_flan", "ref_seq2seq_random.safetensors");
    edit_config(&model, |c| c["relative_attention_max_distance"] = 4.into());
    expect_unusable(
        &model,
        &r,
        &["config.json", "relative_attention_max_distance"],
    );
}

// ---------------------------------------------------------------------------------------------
// References that do not match the model

#[test]
fn prompt_width_differs_from_hidden_size() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    edit_safetensors(&r, |t| {
        let data = t["prompt"].as_f32();
        let narrow: Vec<f32> = data.chunks(48).flat_map(|row| row[..40].to_vec()).collect();
        t.insert("prompt".into(), RawTensor::f32(vec![5, 40], &narrow));
    });
    expect_unusable(
        &model,
        &r,
        &["ref_mlm_random.safetensors", "40 wide", "hidden size is 48"],
    );
}

#[test]
fn num_virtual_tokens_differs_from_prompt_rows() {
    let (_d, model, r) = broken_copy("t5_v1_1", "ref_seq2seq_text.safetensors");
    edit_reference_meta(&r, |m| m["num_virtual_tokens"] = 6.into());
    expect_unusable(
        &model,
        &r,
        &[
            "ref_seq2seq_text.safetensors",
            "num_virtual_tokens = 6",
            "[5, 40]",
        ],
    );
}

#[test]
fn prompt_too_long_for_position_table() {
    // bert_mlm has 64 positions; 50 prompt rows + 21 tokens do not fit
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    edit_safetensors(&r, |t| {
        for name in ["prompt", "prompt_grad"] {
            t.insert(
                name.into(),
                RawTensor::f32(vec![50, 48], &vec![0.5; 50 * 48]),
            );
        }
    });
    edit_reference_meta(&r, |m| m["num_virtual_tokens"] = 50.into());
    expect_unusable(&model, &r, &["max_position_embeddings", "<= 64", "50 + 21"]);
}

#[test]
fn reference_for_another_architecture() {
    let model = fixture("t5_v1_0");
    expect_unusable(
        &model,
        &fixture("bert_mlm/ref_mlm_random.safetensors"),
        &["ref_mlm_random.safetensors", "arch"],
    );
}

#[test]
fn expected_tensor_with_wrong_size() {
    let (_d, model, r) = broken_copy("t5_flan", "ref_seq2seq_random.safetensors");
    edit_safetensors(&r, |t| {
        t.insert(
            "prompt_grad".into(),
            RawTensor::f32(vec![2, 24], &[0.0; 48]),
        );
    });
    expect_unusable(&model, &r, &["prompt_grad", "[2, 24]"]);
}

// ---------------------------------------------------------------------------------------------
// Ids outside their tables

#[test]
fn input_id_out_of_vocab() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    set_int(&r, "input_ids", 3, 139);
    expect_unusable(&model, &r, &["input_ids", "139", "139 rows"]);
    set_int(&r, "input_ids", 3, -7);
    expect_unusable(&model, &r, &["input_ids", "-7"]);
}

#[test]
fn t5_ids_out_of_vocab() {
    let (_d, model, r) = broken_copy("t5_flan", "ref_seq2seq_text.safetensors");
    set_int(&r, "labels", 0, 176);
    expect_unusable(&model, &r, &["labels", "176"]);
    set_int(&r, "labels", 0, 5);
    set_int(&r, "input_ids", 20, 1000);
    expect_unusable(&model, &r, &["input_ids", "1000"]);
}

#[test]
fn token_type_out_of_range() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_mlm_text.safetensors");
    set_int(&r, "token_type_ids", 5, 2);
    expect_unusable(&model, &r, &["token_type_ids", "2"]);
}

#[test]
fn pet_indices_out_of_range() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_pet_random.safetensors");
    set_int(&r, "mask_positions", 1, 22);
    expect_unusable(&model, &r, &["mask_positions", "22"]);
    set_int(&r, "mask_positions", 1, 3);
    set_int(&r, "verbalizer_ids", 2, 500);
    expect_unusable(&model, &r, &["verbalizer_ids", "500"]);
    set_int(&r, "verbalizer_ids", 2, 40);
    set_int(&r, "class_labels", 0, 3);
    expect_unusable(&model, &r, &["labels", "3"]);
}

#[test]
fn cls_labels_and_head_out_of_range() {
    let (_d, model, r) = broken_copy("bert_nohead", "ref_cls_random_mean.safetensors");
    set_int(&r, "class_labels", 2, 3);
    expect_unusable(&model, &r, &["class_labels[2] is 3", "0..3"]);
    set_int(&r, "class_labels", 2, 0);
    edit_safetensors(&r, |t| {
        t.insert(
            "head_weight".into(),
            RawTensor::f32(vec![3, 35], &[0.1; 105]),
        );
    });
    expect_unusable(&model, &r, &["head_weight"]);
}

#[test]
fn mlm_objective_on_a_model_without_head() {
    let model = fixture("bert_nohead");
    // the bert_mlm batch has token types and ids valid for bert_nohead's 139-row vocabulary
    let (_d, _m, r) = broken_copy("bert_mlm", "ref_mlm_random.safetensors");
    edit_safetensors(&r, |t| {
        let p = t["prompt"].as_f32();
        let narrow: Vec<f32> = p.chunks(48).flat_map(|row| row[..36].to_vec()).collect();
        t.insert("prompt".into(), RawTensor::f32(vec![5, 36], &narrow));
    });
    expect_unusable(&model, &r, &["masked-LM head", "cls"]);
}

// ---------------------------------------------------------------------------------------------
// Degenerate sizes

#[test]
fn t5_with_an_empty_encoder_input() {
    // no prompt rows and no tokens: the encoder has no position at all
    let (_d, model, r) = broken_copy("t5_flan", "ref_seq2seq_random.safetensors");
    edit_safetensors(&r, |t| {
        for name in ["input_ids", "attention_mask"] {
            let b = t[name].shape[0];
            t.insert(name.into(), RawTensor::i64(vec![b, 0], &[]));
        }
        for name in ["prompt", "prompt_grad"] {
            t.insert(name.into(), RawTensor::f32(vec![0, 24], &[]));
        }
    });
    edit_reference_meta(&r, |m| m["num_virtual_tokens"] = 0.into());
    // refused at read, before any shape: a reference without prompt rows checks nothing
    expect_unusable(&model, &r, &["num_virtual_tokens", "positive"]);
}
#[test]
fn pet_with_an_empty_verbalizer() {
    let (_d, model, r) = broken_copy("bert_mlm", "ref_pet_random.safetensors");
    edit_safetensors(&r, |t| {
        t.insert("verbalizer_ids".into(), RawTensor::i64(vec![0], &[]));
        t.insert("logits".into(), RawTensor::f32(vec![4, 0], &[]));
    });
    expect_unusable(&model, &r, &["verbalizer_ids", "at least one"]);
}

// ---------------------------------------------------------------------------------------------
// The backend checks buffers before it runs an op

#[test]
fn cpu_backend_rejects_bad_buffers() {
    use softprompt::internals::backend::traits::*;
    use softprompt::internals::backend::{AttnBias, AttnDims, BiasRef, DType};
    let be = CpuBackend::<f32>::new();
    let check = |what: &str, r: softprompt::Result<()>, needle: &str| {
        let msg = r.expect_err(what).to_string();
        assert!(msg.contains(needle), "{what}: {msg}");
    };
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let five = be.zeros(DType::F32, 5).unwrap();
        let six = be.zeros(DType::F32, 6).unwrap();
        let mut out = be.zeros(DType::F32, 6).unwrap();
        // linear: the input needs M*K = 2*3 = 6 elements
        check(
            "short linear input",
            be.linear_fwd(&mut out, &five, &six, None, 2, 3, 2),
            "linear inp",
        );
        // a float buffer where ids are expected
        check(
            "float ids",
            be.gather_rows(&mut out, &six, &five, 2, 3),
            "I32",
        );
        // a row index outside the 2 rows of a (2, 3) table
        let idx = be.upload_i32(&[0, 2]).unwrap();
        check(
            "row index",
            be.gather_rows(&mut out, &six, &idx, 2, 3),
            "row index",
        );
        // a bias bucket outside a (2 buckets, 1 head) table
        let dims = AttnDims {
            b: 1,
            tq: 2,
            tk: 2,
            h: 1,
            hkv: 1,
            d: 3,
        };
        let table = be.zeros(DType::F32, 2).unwrap();
        let buckets = be.upload_i32(&[0, 5, 1]).unwrap();
        let mask = be.upload_i32(&[1, 1]).unwrap();
        let mut lse = be.zeros(DType::F32, 2).unwrap();
        let bias = Some(AttnBias::Relative(BiasRef {
            table: &table,
            buckets: &buckets,
        }));
        check(
            "bucket",
            be.attention_fwd(
                &mut out, &mut lse, &six, &six, &six, None, &mask, bias, false, 1.0, dims,
            ),
            "bias buckets",
        );
        // copies between buffers of different sizes, floats uploaded as I32
        check("copy", be.copy(&mut out, &five), "copy");
        check("upload", be.upload(DType::I32, &[1.0]).map(|_| ()), "I32");
        // labels outside the vocabulary
        let mut logits = be.zeros(DType::F32, 6).unwrap();
        let mut losses = be.zeros(DType::F32, 2).unwrap();
        let targets = be.upload_i32(&[1, 3]).unwrap();
        check(
            "labels",
            be.cross_entropy_fwd_bwd(&mut logits, &mut losses, &targets, 2, 3, 1.0),
            "labels",
        );
    }));
    assert!(res.is_ok(), "the CPU backend panicked on a bad buffer");
}

// ---------------------------------------------------------------------------------------------
// Expected tensors of the right size but the wrong shape (only the element count used to be
// compared, and these passed)

#[test]
fn expected_tensors_with_swapped_dimensions() {
    for name in ["logits", "prompt_grad"] {
        let (_d, model, r) = broken_copy("bert_mlm", "ref_pet_random.safetensors");
        edit_safetensors(&r, |t| {
            let mut swapped = t[name].clone();
            swapped.shape.reverse();
            t.insert(name.into(), swapped);
        });
        let (rows, cols) = if name == "logits" { (4, 3) } else { (3, 48) };
        let want = format!("[{rows}, {cols}]");
        let got = format!("[{cols}, {rows}]");
        expect_unusable(&model, &r, &[name, &want, &got]);
    }
}
