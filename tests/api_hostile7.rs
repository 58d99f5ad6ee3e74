//! The Rust API against the seventh hostile pass (#17, its F6, F9, F10): a vocabulary sample
//! from no ids, a run whose prompt length is not its task's, a task for a prompt of 0 rows,
//! and a second run into a folder this process is writing are refused, each naming what the
//! API user set (not a command-line flag they never passed) or who holds the folder.

use softprompt::internals::train::outdir::OutLock;
use softprompt::internals::train::save_lock::SaveLock;
use softprompt::prelude::*;
use softprompt::{BatchSetting, Error};

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
/// the command line refuses `--init-vocab-first 0`: refused, naming the field (#17: it named
/// the flag).
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
        let needles = ["invalid argument from_first: is 0: expected at least 1"];
        contains_all(&format!("{init:?}"), &err, &needles);
        assert!(!err.contains("--"), "{err}");
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
    contains_all(
        "lock",
        &err,
        &[&needles[..], &["train into another `out`"]].concat(),
    );
    assert!(!err.contains("another softprompt run"), "{err}");
    assert!(!err.contains("--"), "{err}");
}

/// `OutLock::acquire(dir)` again until it is refused, once a `flock` child started a moment
/// before holds the lock: the refusal. `before_drop` runs on each lock taken before then.
#[cfg(target_os = "linux")]
fn refusal_once_held(dir: &std::path::Path, before_drop: impl Fn()) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match OutLock::acquire(dir) {
            Err(e) => return e.to_string(),
            Ok(held) => {
                before_drop();
                drop(held);
                assert!(
                    std::time::Instant::now() < deadline,
                    "flock never held the lock"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A run's lock inherited by a process it forked (Python's `os.fork` in an event callback)
/// outlives the run: the refusal named "another softprompt run (pid N)" with N dead. It now
/// says the run is gone and a process it started holds the lock. `flock(1)` stands for the
/// child, the lock file signed with a pid that has ended.
#[cfg(target_os = "linux")]
#[test]
fn a_lock_held_past_its_runs_end_says_so() {
    let dir = ScratchDir::new("api_h7_lock_inherited");
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let lock = dir.path().join(".softprompt.lock");
    std::fs::write(&lock, pid.to_string()).unwrap();
    let mut child = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // signed again before flock can take it
    let err = refusal_once_held(dir.path(), || {
        std::fs::write(&lock, pid.to_string()).unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();
    let named = format!("the run of pid {pid} (no longer running)");
    contains_all(
        "lock",
        &err,
        &[&named, "inherited its lock", "wait for it to end"],
    );
    assert!(!err.contains("another softprompt run"), "{err}");
}

/// A lock file that is a symbolic link was followed: its target, a file outside the folder,
/// was emptied and signed with the run's pid (hostile pass 32, F3). It is refused, naming the
/// link, and the target is left as it was; a dangling link makes no file.
#[cfg(unix)]
#[test]
fn a_lock_file_that_is_a_link_is_not_followed() {
    let dir = ScratchDir::new("api_h7_lock_link");
    let victim = dir.path().join("notes.txt");
    std::fs::write(&victim, "mine").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let lock = out.join(".softprompt.lock");
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let err = OutLock::acquire(&out).unwrap_err().to_string();
    contains_all(
        "link",
        &err,
        &[".softprompt.lock", "symbolic link", "remove the link"],
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
    std::fs::remove_file(&lock).unwrap();
    let nowhere = dir.path().join("made_outside.txt");
    std::os::unix::fs::symlink(&nowhere, &lock).unwrap();
    assert!(OutLock::acquire(&out).is_err());
    assert!(!nowhere.exists(), "a run made {}", nowhere.display());
}

/// A run whose lock file was removed while it ran (a cleaner of hidden files) let a second
/// run into its folder, which removed its files and mixed both runs' metrics (hostile pass
/// 32, F5). The run holds the folder itself too: the second is refused, naming the first's
/// pid. `flock(1)` on the folder stands for the first run.
#[cfg(target_os = "linux")]
#[test]
fn a_run_whose_lock_file_was_removed_still_holds_its_folder() {
    let dir = ScratchDir::new("api_h7_lock_removed");
    // -o: the lock stays with flock, not with the command it runs
    let mut child = std::process::Command::new("flock")
        .arg("-o")
        .arg(dir.path())
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let err = refusal_once_held(dir.path(), || {});
    assert_eq!(softprompt::folder_writer(dir.path()), Some(child.id()));
    // a save into it is refused as well (verification 28, V4)
    let save = SaveLock::acquire(dir.path()).unwrap_err().to_string();
    let _ = child.kill();
    let _ = child.wait();
    let pid = format!("(pid {})", child.id());
    contains_all(
        "save",
        &save,
        &[&pid, "was removed while it ran", "save into another folder"],
    );
    contains_all(
        "removed",
        &err,
        &[
            &pid,
            "lock file",
            "was removed while it ran",
            "wait for it to end",
        ],
    );
    // the lock file it made names no one, and the folder is free again
    let lock = dir.path().join(".softprompt.lock");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
    drop(OutLock::acquire(dir.path()).unwrap());
}

/// Two processes saving into one folder that did not exist both went in (neither held a
/// folder that was not there) and mixed their files (verification 30, R4): a save holds the
/// folder once made, and is refused where another holds it. `flock(1)` stands for the other.
#[cfg(target_os = "linux")]
#[test]
fn a_save_holds_the_folder_it_made() {
    let dir = ScratchDir::new("api_h7_save_made");
    let fresh = dir.path().join("fresh");
    let mut save = SaveLock::acquire(&fresh).unwrap();
    std::fs::create_dir(&fresh).unwrap();
    let mut child = std::process::Command::new("flock")
        .arg("-o")
        .arg(&fresh)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while softprompt::folder_writer(&fresh) != Some(child.id()) {
        assert!(std::time::Instant::now() < deadline, "flock never held it");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = save.hold_made(&fresh).unwrap_err().to_string();
    let _ = child.kill();
    let _ = child.wait();
    let pid = format!("(pid {})", child.id());
    contains_all("made", &err, &[&pid, "holds this folder"]);
    drop(save);
    // free again (once flock's forked child, which held its descriptor a moment, has closed
    // it), the folder is held by the save that made it
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut again = loop {
        match SaveLock::acquire(&fresh) {
            Ok(held) => break held,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    again.hold_made(&fresh).unwrap();
    assert_eq!(softprompt::folder_writer(&fresh), Some(std::process::id()));
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

/// The optimizer's checks and the checks that need a dev split named the flags (`invalid
/// argument --lr`, "pass --dev", #17): each names its field, and nothing is written.
#[test]
fn optimizer_and_dev_split_checks_name_the_fields() {
    let dir = ScratchDir::new("api_h7_optim_fields");
    let out = dir.path().join("run");
    let base = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let with = |set: fn(&mut TrainConfig)| {
        let mut cfg = base.clone();
        set(&mut cfg);
        cfg
    };
    let range = "is out of range: expected";
    let cases = [
        (with(|c| c.optim.lr = f64::NAN), format!("cfg.optim.lr: NaN {range} a finite number >= 0")),
        (with(|c| c.optim.head_lr = Some(-1.0)), format!("cfg.optim.head_lr: -1 {range} a finite number >= 0")),
        (with(|c| c.optim.weight_decay = -0.5), format!("cfg.optim.weight_decay: -0.5 {range} a finite number >= 0")),
        (with(|c| c.optim.max_grad_norm = Some(0.0)), format!("cfg.optim.max_grad_norm: 0 {range} a finite number > 0 (0 turns clipping off)")),
        (with(|c| c.optim.decay_rate = 1.5), format!("cfg.optim.decay_rate: 1.5 {range} 0 < rate <= 1, as Adafactor's")),
        (with(|c| c.optim.lr = 0.0), "cfg.optim.lr: 0 trains nothing: expected a number > 0 (0 freezes the prompt, which makes sense only beside a cls head trained by `cfg.optim.head_lr` > 0)".into()),
        (with(|c| c.patience = Some(2)), "cfg.patience: early stopping needs a dev split: pass `dev`".into()),
        (with(|c| c.eval_every = 3), "cfg.eval_every: evaluating during the run needs a dev split: pass `dev`".into()),
        (
            with(|c| c.optim.head_lr = Some(0.1)),
            "cfg.optim.head_lr: sets the rate of a cls task's head, and no task of this run is \
             cls: leave it out"
                .into(),
        ),
    ];
    for (cfg, want) in &cases {
        let err = train_err(cfg, &out);
        assert!(
            err.starts_with(&format!("invalid argument {want}")),
            "{err}\nwant {want}"
        );
        assert!(!err.contains("--"), "{err}");
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
}

/// `cfg` trained on the training sentences' rows into `out`: the error's message.
fn train_err(cfg: &TrainConfig, out: &std::path::Path) -> String {
    let (model, task, rows) = bert_task_rows();
    let splits = Splits {
        train: &rows,
        dev: None,
        test: None,
    };
    (model
        .train(&task, splits, cfg, out, &mut |_| {})
        .map(|_| ()))
    .unwrap_err()
    .to_string()
}

/// `TrainConfig`'s own checks named the flags (`invalid argument --batch-size`, #17): each
/// names its field, and nothing is written.
#[test]
fn train_config_checks_name_the_fields() {
    let dir = ScratchDir::new("api_h7_cfg_fields");
    let out = dir.path().join("run");
    let base = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let zero = [
        (
            "cfg.batch_size",
            TrainConfig {
                batch_size: 0,
                ..base.clone()
            },
        ),
        (
            "cfg.eval_batch_size",
            TrainConfig {
                eval_batch_size: 0,
                ..base.clone()
            },
        ),
        (
            "cfg.bucket_pool",
            TrainConfig {
                bucket_pool: 0,
                ..base.clone()
            },
        ),
        (
            "cfg.epochs",
            TrainConfig {
                epochs: 0,
                ..base.clone()
            },
        ),
        (
            "cfg.max_steps",
            TrainConfig {
                max_steps: Some(0),
                ..base.clone()
            },
        ),
        (
            "cfg.patience",
            TrainConfig {
                patience: Some(0),
                ..base.clone()
            },
        ),
    ];
    for (field, cfg) in &zero {
        let err = train_err(cfg, &out);
        let want = format!("invalid argument {field}: is 0: expected at least 1");
        assert_eq!(err, want);
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
}

/// A fresh run into a folder an earlier run finished in was refused with "pass --resume to
/// continue it, ..., pass --overwrite to replace it, or train into another --out" (#17): it
/// names the fields and the argument, and the folder is left as it was.
#[test]
fn a_fresh_run_over_a_finished_one_names_the_fields() {
    let dir = ScratchDir::new("api_h7_out_words");
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let (model, task, rows) = bert_task_rows();
    let splits = Splits {
        train: &rows,
        dev: None,
        test: None,
    };
    model.train(&task, splits, &cfg, &out, &mut |_| {}).unwrap();
    let before = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let err = train_err(&cfg, &out);
    let needles = [
        "`out` holds a finished run (step 1): set `cfg.resume` to continue it",
        "set `cfg.overwrite` to replace it, or train into another `out`",
    ];
    contains_all("fresh run", &err, &needles);
    assert!(!err.contains("--"), "{err}");
    let after = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(before, after);
}

/// A step past the host's memory named --batch-size, --max-len and --prompt-len (#17): the
/// API's error is `Error::StepMemory`, naming `cfg.batch_size` for training and the
/// `batch_size` argument for evaluation and prediction. The memory is lowered for this test
/// alone: `SOFTPROMPT_HOST_MEMORY` is read by every call, so it runs in a child process.
#[test]
fn a_step_past_the_host_memory_names_the_api_s_settings() {
    common::run_child_test("host_memory_child", &[("SOFTPROMPT_HOST_MEMORY", "1000")]);
}

/// The child of `a_step_past_the_host_memory_names_the_api_s_settings` (1000 bytes of host
/// memory); run alone, it has nothing to check.
#[test]
#[ignore = "run by a_step_past_the_host_memory_names_the_api_s_settings"]
fn host_memory_child() {
    if std::env::var("SOFTPROMPT_HOST_MEMORY").as_deref() != Ok("1000") {
        return;
    }
    let (model, task, rows) = bert_task_rows();
    let dir = ScratchDir::new("api_h7_host_memory");
    let out = dir.path().join("run");
    let splits = Splits {
        train: &rows,
        dev: None,
        test: None,
    };
    let cfg = TrainConfig {
        prompt_len: 4,
        batch_size: 2,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let err = (model
        .train(&task, splits, &cfg, &out, &mut |_| {})
        .map(|_| ()))
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::StepMemory {
                rows: 2,
                batch: BatchSetting::Train,
                available: 1000,
                flags: false,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    let advice = ": lower cfg.batch_size, the task's max_len or cfg.prompt_len";
    contains_all(
        "train",
        &msg,
        &["a step of 2 rows x ", " for activations, but ", advice],
    );
    assert!(msg.ends_with(advice) && !msg.contains("--"), "{msg}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    let prompt = model
        .new_prompt(&task, 4, &PromptInit::Random { std: 1.0 }, 0)
        .unwrap();
    let advice = ": lower batch_size, the task's max_len or the prompt's rows";
    let scored = [
        model.evaluate(&task, &prompt, &rows, 3).map(|_| ()),
        model.predict(&task, &prompt, &rows, 3).map(|_| ()),
    ];
    for err in scored {
        let err = err.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                Error::StepMemory {
                    rows: 3,
                    batch: BatchSetting::Call,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            msg.starts_with("a step of 3 rows x ") && msg.ends_with(advice),
            "{msg}"
        );
        assert!(!msg.contains("--"), "{msg}");
    }
    // a step's rows are one batch, as passed: 400,000 of them grew past the machine's
    // memory until the kernel killed the process, where evaluate refused (hostile pass 24)
    let err = model.step(&task, &prompt, &rows.rows[..2]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StepMemory {
                rows: 2,
                batch: BatchSetting::Rows,
                ..
            }
        ),
        "{err:?}"
    );
    let advice = ": lower the number of rows passed (a step takes them as one batch), the \
                  task's max_len or the prompt's rows";
    assert!(err.to_string().ends_with(advice), "{err}");
}

/// A child of fork() whose parent had computed waited for ever at its first call: rayon's
/// pool does not survive fork, and only the CLI and Python ran their calls on a pool of the
/// child's own (hostile pass 30, F1). The call is now refused at once, saying what to do, and
/// the advice holds: on a pool the child builds, the step gives the parent's loss.
#[cfg(target_os = "linux")]
#[test]
fn a_call_in_a_forked_child_is_refused_not_hung() {
    let (model, task, rows) = bert_task_rows();
    let prompt = Prompt::from_values(4, 48, vec![0.01; 4 * 48]).unwrap();
    let loss = model.step(&task, &prompt, &rows.rows).unwrap().loss;
    let threads = rayon::current_num_threads();
    // SAFETY: the child only calls the engine and then _exit()s
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match model.step(&task, &prompt, &rows.rows) {
            Ok(_) => 2,
            Err(e) if !e.to_string().contains("child of fork()") => 3,
            Err(_) => {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
                let step = pool.map(|p| p.install(|| model.step(&task, &prompt, &rows.rows)));
                match step {
                    Ok(Ok(out)) if out.loss.to_bits() == loss.to_bits() => 0,
                    _ => 4,
                }
            }
        };
        // SAFETY: ends the child without running the test harness's code
        unsafe { libc::_exit(code) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut status = 0;
    // SAFETY: waits for the child made above
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
        if std::time::Instant::now() > deadline {
            // SAFETY: the child made above
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child's call hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "2: computed off-pool; 3: another error; 4: the pool's step"
    );
}
