//! `--task causal` against the PyTorch + PEFT decoder-only references: the task builds
//! PEFT's causal-LM row (the filled template, then the target, labels on the target only),
//! and its rank score and training loss on that row are what PyTorch's logits give.

mod common;

use common::{fixture, softprompt, stdout_ok as ok};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::{Grads, Model, Task, TaskKind, TaskSpec};
use softprompt::internals::weights::TensorFile;
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};

const REL_TOL: f64 = 1e-4;

/// Row 0 of every `ref_causal_text` is "Tweet : Great movie. Label : positive" with labels on
/// " positive" only, as PEFT's guide builds it. The task (template "Tweet : {text} Label :",
/// target " positive") gives the same ids and labels plus the end-of-sequence token it appends;
/// its score for the gold label is the sum of PyTorch's log-probabilities of those tokens
/// (the reference's logits at the positions before them), and its loss their mean.
#[test]
fn causal_task_rebuilds_peft_rows_and_scores_them_as_pytorch() {
    let be = CpuBackend::<f32>::new();
    for name in ["bloom", "llama", "qwen2"] {
        let dir = fixture(name);
        let model = Model::load(&be, &dir).unwrap();
        let reference = TensorFile::read(&dir.join("ref_causal_text.safetensors")).unwrap();
        let mut spec = TaskSpec::new(TaskKind::Causal, &["negative", "positive"]);
        spec.template = "Tweet : {text} Label :".into();
        spec.label_words = vec![" negative".into(), " positive".into()];
        spec.max_target_len = 8;
        let task = Task::new(spec, &model).unwrap();
        let jsonl = serde_json::json!({"text": "Great movie.", "label": "positive"}).to_string();
        let data = Dataset::parse(Path::new("row.jsonl"), &jsonl, &DataSpec::default()).unwrap();
        let enc = task.encode(&model.tokenizer, &data).unwrap();
        let batch = task.batch(&enc, &[0]).unwrap();
        let (joined, labels) =
            softprompt::internals::train::causal::joined(&batch.tokens, &batch.targets, batch.l, 0);
        // PyTorch's row 0: its real ids and labels
        let (shape, ids) = reference.int("input_ids").unwrap();
        let t = shape[1];
        let (_, mask) = reference.int("attention_mask").unwrap();
        let (_, ref_labels) = reference.int("labels").unwrap();
        let n = mask[..t].iter().filter(|&&m| m != 0).count();
        let want_ids: Vec<i32> = ids[..n].iter().map(|&x| x as i32).collect();
        let want_labels: Vec<i32> = ref_labels[..n].iter().map(|&x| x as i32).collect();
        let eos = *enc.rows[0].target.last().unwrap();
        assert_eq!(joined.ids[..n], want_ids[..], "{name}: ids");
        assert_eq!(joined.ids.len(), n + 1, "{name}: one token (EOS) appended");
        assert_eq!(joined.ids[n], eos, "{name}");
        assert_eq!(labels[..n], want_labels[..], "{name}: labels");
        assert_eq!(labels[n], eos, "{name}");
        // the gold target's log-likelihood from PyTorch's logits (B, T, V): token at position
        // j is predicted by position j - 1
        let logits = reference.float("logits").unwrap();
        let v = logits.shape[2];
        let targets: Vec<(usize, i32)> = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l >= 0)
            .map(|(j, &l)| (j, l))
            .collect();
        let want_score: f64 = targets
            .iter()
            .map(|&(j, id)| {
                let row = &logits.data[(j - 1) * v..j * v];
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                row[id as usize] as f64 - lse
            })
            .sum();
        let params = common::reference_params(&be, &reference);
        let scores = task.scores(&be, &model, &params, &batch).unwrap();
        let err = Closeness::of(&[scores[1] as f64], &[want_score], SCALAR_FLOOR).rel_err;
        assert!(err < REL_TOL, "{name}: score {} vs {want_score}", scores[1]);
        assert!(
            scores[0].is_finite() && scores[0] < 0.0,
            "{name}: {scores:?}"
        );
        let mut grads = Grads::zeros(&be, &params).unwrap();
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
        let want_loss = -want_score / targets.len() as f64;
        let err = Closeness::of(&[loss], &[want_loss], SCALAR_FLOOR).rel_err;
        assert!(err < REL_TOL, "{name}: loss {loss} vs {want_loss}");
        let g = be.download(&grads.prompt).unwrap();
        assert!(g.iter().any(|&x| x != 0.0) && g.iter().all(|x| x.is_finite()));
    }
}

/// The task refuses what a decoder-only model cannot do, and a decoder-only model refuses
/// the other tasks, each naming the flag.
#[test]
fn causal_task_model_mismatch_errors() {
    let be = CpuBackend::<f32>::new();
    let bloom = Model::load(&be, &fixture("bloom")).unwrap();
    let err = Task::new(TaskSpec::new(TaskKind::Pet, &["a", "b"]), &bloom)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--task causal"), "{err}");
    let t5 = Model::load(&be, &fixture("t5_v1_0")).unwrap();
    let err = Task::new(TaskSpec::new(TaskKind::Causal, &["a", "b"]), &t5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--task seq2seq"), "{err}");
}

/// A task made on one kind of model, handed another through the API, says which task fits
/// (a BERT pet task's rows on a decoder were "the row has no mask token").
#[test]
fn a_task_of_another_kind_of_model_is_refused_before_encoding() {
    use softprompt::{Device, TaskOptions};
    let bert = softprompt::Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let verbalizer = vec![("x".into(), "great".into()), ("y".into(), "bad".into())];
    let opts = TaskOptions {
        verbalizer: Some(verbalizer),
        ..Default::default()
    };
    let task = bert.task(&opts, None, 2).unwrap();
    let data = softprompt::Dataset::from_pairs("d", [("a film", Some("x"))]);
    for (name, fits) in [("llama", "--task causal"), ("t5_v1_1", "--task seq2seq")] {
        let other = softprompt::Model::open(fixture(name), Device::Cpu).unwrap();
        let err = other.encode(&task, &data).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid argument --task") && err.ends_with(fits),
            "{err}"
        );
    }
}

/// Greedy generation in one left-padded batch gives, row for row, the tokens of generating
/// each row alone, and the same logits at every step (the prompt sits right before each row's
/// first real token, so the pads change nothing).
/// Three rows of different lengths to generate after.
fn generation_rows(model: &Model<CpuBackend<f32>>) -> Vec<Vec<i32>> {
    [
        "Tweet : Great movie. Label :",
        "a dull plot",
        "Tweet : the music was lovely and the story slow. Label :",
    ]
    .iter()
    .map(|t| model.tokenizer.encode(t, true).unwrap())
    .collect()
}

#[test]
fn batched_generation_equals_each_row_alone() {
    use softprompt::internals::models::decoder::GenerateOptions;
    let be = CpuBackend::<f32>::new();
    for name in ["bloom", "llama", "qwen2"] {
        let dir = fixture(name);
        let model = Model::load(&be, &dir).unwrap();
        let m = model.net.decoder().unwrap();
        let reference = TensorFile::read(&dir.join("ref_generate_random.safetensors")).unwrap();
        let prompt = reference.float("prompt").unwrap();
        let p = prompt.shape[0];
        let prompt = be.upload(DType::F32, &prompt.data).unwrap();
        let rows = generation_rows(&model);
        let opts = GenerateOptions {
            max_new_tokens: 6,
            keep_logits: true,
            ..Default::default()
        };
        let batched = m.generate(&be, &prompt, p, &rows, &opts).unwrap();
        for (bi, row) in rows.iter().enumerate() {
            let alone = m
                .generate(&be, &prompt, p, std::slice::from_ref(row), &opts)
                .unwrap();
            assert_eq!(batched.ids[bi], alone.ids[0], "{name} row {bi}");
            assert_eq!(batched.ids[bi].len(), 6);
            let got: Vec<f32> = batched.logits[bi].concat();
            let want: Vec<f32> = alone.logits[0].concat();
            let err =
                Closeness::of(&got, &want, softprompt::internals::closeness::TENSOR_FLOOR).rel_err;
            assert!(err < 1e-5, "{name} row {bi}: logits rel err {err}");
        }
    }
}

/// Generation behind a prefix (prefix tuning, PEFT's CAUSAL_LM placement: the prefix's keys
/// unrotated, the tokens at positions P..): rows batched with left padding give the ids and
/// each step's logits of each row alone, and each generated token's log-probability is the
/// one the full forward without a cache gives (the path `parity` checks against PEFT) over
/// the row and the tokens generated before it, within 1e-5, on ALiBi and RoPE models.
#[test]
fn prefix_generation_equals_each_row_alone_and_the_uncached_forward() {
    use softprompt::internals::memory::MemoryAccountant;
    use softprompt::internals::models::decoder::GenerateOptions;
    use softprompt::internals::models::prefix::PrefixInputs;
    use softprompt::internals::models::{Placement, TokenBatch};
    use softprompt::internals::rng::Rng;
    let be = CpuBackend::<f32>::new();
    for name in ["bloom", "llama", "qwen2"] {
        let model = Model::load(&be, &fixture(name)).unwrap();
        let m = model.net.decoder().unwrap();
        let (p, blocks, kvw) = (3, m.cfg.num_layers, m.cfg.kv_width());
        let mut rng = Rng::new(7);
        let table: Vec<f32> = (0..p * blocks * 2 * kvw)
            .map(|_| rng.normal() as f32)
            .collect();
        let table = be.upload(DType::F32, &table).unwrap();
        let prefix = || PrefixInputs::new(&be, &table, p, blocks, kvw, Placement::Peft).unwrap();
        let rows = generation_rows(&model);
        let opts = GenerateOptions {
            max_new_tokens: 6,
            keep_logits: true,
            ..Default::default()
        };
        let batched = m.generate_prefix(&be, &prefix(), &rows, &opts).unwrap();
        for (bi, row) in rows.iter().enumerate() {
            let alone =
                (m.generate_prefix(&be, &prefix(), std::slice::from_ref(row), &opts)).unwrap();
            let gen = &alone.ids[0];
            assert_eq!(batched.ids[bi], *gen, "{name} row {bi}");
            assert_eq!(gen.len(), 6, "{name} row {bi}");
            let got: Vec<f32> = batched.logits[bi].concat();
            let want: Vec<f32> = alone.logits[0].concat();
            let err =
                Closeness::of(&got, &want, softprompt::internals::closeness::TENSOR_FLOOR).rel_err;
            assert!(err < 1e-5, "{name} row {bi}: logits rel err {err}");
            // the forward without a cache over the row and its generated tokens
            let ids: Vec<i32> = row.iter().chain(gen).copied().collect();
            let labels: Vec<i32> = (ids.iter().enumerate())
                .map(|(j, &id)| if j < row.len() { -100 } else { id })
                .collect();
            let batch = TokenBatch {
                b: 1,
                t: ids.len(),
                mask: vec![1; ids.len()],
                ids,
                type_ids: None,
            };
            let inp = m.upload_inputs(&be, &batch, 0, Some(&labels)).unwrap();
            let inp = m.with_prefix(&be, inp, prefix()).unwrap();
            let none = be.zeros(DType::F32, 0).unwrap();
            let mut acct = MemoryAccountant::new();
            let losses = m.target_losses(&be, &mut acct, &none, &inp).unwrap();
            let want: Vec<f64> = losses.iter().map(|&l| -(l as f64)).collect();
            let got: Vec<f64> = (alone.logits[0].iter().zip(gen))
                .map(|(logits, &id)| {
                    let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let lse = mx
                        + logits
                            .iter()
                            .map(|&x| (x as f64 - mx).exp())
                            .sum::<f64>()
                            .ln();
                    logits[id as usize] as f64 - lse
                })
                .collect();
            let err = Closeness::of(&got, &want, SCALAR_FLOOR).rel_err;
            assert!(err < 1e-5, "{name} row {bi}: {got:?} vs uncached {want:?}");
            let sum: f64 = want.iter().sum();
            assert!(
                (alone.logprob[0] - sum).abs() < 1e-4 * sum.abs().max(1.0),
                "{name}"
            );
        }
    }
}

/// Tweets with a complaint label, PEFT's guide in miniature (RAFT twitter_complaints).
fn tweet_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (good, bad) = (
        ["great", "lovely", "fast", "kind", "fine", "nice"],
        ["late", "broken", "rude", "slow", "lost", "wrong"],
    );
    let things = ["my order", "the train", "the service", "my bag"];
    let mut rows = String::new();
    for (i, thing) in things.iter().cycle().take(24).enumerate() {
        let (word, label) = if i % 2 == 0 {
            (good[i % 6], "no complaint")
        } else {
            (bad[i % 6], "complaint")
        };
        let text = format!("{thing} was {word} today");
        rows += &(serde_json::json!({"text": text, "label": label}).to_string() + "\n");
    }
    let lines: Vec<&str> = rows.lines().collect();
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    std::fs::write(&train, lines[..18].join("\n")).unwrap();
    std::fs::write(&dev, lines[18..].join("\n")).unwrap();
    (train, dev)
}

/// `--task causal` through the command line on the BLOOM fixture: training lowers the loss,
/// the adapter says CAUSAL_LM, eval ranks the label targets, predict ranks and generates
/// (the greedy output of a label's target maps back to that label), and free targets train
/// and generate too.
#[test]
fn causal_task_command_line() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("causal_cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (train, dev) = tweet_files(&dir);
    let model = fixture("bloom");
    for free in [false, true] {
        let out_dir = dir.join(if free { "free" } else { "labels" });
        let mut args = vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--dev",
            dev.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--task",
            "causal",
            "--template",
            "Tweet text : {text} Label : ",
            "--prompt-len",
            "6",
            "--batch-size",
            "6",
            "--epochs",
            "4",
            "--eval-every",
            "6",
            "--log-every",
            "2",
            "--lr",
            "0.05",
            "--max-target-len",
            "16",
            "--no-progress",
            "--threads",
            "2",
        ];
        if free {
            args.push("--free-targets");
        }
        let stdout = ok(&softprompt(&args));
        assert!(stdout.contains("causal, "), "{stdout}");
        let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
            .collect();
        assert!(
            losses.len() >= 2 && losses.last() < losses.first(),
            "{losses:?}"
        );
        let adapter: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(adapter["task_type"], "CAUSAL_LM");
        assert_eq!(adapter["num_transformer_submodules"], 1);
        let prompt_dir = out_dir.to_str().unwrap();
        let v: serde_json::Value = serde_json::from_str(
            ok(&softprompt(&[
                "eval",
                "--json",
                "--prompt",
                prompt_dir,
                "--data",
                dev.to_str().unwrap(),
            ]))
            .trim(),
        )
        .unwrap();
        assert_eq!(v["examples"], 6, "{v}");
        let greedy = ok(&softprompt(&[
            "predict",
            "--prompt",
            prompt_dir,
            "--data",
            dev.to_str().unwrap(),
            "--decode",
            "greedy",
        ]));
        let lines: Vec<serde_json::Value> = greedy
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        for l in &lines {
            assert!(
                l["output"].is_string() && l["score"].as_f64().unwrap() <= 0.0,
                "{l}"
            );
            // an output that is a label's target is reported as that label, another as none
            // (it was printed as the label: "complaint" said so could not be told from the
            // label; hostile pass 18, N1)
            let out = l["output"].as_str().unwrap();
            // (free targets have no labels: the text is the label)
            match free || out == "complaint" || out == "no complaint" {
                true => assert_eq!(l["label"], out),
                false => assert!(l["label"].is_null(), "{l}"),
            }
        }
        if !free {
            // generate: the texts in one batch give what each gives alone
            let texts = ["my bag was lost again", "the service was kind"];
            let gen = |texts: &[&str], extra: &[&str]| -> Vec<serde_json::Value> {
                let mut args = vec!["generate", "--prompt", prompt_dir, "--max-new-tokens", "5"];
                for t in texts {
                    args.extend(["--text", t]);
                }
                args.extend(extra);
                ok(&softprompt(&args))
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            };
            // lengths past the engine's cap are refused by name, before anything is sized by
            // them (they wrapped, panicked or ran out of memory)
            for (cmd, flag, n) in [
                ("generate", "--max-new-tokens", "18446744073709551615"),
                ("generate", "--max-new-tokens", "1000000000000"),
                ("eval", "--max-target-len", "100000000"),
            ] {
                let mut args = vec![cmd, "--prompt", prompt_dir, flag, n];
                if cmd == "generate" {
                    args.extend(["--text", texts[0]]);
                } else {
                    args.extend(["--data", dev.to_str().unwrap(), "--decode", "greedy"]);
                }
                let out = softprompt(&args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{cmd} {flag} {n}: {err}");
                assert!(err.contains(flag) && !err.contains("panicked"), "{err}");
            }
            let batched = gen(&texts, &[]);
            assert_eq!(batched.len(), 2);
            for (t, row) in texts.iter().zip(&batched) {
                let alone = gen(&[t], &[]);
                assert_eq!(row["ids"], alone[0]["ids"], "{t}");
                assert_eq!(row["text"], *t);
                let n = row["ids"].as_array().unwrap().len();
                assert!((1..=5).contains(&n), "{row}");
            }
            // PEFT's placement (the prompt before the pads) on the same batch
            let peft = gen(&texts, &["--prompt-placement", "peft"]);
            assert_eq!(peft.len(), 2);
            let ranked = ok(&softprompt(&[
                "predict",
                "--prompt",
                prompt_dir,
                "--data",
                dev.to_str().unwrap(),
            ]));
            for line in ranked.lines() {
                let l: serde_json::Value = serde_json::from_str(line).unwrap();
                let s = &l["scores"];
                let (c, n) = (
                    s["complaint"].as_f64().unwrap(),
                    s["no complaint"].as_f64().unwrap(),
                );
                assert!(c < 0.0 && n < 0.0, "{l}");
                let want = if c > n { "complaint" } else { "no complaint" };
                assert_eq!(l["label"], want, "{l}");
            }
        }
    }
}
