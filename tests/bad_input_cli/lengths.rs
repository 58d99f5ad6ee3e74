//! The positions of a decoder's rows: the prompt, the text and what each use places after
//! it (training's targets, rank scoring's targets less their last token, greedy decoding's
//! new tokens) within this engine's cap of 8192 or the model's sliding window. Rank scoring
//! and training counted the prompt and the text only, so targets ran past the cap without a
//! word; the window's refusal named max_position_embeddings and advised a --max-len that then
//! failed; greedy decoding advised "use 0 or less", and advice from one row at a time.

use crate::common::{fixture, refused, windowed_mistral};
use crate::{ok, s, softprompt, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A jsonl file of (text, label) rows in `dir`.
fn rows(dir: &ScratchDir, name: &str, rows: &[(String, &str)]) -> PathBuf {
    let path = dir.path().join(name);
    let lines: Vec<String> = (rows.iter())
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write rows");
    path
}

/// One step of `causal` training on `model` (a prompt of `prompt_len` rows, the targets
/// "great" and "bad") into `out`.
fn train(model: &Path, data: &Path, out: &Path, prompt_len: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--model",
        s(model),
        "--train",
        s(data),
        "--out",
        s(out),
        "--task",
        "causal",
        "--verbalizer",
        "positive=great,negative=bad",
        "--prompt-len",
        prompt_len,
        "--max-steps",
        "1",
        "--batch-size",
        "3",
        "--no-progress",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    softprompt(&args)
}

fn run(cmd: &str, prompt: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        cmd,
        "--prompt",
        s(prompt),
        "--data",
        s(data),
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    softprompt(&args)
}

fn max_len(prompt: &Path) -> u64 {
    let task = std::fs::read_to_string(prompt.join("task.json")).expect("task.json");
    let v: serde_json::Value = serde_json::from_str(&task).expect("json");
    v["max_len"].as_u64().expect("max_len")
}

/// The llama fixture (no window: the cap of 8192 bounds it), its targets "great" and "bad"
/// of up to 4 tokens with the end token: training places all 4 after a row, rank scoring 3,
/// greedy decoding its new tokens. Each refusal names --max-len and a value that then runs.
#[test]
fn causal_rows_count_their_targets_against_the_cap() {
    let dir = ScratchDir::new("lengths_cap");
    let model = fixture("llama");
    let long = "great and movie cast good was plot bad ".repeat(1100);
    let data = rows(
        &dir,
        "long.jsonl",
        &[
            ("bad .".into(), "negative"),
            (long.clone(), "positive"),
            ("great".into(), "positive"),
        ],
    );
    let cap = "but this engine's cap for a llama model (8192 positions) holds 8192";
    let out = dir.path().join("run");
    let err = refused(
        &train(&model, &data, &out, "4", &["--max-len", "8188"]),
        &[],
    );
    assert!(err.contains(&format!("invalid argument --max-len: 8188 tokens next to a prompt of 4 rows and targets of up to 4 tokens need 8196 positions, {cap}: use --max-len 8184 or less")), "{err}");
    ok(&train(&model, &data, &out, "4", &["--max-len", "8184"]));
    for cmd in ["predict", "eval"] {
        let err = refused(&run(cmd, &out, &data, &["--max-len", "8188"]), &[]);
        assert!(err.contains(&format!("invalid argument --max-len: 8188 tokens next to a prompt of 4 rows and targets of up to 4 tokens (scoring places 3 of them after the row) need 8195 positions, {cap}: use --max-len 8185 or less")), "{cmd}: {err}");
        ok(&run(cmd, &out, &data, &["--max-len", "8185"]));
    }
    // greedy: no new token fits behind a row of 8188, and 0 new tokens is refused
    let greedy = |n: &str| {
        run(
            "predict",
            &out,
            &data,
            &["--decode", "greedy", "--max-len", n],
        )
    };
    let err = refused(&greedy("8188"), &[]);
    assert!(err.contains("invalid argument --max-len: 32 new tokens behind a prompt of 4 rows and rows of up to 8188 tokens reach 8224 positions, past this engine's cap of 8192, and not one new token fits behind rows that long: use --max-len 8156 or less"), "{err}");
    ok(&greedy("8156"));
    let generate = |n: &str| {
        let args = ["--text", &long, "--max-len", n, "--max-new-tokens", "32"];
        let mut all = vec!["generate", "--prompt", s(&out), "--threads", "1"];
        all.extend_from_slice(&args);
        softprompt(&all)
    };
    let err = refused(&generate("8188"), &[]);
    assert!(err.contains("invalid argument --max-len: 32 new tokens behind a prompt of 4 rows and rows of up to 8188 tokens reach 8224 positions"), "{err}");
    assert!(err.contains(": use --max-len 8156 or less"), "{err}");
    ok(&generate("8156"));
}

/// The default max_len (128, or what the prompt leaves) leaves the targets room: a prompt of
/// 8100 rows trains with rows of 8192 − 8100 − 4, and that prompt scores; a prompt that
/// leaves no room for a row's text is refused naming --prompt-len.
#[test]
fn the_default_max_len_leaves_the_targets_room() {
    let dir = ScratchDir::new("lengths_default");
    let model = fixture("llama");
    let long = "great and movie cast good was plot bad ".repeat(20);
    let data = rows(
        &dir,
        "d.jsonl",
        &[("bad .".into(), "negative"), (long, "positive")],
    );
    let out = dir.path().join("run");
    ok(&train(&model, &data, &out, "8100", &[]));
    assert_eq!(max_len(&out), 88);
    ok(&run("eval", &out, &data, &[]));
    let err = refused(
        &train(&model, &data, &dir.path().join("no"), "8189", &[]),
        &[],
    );
    assert!(err.contains("invalid argument --prompt-len: 8189 rows and targets of up to 4 tokens leave 0 of the 8192 positions"), "{err}");
}

/// A Mistral with sliding_window 40 (max_position_embeddings 512): predict's refusal names
/// the window, not "max_position_embeddings 40", and counts the targets as scoring places
/// them, so its advice runs (it advised 36, refused next as "unsupported: 42 positions").
/// Greedy decoding's advice comes from the longest row of all the batches at once (it came
/// from one row at a time: six rounds to a value that ran).
#[test]
fn a_window_names_itself_and_advice_that_runs() {
    let dir = ScratchDir::new("lengths_window");
    let model = windowed_mistral(dir.path(), 40);
    let long = |n: usize| "great and movie cast good was plot bad ".repeat(n);
    let data = rows(
        &dir,
        "d.jsonl",
        &[
            ("bad .".into(), "negative"),
            (long(1), "positive"),
            (long(2), "negative"),
            (long(8), "positive"),
        ],
    );
    let out = dir.path().join("run");
    ok(&train(&model, &data, &out, "4", &["--target-end", "none"]));
    // the default: 40 less the prompt and the 3 tokens of the longest target
    assert_eq!(max_len(&out), 33);
    let window = format!(
        "sliding_window 40 in {} holds 40",
        model.join("config.json").display()
    );
    for n in ["40", "35"] {
        let err = refused(&run("predict", &out, &data, &["--max-len", n]), &[]);
        let need = n.parse::<usize>().unwrap() + 6;
        assert!(err.contains(&format!("invalid argument --max-len: {n} tokens next to a prompt of 4 rows and targets of up to 3 tokens (scoring places 2 of them after the row) need {need} positions, but {window}: use --max-len 34 or less")), "{err}");
        assert!(!err.contains("max_position_embeddings"), "{err}");
    }
    ok(&run("predict", &out, &data, &["--max-len", "34"]));
    // one row a batch: the advice fits the longest row, not the first batch's
    let greedy = |extra: &[&str]| {
        let mut args = vec!["--decode", "greedy", "--batch-size", "1"];
        args.extend_from_slice(extra);
        run("predict", &out, &data, &args)
    };
    let within = "(the last new token takes none), past sliding_window 40 (the engine attends over the whole sequence, so it generates within the window only)";
    let err = refused(&greedy(&[]), &[]);
    assert!(err.contains(&format!("invalid argument --max-target-len: 32 new tokens behind a prompt of 4 rows and rows of up to 33 tokens reach 68 positions {within}: use 4 or less")), "{err}");
    // the last new token is never fed back: 4 + 33 + 4 - 1 fill the window (hostile pass 26)
    ok(&greedy(&["--max-target-len", "4"]));
    // rows that fill the window leave no new token: --max-len, not "use 0 or less"
    let err = refused(&greedy(&["--max-len", "37", "--max-target-len", "3"]), &[]);
    assert!(err.contains(&format!("invalid argument --max-len: 3 new tokens behind a prompt of 4 rows and rows of up to 37 tokens reach 43 positions {within}, and not one new token fits behind rows that long: use --max-len 34 or less")), "{err}");
}
