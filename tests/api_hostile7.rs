//! The Rust API against the seventh hostile pass (#17, its F6, F9, F10): a vocabulary sample
//! from no ids, a run whose prompt length is not its task's, a task for a prompt of 0 rows,
//! and a second run into a folder this process is writing are refused, each naming what the
//! API user set (not a command-line flag they never passed) or who holds the folder.

use softprompt::internals::train::outdir::OutLock;
use softprompt::prelude::*;

mod common;

use common::{fixture, ScratchDir};

fn data(name: &str) -> Dataset {
    let path = format!("tests/bad_inputs/data/{name}.jsonl");
    Dataset::load(path.as_ref(), &DataSpec::default()).unwrap()
}

/// `train_multi` of `job` into `out` is refused with every one of `needles`, and writes
/// nothing.
fn refused_multi(
    model: &Model,
    job: MultiTask<'_>,
    cfg: &TrainConfig,
    out: &std::path::Path,
    needles: &[&str],
) {
    let err = (model
        .train_multi(&[job], cfg, out, &mut |_, _| {})
        .map(|_| ()))
    .unwrap_err()
    .to_string();
    contains_all("train_multi", &err, needles);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

/// The test BERT, its default task for the training sentences (a prompt of 4 rows) and
/// their rows.
fn bert_task_rows() -> (Model, Task, Encoded) {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let train = data("train");
    let task = model
        .task(&TaskOptions::default(), Some(&train), 4)
        .unwrap();
    let rows = model.encode(&task, &train).unwrap();
    (model, task, rows)
}

fn contains_all(what: &str, msg: &str, needles: &[&str]) {
    for needle in needles {
        assert!(msg.contains(needle), "{what}: lacks {needle:?}: {msg}");
    }
}

/// `from_first: Some(0)` sampled as `Some(1)` (every row the pad token's embedding) where
/// the command line refuses `--init-vocab-first 0`: refused in the same words.
#[test]
fn a_vocabulary_sample_from_no_ids_is_refused() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let task = model
        .task(&TaskOptions::default(), Some(&data("train")), 4)
        .unwrap();
    let zero = [
        PromptInit::SampleVocab {
            from_first: Some(0),
        },
        PromptInit::ClassLabels {
            labels: Vec::new(),
            from_first: Some(0),
        },
    ];
    for init in &zero {
        let err = model.new_prompt(&task, 4, init, 0).unwrap_err().to_string();
        let needles = ["--init-vocab-first", "is 0: expected at least 1"];
        contains_all(&format!("{init:?}"), &err, &needles);
    }
    // one id: every row that token's embedding, the sampled ids' own
    let one = PromptInit::SampleVocab {
        from_first: Some(1),
    };
    let rows = model.new_prompt(&task, 4, &one, 0).unwrap();
    let w = rows.width();
    let first = &rows.values()[..w];
    assert!(rows.values().chunks(w).all(|r| r == first));
}

/// `Model::train` with `cfg.prompt_len` past what the task's max_len leaves said "use
/// --max-len 2 or less" (hostile7 F9): it names the field, the task's max_len and the fix;
/// `train_multi` names its task's own prompt length. Nothing is written.
#[test]
fn a_run_whose_prompt_len_is_not_the_task_s_names_the_field() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let train = data("train");
    let task = model
        .task(&TaskOptions::default(), Some(&train), 4)
        .unwrap();
    let max_len = task.spec().max_len;
    let rows = model.encode(&task, &train).unwrap();
    let splits = Splits {
        train: &rows,
        dev: Some(&rows),
        test: None,
    };
    let dir = ScratchDir::new("api_h7_prompt_len");
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        prompt_len: 62,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let err = (model
        .train(&task, splits, &cfg, &out, &mut |_| {})
        .map(|_| ()))
    .unwrap_err()
    .to_string();
    let needles = [
        "cfg.prompt_len",
        "is 62",
        &format!("up to {max_len} tokens"),
        "Model::task(.., 62)",
    ];
    contains_all("train", &err, &needles);
    assert!(!err.contains("--max-len"), "{err}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    let job = MultiTask {
        name: "a".into(),
        task: &task,
        splits,
        prompt_len: Some(62),
        init: None,
        method: None,
    };
    let cfg = TrainConfig {
        prompt_len: 4,
        ..cfg
    };
    refused_multi(
        &model,
        job,
        &cfg,
        &out,
        &["MultiTask::prompt_len", "is 62", "task `a`"],
    );
}

/// A task for a prompt of 0 rows was made, and `new_prompt` refused the prompt later: it is
/// refused at once, naming the argument (not the command line's --prompt-len).
#[test]
fn a_task_for_a_prompt_of_no_rows_is_refused() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let err = model.task(&TaskOptions::default(), Some(&data("train")), 0);
    let err = err.map(|_| ()).unwrap_err().to_string();
    let needles = ["invalid argument prompt_len: is 0: expected at least 1"];
    contains_all("task", &err, &needles);
}

/// A run into a folder another run of this process holds (another thread) was refused as
/// "another softprompt run (pid <this process's>)": it says the holder is this process.
#[test]
fn a_folder_this_process_trains_into_is_named_as_such() {
    let (model, task, rows) = bert_task_rows();
    let splits = Splits {
        train: &rows,
        dev: Some(&rows),
        test: None,
    };
    let dir = ScratchDir::new("api_h7_lock");
    let _held = OutLock::acquire(dir.path()).unwrap();
    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let err = (model
        .train(&task, splits, &cfg, dir.path(), &mut |_| {})
        .map(|_| ()))
    .unwrap_err()
    .to_string();
    let pid = format!("pid {}", std::process::id());
    let needles = ["another run in this process", &pid, "another thread"];
    contains_all("lock", &err, &needles);
    assert!(!err.contains("another softprompt run"), "{err}");
}

/// A `train_multi` job whose class labels are not its task's was refused only after the lock
/// and the folders were made (with `overwrite`, after an earlier run's files were removed):
/// now before anything is written, naming the task. `cfg.prompt_len` 0 names the field.
#[test]
fn refused_multi_task_settings_write_nothing() {
    let (model, task, rows) = bert_task_rows();
    let splits = Splits {
        train: &rows,
        dev: None,
        test: None,
    };
    let dir = ScratchDir::new("api_h7_class_labels");
    let out = dir.path().join("run");
    let init = PromptInit::ClassLabels {
        labels: vec![("nothing".into(), vec![5])],
        from_first: None,
    };
    let job = MultiTask {
        name: "a".into(),
        task: &task,
        splits,
        prompt_len: None,
        init: Some(init),
        method: None,
    };
    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        overwrite: true,
        ..TrainConfig::default()
    };
    refused_multi(
        &model,
        job,
        &cfg,
        &out,
        &["task `a`", "PromptInit::ClassLabels lists the labels"],
    );
    let cfg = TrainConfig {
        prompt_len: 0,
        ..cfg
    };
    let err = (model
        .train(&task, splits, &cfg, &out, &mut |_| {})
        .map(|_| ()))
    .unwrap_err()
    .to_string();
    contains_all("train", &err, &["cfg.prompt_len", "is 0"]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}
