//! The Rust API against the fourth hostile pass (#17): a saved prompt is never replaced
//! unless asked and nothing load would refuse is saved; an impossible or missing label, an
//! empty init text, a std past float32, ids outside the vocabulary, a blank label in the
//! data, a template longer than the model, and a task of another model are errors naming
//! what is wrong; generation says which texts it cut; a prompt that overflows a decoder's
//! numbers is named in generation and rank classification, alone and mixed.

use softprompt::prelude::*;
use std::path::PathBuf;

mod common;

use common::{fixture, ScratchDir};

/// The `cls` task on the headless BERT fixture (width 36, 48 positions), two labels.
fn cls_task(model: &Model, labels: &[&str]) -> Task {
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(labels.iter().map(|l| l.to_string()).collect()),
        ..TaskOptions::default()
    };
    model.task(&opts, None, 4).unwrap()
}

/// The `pet` task on a BERT with its masked-LM head, two labels.
fn pet_task(model: &Model) -> Task {
    let opts = TaskOptions {
        verbalizer: Some(TaskOptions::verbalizer_from_str("neg=bad,pos=great").unwrap()),
        ..TaskOptions::default()
    };
    model.task(&opts, None, 4).unwrap()
}

fn random(model: &Model, task: &Task, seed: u64) -> Prompt {
    let init = PromptInit::Random { std: 1.0 };
    model.new_prompt(task, 4, &init, seed).unwrap()
}

fn row(model: &Model, text: &str, label: Option<usize>) -> Row {
    let mut row = Row::new(model.tokenize(text).unwrap());
    row.label = label;
    row
}

/// A second save into a prompt's folder (one `train` wrote, or an earlier save) replaced its
/// files without a word: it is refused, the files untouched, and `overwrite` replaces the
/// prompt, removing the earlier save's files the new one does not write (a `cls` head under
/// a `pet` prompt would make a folder of two saves that load refuses).
#[test]
fn save_prompt_refuses_a_saved_folder_unless_asked() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let scratch = ScratchDir::new("api_hostile_save");
    let dir = scratch.path().join("p");
    let cls = cls_task(&model, &["neg", "pos"]);
    let first = random(&model, &cls, 1);
    model
        .save_prompt(&dir, &first, &cls, SaveOptions::default())
        .unwrap();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let before = (read("adapter_model.safetensors"), read("head.safetensors"));

    let second = random(&model, &cls, 2);
    let e = model
        .save_prompt(&dir, &second, &cls, SaveOptions::default())
        .expect_err("a saved prompt replaced without overwrite");
    let msg = e.to_string();
    assert!(
        msg.contains("holds a saved prompt") && msg.contains("overwrite"),
        "{msg}"
    );
    let occupied = softprompt::FolderState::Occupied;
    assert!(
        matches!(&e, softprompt::Error::Folder { state, path, .. } if *state == occupied && *path == dir),
        "{e:?}"
    );
    assert_eq!(
        (read("adapter_model.safetensors"), read("head.safetensors")),
        before
    );

    let pet = pet_task(&model);
    let third = random(&model, &pet, 3);
    let overwrite = SaveOptions { overwrite: true };
    model.save_prompt(&dir, &third, &pet, overwrite).unwrap();
    assert!(
        !dir.join("head.safetensors").exists(),
        "the cls head stayed"
    );
    let loaded = Prompt::load(&dir).unwrap();
    assert_eq!(loaded.values(), third.values());
    assert_eq!(loaded.saved_task().unwrap().kind, TaskKind::Pet);
}

/// An empty path wrote the prompt's files into the current folder (Python's
/// `save_prompt("", ...)`); `train` into `out=""` trained there (the command line's parser
/// refuses `--out ""`, the API and Python did not). Both name the argument.
#[test]
fn an_empty_folder_path_is_refused() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let task = cls_task(&model, &["neg", "pos"]);
    let prompt = random(&model, &task, 0);
    let e = model.save_prompt("", &prompt, &task, SaveOptions::default());
    let msg = e.expect_err("an empty path").to_string();
    assert!(msg.contains("invalid argument dir: is empty"), "{msg}");
    // the check `train` (API, Python and the command line) runs before it writes anything
    use softprompt::internals::train::outdir;
    let e = outdir::precheck(
        std::path::Path::new(""),
        false,
        false,
        outdir::RunKind::SingleTask,
    );
    let msg = e.expect_err("an empty out").to_string();
    assert_eq!(
        msg,
        "invalid argument out: is empty: name the folder to write into (an empty path wrote \
         into the current folder)"
    );
}

/// `save_prompt` checked only the prompt's rows: a non-finite `cls` head was written and
/// `Prompt::load` then refused the folder ("the file is corrupt"). A head of the wrong shape
/// and a prompt of another width are refused too; nothing is written.
#[test]
fn save_prompt_refuses_what_load_would_refuse() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let scratch = ScratchDir::new("api_hostile_save_bad");
    let task = cls_task(&model, &["neg", "pos"]);
    let mut prompt = random(&model, &task, 0);
    prompt.head_mut().unwrap().0[5] = f32::INFINITY;
    let dir = scratch.path().join("inf");
    let e = model.save_prompt(&dir, &prompt, &task, SaveOptions::default());
    let msg = e.expect_err("an inf head").to_string();
    assert!(
        msg.contains("head's weight") && msg.contains("flat index 5"),
        "{msg}"
    );
    assert!(!dir.exists(), "a refused save created its folder");

    let three = cls_task(&model, &["a", "b", "c"]);
    let two_label = random(&model, &task, 0);
    let dir = scratch.path().join("shape");
    let e = model.save_prompt(&dir, &two_label, &three, SaveOptions::default());
    let msg = e.expect_err("a head of 2 labels for 3").to_string();
    assert!(
        msg.contains("the head has 2 labels but the task 3"),
        "{msg}"
    );
    assert!(!dir.exists());

    let wide = Prompt::from_values(4, 48, vec![0.5; 4 * 48]).unwrap();
    let pet_model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let pet = pet_task(&pet_model);
    let narrow = Prompt::from_values(4, 36, vec![0.5; 4 * 36]).unwrap();
    let dir = scratch.path().join("width");
    let e = pet_model.save_prompt(&dir, &narrow, &pet, SaveOptions::default());
    let msg = e
        .expect_err("a prompt 36 wide on a model of 48")
        .to_string();
    assert!(
        msg.contains("36 wide") && msg.contains("hidden size 48"),
        "{msg}"
    );
    pet_model
        .save_prompt(&dir, &wide, &pet, SaveOptions::default())
        .unwrap();
    assert_eq!(Prompt::load(&dir).unwrap().values(), wide.values());
    // a prompt longer than the task was made for: its max_len (60 of 64 positions next to
    // 4 rows) does not fit next to 7, and `task_for` refused the folder saved (hostile 22)
    let long = Prompt::from_values(7, 48, vec![0.5; 7 * 48]).unwrap();
    let dir = scratch.path().join("long");
    let e = pet_model.save_prompt(&dir, &long, &pet, SaveOptions::default());
    let msg = e.expect_err("7 rows next to max_len 60 of 64").to_string();
    assert!(
        msg.contains("prompt: 7 rows, and the task was made for a shorter prompt")
            && msg.contains("60 tokens next to a prompt of 7 rows need 67 positions")
            && msg.contains("could not be loaded back")
            && !msg.contains("--"),
        "{msg}"
    );
    assert!(!dir.exists());
    // more rows than the model's positions hold: no task could use it
    let huge = Prompt::from_values(70, 48, vec![0.5; 70 * 48]).unwrap();
    let e = pet_model.save_prompt(&dir, &huge, &pet, SaveOptions::default());
    let msg = e.expect_err("70 rows of 64 positions").to_string();
    assert!(
        msg.contains("70 rows and a row of at least 2 tokens need 72 positions")
            && msg.contains("a folder of 70 rows could not be loaded back on it")
            && !msg.contains("--"),
        "{msg}"
    );
    assert!(!dir.exists());
    let opts = TaskOptions {
        verbalizer: Some(TaskOptions::verbalizer_from_str("neg=bad,pos=great").unwrap()),
        ..TaskOptions::default()
    };
    let fits = pet_model.task(&opts, None, 7).unwrap();
    pet_model
        .save_prompt(&dir, &long, &fits, SaveOptions::default())
        .unwrap();
    let loaded = Prompt::load(&dir).unwrap();
    pet_model
        .task_for(&loaded, &TaskOptions::default(), None)
        .unwrap();
}

/// A save's files are renamed in task.json first and adapter_config.json (the file that makes
/// a folder a prompt folder) last, after the weights (review 13 R13-3, review 14 R14-2): a
/// save whose last rename fails (the config's name taken here by a folder holding a file)
/// leaves task.json and the weights new, no temporary file, and a folder refused, never a
/// stamped adapter without its task.
#[test]
fn a_save_renames_task_json_first_and_adapter_config_last() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let scratch = ScratchDir::new("api_hostile_save_order");
    let task = pet_task(&model);
    let dir = scratch.path().join("p");
    let save = |prompt: &Prompt| {
        let opts = SaveOptions { overwrite: true };
        model.save_prompt(&dir, prompt, &task, opts)
    };
    save(&random(&model, &task, 0)).unwrap();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (task_json, weights) = (read("task.json"), read("adapter_model.safetensors"));
    std::fs::remove_file(dir.join("adapter_config.json")).unwrap();
    std::fs::create_dir_all(dir.join("adapter_config.json").join("x")).unwrap();
    let e = save(&random(&model, &task, 1)).expect_err("the config's rename fails");
    assert!(e.to_string().contains("adapter_config.json"), "{e}");
    assert_ne!(
        read("task.json"),
        task_json,
        "task.json was not renamed in first"
    );
    assert_ne!(
        read("adapter_model.safetensors"),
        weights,
        "the weights after the config"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
    assert!(Prompt::load(&dir).is_err());
}

/// A label past the task's labels: `evaluate` counted it as a wrong prediction (accuracy 0)
/// while `step` refused it; both refuse it now in the same words, naming the row, on `cls`
/// and on T5's rank classification, and `step_mixed` checks each row against its own job's
/// task. `usize::MAX` was reported as id -1.
#[test]
fn a_label_outside_the_task_is_refused_by_evaluate_and_step() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let task = cls_task(&model, &["neg", "pos"]);
    let prompt = random(&model, &task, 0);
    for label in [2, 9, usize::MAX] {
        let rows = vec![
            row(&model, "fine", Some(1)),
            row(&model, "bad", Some(label)),
        ];
        let enc = Encoded {
            path: PathBuf::from("rows"),
            rows: rows.clone(),
            truncated: 0,
            truncated_targets: 0,
        };
        let eval = model.evaluate(&task, &prompt, &enc, 8).map(|_| ());
        let eval = eval.expect_err("evaluate counted the label");
        let step = model.step(&task, &prompt, &rows).map(|_| ());
        let step = step.expect_err("step took the label");
        let want = format!("row 2 has label {label}, but the task has 2 labels");
        assert!(eval.to_string().contains(&want), "{eval}");
        assert_eq!(eval.to_string(), step.to_string());
        assert!(matches!(eval, Error::Arg { .. }), "{eval:?}");
    }

    // in a mixed step each row's label is its own job's: 2 is one of three labels
    let three = cls_task(&model, &["a", "b", "c"]);
    let prompt3 = random(&model, &three, 1);
    let jobs = [(&task, &prompt), (&three, &prompt3)];
    let ok = [
        (0, row(&model, "fine", Some(1))),
        (1, row(&model, "bad", Some(2))),
    ];
    assert_eq!(model.step_mixed(&jobs, &ok).unwrap().len(), 2);
    let bad = [
        (1, row(&model, "fine", Some(2))),
        (0, row(&model, "bad", Some(2))),
    ];
    let e = model.step_mixed(&jobs, &bad).map(|_| ());
    let msg = e.expect_err("label 2 of a two-label job").to_string();
    assert!(
        msg.contains("row 2 has label 2, but the task has 2 labels"),
        "{msg}"
    );

    let t5 = Model::open(fixture("t5_v1_1"), Device::Cpu).unwrap();
    let data = Dataset::from_pairs("mem", [("good film", Some("pos")), ("bad", Some("neg"))]);
    let task = t5.task(&TaskOptions::default(), Some(&data), 4).unwrap();
    let prompt = random(&t5, &task, 0);
    let mut enc = t5.encode(&task, &data).unwrap();
    enc.rows[0].label = Some(7);
    let e = t5.evaluate(&task, &prompt, &enc, 8).map(|_| ());
    let msg = e.expect_err("T5 counted label 7").to_string();
    assert!(msg.contains("row 1 has label 7"), "{msg}");
}

/// A `cls` step on a row without a label read it as id -100 in the head's table, a tensor
/// error (Python's BadFile, "the file is corrupt") naming no row: it is an argument error
/// naming the row, on `pet` too; so is a token id past the model's vocabulary.
#[test]
fn a_step_row_without_a_label_is_named() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let task = cls_task(&model, &["neg", "pos"]);
    let prompt = random(&model, &task, 0);
    let rows = [row(&model, "fine", Some(1)), row(&model, "bad", None)];
    let e = model.step(&task, &prompt, &rows).map(|_| ());
    let e = e.expect_err("a cls row without a label");
    assert!(matches!(e, Error::Arg { .. }), "{e:?}");
    assert!(e.to_string().contains("row 2 has no label"), "{e}");
    // an id past the embedding (Python's `Encoded.from_ids`) was a tensor error too
    let mut bad = row(&model, "fine", Some(0));
    bad.ids[1] = 10_000;
    let e = model.step(&task, &prompt, &[bad]).map(|_| ());
    let e = e.expect_err("an id past the vocabulary");
    assert!(matches!(e, Error::Arg { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("row 1 has token id 10000 at index 1, outside the model's 139 ids"),
        "{e}"
    );

    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let task = pet_task(&model);
    let prompt = random(&model, &task, 0);
    let data = Dataset::from_pairs("mem", [("fine", None::<&str>)]);
    let rows = model.encode(&task, &data).unwrap().rows;
    let e = model.step(&task, &prompt, &rows).map(|_| ());
    let e = e.expect_err("a pet row without a label");
    assert!(e.to_string().contains("row 1 has no label"), "{e}");
}

/// A training run on hand-made rows: a row without a label failed at its first step, named
/// by its place in a shuffled batch, after `out` was made; a label past the task's labels
/// was an id outside the head's table. Both are refused before anything is written, naming
/// the row of the data.
#[test]
fn a_run_on_rows_without_a_usable_label_is_refused_before_writing() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let task = cls_task(&model, &["neg", "pos"]);
    let scratch = ScratchDir::new("api_hostile_train_labels");
    let cfg = TrainConfig {
        prompt_len: 4,
        batch_size: 4,
        max_steps: Some(2),
        ..TrainConfig::default()
    };
    for (label, want) in [(None, "row 3 has no label"), (Some(2), "row 3 has label 2")] {
        let texts = ["good", "bad", "fine", "dull", "great"];
        let mut rows: Vec<Row> = (texts.iter().enumerate())
            .map(|(i, t)| row(&model, t, Some(i % 2)))
            .collect();
        rows[2].label = label;
        let train = Encoded {
            path: PathBuf::from("rows"),
            rows,
            truncated: 0,
            truncated_targets: 0,
        };
        let splits = Splits {
            train: &train,
            dev: None,
            test: None,
        };
        let out = scratch.path().join("run");
        let e = model.train(&task, splits, &cfg, &out, &mut |_| {});
        let e = e.map(|_| ()).expect_err("a row without a usable label");
        assert!(matches!(e, Error::Arg { .. }), "{e:?}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(!out.exists(), "{} was made", out.display());
    }
}

/// A dev row with a label past the task's passed the precheck and failed at the first
/// evaluation, after steps and a checkpoint were written: it is refused before anything is.
#[test]
fn a_dev_row_with_a_label_past_the_task_is_refused_before_writing() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let task = cls_task(&model, &["neg", "pos"]);
    let scratch = ScratchDir::new("api_hostile_dev_labels");
    let cfg = TrainConfig {
        prompt_len: 4,
        batch_size: 4,
        max_steps: Some(2),
        eval_every: 1,
        ..TrainConfig::default()
    };
    let encoded = |labels: &[usize]| Encoded {
        path: PathBuf::from("rows"),
        rows: (labels.iter())
            .map(|&l| row(&model, "fine film", Some(l)))
            .collect(),
        truncated: 0,
        truncated_targets: 0,
    };
    let (train, dev) = (encoded(&[0, 1, 0, 1]), encoded(&[1, 0, 5]));
    let splits = Splits {
        train: &train,
        dev: Some(&dev),
        test: None,
    };
    let out = scratch.path().join("run");
    let e = model.train(&task, splits, &cfg, &out, &mut |_| {});
    let e = e.map(|_| ()).expect_err("a dev label past the task's");
    assert!(matches!(e, Error::Arg { .. }), "{e:?}");
    assert!(e.to_string().contains("row 3 has label 5"), "{e}");
    assert!(!out.exists(), "{} was made", out.display());
}

/// `train` from the API (and Python) checked only that `out` was no empty path and no
/// model's folder: a file or a dangling link failed in the lock with a bare "File exists".
/// It checks what `save_prompt` and the command line check, in their words.
#[test]
fn a_run_into_a_file_or_a_dangling_link_is_refused() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let data = Dataset::from_pairs("mem", [("good film", Some("pos")), ("bad", Some("neg"))]);
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data), 4).unwrap();
    let train = model.encode(&task, &data).unwrap();
    let splits = Splits {
        train: &train,
        dev: None,
        test: None,
    };
    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let scratch = ScratchDir::new("api_hostile_train_out");
    let file = scratch.path().join("file");
    std::fs::write(&file, "mine").unwrap();
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(scratch.path().join("nowhere"), &link).unwrap();
    for (out, want) in [
        (&file, "`out` is a file: name a folder"),
        (&link, "`out` is a dangling symbolic link"),
    ] {
        let e = model.train(&task, splits, &cfg, out, &mut |_| {});
        let msg = e.map(|_| ()).expect_err("not a folder").to_string();
        assert!(msg.contains(want), "{msg}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    // save_prompt runs the same check, in its own words
    let prompt = random(&model, &task, 0);
    let e = model.save_prompt(&file, &prompt, &task, SaveOptions::default());
    let msg = e.expect_err("a file").to_string();
    assert!(msg.contains("the folder to save in is a file"), "{msg}");
}

/// A mixed step's row without a label was named by its place among its own job's rows ("row
/// 2" of the job's share of the batch), a number the caller could not find: it is named by
/// its place in the rows passed, with its job and task.
#[test]
fn a_mixed_step_row_without_a_label_names_its_job() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let (two, three) = (
        cls_task(&model, &["neg", "pos"]),
        cls_task(&model, &["a", "b", "c"]),
    );
    let (p2, p3) = (random(&model, &two, 0), random(&model, &three, 1));
    let jobs = [(&two, &p2), (&three, &p3)];
    let rows = [
        (1, row(&model, "fine", Some(2))),
        (0, row(&model, "bad", Some(1))),
        (1, row(&model, "so so", None)),
    ];
    let e = model.step_mixed(&jobs, &rows).map(|_| ());
    let e = e.expect_err("a cls row without a label");
    assert!(matches!(e, Error::Arg { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("row 3 (of job 1, a cls task) has no label"),
        "{e}"
    );
}

/// What the command line's init flags refuse, an init made in code passed: an empty text
/// (`--init-text ""`), and a std finite in f64 but not in f32 (1e39 gave a prompt of inf).
#[test]
fn an_empty_init_text_and_a_std_past_float32_are_refused() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let task = cls_task(&model, &["neg", "pos"]);
    for text in ["", "  "] {
        let e = model.new_prompt(&task, 4, &PromptInit::Text(text.into()), 0);
        let msg = e.map(|_| ()).expect_err("an empty init text").to_string();
        assert!(msg.contains("--init-text"), "{msg}");
    }
    for std in [1e39, 1e7, f64::INFINITY] {
        let e = model.new_prompt(&task, 4, &PromptInit::Random { std }, 0);
        let msg = e.map(|_| ()).expect_err("a huge std").to_string();
        assert!(
            msg.contains("--init-std") && msg.contains("out of range"),
            "{msg}"
        );
    }
    let big = model.new_prompt(&task, 4, &PromptInit::Random { std: 1e6 }, 0);
    assert!(big.unwrap().values().iter().all(|v| v.is_finite()));
    // a text past what a row's positions could read, tokenized whole, took 7 GB for a
    // 4-row prompt (60 MB) or aborted the process; so did a template (hostile pass 24)
    let huge = "fine ".repeat(500_000);
    let e = model.new_prompt(&task, 4, &PromptInit::Text(huge.clone()), 0);
    let msg = e.map(|_| ()).expect_err("a huge init text").to_string();
    assert!(
        msg.contains("--init-text: is 2500000 bytes, more than the 2097152 a text tokenized whole"),
        "{msg}"
    );
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        template: Some(format!("{huge}{{text}}")),
        labels: Some(vec!["neg".into(), "pos".into()]),
        ..TaskOptions::default()
    };
    let msg = model
        .task(&opts, None, 4)
        .map(|_| ())
        .expect_err("a huge template")
        .to_string();
    assert!(
        msg.contains("--template: is 2500006 bytes, more than the 2097152"),
        "{msg}"
    );
    assert!(
        msg.len() < 1000,
        "the template is not quoted: {} bytes",
        msg.len()
    );
}

/// `detokenize` dropped ids outside the vocabulary without a word (`[-1]` gave ""): the id,
/// its index and the vocabulary's size are named.
#[test]
fn detokenize_refuses_ids_outside_the_vocabulary() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let ids = model.tokenize("fine").unwrap();
    assert!(!model.detokenize(&ids).unwrap().is_empty());
    for bad in [-1, 139, i32::MAX] {
        let e = model.detokenize(&[ids[1], bad]).expect_err("a bad id");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("id {bad} (at index 1) is outside the vocabulary")),
            "{msg}"
        );
    }
}

/// A blank label (`"label": ""`) became a class named "" (a prediction printed
/// `"label": ""`): the file, its line and the field are named; a blank table cell is no
/// label; pairs in code are refused naming the row.
#[test]
fn a_blank_label_is_refused() {
    let scratch = ScratchDir::new("api_hostile_blank");
    for (i, label) in ["\"\"", "\"   \""].iter().enumerate() {
        let path = scratch.path().join(format!("d{i}.jsonl"));
        let text =
            format!("{{\"text\":\"x\",\"label\":\"neg\"}}\n{{\"text\":\"y\",\"label\":{label}}}\n");
        std::fs::write(&path, text).unwrap();
        let e = Dataset::load(&path, &DataSpec::default()).map(|_| ());
        let msg = e.expect_err("a blank label").to_string();
        assert!(
            msg.contains(&format!("d{i}.jsonl:2: field \"label\" is")),
            "{msg}"
        );
    }
    let path = scratch.path().join("t.csv");
    std::fs::write(&path, "text,label\nx,neg\ny,  \n").unwrap();
    let e = Dataset::load(&path, &DataSpec::default()).map(|_| ());
    let msg = e.expect_err("a blank cell").to_string();
    assert!(msg.contains("t.csv:3: missing field \"label\""), "{msg}");

    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let data = Dataset::from_pairs("mem", [("x", Some("neg")), ("y", Some(""))]);
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        ..TaskOptions::default()
    };
    let e = model.task(&opts, Some(&data), 4).map(|_| ());
    let msg = e.expect_err("a class named \"\"").to_string();
    assert!(msg.contains("mem:2: the label is \"\""), "{msg}");
}

/// A template longer than the model's positions blamed `--prompt-len` and advised
/// "--prompt-len 0 or less": it names `--template` and the numbers.
#[test]
fn a_template_past_the_positions_names_the_template() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(vec!["neg".into(), "pos".into()]),
        template: Some(format!("{}{{text}}", "word ".repeat(60))),
        ..TaskOptions::default()
    };
    let e = model.task(&opts, None, 4).map(|_| ());
    let msg = e.expect_err("a template of 60 words").to_string();
    assert!(
        msg.contains("invalid argument --template") && msg.contains("48 positions"),
        "{msg}"
    );
    assert!(!msg.contains("--prompt-len"), "{msg}");
    // one that a shorter prompt makes room for still names --prompt-len
    let opts = TaskOptions {
        template: Some(format!("{}{{text}}", "word ".repeat(40))),
        ..opts
    };
    let e = model.task(&opts, None, 8).map(|_| ());
    let msg = e.expect_err("40 words beside 8 rows").to_string();
    assert!(msg.contains("invalid argument --prompt-len"), "{msg}");
}

/// `generate` cut texts past max_len without a word: each generation says whether its text
/// was cut, as a prediction does.
#[test]
fn generate_says_which_texts_were_cut() {
    let model = Model::open(fixture("bloom"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        free_targets: true,
        max_len: Some(8),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 4).unwrap();
    let prompt = random(&model, &task, 0);
    let texts = ["a story".to_string(), "word ".repeat(30)];
    let out = model.generate(&task, &prompt, &texts, 2, PromptPlacement::BeforeTokens);
    let cut: Vec<bool> = out.unwrap().iter().map(|g| g.truncated).collect();
    assert_eq!(cut, [false, true]);
}

/// A task made on one model and used on another of the same width (36) ran the second's
/// weights on the first's token ids: every use names both folders. A copy of the same
/// folder is the same model.
#[test]
fn a_task_of_another_model_is_refused() {
    let a = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let b = Model::open(fixture("realistic/bert_rand_2"), Device::Cpu).unwrap();
    let task = cls_task(&a, &["neg", "pos"]);
    let prompt = random(&a, &task, 0);
    let rows = [row(&a, "fine", Some(1))];
    let e = b.step(&task, &prompt, &rows).map(|_| ());
    let msg = e
        .expect_err("a task of bert_nohead on bert_rand_2")
        .to_string();
    assert!(
        msg.contains("invalid argument task")
            && msg.contains("bert_nohead")
            && msg.contains("bert_rand_2"),
        "{msg}"
    );
    let data = Dataset::from_pairs("mem", [("x", Some("neg"))]);
    assert!(b.encode(&task, &data).is_err());
    let scratch = ScratchDir::new("api_hostile_identity");
    let e = b.save_prompt(
        scratch.path().join("p"),
        &prompt,
        &task,
        SaveOptions::default(),
    );
    assert!(e
        .expect_err("saved with the other model")
        .to_string()
        .contains("bert_rand_2"));

    let copy = Model::open(scratch.copy_model("bert_nohead", "m"), Device::Cpu).unwrap();
    let same = copy.step(&task, &prompt, &rows).unwrap().loss;
    assert_eq!(same, a.step(&task, &prompt, &rows).unwrap().loss);
}

/// A decoder's prompt whose row 0 is 3e38 (finite, but its sum of squares overflows float32,
/// so every number after it is NaN): generation picked a token from NaN logits (argmax skips
/// NaN) and answered text; rank classification's NaN scores were a bare "row 0 of a batch",
/// and in a mixed call named no prompt. Each is an `Overflow` naming the row, the job, the
/// prompt's row at fault, and for generation the step.
#[test]
fn a_prompt_that_overflows_a_decoder_is_named() {
    let model = Model::open(fixture("bloom"), Device::Cpu).unwrap();
    let huge = |task: &Task| {
        let mut prompt = random(&model, task, 0);
        let w = prompt.width();
        prompt.values_mut()[..w].fill(3e38);
        prompt
    };
    let overflow = |r: Result<()>| match r.expect_err("numbers that are not finite") {
        Error::Overflow { job, row, msg, .. } => {
            assert!(
                msg.contains("the prompt's row 0 holds values up to 3e38"),
                "{msg}"
            );
            (job, row, msg)
        }
        e => panic!("not an overflow: {e}"),
    };
    let free = TaskOptions {
        free_targets: true,
        ..TaskOptions::default()
    };
    let task = model.task(&free, None, 4).unwrap();
    let texts = ["a story".to_string(), "another story".to_string()];
    let placement = PromptPlacement::BeforeTokens;
    let g = model.generate(&task, &huge(&task), &texts, 3, placement);
    let (job, row, msg) = overflow(g.map(|_| ()));
    assert_eq!((job, row), (0, 0));
    assert!(msg.contains("at generation step 0"), "{msg}");

    let ranked = TaskOptions {
        task: Some(TaskKind::Causal),
        verbalizer: Some(TaskOptions::verbalizer_from_str("neg=bad,pos=good").unwrap()),
        ..TaskOptions::default()
    };
    let task = model.task(&ranked, None, 4).unwrap();
    let (fine, bad) = (random(&model, &task, 1), huge(&task));
    let data = Dataset::from_pairs("mem", [("a film", None::<&str>), ("a long film", None)]);
    let enc = model.encode(&task, &data).unwrap();
    let (_, _, msg) = overflow(model.predict(&task, &bad, &enc, 2).map(|_| ()));
    assert!(msg.contains("scored its labels {neg: NaN"), "{msg}");
    let rows: Vec<(usize, Row)> = enc.rows.iter().cloned().enumerate().collect();
    let jobs = [(&task, &fine), (&task, &bad)];
    let (job, row, _) = overflow(model.predict_mixed(&jobs, &rows, 2).map(|_| ()));
    assert_eq!((job, row), (1, 1));
    assert!(model.predict_mixed(&jobs, &rows[..1], 2).is_ok());
}

/// A prompt length whose positions do not fit a usize was reported as a saturated sum ("need
/// 18446744073709551615 positions", a real-looking count): it names the overflow and its
/// operands. (#17, hostile5 F10)
#[test]
fn a_prompt_length_past_usize_max_names_the_overflow() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(vec!["a".into(), "b".into()]),
        ..TaskOptions::default()
    };
    let err = model.task(&opts, None, usize::MAX).unwrap_err().to_string();
    let want = format!("need more than usize::MAX ({} + 2) positions", usize::MAX);
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("--prompt-len"), "{err}");
}
