//! `train` runs: nothing a user has is lost (`--out`, `--overwrite`, the lock), a run that
//! diverges keeps its last good files, the metrics window and the memory check, the
//! class-labels init, and a prefix run's cls head.

use crate::common::{self, binary, edit_safetensors, fixture, refused, ScratchDir};
use crate::{corpus, ok, s, s_static, snapshot, softprompt, train_args, trained};
use serde_json::Value;
use softprompt::internals::train::checkpoint::Checkpoint;
use std::process::Command;

// ---------------------------------------------------------------------------------------------
// Nothing a user has is lost

/// `train --out` on a folder holding a run, without --resume or --overwrite, refuses and
/// leaves every file as it was; --overwrite replaces only the run's files.
#[test]
fn out_holding_a_run_is_not_replaced() {
    let dir = ScratchDir::new("occupied");
    let run = trained(&dir, &[]);
    std::fs::write(run.join("notes.txt"), "mine").expect("write");
    let before = snapshot(&run);
    let model = fixture("bert_mlm");
    let err = refused(
        &softprompt(&train_args(&model, &run, &["--seed", "9"])),
        &["--resume", "--overwrite", "finished run"],
    );
    assert!(err.contains(s(&run)), "{err}");
    assert_eq!(snapshot(&run), before, "a refused run changed the folder");
    // an interrupted run (no task.json yet, a checkpoint) is refused the same way
    std::fs::remove_file(run.join("task.json")).expect("rm");
    let before = snapshot(&run);
    refused(
        &softprompt(&train_args(&model, &run, &["--seed", "9"])),
        &["--overwrite"],
    );
    assert_eq!(snapshot(&run), before);
    ok(&softprompt(&train_args(
        &model,
        &run,
        &["--seed", "9", "--overwrite"],
    )));
    assert_eq!(
        std::fs::read(run.join("notes.txt")).expect("notes"),
        b"mine"
    );
}

/// `train --out` at the model folder (with or without --overwrite) is refused and adds no
/// file to it (it wrote the prompt, task.json and checkpoint among the model's files).
#[test]
fn out_at_the_model_folder_is_refused() {
    let dir = ScratchDir::new("out_model");
    let model = dir.copy_model("bert_mlm", "model");
    let before = snapshot(&model);
    for extra in [&[][..], &["--overwrite"][..]] {
        let err = refused(
            &softprompt(&train_args(&model, &model, extra)),
            &["--out", "config.json"],
        );
        assert!(err.contains(s(&model)), "{err}");
        assert_eq!(
            snapshot(&model),
            before,
            "a refused run changed the model folder"
        );
        assert!(!model.join(".softprompt.lock").exists());
    }
}

/// `--out` at a symbolic link to nothing says so and what to do (it said "File exists (os
/// error 17)"); the link is left as it was.
#[test]
fn out_at_a_dangling_link_says_so() {
    let dir = ScratchDir::new("out_dangling");
    let link = dir.path().join("out");
    let target = dir.path().join("gone").join("run");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    for extra in [&[][..], &["--overwrite"][..]] {
        refused(
            &softprompt(&train_args(&fixture("bert_mlm"), &link, extra)),
            &[
                s(&link),
                "dangling symbolic link",
                s(&target),
                "create the folder",
            ],
        );
        assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink()));
        assert!(!target.exists());
    }
}

/// `--overwrite` never deletes the data it trains on: an input that is one of the run's
/// files in --out is refused by its flag, and survives byte for byte.
#[test]
fn overwrite_never_deletes_the_training_data() {
    let dir = ScratchDir::new("overwrite_input");
    let run = trained(&dir, &[]);
    let data = run.join("metrics.jsonl");
    std::fs::copy(corpus("data/train.jsonl"), &data).expect("copy");
    let before = std::fs::read(&data).expect("read");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &run, &["--overwrite"]);
    args[4] = s_static(data.clone());
    refused(
        &softprompt(&args),
        &["--train", "metrics.jsonl", "move it out"],
    );
    assert_eq!(std::fs::read(&data).expect("read"), before);
}

/// A second run on a locked --out fails at once naming the holder's pid, and writes nothing.
#[test]
fn locked_out_names_the_holder() {
    let dir = ScratchDir::new("locked");
    let out = dir.path().join("out");
    let lock = softprompt::internals::train::outdir::OutLock::acquire(&out).expect("lock");
    let pid = format!("pid {}", std::process::id());
    refused(
        &softprompt(&train_args(&fixture("bert_mlm"), &out, &[])),
        &[&pid, "another softprompt run"],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
    drop(lock);
    ok(&softprompt(&train_args(&fixture("bert_mlm"), &out, &[])));
}

// ---------------------------------------------------------------------------------------------
// CLASS_LABELS init

/// google-research/prompt-tuning's class-label init: row i is the mean embedding of label i's
/// pieces (one row per label, however many pieces), labels past P are named in a warning,
/// task.json records the init and the labels used, adapter_config.json a value PEFT accepts.
#[test]
fn class_labels_init_follows_prompt_tuning() {
    let dir = ScratchDir::new("class_labels");
    let out = dir.path().join("out");
    let t5 = fixture("t5_flan");
    let mut args = train_args(
        &t5,
        &out,
        // a rate that changes no float32 value of the prompt (--lr 0 is refused)
        &[
            "--init",
            "class-labels",
            "--lr",
            "1e-30",
            "--max-steps",
            "1",
        ],
    );
    args[8] = "seq2seq";
    args[10] = "positive=very good,negative=bad";
    args[12] = "1";
    args.drain(15..17); // the default --max-steps
    let text = ok(&softprompt(&args));
    assert!(
        text.contains("warning: --init class-labels") && text.contains("[\"negative\"]"),
        "{text}"
    );
    let task: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("task.json")).expect("task"))
            .expect("json");
    assert_eq!(task["init"], "class-labels");
    assert_eq!(task["init_labels"], serde_json::json!(["positive"]));
    let adapter: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter_config.json")).expect("adapter"),
    )
    .expect("json");
    assert_eq!(adapter["prompt_tuning_init"], "RANDOM");
    // the row: the mean of the embeddings of "very good"'s pieces (no </s>)
    let tok = softprompt::internals::tokenizer::Tokenizer::load(&t5).expect("tokenizer");
    let ids = tok.encode("very good", false).expect("encode");
    assert!(
        ids.len() >= 2,
        "the label must have several pieces: {ids:?}"
    );
    let weights = softprompt::internals::weights::TensorFile::read(&t5.join("model.safetensors"))
        .expect("weights");
    let emb = weights.float("shared.weight").expect("shared.weight");
    let d = emb.shape[1];
    let mut want = vec![0f64; d];
    for &id in &ids {
        for (w, x) in want
            .iter_mut()
            .zip(&emb.data[id as usize * d..(id as usize + 1) * d])
        {
            *w += *x as f64 / ids.len() as f64;
        }
    }
    let prompt = softprompt::internals::prompt::PromptTable::load_peft(&out).expect("prompt");
    common::assert_close("class-label row", &prompt.data, &want, 1e-6);
}

/// A run whose loss turns NaN stops with an error naming the step (it used to exit 0 with an
/// all-NaN prompt); the last good checkpoint and prompt stay on disk, finite.
#[test]
fn diverging_run_stops_and_keeps_the_last_good_files() {
    let dir = ScratchDir::new("diverge");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let mut args = train_args(
        &model,
        &out,
        &["--lr", "1e38", "--max-grad-norm", "0", "--save-every", "1"],
    );
    args[16] = "6";
    let out_run = softprompt(&args);
    let stderr = String::from_utf8_lossy(&out_run.stderr);
    assert_eq!(out_run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let re = regex::Regex::new(
        r"at step (\d+), so the run stops \(checkpoint.safetensors still holds step (\d+)\)",
    )
    .expect("regex");
    let caps = re.captures(&stderr).unwrap_or_else(|| panic!("{stderr}"));
    let (bad, kept): (u64, u64) = (
        caps[1].parse().expect("step"),
        caps[2].parse().expect("step"),
    );
    assert!(bad < 6 && kept + 1 == bad, "{stderr}");
    let ck = Checkpoint::load(&out.join("checkpoint.safetensors")).expect("checkpoint");
    assert_eq!(ck.state.step, kept);
    assert!(ck
        .tensors
        .values()
        .all(|(_, d)| d.iter().all(|x| x.is_finite())));
    let prompt = softprompt::internals::prompt::PromptTable::load_peft(&out).expect("prompt");
    assert!(prompt.data.iter().all(|x| x.is_finite()));
}

/// A prompt that turns infinite in the update (--lr 1e39 overflows float32) is caught when it
/// would be written: the message says what is on disk (it said "nothing was written", though
/// the step-0 checkpoint was there) and the checkpoint still holds that step.
#[test]
fn diverged_save_says_what_is_on_disk() {
    let dir = ScratchDir::new("diverge_save");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let args = train_args(&model, &out, &["--lr", "1e39", "--save-every", "1"]);
    let run = softprompt(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("nothing was written"), "{stderr}");
    assert!(
        stderr.contains("`prompt` holds a non-finite value")
            && stderr.contains(
                "at step 1, so the run stops (checkpoint.safetensors still holds step 0)"
            ),
        "{stderr}"
    );
    let ck = Checkpoint::load(&out.join("checkpoint.safetensors")).expect("checkpoint");
    assert_eq!(ck.state.step, 0);
}

/// --max-steps below --log-every still writes metrics.jsonl, its line averaging every step
/// (the run said it saved metrics.jsonl, which did not exist).
#[test]
fn last_step_closes_the_metrics_window() {
    let dir = ScratchDir::new("short_log");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &out, &["--log-every", "10"]);
    args[16] = "3";
    let text = ok(&softprompt(&args));
    assert!(text.contains("metrics.jsonl"), "{text}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    let lines: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1, "{metrics}");
    assert_eq!(lines[0]["step"], 3);
    assert!(lines[0]["loss"]
        .as_f64()
        .is_some_and(|l| l.is_finite() && l > 0.0));
    // --log-every 0 logs no loss: the file the run says it saved exists, empty
    let out = dir.path().join("out0");
    let mut args = train_args(&model, &out, &["--log-every", "0"]);
    args[16] = "3";
    ok(&softprompt(&args));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl"),
        ""
    );
}

/// A step that would need more memory than the machine has is refused before anything is
/// allocated, naming --batch-size (it used to abort on a failed allocation).
#[test]
fn step_memory_is_checked_before_allocating() {
    let dir = ScratchDir::new("step_memory");
    let out = dir.path().join("out");
    let t5 = fixture("t5_flan");
    let mut args = train_args(&t5, &out, &[]);
    args[8] = "seq2seq";
    args[10] = "positive=good,negative=bad";
    let o = Command::new(binary())
        .args(&args)
        .env("SOFTPROMPT_HOST_MEMORY", "100000")
        .output()
        .expect("run");
    // in the amount's own unit ("0.0 GB" read as nothing at all; verification 32)
    refused(
        &o,
        &["--batch-size", "but the machine has 100000 bytes available"],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}

/// Prefix tuning with a `cls` head trained, wrote the head, then refused its own folder
/// ("`weight` has shape [2, 48]: expected [labels, 192], the prompt's width": the prefix
/// table's row, not the model's width) and exited 2; eval and predict refused it too.
#[test]
fn prefix_cls_run_reads_back_its_head() {
    let dir = ScratchDir::new("prefix_cls");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let train = corpus("data/train.jsonl");
    ok(&softprompt(&[
        "train",
        "--model",
        s(&model),
        "--train",
        s(&train),
        "--out",
        s(&out),
        "--method",
        "prefix",
        "--task",
        "cls",
        "--prompt-len",
        "2",
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--no-progress",
    ]));
    let data = corpus("data/dev.jsonl");
    let eval = ok(&softprompt(&[
        "eval",
        "--prompt",
        s(&out),
        "--data",
        s(&data),
        "--json",
    ]));
    assert!(eval.contains("\"accuracy\""), "{eval}");
    ok(&softprompt(&[
        "predict",
        "--prompt",
        s(&out),
        "--data",
        s(&data),
    ]));
    // a head of another width is still refused, naming the model's width
    edit_safetensors(&out.join("head.safetensors"), |t| {
        let w = t.get_mut("weight").expect("weight");
        w.shape = vec![4, 24];
    });
    refused(
        &softprompt(&["eval", "--prompt", s(&out), "--data", s(&data)]),
        &[
            "head.safetensors",
            "expected [labels, 48], the model's width",
        ],
    );
}

/// `--out x/./` (x missing) failed with a bare "x/./: No such file or directory" (std's
/// create_dir_all stops at the trailing `.`): it trains into x. A folder that cannot be made
/// (under a file here, on a read-only file system in the hostile round) names `--out`.
#[test]
fn out_paths_are_made_or_named() {
    let dir = ScratchDir::new("out_paths");
    let out = dir.path().join("x/./");
    ok(&softprompt(&train_args(&fixture("bert_mlm"), &out, &[])));
    assert!(dir.path().join("x/adapter_model.safetensors").is_file());
    let file = dir.path().join("file");
    std::fs::write(&file, "mine").expect("write");
    let under = file.join("run");
    refused(
        &softprompt(&train_args(&fixture("bert_mlm"), &under, &[])),
        &[s(&under), "--out cannot be written into", "Not a directory"],
    );
    assert_eq!(std::fs::read(&file).expect("read"), b"mine");
    // an empty metrics.jsonl, all a run stopped before its first checkpoint (a full disk)
    // leaves, is no run to keep: it refused a fresh run and --resume alike (hostile pass 25)
    let stopped = dir.path().join("stopped");
    std::fs::create_dir_all(&stopped).expect("mkdir");
    std::fs::write(stopped.join("metrics.jsonl"), "").expect("write");
    ok(&softprompt(&train_args(
        &fixture("bert_mlm"),
        &stopped,
        &[],
    )));
    assert!(stopped.join("adapter_model.safetensors").is_file());
}
