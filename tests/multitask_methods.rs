//! Multi-task training of other methods than prompt tuning (#17 item 2): prefix-tuning and
//! P-tuning tasks (`MultiTask::method`, `--task-config`'s `method`) train beside
//! prompt-tuning ones in one run. A run of one such task is its single-task run bit for bit
//! (every saved file, the encoder's too); each task of a mixed run follows its own
//! single-task run (the mixed batch changes the rounding only); a stopped and resumed run
//! saves every file byte for byte as the run in one go; the saved adapters load back and
//! score as the run scored them; bad per-task method settings are refused naming the task.

use softprompt::prelude::*;
use std::path::{Path, PathBuf};

mod common;

use common::multitask::{cfg, data, stop_after};

fn tmp(name: &str) -> PathBuf {
    common::multitask::tmp("multim", name)
}

fn prefix() -> Method {
    Method::Prefix(PrefixTuning::default())
}

fn projection() -> Method {
    Method::Prefix(PrefixTuning {
        projection: true,
        hidden: Some(8),
        ..Default::default()
    })
}

fn ptuning() -> Method {
    Method::PTuning(PTuning {
        hidden: Some(8),
        ..Default::default()
    })
}

/// Tasks on one fixture, each with its method and its train and dev rows encoded.
struct Fixture {
    model: Model,
    tasks: Vec<(Task, Encoded, Encoded, Method)>,
}

/// BERT: a `pet` prompt, a `cls` prefix (its projection's output) and a `pet` P-tuning task
/// of its own template.
fn bert() -> Fixture {
    let cls = TaskOptions {
        task: Some(TaskKind::Cls),
        template: Some("review: {text}".into()),
        ..TaskOptions::default()
    };
    let other = TaskOptions {
        template: Some("{text} ! [MASK]".into()),
        ..TaskOptions::default()
    };
    let tasks = [
        (TaskOptions::default(), Method::Prompt),
        (cls, projection()),
        (other, ptuning()),
    ];
    fixture_of("bert_mlm", &tasks)
}

fn fixture_of(name: &str, tasks: &[(TaskOptions, Method)]) -> Fixture {
    let model = Model::open(common::fixture(name), Device::Cpu).unwrap();
    let (train, dev) = (data("train.jsonl"), data("dev.jsonl"));
    let tasks = (tasks.iter())
        .map(|(o, method)| {
            let t = model.task(o, Some(&train), 4).unwrap();
            let (tr, dv) = (
                model.encode(&t, &train).unwrap(),
                model.encode(&t, &dev).unwrap(),
            );
            (t, tr, dv, *method)
        })
        .collect();
    Fixture { model, tasks }
}

impl Fixture {
    fn jobs(&self, names: &[&str]) -> Vec<MultiTask<'_>> {
        (names.iter().zip(&self.tasks))
            .map(|(n, (t, tr, dv, method))| MultiTask {
                name: n.to_string(),
                task: t,
                splits: splits(tr, dv),
                prompt_len: None,
                init: None,
                method: Some(*method),
            })
            .collect()
    }

    /// Task `k` trained alone with `method` by `Model::train` into `out`.
    fn single(&self, k: usize, method: Method, cfg: &TrainConfig, out: &Path) -> (Summary, Prompt) {
        let (task, tr, dv, _) = &self.tasks[k];
        let cfg = TrainConfig {
            method,
            ..cfg.clone()
        };
        (self.model)
            .train(task, splits(tr, dv), &cfg, out, &mut |_| {})
            .unwrap()
    }
}

fn splits<'a>(train: &'a Encoded, dev: &'a Encoded) -> Splits<'a> {
    Splits {
        train,
        dev: Some(dev),
        test: Some(dev),
    }
}

/// Every file of a saved prompt folder: PEFT's adapter and config, the head, the encoder,
/// task.json (less `model_from_prompt`, the model's path relative to the folder, one level
/// deeper in a multi-task run).
fn saved_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files = [
        "adapter_model.safetensors",
        "adapter_config.json",
        "head.safetensors",
        "prompt_encoder.safetensors",
    ];
    let mut out: Vec<(String, Vec<u8>)> = (files.iter())
        .filter_map(|f| std::fs::read(dir.join(f)).ok().map(|b| (f.to_string(), b)))
        .collect();
    if let Ok(text) = std::fs::read_to_string(dir.join("task.json")) {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("model_from_prompt");
        out.push(("task.json".into(), v.to_string().into_bytes()));
    }
    out
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

/// One prefix task (free, or a projection's output) or one P-tuning task through
/// `train_multi` is `Model::train`: every saved file byte for byte (the encoder's own file
/// and PEFT's config of the method too), the same best step and accuracies.
#[test]
fn one_task_of_each_method_is_the_single_task_run_bit_for_bit() {
    let f = bert();
    let cfg = cfg();
    // (task, method): a cls prefix, a pet prefix from its projection, a pet P-tuning task
    for (k, method, want) in [
        (
            1,
            prefix(),
            vec![
                "adapter_model.safetensors",
                "adapter_config.json",
                "head.safetensors",
                "task.json",
            ],
        ),
        (
            0,
            projection(),
            vec![
                "adapter_model.safetensors",
                "adapter_config.json",
                "prompt_encoder.safetensors",
                "task.json",
            ],
        ),
        (
            2,
            ptuning(),
            vec![
                "adapter_model.safetensors",
                "adapter_config.json",
                "prompt_encoder.safetensors",
                "task.json",
            ],
        ),
    ] {
        let mut jobs = f.jobs(&["a", "b", "c"]);
        let mut job = jobs.remove(k);
        job.method = Some(method);
        let single = tmp(&format!("single{k}"));
        let (s1, p1) = f.single(k, method, &cfg, &single);
        let multi = tmp(&format!("one{k}"));
        let r = (f.model)
            .train_multi(&[job.clone()], &cfg, &multi, &mut |_, _| {})
            .unwrap();
        let (_, s2, p2) = &r[0];
        assert_eq!(p1.values(), p2.values(), "{method:?}");
        assert_eq!(p1.head(), p2.head());
        let (a, b) = (saved_files(&single), saved_files(&multi.join(&job.name)));
        assert_eq!(names(&a), want, "{method:?}");
        for ((n, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                x == y,
                "{method:?}: {n} differs:\n{}\n{}",
                String::from_utf8_lossy(x),
                String::from_utf8_lossy(y)
            );
        }
        assert_eq!(names(&a), names(&b));
        assert_eq!((s1.steps, s1.best_step), (s2.steps, s2.best_step));
        assert_eq!((s1.best_dev, s1.test), (s2.best_dev, s2.test));
        std::fs::remove_dir_all(&single).ok();
        std::fs::remove_dir_all(&multi).ok();
    }
}

/// The largest relative difference of two tables (relative to max(|a|, 1)).
fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    (a.iter().zip(b))
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0f32, f32::max)
}

/// Each task of a mixed run (prompt, prefix and P-tuning tasks together) follows its own
/// single-task run: its kept table within `tol` (relative L2); its saved adapter loads back
/// and scores its test split as the run scored it, and as the single-task run's adapter does
/// (the same classes, the scores within 10 `tol`).
fn follows_its_own_run(f: &Fixture, names: &[&str], tol: f64, tag: &str) {
    let cfg = cfg();
    let multi = tmp(&format!("mix_{tag}"));
    let r = (f.model)
        .train_multi(&f.jobs(names), &cfg, &multi, &mut |_, _| {})
        .unwrap();
    for (k, (task, _, dv, method)) in f.tasks.iter().enumerate() {
        let single = tmp(&format!("alone{k}_{tag}"));
        let (s, p) = f.single(k, *method, &cfg, &single);
        let (name, summary, got) = &r[k];
        // the crate's one measure (relative L2), and the worst element for the report
        let err = common::rel_err(got.values(), p.values());
        let worst = max_rel(p.values(), got.values());
        eprintln!(
            "{tag} task {name} ({method:?}): relative L2 {err:.2e}, worst element {worst:.2e}"
        );
        assert!(err < tol, "{tag} task {name}: tables differ by {err}");
        assert_eq!(s.best_step, summary.best_step, "{tag} task {name}");
        assert_eq!(s.test.map(|m| m.accuracy), summary.test.map(|m| m.accuracy));
        // the saved adapter loads back and scores as the run scored its kept prompt
        let loaded = Prompt::load(multi.join(name)).unwrap();
        let (m, preds) = f.model.evaluate(task, &loaded, dv, 8).unwrap();
        assert_eq!(Some(m), summary.test, "{tag} task {name}");
        // and as the single-task run's adapter: the same classes, the scores within 10 tol
        // (the fixture's scores move about 10 times the table's relative change: a P-tuning
        // table 1.3e-6 off gives scores 1e-5 off)
        let alone = f.model.predict(task, &p, dv, 8).unwrap();
        let worst = (alone.iter().zip(&preds))
            .map(|(a, b)| common::rel_err(&b.scores, &a.scores))
            .fold(0.0f64, f64::max);
        eprintln!("{tag} task {name}: scores' relative L2 {worst:.2e}");
        assert!(
            worst < 10.0 * tol,
            "{tag} task {name}: scores differ by {worst}"
        );
        let classes = |v: &[Prediction]| v.iter().map(|p| p.class).collect::<Vec<_>>();
        assert_eq!(classes(&alone), classes(&preds), "{tag} task {name}");
        std::fs::remove_dir_all(&single).ok();
    }
    std::fs::remove_dir_all(&multi).ok();
}

#[test]
fn mixed_methods_follow_their_own_runs() {
    // 1e-4: a batch's make-up rounds its sums otherwise, and Adam's normalised steps at lr
    // 0.1 carry that through 6 steps (the prefix-projection cls task 4.2e-5 since the short
    // batch holds random rows); a job's table trained on other rows would differ far more
    follows_its_own_run(&bert(), &["pet", "cls", "ptune"], 1e-4, "bert");
}

/// On `name`, a prompt task beside a prefix task of its own template (one batch, one pass of
/// the model per step: the backward fills the prompt's gradient and the prefix's at once).
fn prompt_and_prefix_follow_their_own_runs(name: &str, template: &str) {
    let other = TaskOptions {
        template: Some(template.into()),
        ..TaskOptions::default()
    };
    let tasks = [(TaskOptions::default(), Method::Prompt), (other, prefix())];
    let f = fixture_of(name, &tasks);
    follows_its_own_run(&f, &["prompt", "prefix"], 1e-5, name);
}

/// A decoder-only `causal` prompt task beside a prefix task.
#[test]
fn decoder_prefix_follows_its_own_run() {
    prompt_and_prefix_follow_their_own_runs("llama", "review: {text} sentiment:");
}

/// A T5 `seq2seq` prompt task beside a prefix task (the prefix in every layer of both stacks).
#[test]
fn t5_prefix_follows_its_own_run() {
    prompt_and_prefix_follow_their_own_runs("t5_v1_0", "review: {text}");
}

/// N steps in one go, or k steps, a stop, and a resume to N: every task's saved files
/// (the encoder's too) byte-identical, as the summaries.
#[test]
fn mixed_methods_resume_bit_for_bit() {
    let f = bert();
    let mut cfg = cfg();
    cfg.save_every = 2;
    let names = ["pet", "cls", "ptune"];
    let one = tmp("onego");
    let r1 = (f.model)
        .train_multi(&f.jobs(&names), &cfg, &one, &mut |_, _| {})
        .unwrap();
    let two = tmp("resumed");
    stop_after(&f.model, &f.jobs(&names), &cfg, &two, 3);
    cfg.resume = true;
    let r2 = (f.model)
        .train_multi(&f.jobs(&names), &cfg, &two, &mut |_, _| {})
        .unwrap();
    for name in names {
        let (a, b) = (saved_files(&one.join(name)), saved_files(&two.join(name)));
        assert!(a.len() >= 3, "{name}: {:?}", self::names(&a));
        assert!(a == b, "task {name}: the saved files differ");
    }
    for ((n1, s1, p1), (n2, s2, p2)) in r1.iter().zip(&r2) {
        assert_eq!(
            (n1, s1.best_step, s1.best_dev, s1.test),
            (n2, s2.best_step, s2.best_dev, s2.test)
        );
        assert_eq!(p1.values(), p2.values());
    }
    // a task's changed method is refused by name
    let mut jobs = f.jobs(&names);
    jobs[2].method = Some(Method::PTuning(PTuning {
        hidden: Some(6),
        ..Default::default()
    }));
    let e = match f.model.train_multi(&jobs, &cfg, &two, &mut |_, _| {}) {
        Ok(_) => panic!("a changed method resumed"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("task `ptune`") && e.contains("method.encoder_hidden_size: 8 -> 6"),
        "{e}"
    );
    std::fs::remove_dir_all(&one).ok();
    std::fs::remove_dir_all(&two).ok();
}

/// `softprompt train ARGS`: whether it succeeded, and its stdout and stderr.
fn train_cli(args: &[&str]) -> (bool, String) {
    let out = common::softprompt(&[&["train"], args].concat());
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    (out.status.success(), text)
}

/// `--task-config`'s `method` (and the method flags' keys) gives a task its own method: the
/// folders are PEFT's PROMPT_TUNING, PREFIX_TUNING and P_TUNING adapters that `predict`
/// serves together; a method key that does not apply is refused naming the task and flag.
#[test]
fn cli_task_config_sets_each_tasks_method() {
    let dir = tmp("cli");
    let src = |f: &str| std::fs::read_to_string(format!("tests/bad_inputs/data/{f}")).unwrap();
    for t in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.join(t)).unwrap();
        std::fs::write(dir.join(t).join("train.jsonl"), src("train.jsonl")).unwrap();
    }
    let config = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = config(
        "tasks.json",
        r#"{"b": {"method": "prefix", "prefix_projection": true, "encoder_hidden_size": 8},
            "c": {"method": "p-tuning", "encoder_hidden_size": 8}}"#,
    );
    let model = common::fixture("bert_mlm");
    let run = |config: &str, out: &Path| {
        let mut flags: Vec<String> = [
            "--model",
            model.to_str().unwrap(),
            "--prompt-len",
            "4",
            "--batch-size",
            "5",
            "--max-steps",
            "2",
            "--threads",
            "1",
            "--no-progress",
            "--task-config",
            config,
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        for t in ["a", "b", "c"] {
            flags.push("--task-data".into());
            flags.push(format!("{t}={}", dir.join(t).display()));
        }
        train_cli(&flags.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = dir.join("out");
    let (ok, text) = run(&good, &out);
    assert!(ok, "{text}");
    let peft_type = |t: &str| -> String {
        let c = std::fs::read_to_string(out.join(t).join("adapter_config.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        v["peft_type"].as_str().unwrap().to_string()
    };
    assert_eq!(
        ["a", "b", "c"].map(peft_type),
        ["PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"]
    );
    assert!(out.join("b").join("prompt_encoder.safetensors").is_file());
    // the three adapters serve together
    let mut args = vec!["predict".to_string()];
    for t in ["a", "b", "c"] {
        args.push("--prompt".into());
        args.push(format!("{t}={}", out.join(t).display()));
    }
    let rows: String = ["a", "b", "c"]
        .iter()
        .map(|t| format!("{{\"text\": \"a fine film\", \"prompt\": \"{t}\"}}\n"))
        .collect();
    std::fs::write(dir.join("rows.jsonl"), rows).unwrap();
    args.extend([
        "--data".into(),
        dir.join("rows.jsonl").display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = common::stdout_ok(&common::softprompt(&args));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    // a method key beside another method, a bad method, --init beside a prefix
    for (text, want) in [
        (
            r#"{"b": {"prefix_projection": true}}"#,
            "--prefix-projection",
        ),
        (
            r#"{"b": {"method": "lora"}}"#,
            "\"lora\": expected prompt, p-tuning or prefix",
        ),
        (
            r#"{"b": {"method": "prefix", "init": "sample-vocab"}}"#,
            "--init",
        ),
    ] {
        let bad = config("bad.json", text);
        let (ok, err) = run(&bad, &dir.join("out_bad"));
        assert!(
            !ok && (err.contains("\"b\"") || err.contains("`b`")),
            "{err}"
        );
        assert!(err.contains(want), "{text}: {err}");
        std::fs::remove_dir_all(dir.join("out_bad")).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}
