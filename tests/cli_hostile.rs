//! The command line against the fourth hostile pass (#17): a warmup that overflows the
//! step count, an `--init-std` past float32, a template longer than the model, each refused
//! naming its flag (exit 2); `generate` says which texts it cut, as `predict` does.

mod common;

use common::{fixture, refused, softprompt, stdout_ok, ScratchDir};
use softprompt::prelude::*;

/// A short `cls` run on the headless BERT fixture with `extra` flags, into `out`.
fn train(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = fixture("bert_nohead");
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "cls",
        "--train",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--prompt-len",
        "4",
        "--max-steps",
        "1",
    ];
    args.extend_from_slice(extra);
    softprompt(&args)
}

/// `--warmup` plus `--steps` past u64::MAX wrapped the loop's count: no step was timed, and
/// the median of none panicked (exit 101).
#[test]
fn bench_refuses_a_warmup_that_overflows() {
    let max = u64::MAX.to_string();
    let out = softprompt(&[
        "bench",
        "--preset",
        "bert-base",
        "--warmup",
        &max,
        "--batch",
        "1",
        "--seq",
        "8",
    ]);
    refused(&out, &["--warmup", "--steps 5"]);
}

/// `--init-std 1e39` is finite in f64 and passed, then became inf in the f32 prompt: the run
/// failed at step 0 advising `--lr` and `--max-grad-norm`.
#[test]
fn train_refuses_an_init_std_past_float32() {
    let scratch = ScratchDir::new("cli_hostile_std");
    let out = scratch.path().join("run");
    let err = refused(
        &train(&out, &["--init-std", "1e39"]),
        &["--init-std", "out of range"],
    );
    assert!(!err.contains("--lr"), "{err}");
    assert!(!out.join("checkpoint.safetensors").exists());
}

/// A template of more tokens than the model's positions blamed `--prompt-len` and advised
/// "--prompt-len 0 or less", which is refused too.
#[test]
fn train_names_a_template_longer_than_the_model() {
    let scratch = ScratchDir::new("cli_hostile_template");
    let template = format!("{}{{text}}", "w ".repeat(500));
    let out = train(&scratch.path().join("run"), &["--template", &template]);
    let err = refused(
        &out,
        &["invalid argument --template", "shorten the template"],
    );
    assert!(!err.contains("--prompt-len"), "{err}");
}

/// `generate` cut texts past the task's max_len without a word: the cut ones carry
/// `"truncated": true` and stderr counts them, as `predict --output` does; `predict` to
/// stdout and `eval --json` said nothing either (hostile pass 10, F12).
#[test]
fn generate_predict_and_eval_report_cut_texts() {
    let scratch = ScratchDir::new("cli_hostile_generate");
    let model = Model::open(fixture("bloom"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        free_targets: true,
        max_len: Some(8),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 4).unwrap();
    let init = PromptInit::Random { std: 1.0 };
    let prompt = model.new_prompt(&task, 4, &init, 0).unwrap();
    let dir = scratch.path().join("p");
    model
        .save_prompt(&dir, &prompt, &task, SaveOptions::default())
        .unwrap();
    let long = "word ".repeat(30);
    let args = [
        "generate",
        "--prompt",
        dir.to_str().unwrap(),
        "--text",
        "a story",
        "--text",
        &long,
        "--max-new-tokens",
        "2",
    ];
    let out = softprompt(&args);
    let lines: Vec<serde_json::Value> = (stdout_ok(&out).lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cut: Vec<_> = lines.iter().map(|l| l.get("truncated").cloned()).collect();
    assert_eq!(cut, [None, Some(serde_json::json!(true))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 of 2 texts truncated to 8 tokens"),
        "{stderr}"
    );
    let data = scratch.path().join("data.jsonl");
    let rows = [("a story", "x"), (long.as_str(), "y")];
    let lines: Vec<String> = (rows.iter())
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let (prompt, data) = (dir.to_str().unwrap(), data.to_str().unwrap());
    let out = softprompt(&["predict", "--prompt", prompt, "--data", data]);
    let rows: Vec<serde_json::Value> = (stdout_ok(&out).lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cut: Vec<_> = rows.iter().map(|l| l.get("truncated").cloned()).collect();
    assert_eq!(cut, [None, Some(serde_json::json!(true))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = "warning: 1 of 2 texts truncated to 8 tokens (--max-len)";
    assert!(stderr.contains(warning), "{stderr}");
    let out = softprompt(&["eval", "--prompt", prompt, "--data", data, "--json"]);
    let metrics: serde_json::Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
    assert_eq!(metrics["examples"], 2, "{metrics}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(warning), "{stderr}");
}

/// `softprompt ... | head`: the reader closed stdout, and `println!` panicked on the broken
/// pipe (exit 101), killing a training run in the middle (hostile pass 9). The command goes
/// on without stdout: `inspect` ends as it would, `train` runs to its last step.
#[test]
fn a_closed_stdout_is_no_panic() {
    let scratch = ScratchDir::new("cli_hostile_pipe");
    let out = scratch.path().join("run");
    let model = fixture("llama");
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    let runs: [Vec<&str>; 2] = [
        vec!["inspect", model.to_str().unwrap()],
        vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--task",
            "causal",
            "--train",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--prompt-len",
            "2",
            "--max-steps",
            "6",
            "--log-every",
            "1",
            "--save-every",
            "100",
            "--batch-size",
            "2",
        ],
    ];
    for args in runs {
        let mut child = std::process::Command::new(common::binary())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // the reader goes away before the first line
        drop(child.stdout.take());
        let done = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(done.status.code(), Some(0), "{args:?}: {stderr}");
    }
    let ck = softprompt::internals::train::checkpoint::Checkpoint::load(
        &out.join("checkpoint.safetensors"),
    )
    .expect("checkpoint");
    assert_eq!(ck.state.step, 6);
}

/// A stderr that is closed or full: every warning was an `eprintln!`, which panicked (exit
/// 101; `predict ... 2>&1 | head -1`, a server's `2>&1 | tee log` ended by Ctrl-C), losing
/// the output that came after it (hostile pass 17). The warning is lost, nothing else. A
/// stdout that cannot be written (a full disk behind `> file`) fails as an --output file
/// does: exit 2, naming stdout (`predict` said "stdout: ..." with 2, the others 1).
#[test]
fn a_closed_or_full_stderr_loses_only_the_warnings() {
    let scratch = ScratchDir::new("cli_hostile_stderr");
    let out = scratch.path().join("run");
    stdout_ok(&train(&out, &[]));
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    // --precision bf16 on the CPU: a warning on stderr before the predictions
    let args = [
        "predict",
        "--prompt",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--precision",
        "bf16",
    ];
    let want = stdout_ok(&softprompt(&args));
    assert!(want.lines().count() > 1, "{want}");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    // stderr a pipe whose reader has gone before the child starts
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let closed = std::process::Command::new(common::binary())
        .args(args)
        .stderr(writer)
        .output()
        .expect("run");
    assert_eq!(closed.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&closed.stdout), want);
    if let Ok(dev_full) = full() {
        let got = std::process::Command::new(common::binary())
            .args(args)
            .stderr(dev_full)
            .output()
            .expect("run");
        assert_eq!(got.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&got.stdout), want);
        let got = std::process::Command::new(common::binary())
            .args(args)
            .stdout(full().unwrap())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&got.stderr);
        assert_eq!(got.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("error: writing to stdout: "), "{stderr}");
    }
    // `--data -` said "-: No such file or directory", where `--output -` says why
    let dash = ["predict", "--prompt", out.to_str().unwrap(), "--data", "-"];
    refused(
        &softprompt(&dash),
        &["-: \"-\" is not standard input here: name the data file"],
    );
}

/// Flags nothing would read ran without a word (hostile pass 9): `generate` with label flags,
/// `--head-lr` on a task without a head, `--decode rank` beside `--free-targets`; each is
/// refused naming the flag.
#[test]
fn flags_nothing_reads_are_refused() {
    let scratch = ScratchDir::new("cli_hostile_unread");
    let model = Model::open(fixture("bloom"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        free_targets: true,
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 4).unwrap();
    let init = PromptInit::Random { std: 1.0 };
    let prompt = model.new_prompt(&task, 4, &init, 0).unwrap();
    let dir = scratch.path().join("p");
    model
        .save_prompt(&dir, &prompt, &task, SaveOptions::default())
        .unwrap();
    let dir = dir.to_str().unwrap();
    let label = "generate writes free text and scores no label: leave it out";
    for (flags, want) in [
        (
            &["--labels", "a,b"][..],
            format!("invalid argument --labels: {label}"),
        ),
        (
            &["--verbalizer", "a=x,b=y"],
            format!("invalid argument --verbalizer: {label}"),
        ),
    ] {
        let mut args = vec!["generate", "--prompt", dir, "--text", "hi"];
        args.extend_from_slice(flags);
        refused(&softprompt(&args), &[&want]);
    }
    // a folder without task.json (PEFT's) needs no label flag to generate (the review of
    // this change: the label flags it asked for are refused above)
    let peft = scratch.path().join("peft");
    std::fs::create_dir(&peft).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(std::path::Path::new(dir).join(f), peft.join(f)).unwrap();
    }
    let bloom = fixture("bloom");
    let (peft, bloom) = (peft.to_str().unwrap(), bloom.to_str().unwrap());
    let generated = [
        "generate", "--prompt", peft, "--model", bloom, "--text", "hi",
    ];
    let generated = softprompt(&generated);
    let stderr = String::from_utf8_lossy(&generated.stderr);
    assert_eq!(generated.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&generated.stdout).contains("\"output\""));
    // a BERT folder of PEFT's is told generate needs a decoder-only model, not to leave out
    // --free-targets, which it was not given (review 27, F2)
    let bert_peft = fixture("bert_mlm").join("peft_adapter");
    let bert = [
        "generate",
        "--prompt",
        bert_peft.to_str().unwrap(),
        "--text",
        "hi",
    ];
    let want = "invalid argument --prompt: generate needs a decoder-only model (BLOOM, Llama, \
                Mistral, Qwen2), not bert";
    refused(&softprompt(&bert), &[want]);
    // free targets, given or saved in task.json, have nothing to rank
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/dev.jsonl");
    let rank = "invalid argument --decode: rank scores the label targets, and free targets \
                (--free-targets, or the prompt's task.json) have none";
    for free in [&["--free-targets"][..], &[]] {
        let mut args = vec!["predict", "--prompt", dir, "--data", data.to_str().unwrap()];
        args.extend_from_slice(free);
        args.extend(["--decode", "rank"]);
        refused(&softprompt(&args), &[rank]);
    }
    let out = scratch.path().join("run");
    let head = "invalid argument --head-lr: sets the rate of a cls task's head, and no task of \
                this run is cls: leave it out";
    let pet = fixture("bert_mlm");
    let mut args = common::tiny_pet_train_args(&pet, &out);
    args.extend(["--head-lr".to_string(), "0.1".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&softprompt(&args), &[head]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    let eval_size = train(&out, &["--eval-batch-size", "8"]);
    let want = "invalid argument --eval-batch-size: sizes the dev and test evaluations, and \
                this run has neither (--dev, --test): leave it out";
    refused(&eval_size, &[want]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    // P-tuning starts from N(0, 1): the refusal named --init, which was not given
    let ptuning = train(
        &scratch.path().join("pt"),
        &["--method", "p-tuning", "--init-std", "0.5"],
    );
    refused(
        &ptuning,
        &["invalid argument --init-std: applies to --method prompt"],
    );
    // the hidden size also sizes a prefix projection: the refusal said "p-tuning only"
    let hidden = train(
        &scratch.path().join("hidden"),
        &["--encoder-hidden-size", "8"],
    );
    let want = "invalid argument --encoder-hidden-size: applies to --method p-tuning, or \
                --method prefix with --prefix-projection (this run is --method prompt)";
    refused(&hidden, &[want]);
    // a cls run reads it
    let out = train(&scratch.path().join("cls"), &["--head-lr", "0.1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `eval --prompt` on a multi-task run's folder, or with predict's `NAME=DIR`, said only
/// "adapter_config.json: No such file or directory" (hostile pass 9): it says what the folder
/// is and what to name.
#[test]
fn a_multi_task_folder_or_a_named_prompt_says_what_to_pass() {
    let scratch = ScratchDir::new("cli_hostile_mt_folder");
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let (data, opts) = common::bert_mlm_pet();
    let task = model.task(&opts, Some(&data), 4).unwrap();
    let prompt = model
        .new_prompt(&task, 4, &PromptInit::Random { std: 1.0 }, 0)
        .unwrap();
    let run = scratch.path().join("run");
    for name in ["b", "a"] {
        let opts = SaveOptions::default();
        model
            .save_prompt(run.join(name), &prompt, &task, opts)
            .unwrap();
    }
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/dev.jsonl");
    let data = data.to_str().unwrap();
    let run_dir = run.to_str().unwrap();
    let err = refused(
        &softprompt(&["eval", "--prompt", run_dir, "--data", data]),
        &[],
    );
    let want = "holds no adapter_config.json: the folder of a multi-task run? its tasks' \
                prompts are in its folders a, b: name one of them";
    assert!(err.contains(&format!("{run_dir}: {want}")), "{err}");
    let named = format!("en={}", run.join("a").display());
    let err = refused(
        &softprompt(&["eval", "--prompt", &named, "--data", data]),
        &[],
    );
    let want = format!(
        "{named}: no such folder: `en=` names a prompt of predict's mixed rows (--prompt \
         NAME=DIR); here one prompt folder is read: {}",
        run.join("a").display()
    );
    assert!(err.contains(&want), "{err}");
}

/// A label target past --max-target-len was blamed on --verbalizer even where no verbalizer
/// was given (the data's labels are the targets) and the bound was the flag just set
/// (hostile pass 10, F6): the refusal names --max-target-len.
#[test]
fn a_target_past_max_target_len_names_that_flag() {
    let scratch = ScratchDir::new("cli_hostile_target_len");
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    let out = scratch.path().join("run");
    let run = softprompt(&[
        "train",
        "--model",
        fixture("llama").to_str().unwrap(),
        "--train",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--task",
        "causal",
        "--max-target-len",
        "1",
        "--max-steps",
        "1",
    ]);
    let text = refused(
        &run,
        &["invalid argument --max-target-len: label \"negative\": the target \"negative\" has"],
    );
    assert!(
        text.contains("raise it, or give the label a shorter target"),
        "{text}"
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}
