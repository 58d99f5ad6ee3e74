//! The tasks end to end: `cls` trains and saves its head, seq2seq on T5 (rank
//! classification and free targets), and early stopping.

use crate::common::{fixture, softprompt, stdout_ok as ok};
use crate::{s, scratch, sentiment_files, sentiment_rows, write_jsonl};
use softprompt::internals::backend::traits::*;
use softprompt::internals::prompt::PromptInit;
use softprompt::internals::train::checkpoint::load_prompt_dir;
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::optim::OptimConfig;
use softprompt::internals::train::{Event, Model, Task, TaskKind, TaskSpec, TrainConfig, Trainer};
use softprompt::internals::CpuBackend;
use std::path::Path;

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
        "--test",
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
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    // the last line: the kept prompt's test score (here the dev file), at its best dev step
    let lines: Vec<serde_json::Value> = (metrics.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["split"], "test", "{metrics}");
    assert!(last.get("step").is_none(), "{metrics}");
    assert_eq!(
        last["accuracy"].as_f64(),
        v["accuracy"].as_f64(),
        "{metrics}"
    );
    assert_eq!(last["examples"], 12);
    let kept = last["kept_step"].as_u64().unwrap();
    let best =
        (lines.iter()).find(|l| l["split"] == "dev" && l["best"] == true && l["step"] == kept);
    assert!(best.is_some(), "no best dev line at step {kept}: {metrics}");
    let said = format!("kept prompt (step {kept}): test accuracy");
    assert!(stdout.contains(&said), "{stdout}");
    // the loss went down: mean of the first and the last metrics lines
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect();
    assert!(
        losses.len() >= 3 && losses[losses.len() - 1] < losses[0] * 0.9,
        "{losses:?}"
    );
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
    let mut t = Trainer::new(
        &be,
        &model,
        &task,
        &enc,
        Some(&enc),
        None,
        cfg.clone(),
        &out,
    )
    .unwrap();
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
    // the finished run resumed (re-scored) says it stopped early, as the run in one go did,
    // and writes the log it says it saved when it was gone (verification 28, V5)
    drop(t);
    std::fs::remove_file(out.join("metrics.jsonl")).unwrap();
    let again = TrainConfig {
        resume: true,
        ..cfg
    };
    let mut t = Trainer::resume(&be, &model, &task, &enc, Some(&enc), None, again, &out).unwrap();
    let mut stopped = Vec::new();
    let resumed = t
        .run(&mut |e| {
            if let Event::EarlyStop { step, best_step } = e {
                stopped.push((*step, *best_step))
            }
        })
        .unwrap();
    assert!(resumed.early_stopped);
    assert_eq!((resumed.steps, resumed.best_step), (15, 5));
    assert_eq!(stopped, [(15, 5)]);
    assert!(out.join("metrics.jsonl").is_file());
}

/// seq2seq with free targets: the label field is the target text; evaluation decodes
/// greedily and counts exact matches, and predict prints the decoded text.
/// The sentiment rows with free target texts (`positive` for the positive rows, `negative`
/// for the others), and their train (36 rows) and dev (12) files in `dir`.
fn free_target_files(
    dir: &Path,
    positive: &'static str,
    negative: &'static str,
) -> (
    Vec<(String, &'static str)>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let rows: Vec<(String, &str)> = (sentiment_rows().into_iter())
        .map(|(t, l)| (t, if l == "positive" { positive } else { negative }))
        .collect();
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    write_jsonl(&train, &rows[..36]);
    write_jsonl(&dev, &rows[36..]);
    (rows, train, dev)
}

#[test]
fn seq2seq_free_targets() {
    let dir = scratch("free");
    let (rows, train, dev) = free_target_files(&dir, "great movie", "bad movie");
    // free targets have no labels: --init class-labels drew sample-vocab's rows silently
    let labels_init = dir.join("labels_init");
    let t5 = fixture("t5_v1_1");
    let refused = softprompt(&[
        "train",
        "--model",
        s(&t5),
        "--train",
        s(&train),
        "--out",
        s(&labels_init),
        "--task",
        "seq2seq",
        "--free-targets",
        "--init",
        "class-labels",
        "--max-steps",
        "1",
    ]);
    crate::common::refused(
        &refused,
        &["--init", "class-labels fills prompt rows with the labels' words, and this task has no labels (free targets)"],
    );
    assert!(!labels_init.exists(), "a refused run wrote its folder");
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
    // on a terminal, predict and eval draw their rows' progress on stderr (they ran for
    // minutes without a sign of life); into a pipe (above) or under --no-progress, nothing
    let bin = crate::common::binary();
    let on_tty = |cmd: &str, extra: &str| {
        let line = format!(
            "'{}' {cmd} --prompt '{}' --data '{}' --batch-size 4 {extra}",
            bin.display(),
            out_dir.display(),
            dev.display()
        );
        crate::common::on_terminal(&line)
    };
    for cmd in ["predict", "eval"] {
        let shown = on_tty(cmd, "");
        assert!(shown.contains("/12 rows"), "{cmd}: {shown}");
        // the rate with one decimal (indicatif's own printed four)
        let rate = shown
            .split("rows, ")
            .nth(1)
            .and_then(|r| r.split(" rows/s").next());
        let rate = rate.unwrap_or_else(|| panic!("{cmd}: {shown}"));
        assert!(rate.parse::<f64>().is_ok(), "{cmd}: {rate:?} in {shown}");
        assert_eq!(
            rate.split('.').nth(1).map(str::len),
            Some(1),
            "{cmd}: {shown}"
        );
        let hidden = on_tty(cmd, "--no-progress");
        assert!(!hidden.contains("rows,"), "{cmd} --no-progress: {hidden}");
    }
    let piped = softprompt(&["eval", "--prompt", s(&out_dir), "--data", s(&dev)]);
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("rows,"));
}

/// A warning written while a bar is drawn (here the NVTX debug line, from the first step)
/// hides the bar first: it landed on the bar's line, after its text (review 10, R10-8).
#[test]
fn a_warning_written_under_a_bar_starts_its_own_line() {
    let dir = scratch("warning_under_bar");
    let (train, _) = sentiment_files(&dir);
    let line = format!(
        "SOFTPROMPT_NVTX_DEBUG=1 '{}' train --model '{}' --train '{}' --out '{}' --task cls \
         --prompt-len 4 --batch-size 8 --max-steps 3 --threads 1",
        crate::common::binary().display(),
        fixture("bert_nohead").display(),
        train.display(),
        dir.join("out").display()
    );
    let shown = crate::common::on_terminal(&line);
    let at = shown.find("nvtx: ").expect("the NVTX debug line");
    let before = &shown[..at];
    assert!(
        before.contains(" 0/3 "),
        "no bar was drawn before it: {shown:?}"
    );
    // the lines said before the run's length is known draw no full "0/0" bar (review 11)
    assert!(!shown.contains(" 0/0 "), "{shown:?}");
    // the bar cleared (a bar of two lines: each line cleared, the cursor moved back up)
    let cleared = before.trim_end_matches(['\r', '\x1b', '[', '1', 'A', 'B']);
    assert!(
        cleared.ends_with("\x1b[2K") || before.ends_with('\n'),
        "{shown:?}"
    );
}

/// The console's words at a run's edges (hostile pass 14): a patience that runs out at the
/// last step is said as such, after the warning that it cannot stop the run early (it said
/// "early stop", contradicting the warning; and "1 evaluations"); an Adafactor `cls` run
/// without --head-lr is warned that its head trains at the prompt's rate.
#[test]
fn patience_at_the_last_step_and_adafactor_head_rate_are_said() {
    let dir = scratch("console_words");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_nohead");
    let run = |out: &str, extra: &[&str]| {
        let out = dir.join(out);
        let mut args = vec!["train", "--model", s(&model), "--train", s(&train)];
        args.extend(["--out", s(&out), "--task", "cls", "--prompt-len", "4"]);
        args.extend(["--batch-size", "8", "--no-progress", "--threads", "1"]);
        args.extend(extra);
        ok(&softprompt(&args))
    };
    // lr 1e-9: the dev accuracy of step 10 is step 5's, so the patience of 1 runs out at 10
    let text = run(
        "last_step",
        &[
            "--dev",
            s(&dev),
            "--max-steps",
            "10",
            "--eval-every",
            "5",
            "--patience",
            "1",
            "--lr",
            "1e-9",
        ],
    );
    let said: Vec<&str> = (text.lines())
        .filter(|l| l.starts_with("warning:") || l.contains("patience") || l.contains("stop"))
        .collect();
    assert_eq!(
        said,
        [
            "warning: --patience 1 never stops this run early: it evaluates on dev 2 times in \
             its 10 steps (every 5 steps (--eval-every) and at the last), and a stop comes 1 \
             evaluation after the first at the earliest",
            "patience ran out at step 10, the last: no better dev accuracy since step 5",
        ],
        "{text}"
    );
    let warned = |extra: &[&str]| -> Vec<String> {
        let text = run(
            "adafactor",
            &[&["--max-steps", "1", "--overwrite"], extra].concat(),
        );
        (text.lines())
            .filter(|l| l.starts_with("warning:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        warned(&["--optimizer", "adafactor"]),
        [
            "warning: --optimizer adafactor trains the cls head at --lr 0.3 too: a rate for a \
          prompt, too large for a linear head (its loss climbs); pass --head-lr 0.01, say"
        ]
    );
    assert!(warned(&["--optimizer", "adafactor", "--head-lr", "0.01"]).is_empty());
    assert!(warned(&[]).is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

/// Gold targets cut to --max-target-len are counted on every split's line, the train split's
/// too (only dev and test said so), and by `eval` (hostile pass 16, F4): a cut free target
/// cannot match an output that goes on.
#[test]
fn cut_targets_are_counted_on_every_split_and_by_eval() {
    let dir = scratch("cut_targets");
    let (rows, train, dev) = free_target_files(&dir, "great movie", "bad");
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
        "2",
        "--prompt-len",
        "2",
        "--max-steps",
        "1",
        "--no-progress",
    ]));
    // "great movie" and its end token are 3 tokens or more, "bad" and its end 2 at most
    let long = |split: &[(String, &str)]| split.iter().filter(|r| r.1 != "bad").count();
    let said = |n: usize| format!(", {n} targets cut to 2");
    let line = |split: &str| {
        let l = stdout.lines().find(|l| l.starts_with(split)).unwrap();
        l.to_string()
    };
    assert!(
        line("train ").ends_with(&said(long(&rows[..36]))),
        "{stdout}"
    );
    assert!(line("dev ").ends_with(&said(long(&rows[36..]))), "{stdout}");
    let eval = ok(&softprompt(&[
        "eval",
        "--prompt",
        s(&out_dir),
        "--data",
        s(&dev),
    ]));
    assert!(
        eval.contains(&format!("{})", said(long(&rows[36..])))),
        "{eval}"
    );
    let json = softprompt(&["eval", "--json", "--prompt", s(&out_dir), "--data", s(&dev)]);
    let warned = format!(
        "warning: {} gold targets cut to 2 tokens",
        long(&rows[36..])
    );
    assert!(String::from_utf8_lossy(&json.stderr).contains(&warned));
}
