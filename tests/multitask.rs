//! Multi-task training (`Model::train_multi`, `softprompt train --task-data/--task-field`):
//! a run of one task is `Model::train` bit for bit; a run stopped and resumed saves every
//! task's prompt byte for byte as the run in one go; each task of a two-task run follows its
//! own single-task run (the mixed batch changes the rounding only), on BERT, T5 and the
//! decoders; and bad input is refused
//! naming the task, flag or file.

use softprompt::prelude::*;
use std::path::{Path, PathBuf};

mod common;

use common::multitask::{cfg, data, stop_after};

fn tmp(name: &str) -> PathBuf {
    common::multitask::tmp("multi", name)
}

/// Two tasks on the fixture: a pet task (the data's labels, verbalized) and a cls task with
/// its own template, each with its train and dev rows encoded.
struct Fixture {
    model: Model,
    tasks: Vec<(Task, Encoded, Encoded)>,
}

fn fixture() -> Fixture {
    let cls = TaskOptions {
        task: Some(TaskKind::Cls),
        template: Some("review: {text}".into()),
        ..TaskOptions::default()
    };
    fixture_of("bert_mlm", [TaskOptions::default(), cls])
}

/// Two tasks of the model's own kind (T5 `seq2seq`, decoders `causal`): the default template
/// and another, each scoring the labels' texts.
fn lm_fixture(name: &str) -> Fixture {
    let other = TaskOptions {
        template: Some("review: {text} sentiment:".into()),
        ..TaskOptions::default()
    };
    fixture_of(name, [TaskOptions::default(), other])
}

fn fixture_of(name: &str, opts: [TaskOptions; 2]) -> Fixture {
    let model = Model::open(common::fixture(name), Device::Cpu).unwrap();
    let (train, dev) = (data("train.jsonl"), data("dev.jsonl"));
    let tasks = opts
        .iter()
        .map(|o| {
            let t = model.task(o, Some(&train), 4).unwrap();
            let (tr, dv) = (
                model.encode(&t, &train).unwrap(),
                model.encode(&t, &dev).unwrap(),
            );
            (t, tr, dv)
        })
        .collect();
    Fixture { model, tasks }
}

impl Fixture {
    fn jobs(&self, names: &[&str]) -> Vec<MultiTask<'_>> {
        (names.iter().zip(&self.tasks))
            .map(|(n, (t, tr, dv))| MultiTask {
                name: n.to_string(),
                task: t,
                splits: Splits {
                    train: tr,
                    dev: Some(dv),
                    test: Some(dv),
                },
                prompt_len: None,
                init: None,
                method: None,
            })
            .collect()
    }
}

/// The files of a saved prompt folder that hold numbers.
fn saved_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["adapter_model.safetensors", "head.safetensors"]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok().map(|b| (f.to_string(), b)))
        .collect()
}

/// One task through `train_multi` is `Model::train`: the same saved prompt and head, byte for
/// byte, the same best step and accuracies.
#[test]
fn one_task_is_the_single_task_run_bit_for_bit() {
    let f = fixture();
    let cfg = cfg();
    for k in 0..2 {
        let (task, tr, dv) = &f.tasks[k];
        let single = tmp(&format!("single{k}"));
        let splits = Splits {
            train: tr,
            dev: Some(dv),
            test: Some(dv),
        };
        let (s1, p1) = f
            .model
            .train(task, splits, &cfg, &single, &mut |_| {})
            .unwrap();
        let multi = tmp(&format!("one{k}"));
        let jobs = vec![f.jobs(&["a", "b"]).remove(k)];
        let r = f
            .model
            .train_multi(&jobs, &cfg, &multi, &mut |_, _| {})
            .unwrap();
        let (name, s2, p2) = &r[0];
        let want = if k == 0 { "a" } else { "b" };
        assert_eq!(name, want);
        assert_eq!(p1.values(), p2.values());
        assert_eq!(p1.head(), p2.head());
        assert_eq!(saved_bytes(&single), saved_bytes(&multi.join(want)));
        assert!(!saved_bytes(&single).is_empty());
        assert_eq!((s1.steps, s1.best_step), (s2.steps, s2.best_step));
        assert_eq!(s1.best_dev, s2.best_dev);
        assert_eq!(s1.test, s2.test);
        std::fs::remove_dir_all(&single).ok();
        std::fs::remove_dir_all(&multi).ok();
    }
}

/// N steps in one go, or k steps, a stop, and a resume to N: every task's saved prompt and
/// head byte-identical, and the metrics lines (less their timings) the same. The resume runs
/// under `--recompute layer`, which changes no number (it was refused as another setting).
#[test]
fn stopped_and_resumed_equals_one_go() {
    let f = fixture();
    let mut cfg = cfg();
    cfg.save_every = 2;
    let one = tmp("onego");
    let r1 = f
        .model
        .train_multi(&f.jobs(&["pet", "cls"]), &cfg, &one, &mut |_, _| {})
        .unwrap();
    let two = tmp("resumed");
    stop_after(&f.model, &f.jobs(&["pet", "cls"]), &cfg, &two, 3);
    cfg.resume = true;
    cfg.recompute = Recompute::Layer;
    let mut resumed_at = Vec::new();
    let r2 = f
        .model
        .train_multi(&f.jobs(&["pet", "cls"]), &cfg, &two, &mut |t, ev| {
            if let Event::Started { resumed_at: r, .. } = ev {
                resumed_at.push((t.to_string(), *r));
            }
        })
        .unwrap();
    assert_eq!(
        resumed_at,
        [("pet".to_string(), Some(3)), ("cls".to_string(), Some(3))]
    );
    for name in ["pet", "cls"] {
        let (a, b) = (saved_bytes(&one.join(name)), saved_bytes(&two.join(name)));
        assert!(!a.is_empty());
        assert_eq!(a, b, "task {name}");
    }
    for ((n1, s1, p1), (n2, s2, p2)) in r1.iter().zip(&r2) {
        assert_eq!(
            (n1, s1.best_step, s1.best_dev, s1.test),
            (n2, s2.best_step, s2.best_dev, s2.test)
        );
        assert_eq!(p1.values(), p2.values());
    }
    let lines = |d: &Path| -> Vec<serde_json::Value> {
        (std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines())
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("steps_per_s");
            o.remove("tokens_per_s");
            v
        })
        .collect()
    };
    let (l1, l2) = (lines(&one), lines(&two));
    assert_eq!(l1, l2);
    // every line names its task; each task has its 6 loss lines and 3 dev evaluations
    for name in ["pet", "cls"] {
        let mine: Vec<_> = l1.iter().filter(|v| v["task"] == name).collect();
        assert_eq!(mine.iter().filter(|v| v.get("loss").is_some()).count(), 6);
        assert_eq!(mine.iter().filter(|v| v["split"] == "dev").count(), 3);
    }
    assert!(l1.iter().all(|v| v["task"].is_string()));
    // the second run is finished: resuming re-scores it and changes nothing, and writes the
    // log it says it saved when it was gone
    std::fs::remove_file(two.join("metrics.jsonl")).unwrap();
    let r3 = f
        .model
        .train_multi(&f.jobs(&["pet", "cls"]), &cfg, &two, &mut |_, _| {})
        .unwrap();
    assert_eq!(r3[0].1.test, r2[0].1.test);
    assert!(two.join("metrics.jsonl").is_file());
    assert_eq!(saved_bytes(&one.join("cls")), saved_bytes(&two.join("cls")));
    std::fs::remove_dir_all(&one).ok();
    std::fs::remove_dir_all(&two).ok();
}

/// Each task of a two-task run follows its own single-task run: the mixed batch (one encoder
/// pass over both tasks' rows, padded together) changes the last bits of each step, so the
/// prompts agree closely, not bit for bit.
#[test]
fn each_task_follows_its_own_run() {
    follows_its_own_run(&fixture(), "bert");
}

/// The same for T5 `seq2seq` and decoder-only `causal` tasks, whose steps mix too.
#[test]
fn each_lm_task_follows_its_own_run() {
    for name in ["t5_flan", "llama", "bloom"] {
        follows_its_own_run(&lm_fixture(name), name);
    }
}

fn follows_its_own_run(f: &Fixture, tag: &str) {
    let cfg = cfg();
    let multi = tmp(&format!("pair_{tag}"));
    let r = f
        .model
        .train_multi(&f.jobs(&["pet", "cls"]), &cfg, &multi, &mut |_, _| {})
        .unwrap();
    for (k, (task, tr, dv)) in f.tasks.iter().enumerate() {
        let single = tmp(&format!("alone{k}_{tag}"));
        let splits = Splits {
            train: tr,
            dev: Some(dv),
            test: Some(dv),
        };
        let (s, p) = f
            .model
            .train(task, splits, &cfg, &single, &mut |_| {})
            .unwrap();
        let got = &r[k].2;
        let err = (p.values().iter().zip(got.values()))
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        // 6 Adam steps of lr 0.1 from gradients equal within 1e-5 relative (tests/mixed.rs)
        assert!(err < 1e-4, "{tag} task {k}: prompts differ by {err}");
        assert_eq!(s.best_step, r[k].1.best_step);
        assert_eq!(s.test.map(|m| m.accuracy), r[k].1.test.map(|m| m.accuracy));
        std::fs::remove_dir_all(&single).ok();
    }
    std::fs::remove_dir_all(&multi).ok();
}

/// Early stopping per task: with --patience 1 and an evaluation every step, each task of a
/// two-task run stops (or not) at the step its own single-task run stops, frozen while the
/// other goes on; the run ends when both are done.
#[test]
fn each_task_stops_early_on_its_own() {
    let f = fixture();
    let cfg = TrainConfig {
        max_steps: Some(12),
        eval_every: 1,
        patience: Some(1),
        ..cfg()
    };
    let multi = tmp("early");
    let mut stepped: Vec<(String, u64)> = Vec::new();
    let r = (f.model)
        .train_multi(&f.jobs(&["pet", "cls"]), &cfg, &multi, &mut |t, ev| {
            if let Event::Step(s) = ev {
                stepped.push((t.to_string(), s.step));
            }
        })
        .unwrap();
    let mut stops = Vec::new();
    for (k, (task, tr, dv)) in f.tasks.iter().enumerate() {
        let single = tmp(&format!("early{k}"));
        let splits = Splits {
            train: tr,
            dev: Some(dv),
            test: Some(dv),
        };
        let (s, _) = f
            .model
            .train(task, splits, &cfg, &single, &mut |_| {})
            .unwrap();
        let m = &r[k].1;
        assert_eq!(
            (s.steps, s.best_step, s.early_stopped),
            (m.steps, m.best_step, m.early_stopped),
            "task {k}"
        );
        // a frozen task takes no step after its stop
        let name = &r[k].0;
        let last = stepped
            .iter()
            .filter(|(t, _)| t == name)
            .map(|(_, s)| *s)
            .max();
        assert_eq!(last, Some(m.steps));
        stops.push(m.steps);
        std::fs::remove_dir_all(&single).ok();
    }
    // the fixture's tasks stop at different steps: the test sees one frozen while the other goes on
    assert!(
        stops[0] != stops[1] && stops.iter().any(|&s| s < 12),
        "{stops:?}"
    );
    // the finished run resumed (re-scored) says how each task ended (it said no early stop)
    let again = TrainConfig {
        resume: true,
        ..cfg.clone()
    };
    let r2 = (f.model)
        .train_multi(&f.jobs(&["pet", "cls"]), &again, &multi, &mut |_, _| {})
        .unwrap();
    let ended = |r: &[(String, Summary, Prompt)]| -> Vec<(u64, u64, bool)> {
        (r.iter())
            .map(|(_, s, _)| (s.steps, s.best_step, s.early_stopped))
            .collect()
    };
    assert_eq!(ended(&r2), ended(&r));
    assert!(r.iter().any(|(_, s, _)| s.early_stopped));
    std::fs::remove_dir_all(&multi).ok();
}

fn err_of<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Duplicate and bad names, a task without a dev split under --eval-every, a changed task
/// list or a task's changed settings on resume: errors naming the task and what is wrong.
#[test]
fn bad_tasks_are_refused_by_name() {
    let f = fixture();
    let cfg = cfg();
    let out = tmp("bad");
    let e = err_of(
        f.model
            .train_multi(&f.jobs(&["x", "x"]), &cfg, &out, &mut |_, _| {}),
    );
    assert!(e.contains("`x` is given twice"), "{e}");
    let e = err_of(
        f.model
            .train_multi(&f.jobs(&["a/b", "c"]), &cfg, &out, &mut |_, _| {}),
    );
    assert!(e.contains("\"a/b\"") && e.contains("task name"), "{e}");
    let e = err_of(f.model.train_multi(&[], &cfg, &out, &mut |_, _| {}));
    assert!(e.contains("at least one task"), "{e}");
    let mut jobs = f.jobs(&["a", "b"]);
    jobs[1].splits.dev = None;
    let e = err_of(f.model.train_multi(&jobs, &cfg, &out, &mut |_, _| {}));
    // the API's words: the field and the argument (the command line says --eval-every, --dev)
    let want = "invalid argument cfg.eval_every: task `b`: evaluating during the run needs a dev \
                split: pass `dev`";
    assert_eq!(e, want);

    let mut short = cfg.clone();
    short.max_steps = Some(2);
    f.model
        .train_multi(&f.jobs(&["a", "b"]), &short, &out, &mut |_, _| {})
        .unwrap();
    let mut again = short.clone();
    again.resume = true;
    let e = err_of(
        f.model
            .train_multi(&f.jobs(&["a", "c"]), &again, &out, &mut |_, _| {}),
    );
    assert!(
        e.contains("[\"a\", \"b\"]") && e.contains("[\"a\", \"c\"]"),
        "{e}"
    );
    let mut jobs = f.jobs(&["a", "b"]);
    jobs[1].prompt_len = Some(3);
    let e = err_of(f.model.train_multi(&jobs, &again, &out, &mut |_, _| {}));
    assert!(
        e.contains("task `b`") && e.contains("prompt_len: 4 -> 3"),
        "{e}"
    );
    again.optim.lr = 0.2;
    let e = err_of(
        f.model
            .train_multi(&f.jobs(&["a", "b"]), &again, &out, &mut |_, _| {}),
    );
    // a run-wide setting is the run's, not the first task's (hostile pass 25, F7)
    assert!(
        e.contains("Differences: every task: lr: 0.1 -> 0.2") && !e.contains("task `a`"),
        "{e}"
    );
    // a fresh run into the folder is refused without cfg.overwrite
    let e = err_of(
        f.model
            .train_multi(&f.jobs(&["a", "b"]), &short, &out, &mut |_, _| {}),
    );
    assert!(e.contains("set `cfg.overwrite` to replace it"), "{e}");
    assert!(!e.contains("--"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

/// `overwrite` over a finished run, with a prompt that cannot be made (a vocabulary sample
/// past the vocabulary): refused before anything is removed, the earlier run's files kept
/// (the folder was emptied first, leaving only the lock).
#[test]
fn a_refused_init_keeps_the_run_it_would_overwrite() {
    let f = fixture();
    let out = tmp("keep");
    let mut short = cfg();
    short.max_steps = Some(2);
    (f.model)
        .train_multi(&f.jobs(&["a", "b"]), &short, &out, &mut |_, _| {})
        .unwrap();
    let kept = ["a", "b"].map(|t| saved_bytes(&out.join(t)));
    assert!(kept.iter().all(|k| !k.is_empty()));
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let again = TrainConfig {
        overwrite: true,
        ..short
    };
    let mut jobs = f.jobs(&["a", "b"]);
    jobs[1].init = Some(PromptInit::SampleVocab {
        from_first: Some(100_000),
    });
    let e = err_of(f.model.train_multi(&jobs, &again, &out, &mut |_, _| {}));
    assert!(e.contains("task `b`") && e.contains("100000"), "{e}");
    assert_eq!(["a", "b"].map(|t| saved_bytes(&out.join(t))), kept);
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);
    std::fs::remove_dir_all(&out).ok();
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .arg("train")
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The command line: --task-data folders and --task-field over one file train the same
/// prompts; --task-config sets a task's own flags; bad input names the flag or file.
#[test]
fn cli_task_data_and_task_field() {
    let dir = tmp("cli");
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let src = |f: &str| std::fs::read_to_string(format!("tests/bad_inputs/data/{f}")).unwrap();
    for d in [&a, &b] {
        std::fs::write(d.join("train.jsonl"), src("train.jsonl")).unwrap();
        std::fs::write(d.join("dev.jsonl"), src("dev.jsonl")).unwrap();
    }
    // one file whose rows name their task: a's rows then b's, as the folders hold them
    let tag = |f: &str| -> String {
        let mut s = String::new();
        for t in ["a", "b"] {
            for l in src(f).lines() {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["task"] = t.into();
                s += &format!("{v}\n");
            }
        }
        s
    };
    std::fs::write(dir.join("train.jsonl"), tag("train.jsonl")).unwrap();
    std::fs::write(dir.join("dev.jsonl"), tag("dev.jsonl")).unwrap();
    std::fs::write(
        dir.join("tasks.json"),
        r#"{"b": {"task": "cls", "template": "review: {text}", "prompt_len": 3}}"#,
    )
    .unwrap();
    let tasks_json = dir.join("tasks.json");
    let model = common::fixture("bert_mlm");
    let model = model.to_str().unwrap();
    let common_flags = [
        "--model",
        model,
        "--prompt-len",
        "4",
        "--batch-size",
        "5",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--task-config",
        tasks_json.to_str().unwrap(),
    ];
    let by_dir = dir.join("out_dir");
    let (ok, text) = cli(&[
        &common_flags[..],
        &[
            "--task-data",
            &format!("a={}", a.display()),
            "--task-data",
            &format!("b={}", b.display()),
            "--out",
            by_dir.to_str().unwrap(),
        ],
    ]
    .concat());
    assert!(ok, "{text}");
    assert!(text.contains("[b] step 2 dev accuracy"), "{text}");
    let by_field = dir.join("out_field");
    let (ok, text) = cli(&[
        &common_flags[..],
        &[
            "--train",
            dir.join("train.jsonl").to_str().unwrap(),
            "--dev",
            dir.join("dev.jsonl").to_str().unwrap(),
            "--task-field",
            "task",
            "--out",
            by_field.to_str().unwrap(),
        ],
    ]
    .concat());
    assert!(ok, "{text}");
    for t in ["a", "b"] {
        assert_eq!(
            saved_bytes(&by_dir.join(t)),
            saved_bytes(&by_field.join(t)),
            "task {t}"
        );
    }
    let b_prompt = Prompt::load(by_dir.join("b")).unwrap();
    assert_eq!((b_prompt.rows(), b_prompt.head().is_some()), (3, true));
    // the saved prompts serve together
    let pa = format!("a={}", by_dir.join("a").display());
    let pb = format!("b={}", by_dir.join("b").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args([
            "predict",
            "--prompt",
            &pa,
            "--prompt",
            &pb,
            "--prompt-field",
            "task",
            "--data",
            dir.join("dev.jsonl").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 16);

    // bad input
    let out = dir.join("out_bad");
    let o = out.to_str().unwrap();
    let (ok, text) = cli(&[&common_flags[..], &["--task-data", "a", "--out", o]].concat());
    assert!(
        !ok && text.contains("--task-data") && text.contains("NAME=DIR"),
        "{text}"
    );
    let (ok, text) = cli(&[
        &common_flags[..],
        &[
            "--task-data",
            &format!("a={}", dir.join("nope").display()),
            "--out",
            o,
        ],
    ]
    .concat());
    assert!(!ok && text.contains("not a folder"), "{text}");
    let (ok, text) = cli(&[
        &common_flags[..],
        &[
            "--task-data",
            &format!("x={}", a.display()),
            "--task-data",
            &format!("a={}", a.display()),
            "--out",
            o,
        ],
    ]
    .concat());
    assert!(
        !ok && text.contains("tasks.json")
            && text.contains("\"b\"")
            && text.contains("not one of this run's (x, a)"),
        "{text}"
    );
    std::fs::write(
        dir.join("dev_c.jsonl"),
        format!(
            "{}{}",
            tag("dev.jsonl"),
            "{\"text\": \"t\", \"label\": \"positive\", \"task\": \"c\"}\n"
        ),
    )
    .unwrap();
    // a --task-field run over train.jsonl with `dev` as its dev split
    let field_run = |dev: &str| {
        let (train, dev) = (dir.join("train.jsonl"), dir.join(dev));
        let (train, dev) = (train.to_str().unwrap(), dev.to_str().unwrap());
        let flags = [
            "--train",
            train,
            "--dev",
            dev,
            "--task-field",
            "task",
            "--out",
            o,
        ];
        cli(&[&common_flags[..], &flags].concat())
    };
    let (ok, text) = field_run("dev_c.jsonl");
    assert!(
        !ok && text.contains("dev_c.jsonl:17")
            && text.contains("task \"c\" has no rows in --train"),
        "{text}"
    );
    std::fs::write(
        dir.join("dev_a.jsonl"),
        src("dev.jsonl")
            .lines()
            .map(|l| l.replace('}', ", \"task\": \"a\"}") + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let (ok, text) = field_run("dev_a.jsonl");
    assert!(
        !ok && text.contains("dev_a.jsonl") && text.contains("task \"b\" has no rows in --dev"),
        "{text}"
    );
    std::fs::write(dir.join("bad.json"), r#"{"a": {"templat": "x"}}"#).unwrap();
    let bad = dir.join("bad.json");
    let (ok, text) = cli(&[
        &common_flags[..13],
        &[
            "--task-config",
            bad.to_str().unwrap(),
            "--task-data",
            &format!("a={}", a.display()),
            "--out",
            o,
        ],
    ]
    .concat());
    assert!(
        !ok && text.contains("bad.json") && text.contains("unknown setting `templat`"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The console of a --task-data run (hostile pass 14): a task's loss line is its metrics.jsonl
/// line (the mean over the --log-every window, not the step's loss), printed at the task's
/// last step too; a task's early stop is said at its step, before the other task goes on; a
/// patience that runs out at the last step is no early stop.
#[test]
fn cli_console_says_what_metrics_says_when_it_happens() {
    let dir = tmp("console");
    let src = |f: &str| std::fs::read_to_string(format!("tests/bad_inputs/data/{f}")).unwrap();
    for t in ["a", "b"] {
        std::fs::create_dir_all(dir.join(t)).unwrap();
        for f in ["train.jsonl", "dev.jsonl"] {
            std::fs::write(dir.join(t).join(f), src(f)).unwrap();
        }
    }
    let tasks = dir.join("tasks.json");
    std::fs::write(
        &tasks,
        r#"{"b": {"task": "cls", "template": "review: {text}"}}"#,
    )
    .unwrap();
    let (model, out) = (common::fixture("bert_mlm"), dir.join("out"));
    let [model, tasks, out] = [&model, &tasks, &out].map(|p| p.to_str().unwrap().to_string());
    let data = |t: &str| format!("{t}={}", dir.join(t).display());
    // adamw at a constant 0.1, no clipping: the fixture's settings (common::multitask::cfg)
    // seed 0: a's best at step 2 and its patience out at its last step, b's early stop at 3
    let flags = "--prompt-len 4 --batch-size 5 --max-steps 4 --eval-every 1 --patience 2 \
                 --log-every 3 --threads 1 --no-progress --optimizer adamw --lr 0.1 \
                 --schedule constant --max-grad-norm 0 --seed 0";
    let (a, b) = (data("a"), data("b"));
    let paths = ["--model", &model, "--task-config", &tasks, "--out", &out];
    let tasks_data = ["--task-data", &a, "--task-data", &b];
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let args = [&flags[..], &paths, &tasks_data].concat();
    let (ok, text) = cli(&args);
    assert!(ok, "{text}");
    // the loss lines as metrics.jsonl gives them: a's and b's step 3 (3 steps each), a's last
    let metrics = std::fs::read_to_string(dir.join("out/metrics.jsonl")).unwrap();
    let logged: Vec<String> = (metrics.lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap();
            format!(
                "[{}] step {} loss {:.4} lr {:.3e} grad-norm {:.3}",
                v["task"].as_str().unwrap(),
                v["step"],
                f("loss"),
                f("lr"),
                f("grad_norm")
            )
        })
        .collect();
    let [a3, b3, a4] = <[String; 3]>::try_from(logged).unwrap();
    let dev = |t: &str, step: u64, acc: &str, best: bool| {
        let f1 = match acc {
            "1.0000" => "1.0000",
            "0.8750" => "0.8730",
            _ => "0.3333",
        };
        let mark = if best { " (best)" } else { "" };
        format!("[{t}] step {step} dev accuracy {acc} macro-F1 {f1}{mark}")
    };
    let want = [
        "[a] 4 steps, 192 prompt + 0 head parameters".to_string(),
        "[b] 4 steps, 192 prompt + 98 head parameters".into(),
        dev("a", 1, "0.5000", true),
        dev("b", 1, "0.5000", true),
        dev("a", 2, "1.0000", true),
        dev("b", 2, "0.5000", false),
        a3,
        dev("a", 3, "1.0000", false),
        b3,
        dev("b", 3, "0.5000", false),
        "[b] early stop at step 3 (best step 1): frozen, its rows leave the batches".into(),
        a4,
        dev("a", 4, "1.0000", false),
        "[a] patience ran out at step 4, the last (best step 2)".into(),
    ];
    let said = |text: &str| -> Vec<String> {
        (text.lines())
            .filter(|l| l.starts_with("["))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(said(&text), want, "{text}");
    // the finished run resumed says at its start how each task ended
    let (ok, text) = cli(&[&args[..], &["--resume"]].concat());
    assert!(ok, "{text}");
    let ended = [
        "[a] 4 steps, 192 prompt + 0 head parameters, resumed at step 4",
        "[b] 4 steps, 192 prompt + 98 head parameters, resumed at step 3",
        "[a] patience ran out at step 4, the last (best step 2)",
        "[b] early stop at step 3 (best step 1): frozen, its rows leave the batches",
    ];
    assert_eq!(said(&text), ended, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// #17: two tasks on bert_nohead (48 positions) with prompts of 12 and 8 rows, each task's
/// max_len clamped beside its own prompt (48 - 12 = 36, 48 - 8 = 40). Task b's rows are long,
/// cut to its 40 tokens, so a batch mixing them with task a's runs past the position table
/// (12 + 40 > 48) while every row fits beside its own prompt (8 + 40). The run trains to its
/// last step and evaluates both tasks; it was refused at its first batch ("expected <= 48,
/// got 12 + 40").
#[test]
fn cli_prompts_of_different_lengths_at_the_position_limit() {
    let dir = tmp("limit");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let src = |f: &str| std::fs::read_to_string(format!("tests/bad_inputs/data/{f}")).unwrap();
    // b's texts ten times over: past 40 tokens
    let long = |f: &str| -> String {
        let rows = src(f);
        let rows = rows.lines().map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"] = format!("{} ", v["text"].as_str().unwrap())
                .repeat(10)
                .into();
            format!("{v}\n")
        });
        rows.collect()
    };
    for (d, text) in [(&a, &src as &dyn Fn(&str) -> String), (&b, &long)] {
        std::fs::create_dir_all(d).unwrap();
        for f in ["train.jsonl", "dev.jsonl"] {
            std::fs::write(d.join(f), text(f)).unwrap();
        }
    }
    let tasks_json = dir.join("tasks.json");
    std::fs::write(&tasks_json, r#"{"b": {"prompt_len": 8}}"#).unwrap();
    let model = common::fixture("bert_nohead");
    let out = dir.join("out");
    let (ok, text) = cli(&[
        "--model",
        model.to_str().unwrap(),
        "--task",
        "cls",
        "--pooling",
        "mean",
        "--prompt-len",
        "12",
        "--task-data",
        &format!("a={}", a.display()),
        "--task-data",
        &format!("b={}", b.display()),
        "--task-config",
        tasks_json.to_str().unwrap(),
        "--batch-size",
        "4",
        "--max-steps",
        "4",
        "--eval-every",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    // b's rows reach its bound, a's fit well within theirs
    assert!(text.contains("rows, 24 truncated to 40 tokens"), "{text}");
    for t in ["a", "b"] {
        assert!(
            text.contains(&format!("[{t}] step 4 dev accuracy")),
            "{text}"
        );
    }
    let rows = ["a", "b"].map(|t| Prompt::load(out.join(t)).unwrap().rows());
    assert_eq!(rows, [12, 8]);
    std::fs::remove_dir_all(&dir).ok();
}

/// #17 on a decoder with a sliding window (mistral, its window set to 24): two `causal` tasks
/// with prompts of 4 and 8 rows, each task's max_len leaving its own prompt and target room
/// in the window. Task a's long rows, cut to its bound, share batches with task b's longer
/// prompt: the batch runs past the window (8 + 20 > 24) while each row fits in it beside its
/// own prompt. The run trains to its last step; it was refused ("28 positions with
/// sliding_window 24").
#[test]
fn cli_causal_prompts_of_different_lengths_at_the_window() {
    causal_tasks_at_the_window("window", r#"{"b": {"prompt_len": 8}}"#);
}

/// The same with task b a prefix of 8 rows: a row of task a (4 prompt rows, 20 tokens, no
/// prefix) beside task b's prefix also runs past the window (8 + 4 + 20 > 24) while each row
/// fits beside its own prompt or prefix. Refused before ("32 positions with sliding_window
/// 24": the largest prefix in front of the batch's whole layout).
#[test]
fn cli_causal_prefix_beside_a_prompt_at_the_window() {
    let tasks = r#"{"b": {"method": "prefix", "prompt_len": 8}}"#;
    causal_tasks_at_the_window("window_prefix", tasks);
}

fn causal_tasks_at_the_window(name: &str, tasks: &str) {
    let dir = tmp(name);
    let model_dir = common::windowed_mistral(&dir, 24);
    for t in ["a", "b"] {
        std::fs::create_dir_all(dir.join(t)).unwrap();
        let rows: String = (0..8)
            .map(|i| {
                let label = ["positive", "negative"][i % 2];
                format!(
                    "{}\n",
                    serde_json::json!({"text": "word ".repeat(30 + i), "label": label})
                )
            })
            .collect();
        std::fs::write(dir.join(t).join("train.jsonl"), rows).unwrap();
    }
    let tasks_json = dir.join("tasks.json");
    std::fs::write(&tasks_json, tasks).unwrap();
    let out = dir.join("out");
    let (ok, text) = cli(&[
        "--model",
        model_dir.to_str().unwrap(),
        "--task",
        "causal",
        "--prompt-len",
        "4",
        "--task-data",
        &format!("a={}", dir.join("a").display()),
        "--task-data",
        &format!("b={}", dir.join("b").display()),
        "--task-config",
        tasks_json.to_str().unwrap(),
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    // every row cut to its task's bound
    assert!(text.contains("8 rows, 8 truncated"), "{text}");
    for t in ["a", "b"] {
        assert!(text.contains(&format!("done [{t}]: 3 steps")), "{text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `--task-field`: a row whose task field is blank got the label's error and its advice to
/// leave the field out, which `--task-field` then refuses (hostile pass 25, F4): the task is
/// named as the fault, with its line.
#[test]
fn a_blank_task_field_is_named_as_the_rows_task() {
    let dir = common::ScratchDir::new("multi_blank_task");
    let rows = common::multitask::tagged_rows().replacen("\"task\": \"a\"", "\"task\": \"\"", 1);
    let train = dir.path().join("tagged.jsonl");
    std::fs::write(&train, rows).unwrap();
    let out = dir.path().join("out");
    let args = common::multitask::multi_args(&train, &out, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = common::refused(
        &common::softprompt(&args),
        &[
            &format!("{}:1:", train.display()),
            "field \"task\" is blank: each row names its task there (--task-field)",
        ],
    );
    assert!(!err.contains("leave the field out"), "{err}");
    assert!(!out.join("checkpoint.safetensors").exists()); // a name no folder can take is named with its line too (it had none)
    let rows = common::multitask::tagged_rows().replacen("\"task\": \"a\"", "\"task\": \"a b\"", 1);
    std::fs::write(&train, rows).unwrap();
    common::refused(
        &common::softprompt(&args),
        &[
            &format!("{}:1:", train.display()),
            "field \"task\", a task name: \"a b\": expected letters, digits",
        ],
    );
}

/// A run started into another kind of run's --out is told what it can do: a multi-task run
/// into a single-task run's was told to pass --resume, then refused (hostile pass 25, F7); a
/// multi-task run's is described as one (it was "the files of a run").
#[test]
fn a_run_of_the_other_kind_is_not_told_to_resume() {
    let dir = common::ScratchDir::new("multi_other_kind");
    let train = common::multitask::tagged_file(&dir);
    let (single, multi) = (dir.path().join("single"), dir.path().join("multi"));
    let args = |out: &std::path::Path, tasks: bool| -> Vec<String> {
        let mut a = common::multitask::multi_args(&train, out, &[]);
        if !tasks {
            a.truncate(a.len() - 2); // no --task-field
        }
        a
    };
    let run =
        |a: Vec<String>| common::softprompt(&a.iter().map(String::as_str).collect::<Vec<_>>());
    common::stdout_ok(&run(args(&single, false)));
    common::stdout_ok(&run(args(&multi, true)));
    let err = common::refused(
        &run(args(&single, true)),
        &[
            "holds a finished run (step 2): a single-task run, which a multi-task run does not \
             continue: pass --overwrite to replace it",
        ],
    );
    assert!(!err.contains("--resume"), "{err}");
    common::refused(
        &run(args(&multi, true)),
        &["holds a finished multi-task run (step 2; tasks a, b): pass --resume to continue it"],
    );
    common::refused(
        &run(args(&multi, false)),
        &[
            "holds a finished multi-task run (step 2; tasks a, b): resume it as a multi-task run \
           of its tasks (the command line's --task-data or --task-field, or \
           `Model::train_multi`), pass --overwrite to replace it",
        ],
    );
}

/// A multi-task run held `out`'s lock alone: a single-task run into one of its task folders,
/// or a resume over one a single-task run was training in, wrote it in turn with the other
/// (review 19, R19-1). The run holds each task folder's lock while it lasts; a resume over a
/// task folder holding another run's checkpoint is refused, naming it; a single-task run into
/// a finished run's task folder is told whose prompt it holds.
#[test]
fn task_folders_are_the_runs_while_it_lasts() {
    use softprompt::internals::train::outdir::OutLock;
    let f = fixture();
    let mut cfg = cfg();
    cfg.max_steps = Some(2);
    let out = tmp("task_locks");
    let mut refused_inside = Vec::new();
    f.model
        .train_multi(&f.jobs(&["a", "b"]), &cfg, &out, &mut |_, _| {
            // once: a lock this process holds is asked again for 2 s (`OWN_LINGER`)
            if refused_inside.is_empty() {
                refused_inside.push(OutLock::acquire(&out.join("a")).is_err());
            }
        })
        .unwrap();
    assert_eq!(refused_inside, [true]);
    // a single-task run into a finished run's task folder is told whose prompt it holds
    let (task, train, dev) = &f.tasks[0];
    let splits = Splits {
        train,
        dev: Some(dev),
        test: None,
    };
    let e = err_of(
        f.model
            .train(task, splits, &cfg, out.join("a"), &mut |_| {}),
    );
    assert!(
        e.contains("holds task `a`'s prompt of the multi-task run in"),
        "{e}"
    );
    let mut over = cfg.clone();
    over.overwrite = true;
    (f.model
        .train(task, splits, &over, out.join("a"), &mut |_| {}))
    .unwrap();
    let mut again = cfg.clone();
    again.resume = true;
    let e = err_of(
        f.model
            .train_multi(&f.jobs(&["a", "b"]), &again, &out, &mut |_, _| {}),
    );
    assert!(
        e.contains("task `a`") && e.contains("another run's: move it out of the folder"),
        "{e}"
    );
    std::fs::remove_dir_all(&out).ok();
}
