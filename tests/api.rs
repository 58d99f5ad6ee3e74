//! The Rust API as a user links it (`softprompt::prelude` only, plus the reference reader):
//! one step against PyTorch + PEFT's numbers, a whole run equal to the command line's bit for
//! bit, the defaults on a short model, a stopped run resumed exactly, parity, and devices that
//! are missing.

use softprompt::internals::weights::TensorFile;
use softprompt::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;

use common::fixture;
use common::sample_run::sample;

/// reference-format.md: a float32 CPU run passes at 1e-4
const REL_TOL: f64 = 1e-4;

fn scratch(name: &str) -> PathBuf {
    common::scratch_in("api_tests", name)
}

/// PEFT's PET batch of ref_pet_random through the API: the task resolved from options and
/// data, the reference's prompt as values, one step: PyTorch's loss and prompt gradient.
#[test]
fn step_gives_pytorch_loss_and_prompt_gradient() {
    let dir = fixture("bert_mlm_bf16_sharded");
    let model = Model::open(&dir, Device::Cpu).unwrap();
    let reference = TensorFile::read(&dir.join("ref_pet_random.safetensors")).unwrap();
    let data = Dataset::from_pairs(
        "ref",
        [
            ("Quite a pleasant surprise.", Some("positive")),
            (
                "The actors seemed tired and the jokes fell flat.",
                Some("negative"),
            ),
            ("The movie was great.", Some("positive")),
        ],
    );
    let opts = TaskOptions {
        verbalizer: Some(vec![
            ("negative".into(), "terrible".into()),
            ("positive".into(), "good".into()),
        ]),
        max_len: Some(35),
        ..TaskOptions::default()
    };
    let want_prompt = reference.float("prompt").unwrap();
    let (p, d) = (want_prompt.shape[0], want_prompt.shape[1]);
    let task = model.task(&opts, Some(&data), p).unwrap();
    assert_eq!(task.kind(), TaskKind::Pet, "BERT with its MLM head: pet");
    assert_eq!(task.labels(), ["negative", "positive"]);
    let prompt = Prompt::from_values(p, d, want_prompt.data.clone()).unwrap();
    let rows = model.encode(&task, &data).unwrap().rows;
    let out = model.step(&task, &prompt, &rows).unwrap();
    let want_loss = reference.float("loss").unwrap().data[0] as f64;
    common::assert_close("loss", &[out.loss], &[want_loss], REL_TOL);
    let want_grad = &reference.float("prompt_grad").unwrap().data;
    common::assert_close("prompt_grad", &out.prompt_grad, want_grad, REL_TOL);
    assert!(out.head_grad.is_none());
    let e = model.step(&task, &prompt, &[]).err().unwrap().to_string();
    assert!(e.contains("rows") && e.contains("empty"), "{e}");
}

/// With every default, a model of 64 positions gets max_len 64 - P (the defaults used to ask
/// for 128 tokens and fail), and a new prompt with its seed is the trainer's.
/// What a backend shares between threads is `Send + Sync` (docs/rust.md, "Threads and
/// processes"): a type that lost it would fail this file's build.
#[test]
fn shared_types_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Model>();
    shared::<Task>();
    shared::<Prompt>();
    shared::<Encoded>();
    shared::<softprompt::Error>();
}

#[test]
fn defaults_fit_a_short_model() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let data = Dataset::load(&sample("train"), &DataSpec::default()).unwrap();
    let task = model
        .task(&TaskOptions::default(), Some(&data), 20)
        .unwrap();
    assert_eq!(task.spec().max_len, 64 - 20);
    let init = PromptInit::Random { std: 1.0 };
    let a = model.new_prompt(&task, 20, &init, 7).unwrap();
    let b = model.new_prompt(&task, 20, &init, 7).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.rows(), a.width()), (20, model.hidden_size()));
    assert_ne!(
        a.values(),
        model.new_prompt(&task, 20, &init, 8).unwrap().values()
    );
    let cfg = TrainConfig::default();
    assert_eq!(cfg.optim, OptimConfig::defaults(OptimKind::AdamW));
    assert_eq!((cfg.optim.lr, cfg.optim.weight_decay), (0.03, 0.01));
    assert_eq!(cfg.optim.max_grad_norm, Some(1.0));
    assert_eq!(cfg.optim.schedule.kind, ScheduleKind::Linear);
    assert_eq!(
        (cfg.prompt_len, cfg.batch_size, cfg.save_every),
        (20, 32, 50)
    );
}

fn run_api(out: &Path, cfg: &TrainConfig, stop_after: Option<u64>) -> Result<Summary> {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu)?;
    let train = Dataset::load(&sample("train"), &DataSpec::default())?;
    let dev = Dataset::load(&sample("dev"), &DataSpec::default())?;
    let task = model.task(&TaskOptions::default(), Some(&train), cfg.prompt_len)?;
    let (train, dev) = (model.encode(&task, &train)?, model.encode(&task, &dev)?);
    let splits = Splits {
        train: &train,
        dev: Some(&dev),
        test: None,
    };
    let stop = AtomicBool::new(false);
    let mut on_event = |ev: &Event| {
        if let (Event::Step(s), Some(n)) = (ev, stop_after) {
            if s.step >= n {
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    let (summary, _) = model.train_until(&task, splits, cfg, out, &mut on_event, &stop)?;
    Ok(summary)
}

fn tiny_cfg() -> TrainConfig {
    TrainConfig {
        prompt_len: 4,
        batch_size: 4,
        max_steps: Some(8),
        eval_every: 4,
        save_every: 3,
        log_every: 2,
        ..TrainConfig::default()
    }
}

fn file(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// metrics.jsonl's numbers: the losses of its step lines, the dev lines' accuracies (the
/// rest holds timings).
fn losses(dir: &Path) -> Vec<String> {
    String::from_utf8(file(dir, "metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").or(v.get("accuracy")).map(|x| x.to_string()))
        .collect()
}

/// `Model::train` with `TrainConfig::default()` and the command line with its defaults write
/// the same prompt, bit for bit, and the same losses.
#[test]
fn train_equals_the_command_line() {
    let (api, cli) = (scratch("train_api"), scratch("train_cli"));
    run_api(&api, &tiny_cfg(), None).unwrap();
    let s = |p: PathBuf| p.display().to_string();
    let status = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(["train", "--model", &s(fixture("bert_mlm")), "--train"])
        .args([s(sample("train")), "--dev".into(), s(sample("dev"))])
        .args([
            "--out",
            &s(cli.clone()),
            "--prompt-len",
            "4",
            "--batch-size",
            "4",
        ])
        .args(["--max-steps", "8", "--eval-every", "4", "--save-every", "3"])
        .args(["--log-every", "2"])
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let adapter = "adapter_model.safetensors";
    assert_eq!(file(&api, adapter), file(&cli, adapter));
    assert_eq!(losses(&api), losses(&cli));
    assert_eq!(
        losses(&api).len(),
        4 + 2,
        "a loss every 2 steps, dev at 4 and 8"
    );
}

/// A run stopped by its flag at step 5 leaves a checkpoint; resuming it ends where an
/// uninterrupted run ends, bit for bit.
#[test]
fn stopped_run_resumes_bit_identically() {
    let (whole, parts) = (scratch("stop_whole"), scratch("stop_parts"));
    run_api(&whole, &tiny_cfg(), None).unwrap();
    let err = run_api(&parts, &tiny_cfg(), Some(5)).unwrap_err();
    assert!(matches!(err, Error::Interrupted(_)), "{err}");
    assert!(err.to_string().contains("step 5 of 8"), "{err}");
    assert!(parts.join("checkpoint.safetensors").exists());
    let resume = TrainConfig {
        resume: true,
        ..tiny_cfg()
    };
    let summary = run_api(&parts, &resume, None).unwrap();
    assert_eq!(summary.steps, 8);
    let adapter = "adapter_model.safetensors";
    assert_eq!(file(&whole, adapter), file(&parts, adapter));
}

/// `parity` through the API: the PET reference and a generation reference pass on the CPU.
#[test]
fn parity_passes_on_fixtures() {
    for (model, reference) in [
        ("bert_mlm", "ref_pet_text.safetensors"),
        ("bloom", "ref_generate_random.safetensors"),
    ] {
        let dir = fixture(model);
        let report = parity(&dir, dir.join(reference), Device::Cpu, None).unwrap();
        assert!(report.passed(), "{model} {reference}\n{}", report.table());
        assert!(report.rows.len() >= 2, "{}", report.table());
    }
}

/// A device this build or machine lacks is an error that says so, never a panic.
#[test]
fn missing_devices_are_errors() {
    let dir = fixture("bert_mlm");
    if let Err(e) = Model::open(&dir, Device::parse("cuda:0", "bf16").unwrap()) {
        let msg = e.to_string();
        assert!(msg.contains("CUDA") || msg.contains("cuda"), "{msg}");
    }
    #[cfg(not(feature = "emu"))]
    {
        let e = Model::open(&dir, Device::parse("emu", "f32").unwrap())
            .err()
            .unwrap();
        assert!(e.to_string().contains("--features emu"), "{e}");
    }
    let e = Model::open(fixture("nonexistent"), Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("nonexistent"), "{e}");
}

/// A saved PET prompt (verbalizer negative=bad, positive=great) in a scratch folder.
fn saved_pet_prompt(name: &str) -> (Model, PathBuf) {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let data = Dataset::load(&sample("train"), &DataSpec::default()).unwrap();
    let opts = TaskOptions {
        verbalizer: Some(TaskOptions::verbalizer_from_str("negative=bad,positive=great").unwrap()),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data), 4).unwrap();
    let prompt = model
        .new_prompt(&task, 4, &PromptInit::Random { std: 1.0 }, 0)
        .unwrap();
    let dir = scratch(name);
    model
        .save_prompt(&dir, &prompt, &task, SaveOptions::default())
        .unwrap();
    (model, dir)
}

/// `--labels` over a saved prompt reorders its labels with their words; a label it was not
/// trained for is refused (it used to be scored with its own name as the word).
#[test]
fn labels_over_a_saved_prompt_keep_their_words() {
    let (model, dir) = saved_pet_prompt("labels_saved");
    let prompt = Prompt::load(&dir).unwrap();
    let swap = TaskOptions {
        labels: Some(TaskOptions::labels_from_str("positive,negative")),
        ..TaskOptions::default()
    };
    let task = model.task_for(&prompt, &swap, None).unwrap();
    assert_eq!(task.labels(), ["positive", "negative"]);
    assert_eq!(task.spec().label_words, ["great", "bad"]);
    let new = TaskOptions {
        labels: Some(TaskOptions::labels_from_str("positive,neutral")),
        ..TaskOptions::default()
    };
    let e = model
        .task_for(&prompt, &new, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--labels") && e.contains("\"neutral\""), "{e}");
    // with a verbalizer the new words are the user's to give
    let given = TaskOptions {
        verbalizer: Some(TaskOptions::verbalizer_from_str("positive=good,neutral=fine").unwrap()),
        ..new
    };
    let task = model.task_for(&prompt, &given, None).unwrap();
    assert_eq!(task.spec().label_words, ["good", "fine"]);
}

/// A task setting that fails and came from task.json names task.json, not a flag the user
/// never passed.
#[test]
fn saved_task_errors_name_task_json() {
    let (model, dir) = saved_pet_prompt("task_json_blame");
    let path = dir.join("task.json");
    let mut task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    task["max_len"] = serde_json::json!(63); // 4 prompt rows + 63 > 64 positions
    std::fs::write(&path, task.to_string()).unwrap();
    let prompt = Prompt::load(&dir).unwrap();
    let e = model
        .task_for(&prompt, &TaskOptions::default(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("task.json") && e.contains("--max-len overrides"),
        "{e}"
    );
    // the flag, when given, is what is named
    let flag = TaskOptions {
        max_len: Some(63),
        ..TaskOptions::default()
    };
    let e = model
        .task_for(&prompt, &flag, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("invalid argument --max-len"), "{e}");
}

fn cli_train(out: &Path, extra: &[&str]) -> std::process::Output {
    let s = |p: PathBuf| p.display().to_string();
    Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(["train", "--model", &s(fixture("bert_mlm")), "--train"])
        .args([s(sample("train")), "--out".into(), s(out.to_path_buf())])
        .args(["--prompt-len", "4", "--no-progress"])
        .args(extra)
        .output()
        .unwrap()
}

/// A warm-up as long as the run trains, with a warning that says the rate never reaches
/// --lr; --init-text without --init text is refused (it was ignored).
#[test]
fn warm_up_warning_and_init_text_without_text_init() {
    let out = cli_train(
        &scratch("warmup"),
        &["--max-steps", "4", "--warmup-steps", "10"],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: --warmup-steps 10 is not below the run's 4 steps"),
        "{stdout}"
    );
    let out = cli_train(&scratch("init_text"), &["--init-text", "great movie"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--init-text") && stderr.contains("--init text"),
        "{stderr}"
    );
}

/// A prompt that leaves a row no room beside the template is named as the prompt's fault,
/// with the longest that fits (the error blamed --max-len, which was never passed).
#[test]
fn a_prompt_too_long_for_the_template_names_prompt_len() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let data = Dataset::load(&sample("train"), &DataSpec::default()).unwrap();
    let e = model
        .task(&TaskOptions::default(), Some(&data), 60)
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("--prompt-len") && msg.contains("use --prompt-len 57 or less"),
        "{msg}"
    );
    assert!(model.task(&TaskOptions::default(), Some(&data), 57).is_ok());
    // a max_len given that the template fills (6 tokens without the text) trained on no text
    // at all, and every use of its prompt was refused (hostile pass 33, F4)
    let opts = |n| TaskOptions {
        max_len: Some(n),
        ..TaskOptions::default()
    };
    let msg = (model.task(&opts(6), Some(&data), 4).err().unwrap()).to_string();
    assert!(msg.contains("use --max-len 7 or more"), "{msg}");
    assert!(model.task(&opts(7), Some(&data), 4).is_ok());
    // the position table's refusal beside a long prompt names the prompt as a way out: the
    // --max-len it allows (6) is one the template fills (verification 30, R1)
    let msg = (model.task(&opts(7), Some(&data), 58).err().unwrap()).to_string();
    assert!(
        msg.contains(
            "use --max-len 6 or less (a template and its special tokens may need \
                      more: a shorter --prompt-len leaves more)"
        ),
        "{msg}"
    );
    // and that --max-len, which the template fills, names the pair that works: either flag's
    // advice alone was refused in turn by the other's check (verification 32, R1-a;
    // verification 33, N5)
    let msg = (model.task(&opts(6), Some(&data), 58).err().unwrap()).to_string();
    assert_eq!(
        msg,
        "invalid argument --max-len: 6 tokens cannot hold the template and special tokens (6 \
         tokens without the text) and a token of text, and 58 rows of prompt leave 6 of the \
         model's positions for a row: use --max-len 7 or more with --prompt-len 57 or less"
    );
    assert!(model.task(&opts(7), Some(&data), 57).is_ok());
}

/// Hostile calls to the API are errors naming the thing, never an abort, a silent NaN or a
/// write into the model folder: a prompt of 0 rows/width, NaN values or a P x d that
/// overflows; new_prompt with 2^40 rows (it aborted on the allocation) or a NaN std; step on
/// an empty batch (it answered loss -0); save_prompt into the model folder or of a NaN prompt.
#[test]
fn hostile_api_calls_are_errors() {
    let err = |r: Result<Prompt>| r.map(|_| ()).expect_err("refused").to_string();
    assert!(err(Prompt::from_values(0, 48, vec![])).contains("0 x 48"));
    assert!(err(Prompt::from_values(4, 0, vec![])).contains("4 x 0"));
    assert!(err(Prompt::from_values(usize::MAX, 2, vec![])).contains("P*d"));
    let e = err(Prompt::from_values(1, 2, vec![0.0, f32::NAN]));
    assert!(e.contains("flat index 1") && e.contains("NaN"), "{e}");

    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let (data, opts) = common::bert_mlm_pet();
    let task = model.task(&opts, Some(&data), 4).unwrap();
    let random = |std: f64| PromptInit::Random { std };
    let e = model
        .new_prompt(&task, 1 << 40, &random(1.0), 0)
        .map(|_| ());
    let e = e.expect_err("2^40 rows").to_string();
    assert!(
        e.contains("--prompt-len") && e.contains("max_position_embeddings"),
        "{e}"
    );
    let e = model.new_prompt(&task, 4, &random(f64::NAN), 0).map(|_| ());
    assert!(e.expect_err("NaN std").to_string().contains("--init-std"));

    let mut prompt = model.new_prompt(&task, 4, &random(1.0), 0).unwrap();
    let e = model.step(&task, &prompt, &[]).map(|_| ());
    assert!(e
        .expect_err("empty batch")
        .to_string()
        .contains("at least one row"));

    let dir = scratch("hostile_api_model");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("bert_mlm").join(f), dir.join(f)).unwrap();
    }
    let e = model
        .save_prompt(&dir, &prompt, &task, SaveOptions::default())
        .expect_err("model folder");
    assert!(e.to_string().contains("config.json"), "{e}");
    assert!(!dir.join("adapter_config.json").exists());
    prompt.values_mut()[3] = f32::INFINITY;
    let out = scratch("hostile_api_nan");
    let e = model
        .save_prompt(out.join("p"), &prompt, &task, SaveOptions::default())
        .expect_err("inf");
    assert!(e.to_string().contains("flat index 3"), "{e}");
    assert!(!out.join("p").exists());
}

/// The third hostile pass: values set through `values_mut`/`head_mut` that are not finite are
/// refused naming the tensor (step answered a NaN loss); a hand-made row without ids or with
/// its [MASK] past them names the row (it gave a loss); evaluate over no rows, or over rows
/// without a label, is an error (it answered accuracy 0) while predict on them is fine; the
/// init flags refuse an empty text and companions their init does not read.
#[test]
fn hostile_values_rows_and_evaluations_are_errors() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let data = Dataset::from_pairs(
        "d",
        [("great", Some("positive")), ("bad", Some("negative"))],
    );
    let words = vec![
        ("positive".into(), "great".into()),
        ("negative".into(), "bad".into()),
    ];
    let opts = TaskOptions {
        verbalizer: Some(words),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data), 4).unwrap();
    let random = PromptInit::Random { std: 1.0 };
    let mut prompt = model.new_prompt(&task, 4, &random, 0).unwrap();
    let enc = model.encode(&task, &data).unwrap();
    let text = |r: Result<()>| r.expect_err("refused").to_string();

    prompt.values_mut()[5] = f32::NAN;
    let e = text(model.step(&task, &prompt, &enc.rows).map(|_| ()));
    assert!(
        e.contains("the prompt") && e.contains("flat index 5"),
        "{e}"
    );
    let e = text(model.predict(&task, &prompt, &enc, 8).map(|_| ()));
    assert!(e.contains("the prompt") && e.contains("NaN"), "{e}");
    prompt.values_mut()[5] = 0.0;
    assert!(model
        .step(&task, &prompt, &enc.rows)
        .unwrap()
        .loss
        .is_finite());

    let cls = model
        .task(
            &TaskOptions {
                task: Some(TaskKind::Cls),
                ..TaskOptions::default()
            },
            Some(&data),
            4,
        )
        .unwrap();
    let mut with_head = model.new_prompt(&cls, 4, &random, 0).unwrap();
    with_head.head_mut().unwrap().1[1] = f32::INFINITY;
    // cls rows: the pet task's rows are another task's (refused before the head is read)
    let cls_rows = model.encode(&cls, &data).unwrap().rows;
    let e = text(model.step(&cls, &with_head, &cls_rows).map(|_| ()));
    assert!(
        e.contains("head's bias") && e.contains("flat index 1"),
        "{e}"
    );

    let mut rows = enc.rows.clone();
    rows[1].ids.clear();
    let e = text(model.step(&task, &prompt, &rows).map(|_| ()));
    assert!(e.contains("row 2") && e.contains("no token ids"), "{e}");
    let mut rows = enc.rows.clone();
    rows[0].mask_pos = rows[0].ids.len();
    let e = text(model.step(&task, &prompt, &rows).map(|_| ()));
    assert!(e.contains("row 1") && e.contains("[MASK]"), "{e}");

    let none: [(&str, Option<&str>); 0] = [];
    let empty = model
        .encode(&task, &Dataset::from_pairs("empty", none))
        .unwrap();
    let e = text(model.evaluate(&task, &prompt, &empty, 8).map(|_| ()));
    assert!(e.contains("empty") && e.contains("no rows"), "{e}");
    let unlabelled = Dataset::from_pairs("unlabelled", [("great", None::<&str>), ("bad", None)]);
    let unlabelled = model.encode(&task, &unlabelled).unwrap();
    let e = text(model.evaluate(&task, &prompt, &unlabelled, 8).map(|_| ()));
    assert!(
        e.contains("unlabelled") && e.contains("none of its 2 rows"),
        "{e}"
    );
    assert_eq!(
        model.predict(&task, &prompt, &unlabelled, 8).unwrap().len(),
        2
    );
    let (m, _) = model.evaluate(&task, &prompt, &enc, 8).unwrap();
    assert_eq!(m.examples, 2);

    let init = |i: &str, t: Option<&str>, std: Option<f64>, first: Option<usize>| {
        text(PromptInit::from_flags(i, t.map(String::from), std, first).map(|_| ()))
    };
    assert!(init("text", Some(" "), None, None).contains("--init-text"));
    let e = init("text", Some("a b"), Some(0.5), None);
    assert!(
        e.contains("--init-std") && e.contains("--init random"),
        "{e}"
    );
    let e = init("random", None, None, Some(10));
    assert!(
        e.contains("--init-vocab-first") && e.contains("--init sample-vocab"),
        "{e}"
    );
    let v = 1 << 20;
    let past = PromptInit::SampleVocab {
        from_first: Some(v),
    };
    let e = text(model.new_prompt(&task, 4, &past, 0).map(|_| ()));
    assert!(
        e.contains("invalid argument from_first: is 1048576 but the model's vocabulary has"),
        "{e}"
    );
}

#[test]
fn prompt_load_names_a_file_and_a_missing_peft_type() {
    let dir = scratch("prompt_load_odd");
    let file = dir.join("task.json");
    std::fs::write(&file, "{}").unwrap();
    let e = Prompt::load(&file).unwrap_err().to_string();
    assert!(e.contains("task.json") && e.contains("is a file"), "{e}");
    let adapter = fixture("bert_mlm").join("peft_adapter");
    let copy = dir.join("adapter");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(f), copy.join(f)).unwrap();
    }
    let cfg_path = copy.join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("peft_type");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = Prompt::load(&copy).unwrap_err().to_string();
    assert!(
        e.contains("adapter_config.json") && e.contains("has no `peft_type`"),
        "{e}"
    );
}

/// `Model::check_prompt` refuses, without running anything, what a prediction of the pair
/// would refuse (a server checks a prompt once, as it loads): a `cls` prompt whose head has
/// other labels than the task, or none, and values that are not finite; it passes a prompt
/// that predicts.
#[test]
fn check_prompt_refuses_what_a_prediction_would() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let cls = |labels: &[&str]| {
        let opts = TaskOptions {
            task: Some(TaskKind::Cls),
            labels: Some(labels.iter().map(|l| l.to_string()).collect()),
            ..TaskOptions::default()
        };
        model.task(&opts, None, 3).unwrap()
    };
    let (two, three) = (cls(&["a", "b"]), cls(&["a", "b", "c"]));
    let random = PromptInit::Random { std: 1.0 };
    let mut prompt = model.new_prompt(&three, 3, &random, 0).unwrap();
    model.check_prompt(&three, &prompt).unwrap();
    let data = Dataset::from_pairs("d", [("great", None::<&str>)]);
    let enc = model.encode(&two, &data).unwrap();
    let predicted = model
        .predict(&two, &prompt, &enc, 8)
        .map(|_| ())
        .unwrap_err();
    let checked = model.check_prompt(&two, &prompt).unwrap_err();
    assert_eq!(checked.to_string(), predicted.to_string());
    assert!(
        checked
            .to_string()
            .contains("the head has 3 labels but the task 2"),
        "{checked}"
    );
    let headless = Prompt::from_values(3, 48, prompt.values().to_vec()).unwrap();
    let e = model
        .check_prompt(&three, &headless)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the classifier head"), "{e}");
    prompt.values_mut()[4] = f32::INFINITY;
    let e = model.check_prompt(&three, &prompt).unwrap_err().to_string();
    assert!(
        e.contains("the prompt") && e.contains("flat index 4"),
        "{e}"
    );
}
