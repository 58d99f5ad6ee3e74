//! Multi-task training: the task at fault is named, a settings file's repeated key is refused,
//! a multi-task checkpoint resumed as one task says so, odd inputs are refused.

use crate::common::{fixture, refused, ScratchDir};
use crate::{corpus, ok, s, snapshot, softprompt};
use std::process::Output;

/// Two task folders (a, b) over the corpus' train file, and the multi-task command on them.
fn two_tasks(dir: &ScratchDir) -> Vec<String> {
    for t in ["a", "b"] {
        let d = dir.path().join(t);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::copy(corpus("data/train.jsonl"), d.join("train.jsonl")).expect("copy");
    }
    let p = |t: &str| format!("{t}={}", dir.path().join(t).display());
    let model = fixture("bert_mlm");
    let out = dir.path().join("out");
    [
        "train",
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--task-data",
        &p("a"),
        "--task-data",
        &p("b"),
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--prompt-len",
        "2",
        "--no-progress",
    ]
    .map(String::from)
    .to_vec()
}

/// The multi-task command `args` with `extra` flags, run.
fn with_flags(args: &[String], extra: &[&str]) -> Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    softprompt(&all)
}

/// No run was written into `dir`/out.
fn no_run(dir: &ScratchDir) {
    let ckpt = dir.path().join("out").join("checkpoint.safetensors");
    assert!(!ckpt.exists(), "a refused run wrote {}", ckpt.display());
}

/// A setting of one task (in --task-config, or a flag every task reads) that the model refuses
/// named neither the task nor the file: "invalid argument --max-len: must be at least 2"; then
/// a --task-config key was named by its flag (`--max-len` for the file's `max_len`).
#[test]
fn multitask_errors_name_the_task() {
    let dir = ScratchDir::new("multitask_names");
    let args = two_tasks(&dir);
    let config = dir.path().join("tasks.json");
    for (text, key) in [
        (r#"{"b": {"max_len": 0}}"#, "`max_len` (as --max-len)"),
        // was "invalid argument --prompt-len: task `b`", after the model was loaded
        (
            r#"{"b": {"prompt_len": 0}}"#,
            "`prompt_len` is 0: expected at least 1",
        ),
        (r#"{"b": {"method": "bogus"}}"#, "`method` (as --method)"),
        (
            r#"{"b": {"method": "prompt", "prefix_placement": "peft"}}"#,
            "`prefix_placement` (as --prefix-placement)",
        ),
        // named as flags the user never passed, after the model was loaded (hostile pass
        // 35, F1): a range refused at once, the memory once the model's width is known
        (
            r#"{"b": {"method": "p-tuning", "encoder_reparameterization": "lstm",
                "encoder_num_layers": 0}}"#,
            "`encoder_num_layers` (as --encoder-num-layers): is 0: expected 1 to",
        ),
        (
            r#"{"b": {"method": "p-tuning", "encoder_hidden_size": 1000000000}}"#,
            "`encoder_hidden_size` (as --encoder-hidden-size): a MLP encoder of hidden size",
        ),
    ] {
        std::fs::write(&config, text).expect("write");
        refused(
            &with_flags(&args, &["--task-config", s(&config)]),
            &[key, "task \"b\"", s(&config)],
        );
    }
    // a flag the file does not set keeps its name
    std::fs::write(&config, r#"{"b": {"prompt_len": 3}}"#).expect("write");
    refused(
        &with_flags(&args, &["--task-config", s(&config), "--max-len", "0"]),
        &["invalid argument --max-len", "task `a`", s(&config)],
    );
    refused(
        &with_flags(&args, &["--verbalizer", "positive=great,negative=great"]),
        &["invalid argument --verbalizer", "task `a`"],
    );
    no_run(&dir);
}

/// `--init-text` "for every task", as the file's refusal of `init: text` without text
/// advises, was refused on another task of `init: random` (hostile pass 35, F2): the command
/// line's companions of an init go to the tasks whose init reads them.
#[test]
fn an_init_flag_goes_to_the_tasks_whose_init_reads_it() {
    let dir = ScratchDir::new("multitask_init_text");
    let args = two_tasks(&dir);
    let config = dir.path().join("tasks.json");
    std::fs::write(
        &config,
        r#"{"a": {"init": "random"}, "b": {"init": "text"}}"#,
    )
    .expect("write");
    let flags = ["--task-config", s(&config), "--init-text", "a fine review"];
    ok(&with_flags(&args, &flags));
    // a task's own init_text where its init does not read it is still the file's error
    std::fs::write(&config, r#"{"a": {"init": "random", "init_text": "x"}}"#).expect("write");
    let out = dir.path().join("out2");
    let mut again = args.clone();
    let at = again.iter().position(|x| x == "--out").expect("--out") + 1;
    again[at] = s(&out).to_string();
    refused(
        &with_flags(&again, &["--task-config", s(&config)]),
        &["`init_text` (as --init-text)", "task \"a\""],
    );
    // one that no task reads is refused, not dropped (verification 34, F-1)
    std::fs::write(
        &config,
        r#"{"a": {"init": "random"}, "b": {"init": "random"}}"#,
    )
    .expect("write");
    refused(
        &with_flags(&again, &["--task-config", s(&config), "--init-text", "x"]),
        &["invalid argument --init-text: is read by no task"],
    );
}

/// A flag of the whole run out of its range (`--patience 0`) was tagged with the first task
/// (``task `a` ``) and refused only after the model was loaded and every task's data encoded:
/// it is refused first, untagged, as a single-task run refuses it. (#17, hostile5 F8)
#[test]
fn multitask_run_flags_are_checked_before_the_model_is_loaded() {
    let dir = ScratchDir::new("multitask_patience");
    let mut args = two_tasks(&dir);
    // a model folder that cannot load: the flag's error must come before the model's
    let model = args.iter().position(|a| a == "--model").expect("--model") + 1;
    args[model] = s(&dir.path().join("no_model")).to_string();
    for t in ["a", "b"] {
        let dev = dir.path().join(t).join("dev.jsonl");
        std::fs::copy(corpus("data/dev.jsonl"), dev).expect("copy");
    }
    for flags in [&["--patience", "0"][..], &["--epochs", "0"][..]] {
        let out = with_flags(&args, flags);
        let err = refused(&out, &[&format!("invalid argument {}", flags[0]), "is 0"]);
        assert!(!err.contains("task `"), "{err}");
    }
    no_run(&dir);
}

/// Task names that differ only in case (`x`, `X`) made two folders, which are one folder on a
/// case-insensitive file system (one task's files overwrote the other's); a task named
/// `Metrics.jsonl` is the run's metrics file there. Both are refused naming the names.
/// (#17, hostile5 F10)
#[test]
fn multitask_names_that_differ_only_in_case_are_refused() {
    let dir = ScratchDir::new("multitask_case");
    let args = two_tasks(&dir);
    let named = |a_as: &str, b_as: &str| -> Vec<String> {
        (args.iter())
            .map(|x| match (x.strip_prefix("a="), x.strip_prefix("b=")) {
                (Some(rest), _) => format!("{a_as}={rest}"),
                (_, Some(rest)) => format!("{b_as}={rest}"),
                _ => x.clone(),
            })
            .collect()
    };
    refused(
        &with_flags(&named("x", "X"), &[]),
        &["`x` and `X` differ only in case", "case-insensitive"],
    );
    refused(
        &with_flags(&named("Metrics.jsonl", "b"), &[]),
        &["\"Metrics.jsonl\" is the name of a file the run writes"],
    );
    no_run(&dir);
}

/// `--task-config` with a key given twice ran on the last value without a word (exit 0).
#[test]
fn multitask_config_repeated_key_is_refused() {
    let dir = ScratchDir::new("multitask_repeated");
    let args = two_tasks(&dir);
    for (text, key) in [
        (r#"{"a": {"prompt_len": 2, "prompt_len": 3}}"#, "prompt_len"),
        (r#"{"a": {"prompt_len": 2}, "a": {"prompt_len": 3}}"#, "a"),
    ] {
        let config = dir.path().join("tasks.json");
        std::fs::write(&config, text).expect("write");
        refused(
            &with_flags(&args, &["--task-config", s(&config)]),
            &[s(&config), &format!("the key \"{key}\" appears twice")],
        );
        no_run(&dir);
    }
}

/// A multi-task run's checkpoint resumed without its tasks was called "not a softprompt
/// checkpoint"; the run's files survive.
#[test]
fn multitask_checkpoint_resumed_as_one_task_says_so() {
    let dir = ScratchDir::new("multitask_resume_single");
    let mut args = two_tasks(&dir);
    ok(&softprompt(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let out = dir.path().join("out");
    let before = snapshot(&out);
    let at = args
        .iter()
        .position(|a| a == "--task-data")
        .expect("--task-data");
    args.drain(at..at + 4);
    let train = corpus("data/train.jsonl");
    args.extend(["--train".into(), s(&train).into(), "--resume".into()]);
    refused(
        &softprompt(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        &[
            "checkpoint.safetensors",
            "a multi-task run's checkpoint",
            "--task-data",
        ],
    );
    assert_eq!(snapshot(&out), before);
}

/// `--task-config /dev/zero` read until memory ran out (a hang, then the OOM killer); a task
/// folder with both train.jsonl and train.csv trained on one of them without a word.
#[test]
fn multitask_inputs_that_are_not_what_they_seem() {
    let dir = ScratchDir::new("multitask_odd_inputs");
    let args = two_tasks(&dir);
    let start = std::time::Instant::now();
    refused(
        &with_flags(&args, &["--task-config", "/dev/zero"]),
        &["/dev/zero", "more than 16 MB"],
    );
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    let csv = dir.path().join("b").join("train.csv");
    std::fs::write(&csv, "text,label\ngood,positive\nbad,negative\n").expect("write");
    refused(
        &with_flags(&args, &[]),
        &[
            "invalid argument --task-data",
            "train.jsonl",
            "train.csv",
            "keep one",
        ],
    );
    no_run(&dir);
}

/// Each task folder holds two descriptors for the whole run: past ~500 tasks under `ulimit
/// -n` 1024 a task folder failed with the OS's bare "Too many open files" after the data was
/// encoded, an empty folder left (hostile pass 35, F7). The soft limit is raised as far as
/// the hard one allows, and a run past that is refused before anything is written.
#[test]
fn tasks_past_the_open_file_limit_are_refused_up_front() {
    let dir = ScratchDir::new("multitask_nofile");
    let args = two_tasks(&dir);
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 40 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_softprompt"))
        .args(&args)
        .output()
        .expect("run");
    refused(
        &out,
        &[
            "invalid argument --task-data: 2 tasks hold 4 open files for the whole run",
            "68 in all, but the open-file limit (ulimit -n) is 40",
        ],
    );
    no_run(&dir);
    assert!(
        !dir.path().join("out").exists(),
        "a refused run made its folder"
    );
}
