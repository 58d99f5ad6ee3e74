//! `--target-end eos|pad|none`: what `--task causal` appends to each target. PEFT's guide
//! "Prompt tuning for causal language modeling" appends `tokenizer.pad_token_id` to every
//! target (`label_input_ids = labels["input_ids"][i] + [tokenizer.pad_token_id]`), labels it
//! with its own id (not -100, so the loss counts it) and generates with
//! `eos_token_id=<pad>`; `pad` rebuilds those rows and that stop, `eos` (the default) ends
//! targets with the model's end-of-sequence token, `none` with nothing.

mod common;

use common::{fixture, softprompt, stdout_ok as ok, ScratchDir};
use softprompt::internals::backend::IGNORE_INDEX;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::models::Recompute;
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::{Grads, Model, TargetEnd, Task, TaskKind, TaskSpec};
use softprompt::internals::weights::TensorFile;
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The score and the loss are sums and means of log-probabilities from PyTorch's logits.
const REL_TOL: f64 = 1e-4;

fn spec(end: TargetEnd) -> TaskSpec {
    let mut spec = TaskSpec::new(TaskKind::Causal, &["negative", "positive"]);
    spec.template = "Tweet : {text} Label :".into();
    spec.label_words = vec![" negative".into(), " positive".into()];
    spec.max_target_len = 8;
    spec.target_end = end;
    spec
}

/// log softmax(row)[id] in f64.
fn log_prob(row: &[f32], id: i32) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    row[id as usize] as f64 - lse
}

/// Row 0 of each `ref_causal_text` is PyTorch + PEFT's "Tweet : Great movie. Label :" then
/// " positive", labels on " positive" only. Under each mode the task's row is that row plus
/// the end token the mode names (the ids written out: BLOOM's config.json has
/// eos_token_id 2 and its tokenizer_config.json pad_token "<pad>" = 3; Qwen2's both are
/// "<|endoftext|>" = 0; Llama's eos is 1 and it has no pad token), the end token is labelled
/// with its own id as the guide labels the pad, and the rank score and the loss are the sum
/// and the mean of PyTorch's log-probabilities over every labelled token, the end included.
#[test]
fn each_mode_builds_the_guides_row_and_scores_it_as_pytorch() {
    let be = CpuBackend::<f32>::new();
    let cases: [(&str, [Option<i32>; 3]); 3] = [
        ("bloom", [Some(2), Some(3), None]),
        ("qwen2", [Some(0), Some(0), None]),
        ("llama", [Some(1), None, None]),
    ];
    for (name, ends) in cases {
        let dir = fixture(name);
        let model = Model::load(&be, &dir).unwrap();
        let reference = TensorFile::read(&dir.join("ref_causal_text.safetensors")).unwrap();
        let (shape, ids) = reference.int("input_ids").unwrap();
        let t = shape[1];
        let (_, mask) = reference.int("attention_mask").unwrap();
        let (_, ref_labels) = reference.int("labels").unwrap();
        let n = mask[..t].iter().filter(|&&m| m != 0).count();
        let want_ids: Vec<i32> = ids[..n].iter().map(|&x| x as i32).collect();
        let want_labels: Vec<i32> = ref_labels[..n].iter().map(|&x| x as i32).collect();
        let logits = reference.float("logits").unwrap();
        let v = logits.shape[2];
        let params = common::reference_params(&be, &reference);
        let modes = [TargetEnd::Eos, TargetEnd::Pad, TargetEnd::None];
        for (end, want_end) in modes.into_iter().zip(ends) {
            let what = format!("{name} --target-end {}", end.name());
            if name == "llama" && end == TargetEnd::Pad {
                // no pad token anywhere in the folder (the bad-input test runs it end to end)
                let err = Task::new(spec(end), &model).unwrap_err().to_string();
                assert!(err.contains("--target-end"), "{err}");
                continue;
            }
            let task = Task::new(spec(end), &model).unwrap();
            let jsonl = serde_json::json!({"text": "Great movie.", "label": "positive"});
            let data = Dataset::parse(
                Path::new("row.jsonl"),
                &jsonl.to_string(),
                &DataSpec::default(),
            )
            .unwrap();
            let enc = task.encode(&model.tokenizer, &data).unwrap();
            let batch = task.batch(&enc, &[0]).unwrap();
            let (joined, labels) = softprompt::internals::train::causal::joined(
                &batch.tokens,
                &batch.targets,
                batch.l,
                0,
            );
            let mut ids = want_ids.clone();
            let mut row_labels = want_labels.clone();
            ids.extend(want_end);
            row_labels.extend(want_end);
            assert_eq!(joined.ids, ids, "{what}: ids");
            assert_eq!(
                labels, row_labels,
                "{what}: labels (the end token labelled, not -100)"
            );
            // the label target the rank score reads is the same text and end
            let target: Vec<i32> = row_labels
                .iter()
                .copied()
                .filter(|&l| l != IGNORE_INDEX)
                .collect();
            assert_eq!(task.label_targets[1], target, "{what}");
            // PyTorch's logits at j - 1 predict the token at j
            let want_score: f64 = (row_labels.iter().enumerate())
                .filter(|(_, &l)| l != IGNORE_INDEX)
                .map(|(j, &l)| log_prob(&logits.data[(j - 1) * v..j * v], l))
                .sum();
            let scores = task.scores(&be, &model, &params, &batch).unwrap();
            let err = Closeness::of(&[scores[1] as f64], &[want_score], SCALAR_FLOOR).rel_err;
            assert!(err < REL_TOL, "{what}: score {} vs {want_score}", scores[1]);
            let mut grads = Grads::zeros(&be, &params).unwrap();
            let loss = task
                .loss_and_grad(&be, &model, &params, &mut grads, &batch, Recompute::None)
                .unwrap();
            let want_loss = -want_score / target.len() as f64;
            let err = Closeness::of(&[loss], &[want_loss], SCALAR_FLOOR).rel_err;
            assert!(err < REL_TOL, "{what}: loss {loss} vs {want_loss}");
        }
    }
}

/// The pad token is the tokenizer's, as transformers' `tokenizer.pad_token_id` reads it:
/// Mistral's tokenizer_config.json names "<pad>" (id 3) while its config.json has
/// `pad_token_id: null` and no eos, so `pad` ends a target with 3 and `eos` with nothing.
/// A free target cut to max_target_len keeps its end token; under `none` it is only cut.
#[test]
fn the_pad_token_is_the_tokenizers_and_a_cut_target_keeps_it() {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("mistral")).unwrap();
    let text = model.tokenizer.encode(" positive", false).unwrap();
    for (end, tail) in [
        (TargetEnd::Pad, vec![3]),
        (TargetEnd::Eos, vec![]),
        (TargetEnd::None, vec![]),
    ] {
        let task = Task::new(spec(end), &model).unwrap();
        let got = task.target_ids(&model.tokenizer, " positive").unwrap();
        assert_eq!(got, [text.clone(), tail].concat(), "{}", end.name());
    }
    let bloom = Model::load(&be, &fixture("bloom")).unwrap();
    let long = "the music was lovely and the story slow";
    let pieces = bloom.tokenizer.encode(long, false).unwrap();
    assert!(pieces.len() > 4, "{pieces:?}");
    for (end, want) in [
        (TargetEnd::Pad, [&pieces[..3], &[3]].concat()),
        (TargetEnd::Eos, [&pieces[..3], &[2]].concat()),
        (TargetEnd::None, pieces[..4].to_vec()),
    ] {
        let mut s = spec(end);
        s.free_targets = true;
        s.labels.clear();
        s.label_words.clear();
        s.max_target_len = 4;
        let task = Task::new(s, &bloom).unwrap();
        let jsonl = serde_json::json!({"text": "a", "label": long}).to_string();
        let data = Dataset::parse(Path::new("r.jsonl"), &jsonl, &DataSpec::default()).unwrap();
        let enc = task.encode(&bloom.tokenizer, &data).unwrap();
        assert_eq!(enc.rows[0].target, want, "{}", end.name());
        assert_eq!(enc.truncated_targets, 1);
        let stop = task.stop_ids(&bloom.net.decoder().unwrap().cfg).unwrap();
        let want_stop = if end == TargetEnd::Pad {
            vec![3]
        } else {
            vec![2]
        };
        assert_eq!(stop, want_stop, "{}: generation stops at", end.name());
    }
}

/// The one JSON line a command prints.
fn json_line(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(ok(&softprompt(args)).trim()).unwrap()
}

/// A refusal: exit 2, no panic, the message holding every one of `want`.
fn refused(out: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// Complaint tweets, PEFT's guide in miniature.
fn tweets(dir: &Path) -> PathBuf {
    let words = [
        "great", "late", "kind", "broken", "fine", "rude", "nice", "lost",
    ];
    let rows: Vec<String> = (0..12)
        .map(|i| {
            let label = if i % 2 == 0 {
                "no complaint"
            } else {
                "complaint"
            };
            let text = format!("the order was {} today", words[i % 8]);
            serde_json::json!({"text": text, "label": label}).to_string()
        })
        .collect();
    let path = dir.join("tweets.jsonl");
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

fn train(model: &Path, data: &Path, out: &Path, end: &str) -> Output {
    softprompt(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--train",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--task",
        "causal",
        "--template",
        "Tweet text : {text} Label : ",
        "--prompt-len",
        "4",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--lr",
        "0.05",
        "--no-progress",
        "--threads",
        "1",
        "--target-end",
        end,
    ])
}

/// Each line's `scores` of `predict` (rank classification).
fn rank_scores(prompt: &Path, data: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["predict", "--prompt", prompt.to_str().unwrap()];
    args.extend(["--data", data.to_str().unwrap()]);
    args.extend(extra);
    (ok(&softprompt(&args)).lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["scores"].clone())
        .collect()
}

/// train → save → load keeps the mode: task.json records `"target_end": "pad"`, and `predict`
/// and `eval` of the saved prompt score as with `--target-end pad` given, not as `eos` or
/// `none`. Generation stops at the pad token: with a copy of the model whose
/// tokenizer_config.json names as its pad token a token that greedy generation produces,
/// `generate` and `predict --decode greedy` stop right after its first occurrence, while
/// `--target-end eos` runs on to the length bound.
#[test]
fn pad_mode_is_kept_with_the_prompt_and_stops_generation() {
    let scratch = ScratchDir::new("target-end");
    let model = scratch.copy_model("bloom", "bloom");
    let data = tweets(scratch.path());
    let out = scratch.path().join("pad");
    let stdout = ok(&train(&model, &data, &out, "pad"));
    assert!(
        stdout.contains("each target ending with the pad token"),
        "{stdout}"
    );
    let task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("task.json")).unwrap()).unwrap();
    assert_eq!(task["target_end"], "pad", "{task}");
    let saved = rank_scores(&out, &data, &[]);
    assert_eq!(saved.len(), 12);
    assert_eq!(saved, rank_scores(&out, &data, &["--target-end", "pad"]));
    assert_ne!(saved, rank_scores(&out, &data, &["--target-end", "eos"]));
    assert_ne!(saved, rank_scores(&out, &data, &["--target-end", "none"]));
    let eval = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["eval", "--json", "--prompt", out.to_str().unwrap()];
        args.extend(["--data", data.to_str().unwrap()]);
        args.extend(extra);
        json_line(&args)
    };
    assert_eq!(eval(&[]), eval(&["--target-end", "pad"]));
    // an eos-mode run writes no target_end (its task.json is as before the flag existed)
    let eos_out = scratch.path().join("eos");
    ok(&train(&model, &data, &eos_out, "eos"));
    let eos_task = std::fs::read_to_string(eos_out.join("task.json")).unwrap();
    assert!(!eos_task.contains("target_end"), "{eos_task}");

    let text = "the order was late today";
    let prompt = out.to_str().unwrap();
    let generate = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["generate", "--prompt", prompt, "--text", text];
        args.extend(["--max-new-tokens", "8"]);
        args.extend(extra);
        json_line(&args)
    };
    let ids = |line: serde_json::Value| -> Vec<i64> {
        (line["ids"].as_array().unwrap().iter())
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let free = ids(generate(&["--target-end", "eos"]));
    assert_eq!(free.len(), 8, "{free:?}");
    // the token greedy generation makes at step k (the first one it has not made before, so
    // that its first occurrence is step k) becomes the pad token
    let k = (1..8).find(|&k| !free[..k].contains(&free[k])).unwrap_or(0);
    let stop = free[k];
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("tokenizer.json")).unwrap())
            .unwrap();
    let token = (vocab["model"]["vocab"].as_object().unwrap().iter())
        .find(|(_, id)| id.as_i64() == Some(stop))
        .map(|(t, _)| t.clone())
        .unwrap();
    // in both files: transformers takes special_tokens_map.json's over tokenizer_config.json's
    // where the latter has no added_tokens_decoder (review 21, R21-4)
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let config_path = model.join(file);
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config["pad_token"] = serde_json::json!(token);
        std::fs::write(&config_path, config.to_string()).unwrap();
    }
    let stopped = generate(&[]);
    assert_eq!(
        ids(stopped.clone()),
        free[..=k],
        "stops after the pad token {stop} ({token:?})"
    );
    assert_eq!(ids(generate(&["--target-end", "eos"])), free);
    // predict's greedy decoding stops there too: its output is generate's text
    let row = scratch.path().join("one.jsonl");
    std::fs::write(&row, serde_json::json!({"text": text}).to_string()).unwrap();
    let greedy = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "predict",
            "--prompt",
            prompt,
            "--data",
            row.to_str().unwrap(),
        ];
        args.extend(["--decode", "greedy"]);
        args.extend(extra);
        json_line(&args)["output"].clone()
    };
    assert_eq!(greedy(&[]), stopped["output"]);
    // the pad token, named in the files and not an added token of tokenizer.json, is one now
    // (a special token, which decoded text leaves out, as transformers adds it; hostile pass
    // 27, F2): the texts differ where the tokens after it say something
    let unstopped = generate(&["--target-end", "eos"])["output"].clone();
    assert_eq!(greedy(&["--target-end", "eos"]), unstopped);
    assert_eq!(
        greedy(&[]) != greedy(&["--target-end", "eos"]),
        stopped["output"] != unstopped
    );
}

/// `--target-end pad` on a model without a pad token (the Llama fixture: none in
/// tokenizer_config.json, special_tokens_map.json or config.json) stops before training,
/// naming the flag and the files; a saved prompt whose task.json asks for it names task.json.
/// The flag is refused on other tasks and with a value it does not know, and a task.json
/// value it does not know names task.json.
#[test]
fn target_end_bad_inputs() {
    let scratch = ScratchDir::new("target-end-bad");
    let data = tweets(scratch.path());
    let llama = fixture("llama");
    let out = scratch.path().join("llama");
    refused(
        &train(&llama, &data, &out, "pad"),
        &[
            "--target-end",
            "tokenizer_config.json",
            "config.json",
            "--target-end eos",
        ],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
    refused(
        &train(&llama, &data, &out, "sep"),
        &["--target-end", "eos, pad or none"],
    );
    // a saved eos prompt whose task.json is edited to pad
    ok(&train(&llama, &data, &out, "eos"));
    // under greedy decoding a label whose target holds a stop token before its end could
    // never be generated (hostile pass 18, N5): refused, naming the label; rank scores it
    let stop_inside = "complaint=complaint<|end_of_text|> late,no complaint=fine";
    let with = |extra: &[&str]| {
        let (o, d) = (out.to_str().unwrap(), data.to_str().unwrap());
        let mut args = vec![
            "eval",
            "--prompt",
            o,
            "--data",
            d,
            "--verbalizer",
            stop_inside,
        ];
        args.extend(extra);
        softprompt(&args)
    };
    refused(
        &with(&["--decode", "greedy"]),
        &[
            "--decode",
            "label \"complaint\"",
            "stop token 1 at position",
            "--decode rank",
        ],
    );
    ok(&with(&[]));
    let task_json = out.join("task.json");
    let text = std::fs::read_to_string(&task_json).unwrap();
    let mut task: serde_json::Value = serde_json::from_str(&text).unwrap();
    // greedy saved in task.json, the label target the user's --verbalizer: the flag is
    // blamed, not the file (review 11, R11-6)
    task["decode"] = serde_json::json!("greedy");
    std::fs::write(&task_json, task.to_string()).unwrap();
    let out_err = with(&[]);
    refused(
        &out_err,
        &["--decode", "label \"complaint\"", "stop token 1"],
    );
    let err = String::from_utf8_lossy(&out_err.stderr);
    assert!(!err.contains("overrides it"), "blames task.json: {err}");
    // the label target saved in task.json too, and --target-end given as task.json holds it:
    // the file is blamed, not a --decode no one gave (review 15, R15-2)
    let mut saved = task.clone();
    saved["verbalizer"] = serde_json::json!([
        ["complaint", "complaint<|end_of_text|> late"],
        ["no complaint", "fine"]
    ]);
    std::fs::write(&task_json, saved.to_string()).unwrap();
    let (o, d) = (out.to_str().unwrap(), data.to_str().unwrap());
    refused(
        &softprompt(&["eval", "--prompt", o, "--data", d, "--target-end", "eos"]),
        &["task.json", "label \"complaint\"", "--decode overrides it"],
    );
    std::fs::write(&task_json, task.to_string()).unwrap();
    // free targets are data: a row whose target holds a stop token before its end is
    // scored a miss, and a warning counts such rows (R11-7)
    let free = scratch.path().join("free.jsonl");
    std::fs::write(
        &free,
        "{\"text\":\"the order was late\",\"label\":\"late<|end_of_text|> again\"}\n\
         {\"text\":\"the order was fine\",\"label\":\"fine\"}\n\
         {\"text\":\"the order was lost\",\"label\":\"lost<|end_of_text|> twice\"}\n",
    )
    .unwrap();
    let (o, f) = (out.to_str().unwrap(), free.to_str().unwrap());
    let free_eval = softprompt(&["eval", "--prompt", o, "--data", f, "--free-targets"]);
    ok(&free_eval);
    let err = String::from_utf8_lossy(&free_eval.stderr);
    let warned = format!("warning: {f}: 2 row(s) (the first at line 1) hold a target with a stop");
    assert_eq!(err.matches(&warned).count(), 1, "{err}");
    task["decode"] = serde_json::json!("rank");
    let eval = |out: &Path| {
        softprompt(&[
            "eval",
            "--prompt",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
    };
    task["target_end"] = serde_json::json!("pad");
    std::fs::write(&task_json, task.to_string()).unwrap();
    refused(
        &eval(&out),
        &["task.json", "pad token", "--target-end overrides it"],
    );
    task["target_end"] = serde_json::json!(7);
    std::fs::write(&task_json, task.to_string()).unwrap();
    refused(&eval(&out), &["task.json", "`target_end` is 7"]);
    task["target_end"] = serde_json::json!("bos");
    std::fs::write(&task_json, task.to_string()).unwrap();
    refused(
        &eval(&out),
        &["task.json", "`target_end`", "eos, pad or none"],
    );
    // other tasks have no target end
    let bert = fixture("bert_mlm");
    let args = common::tiny_pet_train_args(&bert, &scratch.path().join("pet"));
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--target-end", "pad"]);
    refused(&softprompt(&args), &["--target-end", "pet"]);
}

/// Mistral's config.json names no eos_token_id, so `--target-end eos` (the default) ends its
/// targets with nothing (the case above: PEFT's references score them so, and no number
/// changes). The run goes on, but says so once on stderr, naming config.json, the key and
/// `--target-end none`; so does `predict` of the saved prompt. `--target-end none`, and a
/// model with an eos token, say nothing. The library says it through `Task::eos_missing`.
#[test]
fn eos_missing_is_warned_once() {
    let scratch = ScratchDir::new("target-end-no-eos");
    let data = tweets(scratch.path());
    let mistral = fixture("mistral");
    let warning = "has no eos_token_id";
    let stderr = |o: &Output| {
        ok(o);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let eos = scratch.path().join("eos");
    let err = stderr(&train(&mistral, &data, &eos, "eos"));
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    let config = mistral.join("config.json");
    assert!(err.contains(config.to_str().unwrap()), "{err}");
    assert!(err.contains("--target-end none"), "{err}");
    let predict = |extra: &[&str]| {
        let mut args = vec!["predict", "--prompt", eos.to_str().unwrap()];
        args.extend(["--data", data.to_str().unwrap()]);
        args.extend(extra);
        stderr(&softprompt(&args))
    };
    assert_eq!(predict(&[]).matches(warning).count(), 1);
    assert!(!predict(&["--target-end", "none"]).contains(warning));
    let none = stderr(&train(
        &mistral,
        &data,
        &scratch.path().join("none"),
        "none",
    ));
    assert!(!none.contains(warning), "{none}");
    let llama = stderr(&train(
        &fixture("llama"),
        &data,
        &scratch.path().join("l"),
        "eos",
    ));
    assert!(!llama.contains(warning), "{llama}");

    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &mistral).unwrap();
    let task = |end| Task::new(spec(end), &model).unwrap().eos_missing();
    assert!(task(TargetEnd::Eos));
    assert!(!task(TargetEnd::None) && !task(TargetEnd::Pad));
    let llama = Model::load(&be, &fixture("llama")).unwrap();
    assert!(!Task::new(spec(TargetEnd::Eos), &llama)
        .unwrap()
        .eos_missing());
}

/// transformers' `generate` stops at generation_config.json's `eos_token_id` (an id or a
/// list), which `from_pretrained` loads over config.json's (Llama 3 Instruct's lists
/// `<|eot_id|>` there only). With a copy of the BLOOM fixture (config.json: eos 2) whose
/// generation_config.json names a token greedy generation makes, `generate` and `predict
/// --decode greedy` stop right after it; a file without the key, or with null, keeps
/// config.json's; the targets' end token stays config.json's and still stops generation
/// under `--target-end eos`; an id past the table, a value not an id, or a file not JSON is
/// refused by generation naming the file and the key, and ignored by rank classification.
#[test]
fn generation_config_names_the_stop_tokens() {
    let scratch = ScratchDir::new("target-end-genconfig");
    let model = scratch.copy_model("bloom", "bloom");
    let data = tweets(scratch.path());
    let out = scratch.path().join("eos");
    ok(&train(&model, &data, &out, "eos"));
    let text = "the order was late today";
    let prompt = out.to_str().unwrap();
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--prompt", prompt, "--text", text];
        args.extend(["--max-new-tokens", "8"]);
        args.extend(extra);
        softprompt(&args)
    };
    let ids = |o: &Output| -> Vec<i64> {
        let line: serde_json::Value = serde_json::from_str(ok(o).trim()).unwrap();
        (line["ids"].as_array().unwrap().iter())
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let free = ids(&generate(&[]));
    assert_eq!(free.len(), 8, "{free:?}");
    assert!(!free.contains(&2), "{free:?}");
    // the first token greedy generation makes that it has not made before (the first, if it
    // repeats one): generation stops right after its first occurrence, well before 8
    let k = (1..8).find(|&k| !free[..k].contains(&free[k])).unwrap_or(0);
    assert!(k < 7, "{free:?}");
    let stop = free[k];
    let gen_config = model.join("generation_config.json");
    let write = |v: serde_json::Value| std::fs::write(&gen_config, v.to_string()).unwrap();

    write(serde_json::json!({"bos_token_id": 1, "eos_token_id": [2, stop]}));
    let stopped = ids(&generate(&[]));
    assert_eq!(stopped, free[..=k], "stops after {stop}");
    assert_eq!(ids(&generate(&["--target-end", "none"])), stopped);
    let row = scratch.path().join("one.jsonl");
    std::fs::write(&row, serde_json::json!({"text": text}).to_string()).unwrap();
    let greedy = ok(&softprompt(&[
        "predict",
        "--prompt",
        prompt,
        "--data",
        row.to_str().unwrap(),
        "--decode",
        "greedy",
    ]));
    let greedy: serde_json::Value = serde_json::from_str(greedy.trim()).unwrap();
    let line: serde_json::Value = serde_json::from_str(ok(&generate(&[])).trim()).unwrap();
    assert_eq!(greedy["output"], line["output"]);
    // the stop token (an ordinary token, not a special one that detokenizing drops) ends the
    // text and is no part of it: its text was printed in `output` (hostile pass 18, N4)
    let api = softprompt::Model::open(&model, softprompt::Device::Cpu).unwrap();
    let before: Vec<i32> = free[..k].iter().map(|&i| i as i32).collect();
    let with_stop: Vec<i32> = free[..=k].iter().map(|&i| i as i32).collect();
    let (before, with_stop) = (
        api.detokenize(&before).unwrap(),
        api.detokenize(&with_stop).unwrap(),
    );
    assert_ne!(before, with_stop, "the stop token {stop} has a text");
    assert_eq!(line["output"], before.as_str());
    // an int names one stop token
    write(serde_json::json!({"eos_token_id": stop}));
    assert_eq!(ids(&generate(&[])), stopped);

    // the stop sets: the targets' end token (config.json's 2) joins under eos only
    let be = CpuBackend::<f32>::new();
    let stop_ids = |end| {
        let m = Model::load(&be, &model).unwrap();
        let task = Task::new(spec(end), &m).unwrap();
        task.stop_ids(&m.net.decoder().unwrap().cfg)
    };
    let stop_ids = |end| stop_ids(end).unwrap();
    let stop = stop as i32;
    assert_eq!(stop_ids(TargetEnd::Eos), vec![stop, 2]);
    assert_eq!(stop_ids(TargetEnd::None), vec![stop]);
    assert_eq!(stop_ids(TargetEnd::Pad), vec![3]);
    for keeps in [
        serde_json::json!({}),
        serde_json::json!({"eos_token_id": null}),
    ] {
        write(keeps);
        assert_eq!(stop_ids(TargetEnd::None), vec![2]);
        assert_eq!(ids(&generate(&[])), free);
    }

    let path = gen_config.to_str().unwrap();
    write(serde_json::json!({"eos_token_id": [2, 999_999]}));
    refused(
        &generate(&[]),
        &[
            path,
            "`eos_token_id` is 999999, outside the vocabulary (vocab_size",
        ],
    );
    write(serde_json::json!({"eos_token_id": ["</s>"]}));
    refused(&generate(&[]), &[path, "`eos_token_id` must hold integers"]);
    std::fs::write(&gen_config, "{").unwrap();
    refused(&generate(&[]), &[path, "not valid JSON"]);
    // a task that generates is refused when it is made, before any row runs
    let predict = |extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--prompt",
            prompt,
            "--data",
            row.to_str().unwrap(),
        ];
        args.extend(extra);
        softprompt(&args)
    };
    refused(&predict(&["--decode", "greedy"]), &[path, "not valid JSON"]);
    // only generation reads the file (transformers' from_pretrained warns and goes on): rank
    // classification and `--target-end pad`'s stop set (the pad token) do not need it
    let ranked = ok(&predict(&[]));
    assert!(ranked.contains("\"label\""), "{ranked}");
    assert_eq!(stop_ids(TargetEnd::Pad), vec![3]);
}

/// Under `none` a target has no end token, but generation still stops at the model's stop
/// tokens, which stay in the generated ids: a row that generated exactly a label's target,
/// then stopped, matched no label (greedy `eval` said accuracy 0 where `predict` printed the
/// label), and a free target never matched. A last stop token is left out of the match
/// (hostile pass 16, F1).
#[test]
fn under_none_a_generated_target_that_then_stopped_matches() {
    use softprompt::internals::train::eval::scores;
    use softprompt::internals::train::Prediction;
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bloom")).unwrap();
    let eos = 2; // the fixture's eos_token_id, its only stop token
    let none = Task::new(spec(TargetEnd::None), &model).unwrap();
    let target = none.label_targets[1].clone();
    assert_ne!(target.last(), Some(&eos), "{target:?}");
    let then = |t: &[i32], id: i32| [t, &[id]].concat();
    assert_eq!(none.decoded(then(&target, eos), -1.0).class, Some(1));
    // stopped at the length bound, or went on past the target: as before
    assert_eq!(none.decoded(target.clone(), -1.0).class, Some(1));
    assert_eq!(none.decoded(then(&target, 5), -1.0).class, None);
    assert_eq!(none.decoded(vec![eos], -1.0).class, None);
    // a target that ends with the stop token itself (a verbalizer's "</s>") is matched whole
    let mut ends_so = spec(TargetEnd::None);
    ends_so.label_words[1] = " positive</s>".into();
    let ends_so = Task::new(ends_so, &model).unwrap();
    assert_eq!(ends_so.label_targets[1], then(&target, eos));
    assert_eq!(ends_so.decoded(then(&target, eos), -1.0).class, Some(1));
    // under eos the target holds the end token: matched whole, as before
    let with_eos = Task::new(spec(TargetEnd::Eos), &model).unwrap();
    assert_eq!(with_eos.label_targets[1], then(&target, eos));
    assert_eq!(with_eos.decoded(then(&target, eos), -1.0).class, Some(1));
    assert_eq!(with_eos.decoded(target.clone(), -1.0).class, None);
    // several stop tokens (generation_config.json's, as Llama 3 instruct's): a row that
    // stopped at another one than the targets' end token ended as they end
    let dir = ScratchDir::new("target_end_stops");
    let stops = dir.copy_model("bloom", "bloom");
    std::fs::write(
        stops.join("generation_config.json"),
        r#"{"eos_token_id": [2, 5]}"#,
    )
    .unwrap();
    let stops = Model::load(&be, &stops).unwrap();
    let with_eos = Task::new(spec(TargetEnd::Eos), &stops).unwrap();
    assert_eq!(with_eos.decoded(then(&target, 5), -1.0).class, Some(1));
    assert_eq!(with_eos.decoded(then(&target, 6), -1.0).class, None);
    let none = Task::new(spec(TargetEnd::None), &stops).unwrap();
    assert_eq!(none.decoded(then(&target, 5), -1.0).class, Some(1));

    // free targets: eval's exact match, each distinct target a class
    let mut free = spec(TargetEnd::None);
    free.free_targets = true;
    free.labels.clear();
    free.label_words.clear();
    let task = Task::new(free, &model).unwrap();
    let jsonl = "{\"text\":\"the order was late\",\"label\":\"complaint\"}\n\
                 {\"text\":\"the order was fine\",\"label\":\"no complaint\"}\n";
    let data = Dataset::parse(Path::new("f.jsonl"), jsonl, &DataSpec::default()).unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    let generated = |ids: Vec<i32>| Prediction {
        class: None,
        scores: Vec::new(),
        stopped: ids.last() == Some(&eos),
        ids,
        score: -1.0,
    };
    let stopped: Vec<_> = (enc.rows.iter())
        .map(|r| generated(then(&r.target, eos)))
        .collect();
    let m = scores(&task, &enc, &stopped);
    assert_eq!((m.accuracy, m.macro_f1), (1.0, 1.0), "{m:?}");
    let went_on: Vec<_> = (enc.rows.iter())
        .map(|r| generated(then(&r.target, 5)))
        .collect();
    assert_eq!(scores(&task, &enc, &went_on).accuracy, 0.0);
}
