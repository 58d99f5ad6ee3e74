//! `predict`: named prompts and their errors, a PEFT folder without labels, and `--output`
//! (never an input, an ordinary file, replaced only with `--overwrite`).

use crate::common::{fixture, refused, ScratchDir};
use crate::{corpus, ok, s, s_static, softprompt, trained};
use std::path::Path;
use std::process::Output;

/// `predict --prompt-field` beside one plain prompt folder is refused (it was ignored: every
/// row went to the one prompt whatever its field said).
#[test]
fn predict_prompt_field_needs_named_prompts() {
    let dir = ScratchDir::new("predict_prompt_field");
    let run = trained(&dir, &[]);
    let data = corpus("data/dev.jsonl");
    let args = ["predict", "--prompt", s(&run), "--data", s(&data)];
    refused(
        &softprompt(&[&args[..], &["--prompt-field", "prompt"]].concat()),
        &["invalid argument --prompt-field", "name=folder"],
    );
    ok(&softprompt(&args));
}

/// A row's prompt name that differs from a `--prompt` name only by its Unicode normalisation
/// read "prompt \"é\" is not one of the --prompt names (é, x)" (hostile pass 35, F4): the
/// two are named with their code points.
#[test]
fn a_prompt_name_that_looks_alike_shows_its_code_points() {
    let dir = ScratchDir::new("predict_mixed_nfd");
    let run = trained(&dir, &[]);
    let data = dir.path().join("mixed.jsonl");
    std::fs::write(
        &data,
        "{\"text\":\"good\",\"prompt\":\"x\"}\n{\"text\":\"bad\",\"prompt\":\"e\\u0301\"}\n",
    )
    .expect("write");
    let (nfc, x) = (format!("\u{e9}={}", s(&run)), format!("x={}", s(&run)));
    let args = [
        "predict",
        "--data",
        s(&data),
        "--prompt",
        &nfc,
        "--prompt",
        &x,
    ];
    refused(
        &softprompt(&args),
        &[
            "mixed.jsonl:2: prompt \"e\u{301}\" differs from the --prompt name \"\u{e9}\" only by \
             Unicode normalisation (canonically equivalent: \"e\\u{301}\" and \"\\u{e9}\")",
        ],
    );
}

/// With several `--prompt NAME=DIR`, a missing folder and a bad `--verbalizer` name the
/// prompt and its folder (they named neither: "nope/adapter_config.json: No such file").
#[test]
fn predict_mixed_errors_name_the_prompt() {
    let dir = ScratchDir::new("predict_mixed_names");
    let run = trained(&dir, &[]);
    let data = dir.path().join("mixed.jsonl");
    std::fs::write(
        &data,
        "{\"text\":\"good\",\"prompt\":\"a\"}\n{\"text\":\"bad\",\"prompt\":\"b\"}\n",
    )
    .expect("write");
    let missing = dir.path().join("nope");
    let (a, b) = (format!("a={}", s(&run)), format!("b={}", s(&missing)));
    let base = ["predict", "--data", s(&data), "--prompt", &a, "--prompt"];
    refused(
        &softprompt(&[&base[..], &[&b]].concat()),
        &[
            &format!("--prompt {b}:"),
            "no such folder: expected a prompt folder",
        ],
    );
    let b = format!("b={}", s(&run));
    refused(
        &softprompt(&[&base[..], &[&b, "--verbalizer", "negative=bad"]].concat()),
        &["invalid argument --verbalizer", &format!("--prompt {a}:")],
    );
}

/// A PEFT folder (no task.json) over unlabelled rows without the task's labels says that it
/// holds none (it said "--labels: a classifier needs at least 2 labels, got []").
#[test]
fn peft_folder_without_labels_says_why() {
    let peft = fixture("bert_mlm").join("peft_adapter");
    let dir = ScratchDir::new("peft_no_labels");
    // unlabelled rows: no label names to take the task's labels from
    let data = dir.path().join("texts.jsonl");
    std::fs::write(&data, "{\"text\": \"the movie was great.\"}\n").expect("write");
    refused(
        &softprompt(&["predict", "--prompt", s(&peft), "--data", s(&data)]),
        &[
            "invalid argument --labels",
            "holds no task.json",
            "--verbalizer",
        ],
    );
}

/// A prompt used as another kind of task (`--task`) starts from that kind's defaults: an
/// error then blamed the prompt's task.json ("the setting comes from this file") for labels
/// the file holds, and a pet task without words said "a classifier needs at least 2 labels"
/// (hostile pass 35, F5).
#[test]
fn another_task_kind_is_not_blamed_on_task_json() {
    let dir = ScratchDir::new("predict_other_kind");
    let out = dir.path().join("run");
    let model = fixture("bert_mlm");
    let mut args = crate::train_args(&model, &out, &[]);
    let at = args
        .iter()
        .position(|a| *a == "--verbalizer")
        .expect("--verbalizer");
    args.drain(at..at + 2);
    let kind = args.iter().position(|a| *a == "pet").expect("pet");
    args[kind] = "cls";
    ok(&softprompt(&args));
    let data = dir.path().join("texts.jsonl");
    std::fs::write(&data, "{\"text\": \"the movie was great.\"}\n").expect("write");
    let predict = [
        "predict",
        "--prompt",
        s(&out),
        "--data",
        s(&data),
        "--task",
        "pet",
    ];
    let err = refused(
        &softprompt(&predict),
        &[
            "invalid argument --labels: a pet task needs at least 2 labels, each with its word \
           (--verbalizer LABEL=WORD,LABEL=WORD), got []",
        ],
    );
    assert!(!err.contains("task.json"), "{err}");
}

/// `predict --output` naming the data file (or a file of the prompt folder) is refused and
/// the file is unchanged.
#[test]
fn predict_output_never_replaces_an_input() {
    let dir = ScratchDir::new("predict_output");
    let run = trained(&dir, &[]);
    let data = dir.path().join("labelled.jsonl");
    std::fs::copy(corpus("data/dev.jsonl"), &data).expect("copy");
    let before = std::fs::read(&data).expect("read");
    // the same file under another spelling
    let other = dir.path().join(".").join("labelled.jsonl");
    let args = |o: &Path| -> Output {
        softprompt(&[
            "predict",
            "--prompt",
            s(&run),
            "--data",
            s(&data),
            "--output",
            s(o),
        ])
    };
    refused(&args(&other), &["--output", "--data file"]);
    assert_eq!(std::fs::read(&data).expect("read"), before);
    let task = std::fs::read(run.join("task.json")).expect("read");
    refused(
        &args(&run.join("task.json")),
        &["--output", "--prompt folder"],
    );
    assert_eq!(std::fs::read(run.join("task.json")).expect("read"), task);
}

/// `predict --output` names an ordinary file in an existing folder: a link (its target would
/// never see the predictions), a folder, `-` and a missing folder are refused, and nothing
/// is created or replaced.
#[test]
fn predict_output_must_be_an_ordinary_file() {
    let dir = ScratchDir::new("predict_output_kind");
    let run = trained(&dir, &[]);
    let target = dir.path().join("target.jsonl");
    std::fs::write(&target, "keep\n").expect("write");
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let missing = dir.path().join("no_such_folder").join("p.jsonl");
    let args = |o: &Path| -> Output {
        softprompt(&[
            "predict",
            "--prompt",
            s(&run),
            "--data",
            s(&corpus("data/dev.jsonl")),
            "--output",
            s(o),
        ])
    };
    refused(&args(&link), &["--output", "not an ordinary file"]);
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).expect("read"), b"keep\n");
    refused(&args(dir.path()), &["--output", "not an ordinary file"]);
    refused(&args(Path::new("-")), &["--output", "standard output"]);
    refused(&args(&missing), &["--output", "does not exist"]);
    assert!(!missing.parent().expect("parent").exists());
}

/// `predict --output` naming a file that exists is refused, naming the file and
/// `--overwrite`, and the file is unchanged; with `--overwrite` it is replaced (through a
/// temporary file in its folder: nothing else is left there).
#[test]
fn predict_output_exists_needs_overwrite() {
    let dir = ScratchDir::new("predict_output_exists");
    let run = trained(&dir, &[]);
    let out = dir.path().join("preds.jsonl");
    std::fs::write(&out, "keep\n").expect("write");
    let args = |extra: &[&str]| -> Output {
        let mut a = vec!["predict", "--prompt", s(&run), "--output", s(&out)];
        a.extend(["--data", s_static(corpus("data/dev.jsonl"))]);
        a.extend(extra);
        softprompt(&a)
    };
    refused(&args(&[]), &["--output", s(&out), "exists", "--overwrite"]);
    assert_eq!(std::fs::read(&out).expect("read"), b"keep\n");
    ok(&args(&["--overwrite"]));
    let lines = std::fs::read_to_string(&out).expect("read");
    assert!(lines.lines().count() > 1, "{lines}");
    assert!(lines.lines().all(|l| l.starts_with('{')), "{lines}");
    let names: Vec<String> = (std::fs::read_dir(dir.path()).expect("dir").flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

/// Row 0 of the prompt in `adapter` set to 3e38: finite, but its sum of squares overflows
/// float32, so every score the model makes on it is NaN.
fn make_huge(adapter: &Path) {
    let (mut t, _) = crate::common::read_raw(adapter);
    let (name, rows) = t
        .iter()
        .next()
        .map(|(n, r)| (n.clone(), r.clone()))
        .expect("a tensor");
    let mut v = rows.as_f32();
    let width = rows.shape[1];
    v[..width].fill(3e38);
    t.insert(name, crate::common::RawTensor::f32(rows.shape, &v));
    // edited on purpose, so saved without the save stamp (a stamped file whose values do
    // not match its stamp is refused as corrupt)
    crate::common::write_raw(adapter, &t, None);
}

/// A finite but huge prompt row (3e38: its sum of squares overflows float32) made every score
/// NaN, and eval and predict blamed the model ("its config.json's norm epsilon, or its
/// weights?"): the prompt's file is named instead, with the data row's line.
#[test]
fn a_prompt_that_overflows_is_named() {
    let dir = ScratchDir::new("prompt_overflow");
    let run = trained(&dir, &[]);
    let adapter = run.join("adapter_model.safetensors");
    make_huge(&adapter);
    let data = corpus("data/dev.jsonl");
    for command in ["eval", "predict"] {
        let err = refused(
            &softprompt(&[command, "--prompt", s(&run), "--data", s(&data)]),
            &[s(&adapter), "dev.jsonl:", "row 0", "overflows float32"],
        );
        assert!(!err.contains("config.json"), "{err}");
    }
}

/// With several prompts, a prompt that overflows was a bare "row 0 of a batch scored its
/// labels" (exit 1) naming neither the prompt nor its file: the overflowing prompt's file is
/// named, with the row's line, and the prompt that runs is not blamed.
#[test]
fn mixed_predict_names_the_prompt_that_overflows() {
    let dir = ScratchDir::new("mixed_overflow");
    let run = trained(&dir, &[]);
    let huge = dir.path().join("huge");
    std::fs::create_dir(&huge).expect("mkdir");
    for entry in std::fs::read_dir(&run).expect("run").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), huge.join(entry.file_name())).expect("copy");
        }
    }
    let adapter = huge.join("adapter_model.safetensors");
    make_huge(&adapter);
    let data = dir.path().join("mixed.jsonl");
    let rows = "{\"text\":\"good\",\"prompt\":\"a\"}\n{\"text\":\"bad\",\"prompt\":\"h\"}\n";
    std::fs::write(&data, rows).expect("write");
    let (a, h) = (format!("a={}", s(&run)), format!("h={}", s(&huge)));
    let args = [
        "predict",
        "--data",
        s(&data),
        "--prompt",
        &a,
        "--prompt",
        &h,
    ];
    let err = refused(
        &softprompt(&args),
        &[
            &format!("{}: row 1 (", s(&adapter)),
            "mixed.jsonl:2)",
            "overflows float32",
        ],
    );
    assert!(!err.contains(&format!("{}/", s(&run))), "{err}");
}
