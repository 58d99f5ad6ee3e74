//! Parity on every committed fixture at 1e-4, through the library and through the binary.

mod common;

use common::{
    fixture, realistic_reference_files, reference_files, run_python, RawTensor, ScratchDir,
};
use softprompt::internals::parity;
use softprompt::internals::reference::Reference;
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A float32 CPU run passes at 1e-4 (reference-format.md).
const TOL: f64 = 1e-4;

#[test]
fn parity_passes_on_every_committed_fixture() {
    let be = CpuBackend::<f32>::new();
    let files = reference_files();
    // 4 bert_mlm + 4 bert_mlm_bf16_sharded + 2 bert_nohead + 3 × 2 T5 (README table), and
    // causal random, causal text and generate for bloom, llama and qwen2, mistral without
    // the text one (the decoder-only table)
    assert_eq!(files.len(), 16 + 11, "reference files found: {files:?}");
    let mut failures = Vec::new();
    for (dir, file) in &files {
        let r = Reference::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let report =
            parity::run(&be, dir, &r, TOL).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let names: Vec<&str> = report.rows.iter().map(|row| row.name.as_str()).collect();
        // the required rows come first, in this order
        let required = r.objective.required();
        assert_eq!(&names[..required.len()], required, "{}", file.display());
        // everything the reference holds is computed: hidden states included
        assert!(
            report.skipped.is_empty(),
            "{}: skipped {:?}",
            file.display(),
            report.skipped
        );
        let hidden = names
            .iter()
            .filter(|n| n.contains("hidden_states."))
            .count();
        // the decoder-only text and generate references hold no hidden states
        let holds_hidden = r.expected.keys().any(|k| k.contains("hidden_states."));
        assert!(
            hidden >= 3 || !holds_hidden,
            "{}: only {hidden} hidden-state rows",
            file.display()
        );
        if r.objective.name() == "cls" {
            assert!(names.contains(&"head_weight_grad") && names.contains(&"head_bias_grad"));
        }
        if r.objective.name() == "generate" {
            assert!(names.contains(&"generated_ids"), "{}", file.display());
        }
        for row in &report.rows {
            assert_eq!(
                row.tol,
                if row.name == "generated_ids" {
                    0.0
                } else {
                    TOL
                }
            );
            assert!(
                row.rel_err.is_finite(),
                "{}: {} not finite",
                file.display(),
                row.name
            );
        }
        if !report.passed() {
            failures.push(format!("{}\n{}", file.display(), report.table()));
        }
        if std::env::var_os("SOFTPROMPT_TEST_VERBOSE").is_some() {
            eprintln!("{}\n{}", file.display(), report.table());
        }
    }
    assert!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
}

/// The realistic-weight-scale set (unseen random configs, bf16-exact weights) at 1e-4 on the CPU:
/// the bf16 acceptance set of tests/parity_emu.rs is first a valid float32 reference.
#[test]
fn parity_passes_on_the_realistic_scale_set() {
    let be = CpuBackend::<f32>::new();
    let files = realistic_reference_files();
    assert_eq!(files.len(), 12, "reference files found: {files:?}");
    for (dir, file) in &files {
        let r = Reference::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let report =
            parity::run(&be, dir, &r, TOL).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(report.skipped.is_empty(), "{}", file.display());
        assert!(report.passed(), "{}\n{}", file.display(), report.table());
    }
}

fn run_parity_binary(model: &str, reference: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .arg("parity")
        .arg("--model")
        .arg(fixture(model))
        .arg("--reference")
        .arg(fixture(reference))
        .args(extra)
        .output()
        .expect("run softprompt");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table row of `name` in the binary's output: (shape, [rel_err, max_abs, tol, status]).
fn table_row<'a>(stdout: &'a str, name: &str) -> (&'a str, Vec<&'a str>) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` row in:\n{stdout}"));
    let (open, close) = (
        line.find('[').expect("shape"),
        line.find(']').expect("shape"),
    );
    (
        &line[open..=close],
        line[close + 1..].split_whitespace().collect(),
    )
}

fn check_passing_table(stdout: &str, stderr: &str, code: i32, shapes: &[(&str, &str)]) {
    assert_eq!(code, 0, "exit code; stdout:\n{stdout}\nstderr:\n{stderr}");
    let header = stdout.lines().nth(1).unwrap_or("");
    for col in ["tensor", "shape", "rel_err", "max_abs", "tol", "status"] {
        assert!(header.contains(col), "header lacks {col}: {header}");
    }
    for (name, shape) in shapes {
        let (got_shape, cols) = table_row(stdout, name);
        assert_eq!(got_shape, *shape, "{name} shape");
        let rel: f64 = cols[0].parse().expect("rel_err is a number");
        assert!(rel <= TOL, "{name}: {rel}");
        assert_eq!(cols.last(), Some(&"ok"), "{name} status");
    }
    assert!(!stdout.contains("FAIL"));
    assert_eq!(stdout.lines().last(), Some("PASS"));
}

#[test]
fn binary_parity_bert_passes_with_table() {
    let (code, stdout, stderr) =
        run_parity_binary("bert_mlm", "bert_mlm/ref_pet_text.safetensors", &[]);
    assert!(
        stdout.starts_with("reference ") && stdout.contains("(bert, pet, P = 7, prompt)"),
        "{stdout}"
    );
    check_passing_table(
        &stdout,
        &stderr,
        code,
        &[
            ("loss", "[]"),
            ("logits", "[4, 3]"),
            ("prompt_grad", "[7, 48]"),
            ("hidden_states.2", "[4, 29, 48]"),
        ],
    );
}

#[test]
fn binary_parity_t5_passes_with_table() {
    let (code, stdout, stderr) =
        run_parity_binary("t5_v1_1", "t5_v1_1/ref_seq2seq_random.safetensors", &[]);
    assert!(stdout.contains("(t5, seq2seq, P = 7, prompt)"), "{stdout}");
    check_passing_table(
        &stdout,
        &stderr,
        code,
        &[
            ("loss", "[]"),
            ("logits", "[4, 8, 176]"),
            ("prompt_grad", "[7, 40]"),
            ("encoder_hidden_states.2", "[4, 36, 40]"),
            ("decoder_hidden_states.3", "[4, 8, 40]"),
        ],
    );
}

/// The first line names the method the reference checks: a prefix reference's placement
/// (PEFT's for the files PEFT made) and projection, a P-tuning reference's encoder.
#[test]
fn binary_parity_names_the_method_it_checks() {
    for (model, reference, method) in [
        (
            "t5_v1_0",
            "deep/t5_v1_0/ref_seq2seq_prefix_peft.safetensors",
            "(t5, seq2seq, P = 3, prefix (peft)) on cpu",
        ),
        (
            "bert_mlm",
            "deep/bert_mlm/ref_pet_prefix_papers_proj.safetensors",
            "prefix (papers, projection)) on cpu",
        ),
        (
            "bert_mlm",
            "deep/bert_mlm/ref_pet_ptuning_lstm.safetensors",
            "p-tuning (lstm)) on cpu",
        ),
    ] {
        let (code, stdout, stderr) = run_parity_binary(model, reference, &[]);
        // then the CPU kernels that ran, in brackets
        let first = stdout.lines().next().unwrap_or("");
        assert!(
            first.contains(&format!("{method} (")),
            "{reference}: {first}"
        );
        assert_eq!(code, 0, "{reference}: {stdout}{stderr}");
        assert_eq!(stdout.lines().last(), Some("PASS"), "{reference}");
    }
}

#[test]
fn binary_parity_exits_1_when_a_tensor_fails() {
    // no float32 engine matches PyTorch to 1e-15 on every tensor
    let (code, stdout, _) = run_parity_binary(
        "t5_flan",
        "t5_flan/ref_seq2seq_random.safetensors",
        &["--tol", "1e-15"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("FAIL"));
}

/// A generation reference too long for a model's sliding window named `--max-new-tokens`,
/// which parity has not: the length is the reference file's (verification 29, F3). The
/// mistral reference: 4 prompt rows, rows of up to 24 tokens, 8 new tokens (35 positions).
#[test]
fn binary_parity_names_the_reference_for_a_generation_past_the_window() {
    let scratch = ScratchDir::new("parity_window");
    let model = common::windowed_mistral(scratch.path(), 30);
    let reference = model.join("ref_generate_random.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(["parity", "--model"])
        .arg(&model)
        .arg("--reference")
        .arg(&reference)
        .output()
        .expect("run softprompt");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let want = format!(
        "{}: its max_new_tokens (8) cannot be generated here: 8 new tokens",
        reference.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!stderr.contains("--max-new-tokens"), "{stderr}");
}

#[test]
fn binary_parity_rejects_unknown_device() {
    let (code, stdout, stderr) = run_parity_binary(
        "bert_mlm",
        "bert_mlm/ref_mlm_random.safetensors",
        &["--device", "tpu"],
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("--device") && stderr.contains("tpu"),
        "{stderr}"
    );
}

#[test]
fn binary_parity_rejects_unknown_precision() {
    let (code, stdout, stderr) = run_parity_binary(
        "bert_mlm",
        "bert_mlm/ref_mlm_random.safetensors",
        &["--precision", "fp8"],
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("--precision")
            && stderr.contains("fp8")
            && stderr.contains("bf16, f32 (or fp32, float32) or mixed"),
        "{stderr}"
    );
}

/// The CPU computes in float32 whatever `--precision` says, and passes at float32's 1e-4;
/// given bf16 or mixed, it says so on stderr (it was silent: a user asking for bf16 on the
/// CPU never learnt the run was float32).
#[test]
fn binary_parity_on_cpu_takes_any_precision() {
    for precision in ["bf16", "f32", "mixed"] {
        let (code, stdout, stderr) = run_parity_binary(
            "t5_v1_0",
            "t5_v1_0/ref_seq2seq_text.safetensors",
            &["--precision", precision],
        );
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("1e-4"), "{stdout}");
        let warned = format!(
            "warning: --precision {precision} applies on cuda and emu: the CPU computes in float32"
        );
        assert_eq!(stderr.contains(&warned), precision != "f32", "{stderr}");
    }
    // not given: no warning
    let (code, stdout, stderr) =
        run_parity_binary("t5_v1_0", "t5_v1_0/ref_seq2seq_text.safetensors", &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stderr.contains("--precision"), "{stderr}");
}

/// Older BERT checkpoints spell LayerNorm parameters `gamma`/`beta` and may store the tied
/// decoder (`cls.predictions.decoder.{weight,bias}`) explicitly: the same model, so the same
/// parity.
#[test]
fn parity_with_legacy_bert_checkpoint_spellings() {
    use common::{edit_safetensors, ScratchDir};
    let scratch = ScratchDir::new("legacy");
    let model = scratch.copy_model("bert_mlm", "bert_mlm");
    edit_safetensors(&model.join("model.safetensors"), |t| {
        let names: Vec<String> = t.keys().cloned().collect();
        for name in names {
            let new = name
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            if new != name {
                let v = t.remove(&name).unwrap();
                t.insert(new, v);
            }
        }
        let wte = t["bert.embeddings.word_embeddings.weight"].clone();
        let bias = t["cls.predictions.bias"].clone();
        t.insert("cls.predictions.decoder.weight".into(), wte);
        t.insert("cls.predictions.decoder.bias".into(), bias);
    });
    let be = CpuBackend::<f32>::new();
    for reference in ["ref_mlm_random.safetensors", "ref_pet_text.safetensors"] {
        let r = Reference::read(&model.join(reference)).unwrap();
        let report = parity::run(&be, &model, &r, TOL).unwrap();
        assert!(report.passed(), "{reference}:\n{}", report.table());
    }
}

/// Sets `pairs` in `model`'s config.json.
fn set_config(model: &Path, pairs: &[(&str, serde_json::Value)]) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in pairs {
        cfg[*k] = v.clone();
    }
    std::fs::write(&path, cfg.to_string()).unwrap();
}

/// A copy of bert_mlm with its config's `tie_word_embeddings` set and its weights edited.
fn bert_mlm_copy(scratch: &ScratchDir, tie: bool, edit: impl FnOnce(&mut Tensors)) -> PathBuf {
    let model = scratch.copy_model("bert_mlm", "bert_mlm");
    common::edit_safetensors(&model.join("model.safetensors"), edit);
    set_config(&model, &[("tie_word_embeddings", tie.into())]);
    model
}

type Tensors = std::collections::HashMap<String, RawTensor>;

/// `t[from]` with `f` applied to each value, stored as `to`.
fn derive(t: &mut Tensors, from: &str, to: &str, f: impl Fn(usize, f32) -> f32) {
    let src = &t[from];
    let data: Vec<f32> = (src.as_f32().iter().enumerate())
        .map(|(i, &x)| f(i, x))
        .collect();
    let shape = src.shape.clone();
    t.insert(to.into(), RawTensor::f32(shape, &data));
}

/// The MLM head reads what transformers 5 reads: a stored `cls.predictions.decoder.weight` and
/// `decoder.bias`, tied or not (its tie fills only a missing key); else the word embeddings
/// and `cls.predictions.bias` (4.x's `decoder.bias` is that parameter). Each copy of bert_mlm
/// keeps, under the key transformers reads, the head the reference was computed with, and puts
/// a wrong value under the key it does not read (transformers 5.24 on each copy gives the
/// reference's logits exactly: checked with from_pretrained).
#[test]
fn bert_mlm_head_reads_the_tensors_transformers_reads() {
    const WTE: &str = "bert.embeddings.word_embeddings.weight";
    const DEC_W: &str = "cls.predictions.decoder.weight";
    let be = CpuBackend::<f32>::new();
    let ids =
        common::read_raw(&fixture("bert_mlm/ref_mlm_random.safetensors")).0["input_ids"].as_i64();
    let passes = |tie: bool, edit: &dyn Fn(&mut Tensors)| {
        let scratch = ScratchDir::new("mlm-head");
        let model = bert_mlm_copy(&scratch, tie, edit);
        let r = Reference::read(&model.join("ref_mlm_random.safetensors")).unwrap();
        parity::run(&be, &model, &r, TOL).unwrap().passed()
    };
    // the head's bias moves to decoder.bias; cls.predictions.bias becomes a dead, wrong copy
    let split_bias = |t: &mut Tensors| {
        derive(
            t,
            "cls.predictions.bias",
            "cls.predictions.decoder.bias",
            |_, x| x,
        );
        derive(t, "cls.predictions.bias", "cls.predictions.bias", |_, x| {
            x + 0.5
        });
    };
    let copy_wte = |t: &mut Tensors| derive(t, WTE, DEC_W, |_, x| x);
    // untied, as transformers 5 saves it: both biases stored
    assert!(passes(false, &|t| {
        copy_wte(t);
        split_bias(t)
    }));
    // a tied config over two different stored biases: transformers unties them
    assert!(passes(true, &split_bias));
    // a tied config over a stored decoder.weight: the embedding rows the batch never looks
    // up change, so only the head reading decoder.weight gives the reference's logits
    assert!(passes(true, &|t| {
        copy_wte(t);
        let c = t[WTE].shape[1];
        derive(t, WTE, WTE, |i, x| {
            if ids.contains(&((i / c) as i64)) {
                x
            } else {
                1.5 * x + 0.1
            }
        });
    }));
    // untied, as 4.x saves it: decoder.weight and the one bias
    assert!(passes(false, &copy_wte));
    // the untied decoder.weight is read: a changed one fails
    assert!(!passes(false, &|t| derive(t, WTE, DEC_W, |_, x| 1.1 * x)));
}

/// `tie_word_embeddings: false` over a BERT checkpoint without `cls.predictions.decoder.weight`:
/// an error naming the tensor (as a decoder's missing `lm_head.weight`), not a silent tie.
#[test]
fn untied_bert_without_decoder_weight_is_an_error() {
    let scratch = ScratchDir::new("untied-bert");
    let model = bert_mlm_copy(&scratch, false, |_| {});
    let r = Reference::read(&model.join("ref_mlm_random.safetensors")).unwrap();
    let Err(err) = parity::run(&CpuBackend::<f32>::new(), &model, &r, TOL) else {
        panic!("no cls.predictions.decoder.weight: the run must fail");
    };
    let err = err.to_string();
    assert!(
        err.contains("cls.predictions.decoder.weight") && err.contains("tie_word_embeddings"),
        "{err}"
    );
}

/// An explicit T5 `is_gated_act` wins over the one `feed_forward_proj` implies, as in
/// transformers (config.json's keys are set after the derived ones): v1.0 (relu, `wi`) spelled
/// "gated-relu" with `is_gated_act: false`, and v1.1 (`wi_0`, `wi_1`, its `dense_act_fn`
/// gelu_new) spelled "relu" with `is_gated_act: true`, are the committed models.
#[test]
fn t5_explicit_is_gated_act_wins() {
    let be = CpuBackend::<f32>::new();
    for (name, proj, gated) in [("t5_v1_0", "gated-relu", false), ("t5_v1_1", "relu", true)] {
        let scratch = ScratchDir::new("t5-gated");
        let model = scratch.copy_model(name, name);
        set_config(
            &model,
            &[
                ("feed_forward_proj", proj.into()),
                ("is_gated_act", gated.into()),
            ],
        );
        let r = Reference::read(&model.join("ref_seq2seq_random.safetensors")).unwrap();
        let report = parity::run(&be, &model, &r, TOL).unwrap();
        assert!(report.passed(), "{name}:\n{}", report.table());
    }
}

/// Decoder-only checkpoints are spelled several ways: BLOOM with or without `transformer.`
/// (bloom-560m has none) and with a stored copy of the tied head; Llama-family keys without
/// `model.`; a config that says tied while the checkpoint holds its own `lm_head.weight` (as
/// transformers 5 does, the stored head is used). Same model, same parity.
#[test]
fn parity_with_decoder_checkpoint_spellings() {
    use common::{edit_safetensors, ScratchDir};
    let be = CpuBackend::<f32>::new();
    let scratch = ScratchDir::new("decoder-spellings");
    let bloom = scratch.copy_model("bloom", "bloom_prefixed");
    edit_safetensors(&bloom.join("model.safetensors"), |t| {
        let names: Vec<String> = t.keys().cloned().collect();
        for name in names {
            let v = t.remove(&name).unwrap();
            t.insert(format!("transformer.{name}"), v);
        }
        let wte = t["transformer.word_embeddings.weight"].clone();
        t.insert("lm_head.weight".into(), wte);
    });
    let llama = scratch.copy_model("llama", "llama_unprefixed");
    edit_safetensors(&llama.join("model.safetensors"), |t| {
        let names: Vec<String> = t.keys().cloned().collect();
        for name in names {
            if let Some(short) = name.strip_prefix("model.") {
                let v = t.remove(&name).unwrap();
                t.insert(short.to_string(), v);
            }
        }
    });
    set_config(&llama, &[("tie_word_embeddings", true.into())]);
    for (model, reference) in [
        (&bloom, "ref_causal_random.safetensors"),
        (&bloom, "ref_generate_random.safetensors"),
        (&llama, "ref_causal_text.safetensors"),
        (&llama, "ref_generate_random.safetensors"),
    ] {
        let r = Reference::read(&model.join(reference)).unwrap();
        let report = parity::run(&be, model, &r, TOL).unwrap();
        assert!(report.passed(), "{reference}:\n{}", report.table());
    }
}

/// A config that says the head is not tied, over a checkpoint without `lm_head.weight`: an
/// error naming the tensor, not a silent tie.
#[test]
fn untied_decoder_without_lm_head_is_an_error() {
    use common::ScratchDir;
    let scratch = ScratchDir::new("untied-decoder");
    let qwen = scratch.copy_model("qwen2", "qwen2");
    set_config(&qwen, &[("tie_word_embeddings", false.into())]);
    let r = Reference::read(&qwen.join("ref_causal_random.safetensors")).unwrap();
    let Err(err) = parity::run(&CpuBackend::<f32>::new(), &qwen, &r, TOL) else {
        panic!("no lm_head.weight: the run must fail");
    };
    let err = err.to_string();
    assert!(
        err.contains("lm_head.weight") && err.contains("tie_word_embeddings"),
        "{err}"
    );
}

/// T5 checkpoints are spelled several ways too, each loaded as transformers loads it into
/// T5ForConditionalGeneration: the embeddings stored only as `decoder.embed_tokens.weight`
/// (transformers ties it with `shared`), and every key under T5ForSequenceClassification's
/// base-model prefix `transformer.` beside its `classification_head.*` (transformers strips the
/// prefix). Both were refused naming only `encoder.embed_tokens.weight`. Same model, same
/// parity (t5_v1_0 is tied: its head is the embeddings).
#[test]
fn parity_with_t5_checkpoint_spellings() {
    use common::edit_safetensors;
    let be = CpuBackend::<f32>::new();
    let scratch = ScratchDir::new("t5-spellings");
    let decoder_only = scratch.copy_model("t5_v1_0", "t5_decoder_embed_tokens");
    edit_safetensors(&decoder_only.join("model.safetensors"), |t| {
        let shared = t.remove("shared.weight").unwrap();
        t.insert("decoder.embed_tokens.weight".into(), shared);
    });
    let prefixed = scratch.copy_model("t5_v1_0", "t5_for_sequence_classification");
    edit_safetensors(&prefixed.join("model.safetensors"), |t| {
        let names: Vec<String> = t.keys().cloned().collect();
        for name in names {
            let v = t.remove(&name).unwrap();
            t.insert(format!("transformer.{name}"), v);
        }
        let c = t["transformer.shared.weight"].shape[1];
        let head = RawTensor::f32(vec![c, c], &vec![0.5; c * c]);
        t.insert("classification_head.dense.weight".into(), head);
    });
    for model in [&decoder_only, &prefixed] {
        let r = Reference::read(&model.join("ref_seq2seq_random.safetensors")).unwrap();
        let report = parity::run(&be, model, &r, TOL).unwrap();
        assert!(report.passed(), "{}:\n{}", model.display(), report.table());
    }
    // none of the three names: the refusal names `shared.weight` and the other two
    let none = scratch.copy_model("t5_v1_0", "t5_no_embeddings");
    edit_safetensors(&none.join("model.safetensors"), |t| {
        t.remove("shared.weight").unwrap();
    });
    let r = Reference::read(&none.join("ref_seq2seq_random.safetensors")).unwrap();
    let Err(err) = parity::run(&be, &none, &r, TOL) else {
        panic!("no embeddings: the run must fail");
    };
    let want = "tensor `shared.weight`: missing from ";
    let also = "; nor is `encoder.embed_tokens.weight` or `decoder.embed_tokens.weight` (T5 \
                reads its embeddings from any one of the three)";
    let err = err.to_string();
    assert!(err.contains(want) && err.ends_with(also), "{err}");
}

/// T5 with `tie_word_embeddings: false` and no `lm_head.weight` ran with `shared.weight` as
/// its head, silently (scores moved by up to 32 nats against the real head): refused as
/// BERT, BLOOM and Llama refuse it, naming the tensor and the flag. A tied T5 (v1.0: no key,
/// no lm_head) keeps loading (`parity_passes_on_every_committed_fixture`).
#[test]
fn untied_t5_without_lm_head_is_an_error() {
    let scratch = ScratchDir::new("untied-t5");
    let flan = scratch.copy_model("t5_flan", "t5_flan");
    common::edit_safetensors(&flan.join("model.safetensors"), |t| {
        t.remove("lm_head.weight").unwrap();
    });
    let r = Reference::read(&flan.join("ref_seq2seq_random.safetensors")).unwrap();
    let Err(err) = parity::run(&CpuBackend::<f32>::new(), &flan, &r, TOL) else {
        panic!("no lm_head.weight: the run must fail");
    };
    assert_eq!(
        err.to_string(),
        "tensor `lm_head.weight`: missing, and config.json says tie_word_embeddings: false (the \
         head is not shared.weight)"
    );
    // tied, the same folder's head is `shared.weight`, as transformers ties it
    set_config(&flan, &[("tie_word_embeddings", true.into())]);
    let cfg = softprompt::internals::config::ModelConfig::load(&flan).unwrap();
    let store = softprompt::internals::weights::WeightStore::open(&flan).unwrap();
    softprompt::internals::models::Model::from_config(&CpuBackend::<f32>::new(), &store, cfg)
        .expect("a tied T5 without lm_head.weight loads");
}

#[test]
fn binary_parity_decoder_passes_with_table() {
    let (code, stdout, stderr) =
        run_parity_binary("llama", "llama/ref_causal_random.safetensors", &[]);
    assert!(
        stdout.contains("(llama, causal, P = 5, prompt)"),
        "{stdout}"
    );
    check_passing_table(
        &stdout,
        &stderr,
        code,
        &[
            ("loss", "[]"),
            ("logits", "[3, 25, 304]"),
            ("prompt_grad", "[5, 48]"),
            ("hidden_states.2", "[3, 30, 48]"),
        ],
    );
    let (code, stdout, stderr) =
        run_parity_binary("bloom", "bloom/ref_generate_random.safetensors", &[]);
    assert!(
        stdout.contains("(bloom, generate, P = 4, prompt)"),
        "{stdout}"
    );
    check_passing_table(
        &stdout,
        &stderr,
        code,
        &[
            ("generated_logits", "[3, 8, 304]"),
            ("generated_ids", "[24]"),
        ],
    );
}

/// P-tuning (PEFT P_TUNING) references, MLP and LSTM encoders, on BERT, T5 (whose PEFT table
/// holds 2P rows, of which the model reads the first P) and the decoder-only models: the
/// encoder's output is PEFT's prompt, and the step's prompt gradient taken back through the
/// encoder gives PEFT's gradient of every encoder tensor, at 1e-4.
const PTUNING_REFERENCES: [(&str, &str); 7] = [
    ("t5_v1_0", "t5_v1_0/ref_seq2seq_ptuning_mlp.safetensors"),
    ("t5_v1_1", "t5_v1_1/ref_seq2seq_ptuning_lstm.safetensors"),
    ("bert_mlm", "bert_mlm/ref_mlm_ptuning_mlp.safetensors"),
    ("bert_mlm", "bert_mlm/ref_pet_ptuning_lstm.safetensors"),
    ("bloom", "bloom/ref_causal_ptuning_mlp.safetensors"),
    ("qwen2", "qwen2/ref_causal_ptuning_mlp.safetensors"),
    ("llama", "llama/ref_causal_ptuning_lstm.safetensors"),
];

#[test]
fn ptuning_references_pass_through_the_encoder() {
    let be = CpuBackend::<f32>::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (model, reference) in PTUNING_REFERENCES {
        let file = fixtures.join("deep").join(reference);
        let r = Reference::read(&file).unwrap();
        let encoder = r
            .encoder
            .as_ref()
            .expect("a p-tuning reference has its encoder");
        let report = parity::run(&be, &fixtures.join(model), &r, TOL).unwrap();
        assert!(report.passed(), "{reference}\n{}", report.table());
        assert!(
            report.skipped.is_empty(),
            "{reference}: {:?}",
            report.skipped
        );
        let names: Vec<&str> = report.rows.iter().map(|row| row.name.as_str()).collect();
        assert!(names.contains(&"prompt (encoder output)"), "{names:?}");
        for (tensor, _) in encoder.cfg.shapes() {
            let grad = format!("grad.encoder.{tensor}");
            assert!(names.contains(&grad.as_str()), "{reference}: no row {grad}");
        }
    }
}

/// Writes `--random-configs 1 --seed 7` (scripts/torch_reference.py) into `out` and self-checks
/// it; its T5 (one 8-wide head, gated-gelu, tied) has the worst-conditioned prompt gradient
/// seen: the float32 reference is 2.2e-5 from the exact one by rounding alone (on an Intel
/// Xeon; CPU vendors round differently), which the self-check's former float64 bound (2e-5)
/// refused. The case must stay hard (over 1e-5, twice the committed fixtures' worst), and the
/// self-check must still refuse a slip (T5's RMS-norm epsilon 10x) on it.
const SEED7_SELF_CHECK: &str = r#"
import os, sys, torch
sys.path.insert(0, sys.argv[1])
from torch_ref import check
from torch_ref.common import SELF_CHECK_TOL, rel_err
from torch_ref.fixtures import build_random_configs
from torch_ref.selfcheck import self_check
out = sys.argv[2]
build_random_configs(out, 1, 7)
ref = os.path.join(out, "t5_rand_0/ref_seq2seq_text.safetensors")
self_check(out, {"t5_rand_0/ref_seq2seq_text.safetensors"})
meta, t = check.read_ref(ref)
p = t["prompt"].double().requires_grad_(True)
check.ind_loss(os.path.dirname(ref), meta, t, torch.float64, prompt=p)["loss"].backward()
e = rel_err(t["prompt_grad"], p.grad)
assert 1e-5 < e < SELF_CHECK_TOL[torch.float64], e
init = check.IndT5.__init__
def eps10(self, *a, **k):
    init(self, *a, **k)
    self.eps *= 10
check.IndT5.__init__ = eps10
try:
    check.check_ref(ref)
    raise SystemExit("a T5 RMS-norm epsilon 10x too large passed the self-check")
except AssertionError as err:
    print(err)
print("ok")
"#;

/// The reference generator's self-check passes on its worst-conditioned random T5 and still
/// catches a slip there, and the engine passes parity on it at 1e-4. Needs torch,
/// transformers and peft, which CI does not have (about a minute):
/// `cargo test --test parity_fixtures -- --ignored`.
#[test]
#[ignore = "needs /work/venv/bin/python with torch, transformers and peft (not in CI)"]
fn reference_self_check_passes_on_an_ill_conditioned_random_t5() {
    let scratch = ScratchDir::new("seed7");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    run_python(
        SEED7_SELF_CHECK,
        &[scripts.as_os_str(), scratch.path().as_os_str()],
    );
    let model = scratch.path().join("t5_rand_0");
    let r = Reference::read(&model.join("ref_seq2seq_text.safetensors")).unwrap();
    let report = parity::run(&CpuBackend::<f32>::new(), &model, &r, TOL).unwrap();
    assert!(report.passed(), "{}", report.table());
}
