//! PyTorch's numbers: the PET scores and prompt gradient of a reference batch, and the
//! adapters PEFT saved (T5 and BERT) scored by `predict` and `eval`.

use crate::common::{fixture, softprompt, stdout_ok as ok};
use crate::{rel_l2, s, scratch, sentiment_files, sentiment_rows, write_jsonl};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::prompt::PromptTable;
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::{evaluate, Model, Params, Task, TaskKind, TaskSpec};
use softprompt::internals::weights::TensorFile;
use softprompt::internals::CpuBackend;
use std::path::Path;

const REL_TOL: f64 = 1e-4; // reference-format.md: a float32 CPU run passes at 1e-4

/// The reference format's measure of a scalar: |got − want| / max(|want|, 1e-6).
fn rel_err(got: f64, want: f64) -> f64 {
    Closeness::of(&[got], &[want], SCALAR_FLOOR).rel_err
}

/// PET on bert_mlm_bf16_sharded: the template "{text} It was [MASK]." in one segment gives
/// exactly the reference batch, and the scores are PyTorch's logits (log-softmaxed).
#[test]
fn pet_scores_match_pytorch_reference() {
    let be = CpuBackend::<f32>::new();
    let dir = fixture("bert_mlm_bf16_sharded");
    let model = Model::load(&be, &dir).unwrap();
    let reference = TensorFile::read(&dir.join("ref_pet_random.safetensors")).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["terrible".into(), "good".into()];
    spec.max_len = 35;
    let task = Task::new(spec, &model).unwrap();
    let texts = [
        "Quite a pleasant surprise.",
        "The actors seemed tired and the jokes fell flat.",
        "The movie was great.",
    ];
    let labels = ["positive", "negative", "positive"]; // class_labels [1, 0, 1]
    let jsonl: String = texts
        .iter()
        .zip(labels)
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    let data = Dataset::parse(Path::new("ref.jsonl"), &jsonl, &DataSpec::default()).unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    // the same ids, [MASK] positions and verbalizer as PyTorch's batch
    let (shape, ids) = reference.int("input_ids").unwrap();
    for (b, row) in enc.rows.iter().enumerate() {
        let want: Vec<i32> = ids[b * shape[1]..(b + 1) * shape[1]]
            .iter()
            .map(|&x| x as i32)
            .filter(|&x| x != 0)
            .collect();
        assert_eq!(row.ids, want, "row {b}");
    }
    let masks: Vec<usize> = enc.rows.iter().map(|r| r.mask_pos).collect();
    assert_eq!(masks, [10, 17, 8]);
    assert_eq!(task.verbalizer_ids, [57, 54]);
    // scores = log_softmax(PyTorch logits)
    let prompt = reference.float("prompt").unwrap();
    let params = Params {
        prompt: be.upload(DType::F32, &prompt.data).unwrap(),
        p: prompt.shape[0],
        d: prompt.shape[1],
        head: None,
        prefix: None,
    };
    let batch = task.batch(&enc, &[0, 1, 2]).unwrap();
    let scores = task.scores(&be, &model, &params, &batch).unwrap();
    let logits = &reference.float("logits").unwrap().data;
    let want = softprompt::internals::train::decode::log_softmax_rows(logits, 2);
    for (g, w) in scores.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{scores:?} vs {want:?}");
    }
    // the training loss is PyTorch's loss, and its gradient is PyTorch's prompt gradient
    let mut grads = softprompt::internals::train::Grads::zeros(&be, &params).unwrap();
    let loss = task
        .loss_and_grad(
            &be,
            &model,
            &params,
            &mut grads,
            &batch,
            softprompt::internals::models::Recompute::None,
        )
        .unwrap();
    let want_loss = reference.float("loss").unwrap().data[0] as f64;
    assert!(
        rel_err(loss, want_loss) < REL_TOL,
        "loss {loss} vs {want_loss}"
    );
    let got = be.download(&grads.prompt).unwrap();
    let want = &reference.float("prompt_grad").unwrap().data;
    let err = rel_l2(&got, want);
    assert!(err < REL_TOL, "prompt_grad rel err {err}");
}

/// The T5 adapter that PEFT saved (2 submodules: 14 rows, the first 7 used), scored by
/// `predict` through rank classification: each row's score for its own target is minus its
/// summed cross-entropy, so the scores add up to PyTorch's mean loss times the 20 target
/// tokens of t5_v1_0/ref_seq2seq_text.
#[test]
fn peft_t5_adapter_predict_matches_pytorch_loss() {
    let dir = scratch("peft_t5");
    let texts = [
        "The movie was great.",
        "I loved the acting, but the story was boring.",
        "In the end, the film is too long, too slow and far too pleased with itself, yet the music is lovely.",
        "Terrible plot.",
    ];
    let targets = [
        "positive, great movie",
        "negative, boring story",
        "positive, lovely music but too slow",
        "negative",
    ];
    let data = dir.join("rows.jsonl");
    let labels = ["t0", "t1", "t2", "t3"];
    write_jsonl(
        &data,
        &texts
            .iter()
            .zip(labels)
            .map(|(t, l)| (t.to_string(), l))
            .collect::<Vec<_>>(),
    );
    let verbalizer =
        serde_json::json!({"t0": targets[0], "t1": targets[1], "t2": targets[2], "t3": targets[3]})
            .to_string();
    let adapter = fixture("t5_v1_0/peft_adapter_2sub");
    let flags = [
        "--task",
        "seq2seq",
        "--template",
        "review: {text}",
        "--verbalizer",
        &verbalizer,
    ];
    let mut args = vec!["predict", "--prompt", s(&adapter), "--data", s(&data)];
    args.extend(flags);
    let out = ok(&softprompt(&args));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let total: f64 = lines
        .iter()
        .enumerate()
        .map(|(i, v)| v["scores"][labels[i]].as_f64().unwrap())
        .sum();
    let reference = TensorFile::read(&fixture("t5_v1_0/ref_seq2seq_text.safetensors")).unwrap();
    let want = reference.float("loss").unwrap().data[0] as f64;
    assert!(
        rel_err(-total / 20.0, want) < REL_TOL,
        "mean NLL {} vs PyTorch loss {want}",
        -total / 20.0
    );
    // every line carries the label and a score per label
    for v in &lines {
        assert!(labels.contains(&v["label"].as_str().unwrap()));
        assert_eq!(v["scores"].as_object().unwrap().len(), 4);
    }
    // eval --json on the same folder and flags: exactly the three keys, and the accuracy of
    // the predicted labels
    let mut args = vec![
        "eval",
        "--json",
        "--prompt",
        s(&adapter),
        "--data",
        s(&data),
    ];
    args.extend(flags);
    let v: serde_json::Value = serde_json::from_str(ok(&softprompt(&args)).trim()).unwrap();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["accuracy", "examples", "macro_f1"]);
    let correct = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| l["label"] == labels[*i])
        .count();
    assert_eq!(v["accuracy"].as_f64().unwrap(), correct as f64 / 4.0);
    assert_eq!(v["examples"], 4);
    // the 1-submodule adapter holds the same 7 rows: the same scores
    let one_sub = fixture("t5_v1_0/peft_adapter_1sub");
    let mut args = vec!["predict", "--prompt", s(&one_sub), "--data", s(&data)];
    args.extend(flags);
    assert_eq!(ok(&softprompt(&args)), out);
}

/// bert_mlm's adapter as PEFT saved it (TOKEN_CLS): eval and predict with the task flags,
/// and the model found through base_model_name_or_path.
#[test]
fn peft_bert_adapter_eval_and_predict() {
    let dir = scratch("peft_bert");
    let (_, dev) = sentiment_files(&dir);
    let adapter = fixture("bert_mlm/peft_adapter");
    let flags = [
        "--task",
        "pet",
        "--template",
        "{text} It was [MASK].",
        "--verbalizer",
        "positive=great,negative=bad",
    ];
    let mut args = vec!["eval", "--json", "--prompt", s(&adapter), "--data", s(&dev)];
    args.extend(flags);
    let v: serde_json::Value = serde_json::from_str(ok(&softprompt(&args)).trim()).unwrap();
    let mut args = vec!["predict", "--prompt", s(&adapter), "--data", s(&dev)];
    args.extend(flags);
    let preds = ok(&softprompt(&args));
    let gold: Vec<&str> = sentiment_rows()[36..].iter().map(|r| r.1).collect();
    let lines: Vec<serde_json::Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let correct = lines
        .iter()
        .zip(&gold)
        .filter(|(l, g)| l["label"] == **g)
        .count();
    assert_eq!(v["accuracy"].as_f64().unwrap(), correct as f64 / 12.0);
    // the scores are log-probabilities over the two labels, and they are the library's
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["positive", "negative"]);
    spec.label_words = vec!["great".into(), "bad".into()];
    spec.max_len = 59; // 64 positions - 5 prompt rows, as the CLI chooses
    let task = Task::new(spec, &model).unwrap();
    let table = PromptTable::load_peft(&adapter).unwrap();
    let params = Params {
        prompt: be.upload(DType::F32, &table.data).unwrap(),
        p: 5,
        d: 48,
        head: None,
        prefix: None,
    };
    let enc = task
        .encode(
            &model.tokenizer,
            &Dataset::load(&dev, &DataSpec::default()).unwrap(),
        )
        .unwrap();
    let (m, want) = evaluate(&be, &model, &task, &params, &enc, 64).unwrap();
    assert_eq!(m.accuracy, v["accuracy"].as_f64().unwrap());
    for (l, w) in lines.iter().zip(&want) {
        let (p, n) = (
            l["scores"]["positive"].as_f64().unwrap(),
            l["scores"]["negative"].as_f64().unwrap(),
        );
        assert!(((p.exp() + n.exp()) - 1.0).abs() < 1e-5);
        assert_eq!(p as f32, w.scores[0]);
        assert_eq!(n as f32, w.scores[1]);
    }
    // without --model and without task.json, the model folder comes from the adapter
    let out = softprompt(&["eval", "--prompt", s(&adapter), "--data", s(&dev)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no task.json"));
}
