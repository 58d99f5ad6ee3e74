//! Determinism and resume: the same seed gives the same loss curve, the emulated kernels train
//! the CPU's prompt, a resume on other threads or devices warns, and a run killed with
//! SIGKILL, SIGTERM or SIGINT resumes bit for bit.

use crate::common::{fixture, softprompt, stdout_ok as ok};
#[cfg(feature = "emu")]
use crate::rel_l2;
use crate::{s, scratch, sentiment_files, sentiment_rows};
use softprompt::internals::prompt::PromptInit;
use softprompt::internals::train::checkpoint::{load_prompt_dir, Checkpoint};
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::optim::OptimConfig;
use softprompt::internals::train::{Event, Model, Task, TaskKind, TaskSpec, TrainConfig, Trainer};
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny_trainer_run(seed: u64, steps: u64) -> Vec<f64> {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 50;
    let task = Task::new(spec, &model).unwrap();
    let rows = sentiment_rows();
    let jsonl: String = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    let data = Dataset::parse(Path::new("mem.jsonl"), &jsonl, &DataSpec::default()).unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    let cfg = TrainConfig {
        prompt_len: 5,
        init: PromptInit::Random { std: 1.0 },
        optim: OptimConfig::lester(),
        batch_size: 8,
        max_steps: Some(steps),
        save_every: 0,
        log_every: 0,
        seed,
        ..TrainConfig::default()
    };
    let out = scratch(&format!("seed_{seed}_{steps}_{}", std::process::id()));
    let mut t = Trainer::new(&be, &model, &task, &enc, None, None, cfg, &out).unwrap();
    let mut losses = Vec::new();
    t.run(&mut |e| {
        if let Event::Step(i) = e {
            losses.push(i.loss);
        }
    })
    .unwrap();
    losses
}

/// The same seed gives the same loss curve, bit for bit; another seed another one.
#[test]
fn same_seed_same_loss_curve() {
    let a = tiny_trainer_run(11, 14);
    let b = tiny_trainer_run(11, 14);
    assert_eq!(a.len(), 14);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let c = tiny_trainer_run(12, 14);
    assert_ne!(a, c);
    // Lester's Adafactor at 0.3 learns this quickly
    let early: f64 = a[..4].iter().sum::<f64>() / 4.0;
    let late: f64 = a[10..].iter().sum::<f64>() / 4.0;
    assert!(late < early, "{a:?}");
}

fn train_args<'a>(
    model: &'a str,
    train: &'a str,
    dev: &'a str,
    out: &'a str,
    steps: &'a str,
    lr: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--train",
        train,
        "--dev",
        dev,
        "--out",
        out,
        "--task",
        "pet",
        "--verbalizer",
        "positive=great,negative=bad",
        "--prompt-len",
        "4",
        "--batch-size",
        "5",
        "--max-steps",
        steps,
        "--eval-every",
        "25",
        "--save-every",
        "10",
        "--log-every",
        "5",
        "--optimizer",
        "adamw",
        "--lr",
        lr,
        "--warmup-steps",
        "20",
        "--seed",
        "3",
        "--threads",
        "2",
        "--no-progress",
    ]
}

/// Training through the CUDA launchers and the float32 build of every kernel (emulated) gives
/// the CPU backend's prompt to float32 rounding: the optimizer, the loss heads and every
/// backward kernel agree step after step, not only in one parity step. The bf16 engine lands
/// near it.
#[cfg(feature = "emu")]
#[test]
fn emu_f32_training_matches_the_cpu() {
    let dir = scratch("emu_f32");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let prompt = |device: &str, precision: &str| -> Vec<f32> {
        let out = dir.join(format!("{device}_{precision}"));
        let mut args = train_args(s(&model), s(&train), s(&dev), s(&out), "12", "0.05");
        args.extend(["--device", device, "--precision", precision]);
        ok(&softprompt(&args));
        load_prompt_dir(&out).unwrap().prompt.data
    };
    let cpu = prompt("cpu", "f32");
    let f32_err = rel_l2(&prompt("emu", "f32"), &cpu);
    assert!(f32_err < 1e-5, "emu --precision f32 vs cpu: {f32_err:.2e}");
    let bf16_err = rel_l2(&prompt("emu", "bf16"), &cpu);
    assert!(
        bf16_err < 2e-2,
        "emu --precision bf16 vs cpu: {bf16_err:.2e}"
    );
    println!(
        "BERT pet, AdamW, 12 steps, prompt vs cpu: emu f32 {f32_err:.2e}, bf16 {bf16_err:.2e}"
    );

    // T5 seq2seq with Adafactor, on a realistic-weight-scale model (the harsh fixtures amplify
    // float32's own rounding differences over the steps)
    let t5_prompt = |name: &str, device: &str, precision: &str| -> Vec<f32> {
        let model = fixture(&format!("realistic/{name}"));
        let out = dir.join(format!("{name}_{device}_{precision}"));
        ok(&softprompt(&[
            "train",
            "--model",
            s(&model),
            "--train",
            s(&train),
            "--dev",
            s(&dev),
            "--out",
            s(&out),
            "--task",
            "seq2seq",
            "--verbalizer",
            "positive=great,negative=terrible",
            "--prompt-len",
            "3",
            "--batch-size",
            "4",
            "--max-steps",
            "8",
            "--eval-every",
            "4",
            "--optimizer",
            "adafactor",
            "--seed",
            "3",
            "--threads",
            "2",
            "--no-progress",
            "--device",
            device,
            "--precision",
            precision,
        ]));
        load_prompt_dir(&out).unwrap().prompt.data
    };
    let cpu = t5_prompt("t5_rand_2", "cpu", "f32");
    let f32_err = rel_l2(&t5_prompt("t5_rand_2", "emu", "f32"), &cpu);
    assert!(
        f32_err < 1e-5,
        "T5: emu --precision f32 vs cpu: {f32_err:.2e}"
    );
    let bf16_err = rel_l2(&t5_prompt("t5_rand_2", "emu", "bf16"), &cpu);
    assert!(
        bf16_err < 5e-2,
        "T5: emu --precision bf16 vs cpu: {bf16_err:.2e}"
    );
    println!(
        "T5 seq2seq, Adafactor, 8 steps, prompt vs cpu: emu f32 {f32_err:.2e}, bf16 {bf16_err:.2e}"
    );

    // a ReLU T5 (bf16-exact weights): the mixed build keeps float32's ReLU masks, so its
    // prompt follows the CPU's through training, where the bf16 build's drifts
    let cpu = t5_prompt("t5_rand_0", "cpu", "f32");
    let mixed_err = rel_l2(&t5_prompt("t5_rand_0", "emu", "mixed"), &cpu);
    let bf16_err = rel_l2(&t5_prompt("t5_rand_0", "emu", "bf16"), &cpu);
    println!(
        "ReLU T5, Adafactor, 8 steps, prompt vs cpu: emu mixed {mixed_err:.2e}, bf16 {bf16_err:.2e}"
    );
    assert!(
        mixed_err < 1e-4,
        "ReLU T5: emu --precision mixed vs cpu: {mixed_err:.2e}"
    );
    // the model is one whose masks bf16 flips (measured 3.5e-2), so the mixed build's
    // agreement above is not for want of masks near zero
    assert!(
        bf16_err > 1e-2,
        "ReLU T5: emu --precision bf16 vs cpu: {bf16_err:.2e}"
    );
}

/// Resuming with another thread count, on another device or build of the kernels, or with
/// other CPU kernels (GEMM path, SIMD set) than the checkpoint's still runs, and says that the
/// result will not be the same.
#[test]
fn resume_with_other_threads_or_device_warns() {
    let dir = scratch("threads");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let out = dir.join("out");
    let args = train_args(s(&model), s(&train), s(&dev), s(&out), "20", "0.05");
    ok(&softprompt(&args));
    // as if the run had stopped at its last checkpoint, trained with `threads` threads
    let path = out.join("checkpoint.safetensors");
    let mut resume = args.clone();
    resume.push("--resume");
    let wrote = Checkpoint::load(&path).unwrap().state.kernels;
    assert!(
        wrote.starts_with("gemm/"),
        "the CPU kernels that wrote it: {wrote:?}"
    );
    let resume_from = |threads: usize, device: Option<&str>, kernels: Option<&str>| {
        let mut ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.state.device, "cpu", "the device that wrote it");
        ck.state.threads = threads;
        if let Some(d) = device {
            ck.state.device = d.into();
        }
        // a resume that takes no step writes no checkpoint: set what the test does not vary
        ck.state.kernels = kernels.unwrap_or(&wrote).into();
        ck.state.done = false;
        ck.save(&path).unwrap();
        ok(&softprompt(&resume))
    };
    let same = resume_from(2, None, None);
    assert!(
        same.contains("resumed at step")
            && same.contains("on cpu (kernels gemm/")
            && !same.contains("warning"),
        "{same}"
    );
    let other = resume_from(7, None, None);
    assert!(
        other.contains("trained with 7 threads and this run uses 2")
            && other.contains("--threads 7"),
        "{other}"
    );
    let blas = resume_from(2, None, Some("openblas/scalar"));
    assert!(
        blas.contains("trained with the CPU kernels openblas/scalar and this run uses gemm/")
            && blas.contains("--gemm openblas, SOFTPROMPT_SIMD=scalar, and no other")
            && !blas.contains("trained on"),
        "{blas}"
    );
    // what else the library ran by, in brackets, is named in the advice with the CPU
    let mkl = resume_from(2, None, Some("mkl[sequential,MKL_CBWR=COMPATIBLE]/avx2"));
    assert!(
        mkl.contains(
            "resume with --gemm mkl, SOFTPROMPT_SIMD=avx2, MKL_THREADING_LAYER=sequential, \
             MKL_CBWR=COMPATIBLE, and no other of those settings, on the same CPU, for that"
        ),
        "{mkl}"
    );
    let one = resume_from(1, None, None);
    assert!(one.contains("trained with 1 thread and"), "{one}");
    let moved = resume_from(2, Some("emu (mixed build)"), None);
    assert!(
        moved.contains("trained on emu (mixed build) and this run uses cpu")
            && !moved.contains("threads and this run"),
        "{moved}"
    );
}

/// The dev rows pick the kept prompt and the early stop: a resume with another dev file (or
/// the same file read another way) is refused naming them, with what a hash of rows means; a
/// checkpoint of an earlier build, which hashed no dev rows, resumes as it did.
#[test]
fn resume_refuses_other_dev_rows() {
    let dir = scratch("dev_rows");
    let (train, dev) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let out = dir.join("out");
    let args = train_args(s(&model), s(&train), s(&dev), s(&out), "20", "0.05");
    ok(&softprompt(&args));
    let path = out.join("checkpoint.safetensors");
    let reopen = |edit: &dyn Fn(&mut Checkpoint)| {
        let mut ck = Checkpoint::load(&path).unwrap();
        ck.state.done = false;
        edit(&mut ck);
        ck.save(&path).unwrap();
    };
    reopen(&|_| {});
    let mut other = train_args(s(&model), s(&train), s(&train), s(&out), "20", "0.05");
    other.push("--resume");
    let refused = softprompt(&other);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other settings")
            && err.contains("dev_rows: \"")
            && err.contains("a hash of the rows as read")
            && err.contains("--quoting")
            && !err.contains("train_rows"),
        "{err}"
    );
    // a test split given now and not before: its score would mix two runs' rows
    let mut with_test = args.clone();
    with_test.extend(["--test", s(&dev), "--resume"]);
    let refused = softprompt(&with_test);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("test_rows: null -> \"")
            && err.contains("(the split is given in one run and not the other)")
            && !err.contains("dev_rows:"),
        "{err}"
    );
    // another training file of fewer rows than the batch plan names: other settings, not a
    // corrupt checkpoint (hostile pass 24, F4)
    let mut shorter = train_args(s(&model), s(&dev), s(&dev), s(&out), "20", "0.05");
    shorter.push("--resume");
    let refused = softprompt(&shorter);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("other settings")
            && err.contains("train_rows: \"")
            && !err.contains("corrupt"),
        "{err}"
    );
    // as an earlier build wrote it: no dev rows among the settings
    reopen(&|ck| {
        let config = ck.state.config.as_object_mut().unwrap();
        assert!(config.remove("dev_rows").is_some());
    });
    let mut resume = args.clone();
    resume.push("--resume");
    assert!(ok(&softprompt(&resume)).contains("resumed at step"));
}

/// The interrupted-run tests' length.
const STEPS: &str = "600";

/// What an interrupted-run test starts from: the sentiment files in the scratch folder `tag`,
/// and the uninterrupted run of `train_args` (STEPS steps, lr 0.05) in its `full` folder;
/// `cut` is the folder to interrupt.
struct Interrupted {
    train: PathBuf,
    dev: PathBuf,
    model: PathBuf,
    full: PathBuf,
    cut: PathBuf,
    /// the uninterrupted run's console
    full_out: String,
}

impl Interrupted {
    fn new(tag: &str) -> Interrupted {
        let dir = scratch(tag);
        let (train, dev) = sentiment_files(&dir);
        let model = fixture("bert_mlm");
        let (full, cut) = (dir.join("full"), dir.join("cut"));
        let args = train_args(s(&model), s(&train), s(&dev), s(&full), STEPS, "0.05");
        let full_out = ok(&softprompt(&args));
        Interrupted {
            train,
            dev,
            model,
            full,
            cut,
            full_out,
        }
    }
}

/// A run killed with SIGKILL mid-way resumes from its last checkpoint and ends with the same
/// prompt, bit for bit, as an uninterrupted run with the same seed.
#[test]
fn killed_run_resumes_bit_identically() {
    let Interrupted {
        train,
        dev,
        model,
        full,
        cut,
        ..
    } = Interrupted::new("resume");
    let steps = STEPS;

    // start, wait for a checkpoint past step 40, kill -9
    let mut child = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(train_args(
            s(&model),
            s(&train),
            s(&dev),
            s(&cut),
            steps,
            "0.05",
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = cut.join("checkpoint.safetensors");
    let killed_at = loop {
        if let Ok(ck) = Checkpoint::load(&ckpt) {
            if ck.state.step >= 40 {
                child.kill().unwrap(); // SIGKILL
                break ck.state.step;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.wait().unwrap();
    // what the kill left is readable: the checkpoint and the exported prompt
    let ck = Checkpoint::load(&ckpt).unwrap();
    assert!(
        !ck.state.done && ck.state.step >= killed_at && ck.state.step < 600,
        "step {}",
        ck.state.step
    );
    load_prompt_dir(&cut).unwrap();

    let mut args = train_args(s(&model), s(&train), s(&dev), s(&cut), steps, "0.05");
    args.push("--resume");
    let stdout = ok(&softprompt(&args));
    assert!(
        stdout.contains(&format!("resumed at step {}", ck.state.step))
            || stdout.contains("resumed at step"),
        "{stdout}"
    );

    for file in ["adapter_model.safetensors", "task.json"] {
        assert_eq!(
            std::fs::read(full.join(file)).unwrap(),
            std::fs::read(cut.join(file)).unwrap(),
            "{file} differs"
        );
    }
    let (a, b) = (
        Checkpoint::load(&full.join("checkpoint.safetensors")).unwrap(),
        Checkpoint::load(&ckpt).unwrap(),
    );
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.state, b.state);
    assert_eq!(a.state.step, 600);
    // and the same loss curve in the metrics log
    let losses = |d: &Path| -> Vec<(u64, u64)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some((v["step"].as_u64()?, v["loss"].as_f64()?.to_bits()))
            })
            .collect()
    };
    assert_eq!(losses(&full), losses(&cut));
    assert_eq!(losses(&full).len(), 120);

    // resuming with other settings is refused, naming the difference
    let mut args = train_args(s(&model), s(&train), s(&dev), s(&cut), steps, "0.1");
    args.push("--resume");
    let out = softprompt(&args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other settings") && err.contains("lr: 0.05 -> 0.1"),
        "{err}"
    );
}

/// SIGTERM (what systemd, docker and `timeout` send) and Ctrl-C's SIGINT stop `train` after
/// the step under way with its checkpoint written (the process died on them, losing every
/// step since the last --save-every: hostile pass 12), then end by the signal; the run
/// resumed twice ends bit for bit as the uninterrupted one.
#[test]
fn terminated_run_checkpoints_its_step_and_resumes() {
    use std::os::unix::process::CommandExt;
    let Interrupted {
        train,
        dev,
        model,
        full,
        cut,
        full_out,
    } = Interrupted::new("sigterm");
    let steps = STEPS;
    let last_logged = |d: &Path| -> u64 {
        let text = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap_or_default();
        (text.lines())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
            .max()
            .unwrap_or(0)
    };
    for (signal, after) in [(libc::SIGTERM, 15), (libc::SIGINT, 60)] {
        let mut args = train_args(s(&model), s(&train), s(&dev), s(&cut), steps, "0.05");
        args.push("--resume");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_softprompt"));
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // SAFETY: signal(2) alone between fork and exec. A job a shell starts with `&`
        // inherits SIGINT ignored, and the CLI keeps it ignored: the test's child must not.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        while last_logged(&cut) < after {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the run ended ({status}) before the signal");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: kill(2) on our own child, not yet waited for
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // ended by the signal itself, as a shell loop over runs expects (it stops there)
        let by = std::os::unix::process::ExitStatusExt::signal(&out.status);
        assert_eq!(by, Some(signal), "{err}");
        let ck = Checkpoint::load(&cut.join("checkpoint.safetensors")).unwrap();
        let line = format!(
            "interrupted: training stopped at step {} of 600",
            ck.state.step
        );
        assert!(err.contains(&line), "{err}");
        assert!(
            !ck.state.done && ck.state.step >= after,
            "{}",
            ck.state.step
        );
    }
    let mut args = train_args(s(&model), s(&train), s(&dev), s(&cut), steps, "0.05");
    args.push("--resume");
    let resumed_at = Checkpoint::load(&cut.join("checkpoint.safetensors"))
        .unwrap()
        .state
        .step;
    let resumed = ok(&softprompt(&args));
    // every evaluation line after the resume is the uninterrupted run's (but the seconds), the
    // first one's train loss included: the checkpoint carries the losses since the evaluation
    // before the stop (it covered the steps since the resume: hostile pass 14)
    let evals = |out: &str| -> Vec<String> {
        (out.lines())
            .filter(|l| l.starts_with("step ") && l.contains("| train loss "))
            .filter_map(|l| Some(l.rsplit_once(" | ")?.0.to_string()))
            .collect()
    };
    let (want, got) = (evals(&full_out), evals(&resumed));
    let after: Vec<&String> = (want.iter())
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                > Some(resumed_at)
        })
        .collect();
    assert_eq!(
        got.iter().collect::<Vec<_>>(),
        after,
        "resumed at {resumed_at}"
    );
    assert_eq!(after.len() as u64, 24 - resumed_at / 25, "{full_out}");
    for file in ["adapter_model.safetensors", "task.json"] {
        let (a, b) = (full.join(file), cut.join(file));
        let same = std::fs::read(a).unwrap() == std::fs::read(b).unwrap();
        assert!(same, "{file} differs");
    }
    let ck = |d: &Path| Checkpoint::load(&d.join("checkpoint.safetensors")).unwrap();
    let (a, b) = (ck(&full), ck(&cut));
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.state, b.state);
}

/// `--recompute` changes what backward keeps, not a number (docs/resume.md: the same losses bit for
/// bit): prompt tuning on BERT, BLOOM, T5 and Llama (whose gated MLP also has `mlp`) gives every
/// mode `none`'s losses and adapter bytes. So a resume may change it (it was refused, "recompute:
/// None -> Layer"): a run stopped under `none` ends under `layer` where the whole run ends, while
/// another setting changed with it is still refused by name.
#[test]
fn recompute_changes_no_number_and_a_resume_may_change_it() {
    use crate::common::sample_run::{assert_resume_refused, file, run_on_sample};
    use softprompt::{Error, OptimConfig, OptimKind, Recompute};
    let adapter = "adapter_model.safetensors";
    // Adafactor (Lester's recipe) too: its eps 1e-30, read back from the checkpoint's
    // settings one bit off, was a difference that refused every such resume
    let modes: [(&str, &[Recompute], OptimKind); 4] = [
        ("bert_mlm", &[Recompute::Layer], OptimKind::AdamW),
        (
            "llama",
            &[Recompute::Mlp, Recompute::Layer],
            OptimKind::AdamW,
        ),
        ("bloom", &[Recompute::Layer], OptimKind::Adafactor),
        ("t5_v1_1", &[Recompute::Layer], OptimKind::Adafactor),
    ];
    for (model, modes, optim) in modes {
        let dir = scratch(&format!("recompute_{model}_{}", std::process::id()));
        let cfg = TrainConfig {
            prompt_len: 3,
            batch_size: 4,
            max_steps: Some(9),
            save_every: 3,
            optim: OptimConfig::defaults(optim),
            ..TrainConfig::default()
        };
        let whole = dir.join("none");
        let (_, want) = run_on_sample(model, &whole, &cfg, None).unwrap();
        for &recompute in modes {
            let out = dir.join(format!("{recompute:?}"));
            let mode = TrainConfig {
                recompute,
                ..cfg.clone()
            };
            let (_, got) = run_on_sample(model, &out, &mode, None).unwrap();
            assert_eq!(got, want, "{model} {recompute:?}");
            assert_eq!(file(&out, adapter), file(&whole, adapter), "{model}");
        }
        let parts = dir.join("parts");
        let err = run_on_sample(model, &parts, &cfg, Some(5)).unwrap_err();
        assert!(matches!(err, Error::Interrupted(_)), "{model}: {err}");
        let resume = TrainConfig {
            resume: true,
            recompute: Recompute::Layer,
            ..cfg.clone()
        };
        let seed = TrainConfig {
            seed: cfg.seed + 1,
            ..resume.clone()
        };
        assert_resume_refused(model, &parts, &seed, "seed");
        let (summary, rest) = run_on_sample(model, &parts, &resume, None).unwrap();
        assert_eq!((summary.steps, &rest[..]), (9, &want[5..]), "{model}");
        assert_eq!(file(&parts, adapter), file(&whole, adapter), "{model}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
