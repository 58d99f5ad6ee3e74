//! `softprompt train`: trains a prompt (and the `cls` head) on a data file, evaluating on a
//! dev split as it goes, and writes the prompt, task.json, metrics and checkpoint into --out.

use super::common::{
    as_flags, fail, rows_line, warn_eos_missing, warn_stops_inside, DataArgs, DeviceArgs,
    MethodArgs, TaskArgs,
};
use softprompt::internals::train::outdir;
use softprompt::{
    ConsoleProgress, Encoded, Error, Model, OptimConfig, OptimKind, PromptInit, Recompute, Result,
    Splits, Summary, TargetEnd, Task, TaskKind, TaskSpec, TrainConfig,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

// several tasks at once; a child module, so that it reads these flags
#[path = "train_multi.rs"]
mod multi;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face model folder (BERT, T5, or a decoder-only BLOOM, Llama, Mistral or Qwen2)
    #[arg(long)]
    model: PathBuf,
    /// training data (jsonl, tsv or csv)
    #[arg(
        long,
        required_unless_present = "task_data",
        conflicts_with = "task_data"
    )]
    train: Option<PathBuf>,
    /// several tasks at once, one prompt each: NAME=DIR, DIR holding train.jsonl (and
    /// dev.jsonl, test.jsonl); repeat per task. Each prompt is saved in --out/NAME/
    #[arg(long, value_name = "NAME=DIR", conflicts_with_all = ["dev", "test"])]
    task_data: Vec<String>,
    /// several tasks at once from one --train (--dev, --test) file: the field naming each
    /// row's task; one prompt per task, saved in --out/NAME/
    #[arg(long, value_name = "FIELD")]
    task_field: Option<String>,
    /// with --task-data or --task-field: a JSON object by task name of the task's own flags
    /// (task, template, labels, verbalizer, pooling, max_len, prompt_len, init, init_text, ...)
    #[arg(long, value_name = "FILE")]
    task_config: Option<PathBuf>,
    /// dev split: evaluated every --eval-every steps; the best prompt is kept
    #[arg(long)]
    dev: Option<PathBuf>,
    /// test split: evaluated with dev (reported only) and with the kept prompt at the end
    #[arg(long)]
    test: Option<PathBuf>,
    /// output folder: the prompt (PEFT layout), task.json, head, metrics.jsonl, checkpoint
    #[arg(long)]
    out: PathBuf,
    /// continue from --out/checkpoint.safetensors if it exists (same flags needed); a
    /// finished run is re-scored
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// replace the run already in --out (its prompt, head, encoder, task.json, metrics,
    /// checkpoint, and an earlier multi-task run's task prompts; no other file) instead of
    /// refusing
    #[arg(long)]
    overwrite: bool,

    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    task: TaskArgs,

    #[command(flatten)]
    method: MethodArgs,

    /// prompt length P (virtual tokens)
    #[arg(long, default_value_t = 20)]
    prompt_len: usize,
    /// random, text, sample-vocab or class-labels
    #[arg(long, default_value = "random")]
    init: String,
    /// the text for --init text
    #[arg(long)]
    init_text: Option<String>,
    /// standard deviation for --init random (default, as PEFT: 1)
    #[arg(long)]
    init_std: Option<f64>,
    /// sample-vocab / class-labels: draw from the first N token ids only
    #[arg(long)]
    init_vocab_first: Option<usize>,

    /// adamw, or adafactor (Lester et al.: constant 0.3, decay rate 0.8, no parameter
    /// scaling, weight decay 1e-5)
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// learning rate (default: adamw 0.03, adafactor 0.3)
    #[arg(long)]
    lr: Option<f64>,
    /// learning rate of the cls head (default: --lr)
    #[arg(long)]
    head_lr: Option<f64>,
    /// weight decay (default: adamw 0.01, adafactor 1e-5)
    #[arg(long)]
    weight_decay: Option<f64>,
    /// adafactor: beta2_t = 1 - t^-decay_rate, 0 < rate <= 1 (default 0.8)
    #[arg(long)]
    decay_rate: Option<f64>,
    /// constant or linear (default: adamw linear, adafactor constant)
    #[arg(long)]
    schedule: Option<String>,
    /// linear warm-up steps
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// clip the gradient norm (default: adamw 1.0, adafactor none); 0 disables
    #[arg(long)]
    max_grad_norm: Option<f64>,

    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// rows per batch of the dev and test evaluations (default 64)
    #[arg(long)]
    eval_batch_size: Option<usize>,
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// total steps (overrides --epochs)
    #[arg(long)]
    max_steps: Option<u64>,
    /// evaluate on dev every N steps (0: each epoch's end)
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// stop after N evaluations without a better dev accuracy
    #[arg(long)]
    patience: Option<u32>,
    /// checkpoint every N steps (and at the end; 0: only at the end)
    #[arg(long, default_value_t = 50)]
    save_every: u64,
    /// a metrics line every N steps (and at the last; 0: none)
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// none (keep nonlinear state), mlp (none, less a decoder's gated-MLP up branch, recomputed
    /// in backward: Llama family), mlp:K (mlp in the first K layers only, K from 1 to the
    /// model's layer count) or layer (keep layer inputs, recompute each layer in
    /// backward)
    #[arg(long, default_value = "none")]
    recompute: String,
    /// batches per length-sorted pool, at most a quarter of an epoch's (1: no length
    /// bucketing)
    #[arg(long, default_value_t = 50)]
    bucket_pool: usize,
    /// no progress bar
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> i32 {
    use super::signals::{end_by_signal, stopped};
    match train(&args) {
        // a signal during the last step or the final scoring: the run ended all the same
        Ok(()) if stopped() => {
            errln!("interrupted: the run had ended; everything it writes is saved");
            end_by_signal()
        }
        Ok(()) => 0,
        // a signal's stop: the message says where the checkpoint is and how to go on
        Err(Error::Interrupted(msg)) => {
            errln!("interrupted: {msg} (--resume)");
            end_by_signal()
        }
        Err(e) => fail(e),
    }
}

fn optim_config(a: &Args) -> Result<OptimConfig> {
    let kind: OptimKind = a.optimizer.parse()?;
    let mut o = OptimConfig::defaults(kind);
    if let Some(lr) = a.lr {
        o.lr = lr;
    }
    o.head_lr = a.head_lr;
    if let Some(wd) = a.weight_decay {
        o.weight_decay = wd;
    }
    o.set_decay_rate(a.decay_rate)?;
    if let Some(s) = &a.schedule {
        o.schedule.kind = s.parse()?;
    }
    o.schedule.warmup = a.warmup_steps;
    if let Some(n) = a.max_grad_norm {
        // 0 turns clipping off; NaN and negatives reach `OptimConfig::validate`
        o.max_grad_norm = (n != 0.0).then_some(n);
    }
    Ok(o)
}

fn prompt_init(a: &Args) -> Result<PromptInit> {
    let text = a.init_text.clone();
    PromptInit::from_flags(&a.init, text, a.init_std, a.init_vocab_first)
}

/// --train, --dev and --test, those given: --quoting is for the TSV and CSV files among them.
fn data_files(a: &Args) -> Vec<&Path> {
    [&a.train, &a.dev, &a.test]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect()
}

fn encode_split(task: &Task, model: &Model, a: &Args, path: &Path, name: &str) -> Result<Encoded> {
    let data = a.data.load_among(path, &data_files(a), true)?;
    let enc = model.encode(task, &data)?;
    outln!(
        "{name:<5} {}: {}",
        path.display(),
        rows_line(&enc, task.spec())
    );
    warn_stops_inside(task, &enc);
    Ok(enc)
}

/// The task line's description: kind, template and the labels' words or targets.
/// "cpu (kernels gemm/avx512)": the device, and the CPU kernels that shape its results.
fn on_device(model: &Model) -> String {
    match model.kernels() {
        k if k.is_empty() => model.device_name(),
        k => format!("{} (kernels {k})", model.device_name()),
    }
}

fn describe(s: &TaskSpec) -> String {
    let label_words: Vec<String> = (s.labels.iter().zip(&s.label_words))
        .map(|(l, w)| format!("{l}={w}"))
        .collect();
    let end = match (s.kind, s.target_end) {
        (TaskKind::Causal, TargetEnd::Pad) => ", each target ending with the pad token",
        (TaskKind::Causal, TargetEnd::None) => ", targets with no end token",
        _ => "",
    };
    let what = match s.kind {
        TaskKind::Pet => format!(
            "pet, template {:?}, verbalizer {:?}",
            s.template, label_words
        ),
        TaskKind::Cls => format!(
            "cls, {:?} pooling, template {:?}, labels {:?}",
            s.pooling, s.template, s.labels
        ),
        TaskKind::Seq2Seq | TaskKind::Causal if s.free_targets => {
            format!("{}, free targets, template {:?}", s.kind.name(), s.template)
        }
        TaskKind::Seq2Seq | TaskKind::Causal => format!(
            "{}, template {:?}, targets {:?}",
            s.kind.name(),
            s.template,
            label_words
        ),
    };
    what + end
}

fn train_config(a: &Args) -> Result<TrainConfig> {
    train_config_with(a, prompt_init(a)?)
}

/// The run's settings from the flags, its prompt's `init` given.
fn train_config_with(a: &Args, init: PromptInit) -> Result<TrainConfig> {
    Ok(TrainConfig {
        method: a.method.method()?,
        prompt_len: a.prompt_len,
        init,
        optim: optim_config(a)?,
        batch_size: a.batch_size,
        eval_batch_size: (a.eval_batch_size).unwrap_or(TrainConfig::default().eval_batch_size),
        epochs: a.epochs,
        max_steps: a.max_steps,
        eval_every: a.eval_every,
        patience: a.patience,
        save_every: a.save_every,
        log_every: a.log_every,
        seed: a.seed,
        recompute: a.recompute.parse::<Recompute>()?,
        bucket_pool: a.bucket_pool,
        threads: rayon::current_num_threads(),
        overwrite: a.overwrite,
        resume: a.resume,
    })
}

fn train(a: &Args) -> Result<()> {
    let Some(train_path) = a.train.as_deref().filter(|_| a.task_field.is_none()) else {
        return multi::train(a);
    };
    if a.task_config.is_some() {
        return Err(Error::arg(
            "--task-config",
            "sets the tasks of --task-data or --task-field: this run trains one task",
        ));
    }
    if a.eval_batch_size.is_some() && a.dev.is_none() && a.test.is_none() {
        return Err(Error::arg(
            "--eval-batch-size",
            "sizes the dev and test evaluations, and this run has neither (--dev, --test): \
             leave it out",
        ));
    }
    let t0 = Instant::now();
    // a busy or occupied --out fails before anything loads (the trainer checks again, and
    // holds the lock for good)
    let back = outdir::precheck(&a.out, a.resume, a.overwrite, outdir::RunKind::SingleTask)?;
    back.iter()
        .for_each(|f| errln!("note: {}", outdir::put_back_note(f)));
    let mut inputs = vec![("--train", train_path)];
    inputs.extend(a.dev.as_deref().map(|p| ("--dev", p)));
    inputs.extend(a.test.as_deref().map(|p| ("--test", p)));
    outdir::check_inputs_kept(&a.out, &inputs)?;
    let kind = a.device.setup()?;
    // the flags' ranges before the model loads (a mistyped --lr waited for the load and the
    // tokenized training file; review 27, F15); the trainer checks them again. After the
    // device's setup: the config's defaults read the thread pool, which --threads sizes
    let cfg = train_config(a)?;
    cfg.validate()?;
    let model = Model::open(&a.model, kind)?;
    let train_data = a.data.load_among(train_path, &data_files(a), true)?;
    let task =
        (model.task(&a.task.options()?, Some(&train_data), a.prompt_len)).map_err(as_flags)?;
    warn_eos_missing(&model, [&task]);
    outln!(
        "model {} ({}, d {}) on {} | task {}",
        a.model.display(),
        model.arch(),
        model.hidden_size(),
        on_device(&model),
        describe(task.spec())
    );
    let train_enc = model.encode(&task, &train_data)?;
    outln!(
        "train {}: {}",
        train_path.display(),
        rows_line(&train_enc, task.spec())
    );
    let dev = a
        .dev
        .as_ref()
        .map(|p| encode_split(&task, &model, a, p, "dev"))
        .transpose()?;
    let test = a
        .test
        .as_ref()
        .map(|p| encode_split(&task, &model, a, p, "test"))
        .transpose()?;
    if matches!(cfg.init, PromptInit::ClassLabels { .. }) && task.labels().len() > a.prompt_len {
        errln!(
            "warning: --init class-labels: {} labels but --prompt-len {}: the labels {:?} get no prompt row",
            task.labels().len(),
            a.prompt_len,
            task.labels().iter().skip(a.prompt_len).collect::<Vec<_>>()
        );
    }
    let splits = Splits {
        train: &train_enc,
        dev: dev.as_ref(),
        test: test.as_ref(),
    };
    let (k, d) = (task.labels().len(), model.hidden_size());
    let mut progress = ConsoleProgress::new(&cfg, t0, k, d, !a.no_progress);
    let stop = super::signals::stop_flag();
    let run = model.train_until(
        &task,
        splits,
        &cfg,
        &a.out,
        &mut |ev| progress.on_event(ev),
        stop,
    );
    // cleared before any message: an interrupted run's line must not land on the bar
    progress.finish();
    let (summary, _) = run?;
    print_summary(&summary, t0, a, &task);
    Ok(())
}

/// The last lines: the steps, the best dev and the test accuracy, and what was saved.
fn print_summary(summary: &Summary, t0: Instant, a: &Args, task: &Task) {
    let best = summary.best_dev.map_or(String::new(), |m| {
        format!(
            " | best dev accuracy {:.4} at step {}",
            m.accuracy, summary.best_step
        )
    });
    let test = summary.test.map_or(String::new(), |m| {
        format!(
            " | test accuracy {:.4} macro-F1 {:.4}",
            m.accuracy, m.macro_f1
        )
    });
    outln!(
        "done: {} steps in {:.0}s{best}{test}",
        summary.steps,
        t0.elapsed().as_secs_f64()
    );
    let encoder = match a.method.method.as_str() {
        "p-tuning" => ", prompt_encoder.safetensors",
        "prefix" if a.method.prefix_projection => ", prompt_encoder.safetensors",
        _ => "",
    };
    outln!("saved to {} (prompt: adapter_model.safetensors, task.json{}{encoder}; checkpoint.safetensors, metrics.jsonl)", a.out.display(), if task.kind() == TaskKind::Cls { ", head.safetensors" } else { "" });
}
