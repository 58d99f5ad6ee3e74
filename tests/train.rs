//! Training, evaluation and prediction end to end, on the committed fixture models and small
//! generated data sets: PyTorch numbers for the PET and seq2seq scores, PEFT-saved prompts,
//! the CLI's outputs, determinism, and resume after SIGKILL.

mod common;

use common::{fixture, softprompt, stdout_ok as ok};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR, TENSOR_FLOOR};
use softprompt::internals::prompt::{PromptInit, PromptTable};
use softprompt::internals::train::checkpoint::{load_prompt_dir, Checkpoint};
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::optim::OptimConfig;
use softprompt::internals::train::{
    evaluate, Event, Model, Params, Task, TaskKind, TaskSpec, TrainConfig, Trainer,
};
use softprompt::internals::weights::TensorFile;
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    common::scratch_in("train_tests", name)
}

/// Sentiment rows made of words every fixture vocabulary holds.
fn sentiment_rows() -> Vec<(String, &'static str)> {
    let pos = ["great", "good", "fine", "funny", "lovely", "brilliant"];
    let neg = ["bad", "terrible", "awful", "boring", "dull", "slow"];
    let subjects = ["movie", "film", "story", "plot", "music", "comedy"];
    let patterns = [
        "the {s} was {a}.",
        "a {a} {s}!",
        "this {s} is really {a}.",
        "i think the {s} was so {a}.",
    ];
    let mut rows = Vec::new();
    let mut i = 0;
    for s in subjects {
        for p in patterns {
            for (words, label) in [(pos, "positive"), (neg, "negative")] {
                rows.push((p.replace("{s}", s).replace("{a}", words[i % 6]), label));
            }
            i += 1;
        }
    }
    rows
}

fn write_jsonl(path: &Path, rows: &[(String, &str)]) {
    let text: String = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

/// train.jsonl (36 rows) and dev.jsonl (12 rows) in `dir`.
fn sentiment_files(dir: &Path) -> (PathBuf, PathBuf) {
    let rows = sentiment_rows();
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    write_jsonl(&train, &rows[..36]);
    write_jsonl(&dev, &rows[36..]);
    (train, dev)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const REL_TOL: f64 = 1e-4; // reference-format.md: a float32 CPU run passes at 1e-4

/// The reference format's measure of a scalar: |got − want| / max(|want|, 1e-6).
fn rel_err(got: f64, want: f64) -> f64 {
    Closeness::of(&[got], &[want], SCALAR_FLOOR).rel_err
}

/// The reference format's measure of a tensor: ‖got − want‖ / ‖want‖.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    Closeness::of(got, want, TENSOR_FLOOR).rel_err
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

/// `cls` on the head-less BERT: the head trains with the prompt, is reported and saved, and
/// `eval` from the output folder reproduces the dev accuracy that training kept.
#[test]
fn cls_train_saves_head_and_eval_reproduces_dev() {
    let dir = scratch("cls");
    let (train, dev) = sentiment_files(&dir);
    let out_dir = dir.join("out");
    let stdout = ok(&softprompt(&[
        "train",
        "--model",
        s(&fixture("bert_nohead")),
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(&out_dir),
        "--task",
        "cls",
        "--prompt-len",
        "4",
        "--batch-size",
        "8",
        "--epochs",
        "6",
        "--eval-every",
        "5",
        "--lr",
        "0.05",
        "--no-progress",
        "--threads",
        "2",
    ]));
    assert!(stdout.contains("head 2 x 36 + 2 = 74"), "{stdout}");
    assert!(
        stdout.contains("trainable: prompt 4 x 36 = 144"),
        "{stdout}"
    );
    let saved = load_prompt_dir(&out_dir).unwrap();
    let head = saved.head.unwrap();
    assert_eq!((head.k, head.c), (2, 36));
    assert!(head.weight.iter().any(|&w| w != 0.0));
    let task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("task.json")).unwrap()).unwrap();
    assert_eq!(task["task"], "cls");
    assert_eq!(task["labels"], serde_json::json!(["negative", "positive"]));
    // PEFT loads the prompt onto a BertModel (FEATURE_EXTRACTION asks for no classifier)
    let adapter: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["task_type"], "FEATURE_EXTRACTION");
    assert_eq!(adapter["peft_type"], "PROMPT_TUNING");
    let v: serde_json::Value = serde_json::from_str(
        ok(&softprompt(&[
            "eval",
            "--json",
            "--prompt",
            s(&out_dir),
            "--data",
            s(&dev),
        ]))
        .trim(),
    )
    .unwrap();
    assert_eq!(v["accuracy"].as_f64(), task["dev_accuracy"].as_f64());
    assert_eq!(v["examples"], 12);
    // the loss went down: mean of the first and the last metrics lines
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect();
    assert!(
        losses.len() >= 3 && losses[losses.len() - 1] < losses[0] * 0.9,
        "{losses:?}"
    );
}

fn tiny_trainer_run(seed: u64, steps: u64) -> Vec<f64> {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 50;
    let task = Task::new(spec, &model).unwrap();
    let rows = sentiment_rows();
    let jsonl: String = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    let data = Dataset::parse(Path::new("mem.jsonl"), &jsonl, &DataSpec::default()).unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    let cfg = TrainConfig {
        prompt_len: 5,
        init: PromptInit::Random { std: 1.0 },
        optim: OptimConfig::lester(),
        batch_size: 8,
        max_steps: Some(steps),
        save_every: 0,
        log_every: 0,
        seed,
        ..TrainConfig::default()
    };
    let out = scratch(&format!("seed_{seed}_{steps}_{}", std::process::id()));
    let mut t = Trainer::new(&be, &model, &task, &enc, None, None, cfg, &out).unwrap();
    let mut losses = Vec::new();
    t.run(&mut |e| {
        if let Event::Step(i) = e {
            losses.push(i.loss);
        }
    })
    .unwrap();
    losses
}

/// The same seed gives the same loss curve, bit for bit; another seed another one.
#[test]
fn same_seed_same_loss_curve() {
    let a = tiny_trainer_run(11, 14);
    let b = tiny_trainer_run(11, 14);
    assert_eq!(a.len(), 14);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let c = tiny_trainer_run(12, 14);
    assert_ne!(a, c);
    // Lester's Adafactor at 0.3 learns this quickly
    let early: f64 = a[..4].iter().sum::<f64>() / 4.0;
    let late: f64 = a[10..].iter().sum::<f64>() / 4.0;
    assert!(late < early, "{a:?}");
}

fn train_args<'a>(
    model: &'a str,
    train: &'a str,
    dev: &'a str,
    out: &'a str,
    steps: &'a str,
    lr: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--train",
        train,
        "--dev",
        dev,
        "--out",
        out,
        "--task",
        "pet",
        "--verbalizer",
        "positive=great,negative=bad",
        "--prompt-len",
        "4",
        "--batch-size",
        "5",
        "--max-steps",
        steps,
        "--eval-every",
        "25",
        "--save-every",
        "10",
        "--log-every",
        "5",
        "--optimizer",
        "adamw",
        "--lr",
        lr,
        "--warmup-steps",
        "20",
        "--seed",
        "3",
        "--threads",
        "2",
        "--no-progress",
    ]
}

/// Training through the CUDA launchers and the float32 build of every kernel (emulated) gives
/// the CPU backend's prompt to float32 rounding: the optimizer, the loss heads and every
/// backward kernel agree step after step, not only in one parity step. The bf16 engine lands
/// near it.
#[cfg(feature = "emu")]
#[test]
fn emu_f32_training_matches_the_cpu() {
    let dir = scratch("emu_f32");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let prompt = |device: &str, precision: &str| -> Vec<f32> {
        let out = dir.join(format!("{device}_{precision}"));
        let mut args = train_args(s(&model), s(&train), s(&dev), s(&out), "12", "0.05");
        args.extend(["--device", device, "--precision", precision]);
        ok(&softprompt(&args));
        load_prompt_dir(&out).unwrap().prompt.data
    };
    let cpu = prompt("cpu", "f32");
    let f32_err = rel_l2(&prompt("emu", "f32"), &cpu);
    assert!(f32_err < 1e-5, "emu --precision f32 vs cpu: {f32_err:.2e}");
    let bf16_err = rel_l2(&prompt("emu", "bf16"), &cpu);
    assert!(
        bf16_err < 2e-2,
        "emu --precision bf16 vs cpu: {bf16_err:.2e}"
    );
    println!(
        "BERT pet, AdamW, 12 steps, prompt vs cpu: emu f32 {f32_err:.2e}, bf16 {bf16_err:.2e}"
    );

    // T5 seq2seq with Adafactor, on a realistic-weight-scale model (the harsh fixtures amplify
    // float32's own rounding differences over the steps)
    let t5_prompt = |name: &str, device: &str, precision: &str| -> Vec<f32> {
        let model = fixture(&format!("realistic/{name}"));
        let out = dir.join(format!("{name}_{device}_{precision}"));
        ok(&softprompt(&[
            "train",
            "--model",
            s(&model),
            "--train",
            s(&train),
            "--dev",
            s(&dev),
            "--out",
            s(&out),
            "--task",
            "seq2seq",
            "--verbalizer",
            "positive=great,negative=terrible",
            "--prompt-len",
            "3",
            "--batch-size",
            "4",
            "--max-steps",
            "8",
            "--eval-every",
            "4",
            "--optimizer",
            "adafactor",
            "--seed",
            "3",
            "--threads",
            "2",
            "--no-progress",
            "--device",
            device,
            "--precision",
            precision,
        ]));
        load_prompt_dir(&out).unwrap().prompt.data
    };
    let cpu = t5_prompt("t5_rand_2", "cpu", "f32");
    let f32_err = rel_l2(&t5_prompt("t5_rand_2", "emu", "f32"), &cpu);
    assert!(
        f32_err < 1e-5,
        "T5: emu --precision f32 vs cpu: {f32_err:.2e}"
    );
    let bf16_err = rel_l2(&t5_prompt("t5_rand_2", "emu", "bf16"), &cpu);
    assert!(
        bf16_err < 5e-2,
        "T5: emu --precision bf16 vs cpu: {bf16_err:.2e}"
    );
    println!(
        "T5 seq2seq, Adafactor, 8 steps, prompt vs cpu: emu f32 {f32_err:.2e}, bf16 {bf16_err:.2e}"
    );

    // a ReLU T5 (bf16-exact weights): the mixed build keeps float32's ReLU masks, so its
    // prompt follows the CPU's through training, where the bf16 build's drifts
    let cpu = t5_prompt("t5_rand_0", "cpu", "f32");
    let mixed_err = rel_l2(&t5_prompt("t5_rand_0", "emu", "mixed"), &cpu);
    let bf16_err = rel_l2(&t5_prompt("t5_rand_0", "emu", "bf16"), &cpu);
    println!(
        "ReLU T5, Adafactor, 8 steps, prompt vs cpu: emu mixed {mixed_err:.2e}, bf16 {bf16_err:.2e}"
    );
    assert!(
        mixed_err < 1e-4,
        "ReLU T5: emu --precision mixed vs cpu: {mixed_err:.2e}"
    );
    // the model is one whose masks bf16 flips (measured 3.5e-2), so the mixed build's
    // agreement above is not for want of masks near zero
    assert!(
        bf16_err > 1e-2,
        "ReLU T5: emu --precision bf16 vs cpu: {bf16_err:.2e}"
    );
}

/// Resuming with another thread count, on another device or build of the kernels, or with
/// other CPU kernels (GEMM path, SIMD set) than the checkpoint's still runs, and says that the
/// result will not be the same.
#[test]
fn resume_with_other_threads_or_device_warns() {
    let dir = scratch("threads");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let out = dir.join("out");
    let args = train_args(s(&model), s(&train), s(&dev), s(&out), "20", "0.05");
    ok(&softprompt(&args));
    // as if the run had stopped at its last checkpoint, trained with `threads` threads
    let path = out.join("checkpoint.safetensors");
    let mut resume = args.clone();
    resume.push("--resume");
    let wrote = Checkpoint::load(&path).unwrap().state.kernels;
    assert!(
        wrote.starts_with("gemm/"),
        "the CPU kernels that wrote it: {wrote:?}"
    );
    let resume_from = |threads: usize, device: Option<&str>, kernels: Option<&str>| {
        let mut ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.state.device, "cpu", "the device that wrote it");
        ck.state.threads = threads;
        if let Some(d) = device {
            ck.state.device = d.into();
        }
        // a resume that takes no step writes no checkpoint: set what the test does not vary
        ck.state.kernels = kernels.unwrap_or(&wrote).into();
        ck.state.done = false;
        ck.save(&path).unwrap();
        ok(&softprompt(&resume))
    };
    let same = resume_from(2, None, None);
    assert!(
        same.contains("resumed at step")
            && same.contains("on cpu (kernels gemm/")
            && !same.contains("warning"),
        "{same}"
    );
    let other = resume_from(7, None, None);
    assert!(
        other.contains("trained with 7 threads and this run uses 2")
            && other.contains("--threads 7"),
        "{other}"
    );
    let blas = resume_from(2, None, Some("openblas/scalar"));
    assert!(
        blas.contains("trained with the CPU kernels openblas/scalar and this run uses gemm/")
            && blas.contains("--gemm openblas and SOFTPROMPT_SIMD=scalar")
            && !blas.contains("trained on"),
        "{blas}"
    );
    let moved = resume_from(2, Some("emu (mixed build)"), None);
    assert!(
        moved.contains("trained on emu (mixed build) and this run uses cpu")
            && !moved.contains("threads and this run"),
        "{moved}"
    );
}

/// A run killed with SIGKILL mid-way resumes from its last checkpoint and ends with the same
/// prompt, bit for bit, as an uninterrupted run with the same seed.
#[test]
fn killed_run_resumes_bit_identically() {
    let dir = scratch("resume");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let steps = "600";
    let (full, cut) = (dir.join("full"), dir.join("cut"));
    ok(&softprompt(&train_args(
        s(&model),
        s(&train),
        s(&dev),
        s(&full),
        steps,
        "0.05",
    )));

    // start, wait for a checkpoint past step 40, kill -9
    let mut child = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(train_args(
            s(&model),
            s(&train),
            s(&dev),
            s(&cut),
            steps,
            "0.05",
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = cut.join("checkpoint.safetensors");
    let killed_at = loop {
        if let Ok(ck) = Checkpoint::load(&ckpt) {
            if ck.state.step >= 40 {
                child.kill().unwrap(); // SIGKILL
                break ck.state.step;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.wait().unwrap();
    // what the kill left is readable: the checkpoint and the exported prompt
    let ck = Checkpoint::load(&ckpt).unwrap();
    assert!(
        !ck.state.done && ck.state.step >= killed_at && ck.state.step < 600,
        "step {}",
        ck.state.step
    );
    load_prompt_dir(&cut).unwrap();

    let mut args = train_args(s(&model), s(&train), s(&dev), s(&cut), steps, "0.05");
    args.push("--resume");
    let stdout = ok(&softprompt(&args));
    assert!(
        stdout.contains(&format!("resumed at step {}", ck.state.step))
            || stdout.contains("resumed at step"),
        "{stdout}"
    );

    for file in ["adapter_model.safetensors", "task.json"] {
        assert_eq!(
            std::fs::read(full.join(file)).unwrap(),
            std::fs::read(cut.join(file)).unwrap(),
            "{file} differs"
        );
    }
    let (a, b) = (
        Checkpoint::load(&full.join("checkpoint.safetensors")).unwrap(),
        Checkpoint::load(&ckpt).unwrap(),
    );
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.state, b.state);
    assert_eq!(a.state.step, 600);
    // and the same loss curve in the metrics log
    let losses = |d: &Path| -> Vec<(u64, u64)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some((v["step"].as_u64()?, v["loss"].as_f64()?.to_bits()))
            })
            .collect()
    };
    assert_eq!(losses(&full), losses(&cut));
    assert_eq!(losses(&full).len(), 120);

    // resuming with other settings is refused, naming the difference
    let mut args = train_args(s(&model), s(&train), s(&dev), s(&cut), steps, "0.1");
    args.push("--resume");
    let out = softprompt(&args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other settings") && err.contains("lr: 0.05 -> 0.1"),
        "{err}"
    );
}

/// Data errors name the file and the line, and stop with exit code 2.
#[test]
fn data_errors_name_file_and_line() {
    let dir = scratch("errors");
    let (train, _) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let run = |data: &Path, extra: &[&str]| -> String {
        let mut args = vec![
            "train",
            "--model",
            s(&model),
            "--train",
            s(data),
            "--out",
            s(&dir),
            "--task",
            "pet",
            "--max-steps",
            "1",
            "--no-progress",
        ];
        args.extend(extra);
        let out = softprompt(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"the movie was great.\", \"label\": \"positive\"}\n{\"text\": \"meh.\", \"label\": \"neutral\"}\n").unwrap();
    let err = run(
        &bad,
        &[
            "--labels",
            "negative,positive",
            "--verbalizer",
            "positive=great,negative=bad",
        ],
    );
    assert!(
        err.contains(&format!("{}:2: unknown label \"neutral\"", bad.display())),
        "{err}"
    );
    std::fs::write(
        &bad,
        "{\"text\": \"the movie was great.\", \"label\": \"positive\"}\n{\"text\": \"meh.\"\n",
    )
    .unwrap();
    assert!(run(&bad, &[]).contains(&format!("{}:2: malformed line", bad.display())));
    let tsv = dir.join("bad.tsv");
    std::fs::write(&tsv, "sentence\tlabel\nthe movie was great.\tpositive\n").unwrap();
    assert!(run(&tsv, &[]).contains(&format!("{}:1: missing field \"text\"", tsv.display())));
    assert!(run(
        &tsv,
        &[
            "--text-field",
            "sentence",
            "--verbalizer",
            "positive=great,negative=wonderful"
        ]
    )
    .contains("\"wonderful\" tokenizes to 2 pieces"));
    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    assert!(run(&empty, &[]).contains(&format!(
        "{}:1: the file holds no examples",
        empty.display()
    )));
    // the device flag: no GPU on this machine, and emu needs its feature
    let out = softprompt(&[
        "train",
        "--model",
        s(&model),
        "--train",
        s(&train),
        "--out",
        s(&dir),
        "--device",
        "cuda",
    ]);
    if softprompt::internals::cuda::probe_cuda().is_err() {
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no CUDA device"));
    }
}

/// Templates: one {text} and (pet) one [MASK]; long texts are cut at the end of the text, the
/// template and [MASK] survive, and the cut rows are counted.
#[test]
fn templates_truncation_and_mask() {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.template = "[MASK] , {text}".into();
    spec.max_len = 9;
    let task = Task::new(spec.clone(), &model).unwrap();
    let data = Dataset::parse(Path::new("t.jsonl"), "{\"text\": \"the movie was great.\", \"label\": \"positive\"}\n{\"text\": \"the film was so so so boring and slow.\", \"label\": \"negative\"}\n", &DataSpec::default()).unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    assert_eq!(enc.truncated, 1);
    let tok = &model.tokenizer;
    // [CLS] [MASK] , the movie was great . [SEP]: 9 ids, not cut
    assert_eq!(
        enc.rows[0].ids,
        tok.encode("[MASK] , the movie was great.", true).unwrap()
    );
    assert!(!enc.rows[0].truncated);
    // the second row keeps [CLS] [MASK] , and [SEP] around the first 5 text tokens
    let mut want = tok.encode("[MASK] , the film was so so", true).unwrap();
    assert_eq!(want.len(), 9);
    assert_eq!(enc.rows[1].ids, std::mem::take(&mut want));
    assert!(enc.rows[1].truncated);
    assert_eq!((enc.rows[0].mask_pos, enc.rows[1].mask_pos), (1, 1));
    // PET's Chinese pattern: [MASK] first, then the text
    let zh = Task::new(
        TaskSpec {
            template: "[MASK]满意。{text}".into(),
            max_len: 40,
            ..spec.clone()
        },
        &model,
    )
    .unwrap();
    let data_zh = Dataset::parse(
        Path::new("zh.jsonl"),
        "{\"text\": \"很好的电影\", \"label\": \"positive\"}\n",
        &DataSpec::default(),
    )
    .unwrap();
    let row = &zh.encode(tok, &data_zh).unwrap().rows[0];
    assert_eq!(row.ids, tok.encode("[MASK]满意。很好的电影", true).unwrap());
    assert_eq!(row.ids.len(), 11); // [CLS] [MASK] 满 意 。 很 好 的 电 影 [SEP], one piece per character
    assert_eq!(
        (row.mask_pos, row.ids[1]),
        (1, tok.token_to_id("[MASK]").unwrap())
    );
    // wrong templates
    for (template, msg) in [
        ("{text}", "[MASK] exactly once"),
        ("[MASK] [MASK] {text}", "[MASK] exactly once"),
        ("no slot [MASK]", "{text} exactly once"),
    ] {
        let err = Task::new(
            TaskSpec {
                template: template.into(),
                ..spec.clone()
            },
            &model,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(msg), "{template}: {err}");
    }
    let err = Task::new(
        TaskSpec {
            kind: TaskKind::Cls,
            template: "{text} [MASK]".into(),
            ..spec.clone()
        },
        &model,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pet only"), "{err}");
    let err = Task::new(
        TaskSpec {
            max_len: 3,
            ..spec.clone()
        },
        &model,
    )
    .and_then(|t| t.encode(tok, &data))
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("t.jsonl:1: ") && err.contains("cannot hold the template"),
        "{err}"
    );
    // a head-less BERT cannot do pet; a T5 cannot do cls
    let nohead = Model::load(&be, &fixture("bert_nohead")).unwrap();
    assert!(Task::new(spec.clone(), &nohead)
        .unwrap_err()
        .to_string()
        .contains("use --task cls"));
    let t5 = Model::load(&be, &fixture("t5_flan")).unwrap();
    assert!(Task::new(TaskSpec::new(TaskKind::Cls, &["a", "b"]), &t5)
        .unwrap_err()
        .to_string()
        .contains("--task seq2seq"));
}

/// seq2seq on a T5 fixture with the same flags as the main job: it trains (the loss falls),
/// evaluates by rank classification, and decodes greedily.
#[test]
fn seq2seq_on_t5_fixture() {
    let dir = scratch("t5");
    let (train, dev) = sentiment_files(&dir);
    let out_dir = dir.join("out");
    let stdout = ok(&softprompt(&[
        "train",
        "--model",
        s(&fixture("t5_flan")),
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(&out_dir),
        "--task",
        "seq2seq",
        "--template",
        "review: {text}",
        "--prompt-len",
        "6",
        "--init",
        "class-labels",
        "--optimizer",
        "adafactor",
        "--batch-size",
        "6",
        "--epochs",
        "4",
        "--eval-every",
        "6",
        "--no-progress",
        "--threads",
        "2",
    ]));
    assert!(
        stdout.contains("targets [\"negative=negative\", \"positive=positive\"]"),
        "{stdout}"
    );
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect();
    // two full --log-every windows, and the last steps' line
    assert!(losses.len() == 3 && losses[2] < losses[0], "{losses:?}");
    let v: serde_json::Value = serde_json::from_str(
        ok(&softprompt(&[
            "eval",
            "--json",
            "--prompt",
            s(&out_dir),
            "--data",
            s(&dev),
        ]))
        .trim(),
    )
    .unwrap();
    assert_eq!(v["examples"], 12);
    let adapter: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["task_type"], "SEQ_2_SEQ_LM");
    assert_eq!(adapter["num_virtual_tokens"], 6);
    let greedy = ok(&softprompt(&[
        "predict",
        "--prompt",
        s(&out_dir),
        "--data",
        s(&dev),
        "--decode",
        "greedy",
        "--max-target-len",
        "4",
    ]));
    let first: serde_json::Value = serde_json::from_str(greedy.lines().next().unwrap()).unwrap();
    assert!(
        first["output"].is_string() && first["score"].as_f64().unwrap() < 0.0,
        "{first}"
    );
}

/// Early stopping: with a learning rate of 0 the dev accuracy never improves, so a patience of
/// 2 stops the run at the third evaluation; the kept prompt is the first one.
#[test]
fn early_stopping_and_sample_vocab_init() {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_nohead")).unwrap();
    let task = Task::new(
        TaskSpec {
            max_len: 40,
            ..TaskSpec::new(TaskKind::Cls, &["negative", "positive"])
        },
        &model,
    )
    .unwrap();
    let rows = sentiment_rows();
    let jsonl: String = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    let enc = task
        .encode(
            &model.tokenizer,
            &Dataset::parse(Path::new("m.jsonl"), &jsonl, &DataSpec::default()).unwrap(),
        )
        .unwrap();
    let cfg = TrainConfig {
        prompt_len: 3,
        init: PromptInit::SampleVocab {
            from_first: Some(10),
        },
        // a rate so small that no update changes a float32 prompt value (--lr 0 is refused):
        // dev accuracy never improves, so patience runs out
        optim: OptimConfig::adamw(1e-30, 0.0),
        batch_size: 8,
        max_steps: Some(100),
        eval_every: 5,
        patience: Some(2),
        save_every: 0,
        log_every: 0,
        ..TrainConfig::default()
    };
    let out = scratch("early_stop");
    let mut t = Trainer::new(&be, &model, &task, &enc, Some(&enc), None, cfg, &out).unwrap();
    // SAMPLE_VOCAB from the first 10 ids: every prompt row is one of those embedding rows
    let emb = model.word_embeddings(&be).unwrap();
    let prompt = be.download(&t.params.prompt).unwrap();
    for row in prompt.chunks(36) {
        assert!((0..10).any(|id| emb.data[id * 36..(id + 1) * 36] == *row));
    }
    let mut evals = Vec::new();
    let summary = t
        .run(&mut |e| {
            if let Event::Eval { step, best, .. } = e {
                evals.push((*step, *best))
            }
        })
        .unwrap();
    assert!(summary.early_stopped);
    assert_eq!(summary.steps, 15);
    assert_eq!(evals, [(5, true), (10, false), (15, false)]);
    assert_eq!(summary.best_step, 5);
    let task_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("task.json")).unwrap()).unwrap();
    assert_eq!(task_json["step"], 5);
}

/// seq2seq with free targets: the label field is the target text; evaluation decodes
/// greedily and counts exact matches, and predict prints the decoded text.
#[test]
fn seq2seq_free_targets() {
    let dir = scratch("free");
    let rows: Vec<(String, &str)> = sentiment_rows()
        .into_iter()
        .map(|(t, l)| {
            (
                t,
                if l == "positive" {
                    "great movie"
                } else {
                    "bad movie"
                },
            )
        })
        .collect();
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    write_jsonl(&train, &rows[..36]);
    write_jsonl(&dev, &rows[36..]);
    let out_dir = dir.join("out");
    let stdout = ok(&softprompt(&[
        "train",
        "--model",
        s(&fixture("t5_v1_1")),
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(&out_dir),
        "--task",
        "seq2seq",
        "--free-targets",
        "--max-target-len",
        "6",
        "--prompt-len",
        "4",
        "--optimizer",
        "adafactor",
        "--batch-size",
        "6",
        "--max-steps",
        "12",
        "--eval-every",
        "6",
        "--no-progress",
        "--threads",
        "2",
    ]));
    assert!(stdout.contains("free targets"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(
        ok(&softprompt(&[
            "eval",
            "--json",
            "--prompt",
            s(&out_dir),
            "--data",
            s(&dev),
        ]))
        .trim(),
    )
    .unwrap();
    let preds = ok(&softprompt(&[
        "predict",
        "--prompt",
        s(&out_dir),
        "--data",
        s(&dev),
    ]));
    let lines: Vec<serde_json::Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    // exact-match accuracy of the decoded texts is what eval reports
    let hits = lines
        .iter()
        .zip(&rows[36..])
        .filter(|(l, r)| l["output"] == r.1)
        .count();
    assert_eq!(v["accuracy"].as_f64().unwrap(), hits as f64 / 12.0);
    for l in &lines {
        assert_eq!(l["label"], l["output"]);
        assert!(l["score"].as_f64().unwrap() <= 0.0);
    }
}
