//! Hostile inputs to whole runs (#17): what `--overwrite` removes and keeps, task names and
//! task settings of a multi-task run, and the messages of edited checkpoints and configs.
//! Each case is a few steps on the small BERT fixture, against the release binary.

mod common;

use common::multitask::{multi_args, tagged_file, tagged_rows};
use common::{fixture, refused, softprompt, stdout_ok, ScratchDir};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(args: &[String]) -> std::process::Output {
    softprompt(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A single-task PET command (the corpus' rows) into `out`.
fn single_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = common::tiny_pet_train_args(&fixture("bert_mlm"), out);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The files under `dir` (recursively, the lock file aside), as paths relative to it.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("folder").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if e.file_name() != ".softprompt.lock" {
                let rel = p.strip_prefix(root).expect("under root");
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// --overwrite: never a user's file, every file of the run it replaces

/// A multi-task run's training file inside a task's folder (`--out/a/task.json`) was
/// replaced by that task's task.json under --overwrite (exit 0); an input that is a top-level
/// run file was blamed on `--task-data` although `--train` gave it.
#[test]
fn multitask_overwrite_never_deletes_the_training_data() {
    let dir = ScratchDir::new("mt_overwrite_input");
    let out = dir.path().join("out");
    for (rel, flag) in [("a/task.json", "--train"), ("metrics.jsonl", "--train")] {
        let data = out.join(rel);
        std::fs::create_dir_all(data.parent().expect("parent")).expect("mkdir");
        std::fs::write(&data, tagged_rows()).expect("write");
        let err = refused(
            &run(&multi_args(&data, &out, &["--overwrite"])),
            &[flag, "move it out of --out"],
        );
        assert!(err.contains(rel), "{err}");
        assert_eq!(std::fs::read_to_string(&data).expect("read"), tagged_rows());
    }
}

/// An `--overwrite` killed between moving the earlier run's files aside and removing them
/// left them hidden (`.NAME.removed-PID`): a resume found no checkpoint, a fresh run named
/// the files left beside them, and nothing put them back (review 24, F1). The next run puts
/// them back under their names, in the task folders too, says so, and resumes; a command
/// that reads the folder before then names the hidden copy (review 26: both were silent).
#[test]
fn files_a_killed_overwrite_moved_aside_come_back() {
    let dir = ScratchDir::new("overwrite_killed");
    let out = dir.path().join("out");
    let train = tagged_file(&dir);
    stdout_ok(&run(&multi_args(&train, &out, &[])));
    let before = tree(&out);
    for rel in [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "a/adapter_config.json",
    ] {
        let file = out.join(rel);
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        let hidden = file.with_file_name(format!(".{name}.removed-4194305"));
        std::fs::rename(&file, &hidden).expect("moved aside");
    }
    let task = out.join("a");
    let predict = ["predict", "--prompt", s(&task), "--data", s(&train)];
    let hidden = ".adapter_config.json.removed-4194305";
    refused(&softprompt(&predict), &[hidden, "rename it back"]);
    let resumed = run(&multi_args(&train, &out, &["--resume"]));
    stdout_ok(&resumed);
    assert_eq!(tree(&out), before);
    let said = String::from_utf8_lossy(&resumed.stderr);
    let notes: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("note: put back"))
        .collect();
    assert_eq!(notes.len(), 3, "{said}");
    assert!(notes.iter().any(|l| l.contains("metrics.jsonl")), "{said}");
}

/// A flag out of its range was refused only after the model loaded and the training file
/// was tokenized (minutes on a large model; review 27, F15): now before the model is read.
#[test]
fn flags_out_of_range_are_refused_before_the_model_loads() {
    let dir = ScratchDir::new("ranges_first");
    let out = dir.path().join("out");
    let mut args = single_args(&out, &["--lr=-1"]);
    let model = args.iter().position(|a| a == "--model").expect("--model") + 1;
    args[model] = s(&dir.path().join("no_model_here")).to_string();
    refused(&run(&args), &["--lr", "out of range"]);
}

/// The first SIGTERM (or Ctrl-C) said nothing until the step under way and its evaluation
/// ended (minutes of a large dev split), so a second one, sent to see something happen,
/// lost the steps since the last checkpoint (review 27, F6): it now says at once what comes.
#[cfg(unix)]
#[test]
fn the_first_signal_says_what_comes() {
    use std::os::unix::process::ExitStatusExt;
    let dir = ScratchDir::new("first_signal");
    let out = dir.path().join("out");
    let mut args = single_args(&out, &[]);
    let steps = args
        .iter()
        .position(|a| a == "--max-steps")
        .expect("--max-steps")
        + 1;
    args[steps] = "1000000".into();
    let child = std::process::Command::new(common::binary())
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // the first checkpoint is written before the first step
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("metrics.jsonl").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a signal to the child this test started
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let ended = child.wait_with_output().expect("wait");
    let said = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.signal(), Some(libc::SIGTERM), "{said}");
    assert!(said.contains("stopping after the step under way"), "{said}");
    assert!(
        said.contains("interrupted: training stopped at step"),
        "{said}"
    );
}

/// A checkpoint cut short (a full disk, a power loss) stopped `--resume` naming the fault
/// only; it now says the way on (hostile pass 32, F4).
#[test]
fn a_truncated_checkpoint_says_how_to_go_on() {
    let dir = ScratchDir::new("resume_truncated");
    let out = dir.path().join("out");
    stdout_ok(&run(&single_args(&out, &[])));
    let ck = std::fs::OpenOptions::new()
        .write(true)
        .open(out.join("checkpoint.safetensors"))
        .expect("open");
    ck.set_len(100).expect("truncate");
    let err = refused(
        &run(&single_args(&out, &["--resume"])),
        &["checkpoint.safetensors", "truncated or corrupt"],
    );
    assert!(
        err.contains("train with --overwrite to start again"),
        "{err}"
    );
    // a readable checkpoint of the other kind of run is told how to resume it, not to be
    // overwritten (verification 28, V1)
    let multi = dir.path().join("multi");
    let train = tagged_file(&dir);
    stdout_ok(&run(&multi_args(&train, &multi, &[])));
    let other =
        String::from_utf8_lossy(&run(&single_args(&multi, &["--resume"])).stderr).into_owned();
    assert!(other.contains("multi-task"), "{other}");
    assert!(
        !other.contains("train with --overwrite to start again"),
        "{other}"
    );
}

/// `--overwrite` left the earlier run's files: a stale prompt_encoder.safetensors beside an
/// adapter without one, an earlier multi-task run's task folders beside a single-task run.
/// It now removes every file a run writes, and a user's file (and its folder) stays.
#[test]
fn overwrite_removes_every_file_of_the_earlier_run() {
    let dir = ScratchDir::new("overwrite_stale");
    let out = dir.path().join("out");
    let train = tagged_file(&dir);
    let prefix = ["--method", "prefix", "--overwrite"];
    stdout_ok(&run(&single_args(
        &out,
        &[&prefix[..], &["--prefix-projection"]].concat(),
    )));
    assert!(out.join("prompt_encoder.safetensors").is_file());
    stdout_ok(&run(&single_args(&out, &prefix)));
    assert!(!out.join("prompt_encoder.safetensors").exists());

    // a multi-task run, a user's file in a task folder, then one task alone
    stdout_ok(&run(&multi_args(&train, &out, &["--overwrite"])));
    std::fs::write(out.join("b").join("notes.txt"), "mine").expect("write");
    std::fs::write(out.join("notes.txt"), "mine too").expect("write");
    stdout_ok(&run(&single_args(&out, &["--overwrite"])));
    let single = [
        "adapter_config.json",
        "adapter_model.safetensors",
        "b/notes.txt",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "notes.txt",
        "task.json",
    ];
    assert_eq!(tree(&out), single);
    assert!(!out.join("a").exists(), "the emptied task folder stays");

    // and back: a multi-task run over a single-task one
    stdout_ok(&run(&multi_args(&train, &out, &["--overwrite"])));
    let multi = [
        "a/adapter_config.json",
        "a/adapter_model.safetensors",
        "a/task.json",
        "b/adapter_config.json",
        "b/adapter_model.safetensors",
        "b/notes.txt",
        "b/task.json",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "notes.txt",
    ];
    assert_eq!(tree(&out), multi);
}

/// A task folder `name` under `dir`, its train.jsonl the tagged rows.
fn task_folder(dir: &ScratchDir, name: &str) -> PathBuf {
    let data = dir.path().join(name);
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("train.jsonl"), tagged_rows()).expect("write");
    data
}

// ---------------------------------------------------------------------------------------------
// Multi-task: task names and task settings

/// A task named after one of the run's own files (`metrics.jsonl=DIR`) trained, then failed
/// with "File exists" leaving files behind: it is refused before anything is written.
#[test]
fn task_named_after_a_run_file_is_refused() {
    let dir = ScratchDir::new("mt_run_file_name");
    let out = dir.path().join("out");
    let data = task_folder(&dir, "data");
    for name in [
        "checkpoint.safetensors",
        "metrics.jsonl",
        ".softprompt.lock",
    ] {
        let mut args = single_args(&out, &["--task-data", &format!("{name}={}", s(&data))]);
        args.drain(3..5); // no --train
        let err = refused(&run(&args), &["task name", "a file the run writes"]);
        assert!(err.contains(name), "{err}");
        assert!(!out.join("checkpoint.safetensors").exists(), "{name}");
        assert!(!out.join("metrics.jsonl").exists(), "{name}");
    }
}

/// `--init-vocab-first` with every task's `--task-config` init class-labels was refused
/// because the command line's --init is random (no task reads it); it is checked against each
/// task's init. `init: text` without `init_text` named neither the task nor the file.
#[test]
fn task_init_flags_are_checked_against_each_task() {
    let dir = ScratchDir::new("mt_init");
    let out = dir.path().join("out");
    let train = tagged_file(&dir);
    let config = dir.path().join("tasks.json");
    let cl = r#"{"init": "class-labels"}"#;
    std::fs::write(&config, format!(r#"{{"a": {cl}, "b": {cl}}}"#)).expect("write");
    let flags = ["--task-config", s(&config), "--init-vocab-first", "100"];
    stdout_ok(&run(&multi_args(&train, &out, &flags)));
    // a task that takes the command line's --init random does not read it
    std::fs::write(&config, format!(r#"{{"a": {cl}}}"#)).expect("write");
    let flags = [&flags[..], &["--overwrite"]].concat();
    refused(
        &run(&multi_args(&train, &out, &flags)),
        &["--init-vocab-first", "task(s) b"],
    );
    // each names the file and its keys; `init: text` without its text said "--init text:
    // needs --init-text", and an init beside prefix tuning "--init: task `b`" (no file)
    for (text, needles) in [
        (
            r#"{"b": {"init": "text"}}"#,
            &["`init` is \"text\": needs `init_text`"][..],
        ),
        (
            r#"{"b": {"init": "text", "init_text": ""}}"#,
            &["`init_text` (as --init-text): is \"\""],
        ),
        (
            r#"{"b": {"method": "prefix", "init": "text", "init_text": "a b"}}"#,
            &["`init` (as --init): applies to --method prompt"],
        ),
    ] {
        std::fs::write(&config, text).expect("write");
        let flags = ["--task-config", s(&config), "--overwrite"];
        let err = refused(
            &run(&multi_args(&train, &out, &flags)),
            &[&["task \"b\"", s(&config)][..], needles].concat(),
        );
        assert!(!err.contains("invalid argument"), "{err}");
    }
}

/// A task's `verbalizer` in task.json's list form with a label twice trained on the later
/// word without a word: it is refused before anything is written, naming the file, the task,
/// the key and the label.
#[test]
fn task_config_verbalizer_label_twice_is_refused() {
    let dir = ScratchDir::new("mt_verbalizer_twice");
    let out = dir.path().join("out");
    let train = tagged_file(&dir);
    let config = dir.path().join("tasks.json");
    let pairs = r#"[["positive", "great"], ["negative", "bad"], ["positive", "good"]]"#;
    std::fs::write(&config, format!(r#"{{"b": {{"verbalizer": {pairs}}}}}"#)).expect("write");
    let flags = ["--task-config", s(&config)];
    refused(
        &run(&multi_args(&train, &out, &flags)),
        &[
            "task \"b\"",
            s(&config),
            "`verbalizer`",
            "\"positive\"",
            "twice",
        ],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}

// ---------------------------------------------------------------------------------------------
// Messages that name what is wrong

/// A multi-task checkpoint's task `step` of -1 was "invalid value: integer -1, expected u64";
/// an edited run `step` was ignored and the resume went ahead.
#[test]
fn multitask_checkpoint_steps_are_named_and_checked() {
    let dir = ScratchDir::new("mt_ckpt_steps");
    let out = dir.path().join("out");
    let train = tagged_file(&dir);
    stdout_ok(&run(&multi_args(&train, &out, &[])));
    let ckpt = out.join("checkpoint.safetensors");
    let clean = std::fs::read(&ckpt).expect("checkpoint");
    // each edit sealed with its checksum, so that it reaches the state's own checks
    let edit = |patch: &dyn Fn(&mut serde_json::Value)| {
        std::fs::write(&ckpt, &clean).expect("write");
        common::edit_checkpoint_meta(&ckpt, "softprompt_multitask_checkpoint", patch);
    };
    let resume = multi_args(&train, &out, &["--resume"]);
    edit(&|v| v["tasks"][1][1]["step"] = (-1).into());
    refused(
        &run(&resume),
        &["task `b`'s state's `step` is -1", s(&ckpt)],
    );
    for step in [10, 500] {
        edit(&|v| v["step"] = step.into());
        let want = format!("the run's `step` is {step}, but its tasks took 2 steps");
        refused(&run(&resume), &[&want, s(&ckpt)]);
    }
}

/// With --task-data, `--eval-every` and a task folder without dev.jsonl said "pass --dev",
/// which --task-data refuses; a `--task-config` verbalizer in task.json's own form,
/// `[[label, word], ...]`, was a garbled error.
#[test]
fn task_folder_messages_and_verbalizer_forms() {
    let dir = ScratchDir::new("mt_messages");
    let out = dir.path().join("out");
    let data = task_folder(&dir, "a");
    let task = ["--task-data", &format!("a={}", s(&data))];
    let mut args = single_args(&out, &[&task[..], &["--eval-every", "1"]].concat());
    args.drain(3..5); // no --train
    refused(
        &run(&args),
        &["--eval-every", "task `a`", "put a dev.jsonl", s(&data)],
    );
    let config = dir.path().join("tasks.json");
    let flags = ["--task-config", s(&config), "--overwrite"];
    let mut args = single_args(&out, &[&task[..], &flags].concat());
    args.drain(3..5);
    for verbalizer in [
        r#"[["positive", "great"], ["negative", "bad"]]"#,
        r#"{"positive": "great", "negative": "bad"}"#,
    ] {
        let text = format!(r#"{{"a": {{"verbalizer": {verbalizer}}}}}"#);
        std::fs::write(&config, text).expect("write");
        let text = stdout_ok(&run(&args));
        let words = ["\"positive=great\"", "\"negative=bad\""];
        assert!(words.iter().all(|w| text.contains(w)), "{text}");
    }
    std::fs::write(&config, r#"{"a": {"verbalizer": [["positive"]]}}"#).expect("write");
    refused(
        &run(&args),
        &["`verbalizer`", "[[label, word], ...]", s(&config)],
    );
}

/// An adapter_config.json `num_layers` of -1 or 1e30 was reported as "num_layers 0".
#[test]
fn adapter_num_layers_names_its_value() {
    let dir = ScratchDir::new("adapter_num_layers");
    let out = dir.path().join("out");
    stdout_ok(&run(&single_args(&out, &["--method", "prefix"])));
    let cfg = out.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).expect("read");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    for (value, shown) in [
        (serde_json::json!(-1), "-1"),
        (serde_json::json!(1e30), "1e+30"),
    ] {
        v["num_layers"] = value;
        std::fs::write(&cfg, v.to_string()).expect("write");
        let want = format!("`num_layers` is {shown}");
        refused(&softprompt(&["inspect", s(&out)]), &[&want, s(&cfg)]);
    }
}

/// `--recompute mlp:K` with K past the model's layers ran as `mlp` (every layer) without a
/// word; train, bench and profile refuse it naming K and the layer count, and K at the count
/// still trains.
#[test]
fn recompute_mlp_layers_past_the_model_are_refused() {
    let dir = ScratchDir::new("recompute_mlp_k");
    let out = dir.path().join("out");
    let causal = |k: &str| {
        let mut args = common::tiny_pet_train_args(&fixture("llama"), &out);
        args[8] = "causal".into();
        args.extend([
            "--recompute".into(),
            format!("mlp:{k}"),
            "--overwrite".into(),
        ]);
        args
    };
    refused(
        &run(&causal("3")),
        &["--recompute", "\"mlp:3\"", "the model has 2"],
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    stdout_ok(&run(&causal("2")));
    for cmd in ["bench", "profile"] {
        let args = [cmd, "--preset", "llama-3.2-1b", "--recompute", "mlp:17"];
        refused(
            &softprompt(&args),
            &["--recompute", "\"mlp:17\"", "the model has 16"],
        );
    }
}

/// A saved causal prompt whose label targets cannot be told apart (written before the check,
/// under `--target-end none`: one target begins another's, or one has no tokens) fails to
/// load in predict, eval, a mixed predict and serve naming its task.json and the labels, not
/// `--verbalizer`, which the user never passed.
#[test]
fn saved_causal_targets_that_cannot_score_name_task_json() {
    let dir = ScratchDir::new("saved_dead_targets");
    let run_dir = dir.path().join("run");
    let model = fixture("bloom");
    let mut args = common::tiny_pet_train_args(&model, &run_dir);
    args[8] = "causal".into();
    args.extend(["--target-end".into(), "none".into()]);
    stdout_ok(&run(&args));
    let task_json = run_dir.join("task.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&task_json).expect("read")).expect("json");
    let data = dir.path().join("rows.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"a b\", \"label\": \"positive\", \"prompt\": \"a\"}\n",
    )
    .expect("write");
    let (r, d, m) = (s(&run_dir), s(&data), s(&model));
    let (a, b) = (format!("a={r}"), format!("b={r}"));
    let commands: [&[&str]; 4] = [
        &["predict", "--prompt", r, "--data", d],
        &["eval", "--prompt", r, "--data", d],
        &["predict", "--prompt", &a, "--prompt", &b, "--data", d],
        &["serve", "--model", m, "--prompt", &a, "--port", "0"],
    ];
    for (words, needle) in [
        (["great", "great bad"], "begins the other's"),
        (
            ["", "bad"],
            "label \"positive\": the target \"\" has no tokens",
        ),
    ] {
        let mut edited = saved.clone();
        edited["verbalizer"] = serde_json::json!([["positive", words[0]], ["negative", words[1]]]);
        std::fs::write(&task_json, edited.to_string()).expect("write");
        for cmd in commands {
            let err = refused(&softprompt(cmd), &[s(&task_json), needle]);
            assert!(err.contains("\"positive\""), "{cmd:?}: {err}");
            assert!(
                !err.contains("invalid argument --verbalizer"),
                "{cmd:?}: {err}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The final test of the kept prompt

/// A test row that overflows after training finished (a word's embedding 3e38, a word no
/// training row holds, so every step's loss is finite; no dev split, so the test split is
/// first scored at the end) read "… at step 2, so the run stops (…): lower --lr" in a single
/// run, and a bare "the prompt: row 1 …" in a multi-task run. Both now say that the final test
/// of the kept prompt overflowed at the test file's line, that training finished, and where
/// the prompt is saved (it is).
#[test]
fn a_final_test_that_overflows_says_training_finished() {
    let dir = ScratchDir::new("final_test_overflow");
    let model = dir.bert_overflowing_on("model", "tension");
    let data = dir.path().join("a");
    std::fs::create_dir(&data).expect("mkdir");
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    std::fs::copy(&train, data.join("train.jsonl")).expect("copy");
    let test = data.join("test.jsonl");
    std::fs::write(&test, common::OVERFLOW_ROWS).expect("test");
    let at = format!("{}:2: the final test of ", s(&test));
    let said = |err: &str, kept: &str, saved: &Path| {
        for want in [
            &format!("{at}{kept} overflowed on this row: it scored its labels"),
            &format!(
                "Training itself finished, and the kept prompt is saved in {}",
                s(saved)
            ),
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(!err.contains("--lr"), "{err}");
        assert!(saved.join("adapter_model.safetensors").is_file(), "{err}");
    };
    let out = dir.path().join("single");
    let mut args = common::tiny_pet_train_args(&model, &out);
    args.extend(["--test", s(&test)].map(String::from));
    let err = refused(&run(&args), &[]);
    said(&err, "the kept prompt (step 2)", &out);
    let multi = dir.path().join("multi");
    let mut args = common::tiny_pet_train_args(&model, &multi);
    args.drain(3..5); // no --train
    args.extend(["--task-data", &format!("a={}", s(&data))].map(String::from));
    let err = refused(&run(&args), &[]);
    said(&err, "task `a`'s kept prompt (step 2)", &multi.join("a"));
}
