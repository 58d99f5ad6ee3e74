//! `softprompt eval`: accuracy and macro-F1 of a saved prompt on a labelled file.

use super::common::{
    fail, targets_cut, warn_eos_missing, warn_stops_inside, DataArgs, DeviceArgs, TaskArgs,
};
use super::rows_bar::scoring;
use softprompt::{Dataset, Model, Prompt, Result, Task, TaskKind};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// prompt folder: written by `softprompt train`, or by PEFT (adapter_config.json +
    /// adapter_model.safetensors; then give the task flags)
    #[arg(long)]
    pub prompt: PathBuf,
    /// labelled data (jsonl, tsv or csv)
    #[arg(long)]
    pub data: PathBuf,
    /// model folder (default: the one recorded with the prompt)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// print one JSON object: {"accuracy", "macro_f1", "examples"}
    #[arg(long)]
    pub json: bool,
    /// rows per batch (memory grows with it)
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// no progress bar (it is drawn on stderr only while that is a terminal)
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub fields: DataArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: Args) -> i32 {
    match eval(&args) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// A saved prompt with its model and task, as eval, predict and generate use them.
pub struct Loaded {
    pub model: Model,
    pub task: Task,
    pub prompt: Prompt,
}

/// Loads the prompt folder, its model (the flag, else where the folder says) and its task
/// (task.json, or the model's defaults for a PEFT folder, with the flags on top).
pub fn load(
    device: &DeviceArgs,
    prompt_dir: &Path,
    model_flag: Option<&Path>,
    task_args: &TaskArgs,
    data: Option<&Dataset>,
) -> Result<Loaded> {
    load_checked(device, prompt_dir, model_flag, task_args, data, |_| Ok(()))
}

/// `load`, with `check` run on the model before the task is made from the flags (generate's
/// refusal of a model that is not decoder-only comes before a task flag it set itself).
pub fn load_checked(
    device: &DeviceArgs,
    prompt_dir: &Path,
    model_flag: Option<&Path>,
    task_args: &TaskArgs,
    data: Option<&Dataset>,
    check: impl FnOnce(&Model) -> Result<()>,
) -> Result<Loaded> {
    let kind = device.setup()?;
    let opts = task_args.options()?;
    let mut prompt = Prompt::load(prompt_dir)?;
    if let Some(warning) = prompt.load_warning() {
        errln!("warning: {warning}");
    }
    let model_dir = match model_flag {
        Some(m) => m.to_path_buf(),
        None => {
            let (dir, note) = prompt.model_dir_noted()?;
            if let Some(note) = note {
                errln!("note: {note}");
            }
            dir
        }
    };
    let model = Model::open(&model_dir, kind)?;
    if let Some(warning) = prompt.check_arch(&model, model_flag.is_some())? {
        errln!("warning: {warning}");
    }
    if model_flag.is_some() {
        // the model named on purpose, as for the architecture: a warning, not a refusal
        if let Some(warning) = prompt.set_model(&model) {
            errln!("warning: {warning}: running it on the --model given");
        }
    }
    check(&model)?;
    let task = model.task_for(&prompt, &opts, data)?;
    if let Some(warning) = task.warning() {
        errln!("warning: {warning}");
    }
    warn_eos_missing(&model, [&task]);
    for line in task.overrides(&prompt) {
        errln!("note: {line}");
    }
    if prompt.saved_task().is_none() {
        let spec = task.spec();
        // a cls head copied out with its folder's PEFT files records the task it was
        // trained for; the pooling, which changes the scores, is named too
        let flags = opts.template.is_some() || opts.pooling.is_some() || opts.max_len.is_some();
        let whose = match (
            prompt.head_task().is_some() && spec.kind == TaskKind::Cls,
            flags,
        ) {
            (true, false) => "the task its head.safetensors records",
            // the values below are the flags' where given (review 16)
            (true, true) => "the task its head.safetensors records, with the flags given",
            (false, _) => "a PEFT folder?",
        };
        errln!(
            "note: {} has no task.json ({whose}): task {}, template {:?}, labels {:?}{}",
            prompt_dir.display(),
            spec.kind.name(),
            spec.template,
            spec.labels,
            match (spec.kind, spec.label_words.is_empty()) {
                (TaskKind::Cls, _) => format!(", pooling {}", spec.pooling.name()),
                (_, true) => String::new(),
                (_, false) => format!(", words {:?}", spec.label_words),
            }
        );
    }
    Ok(Loaded {
        model,
        task,
        prompt,
    })
}

fn eval(a: &Args) -> Result<()> {
    let data = a.fields.load(&a.data, true)?;
    let l = load(
        &a.device,
        &a.prompt,
        a.model.as_deref(),
        &a.task,
        Some(&data),
    )?;
    let enc = l.model.encode(&l.task, &data)?;
    warn_stops_inside(&l.task, &enc);
    let scored = scoring(&enc.lens(), !a.no_progress, |on_batch, stop| {
        (l.model).evaluate_until(&l.task, &l.prompt, &enc, a.batch_size, on_batch, stop)
    });
    let (m, _) = scored.map_err(|e| super::common::at_line(e, &data))?;
    if a.json {
        outln!("{}", m.to_json());
        let to = format!("{} tokens", l.task.spec().max_len);
        super::predict::warn_truncated(enc.truncated, enc.rows.len(), &to);
        let cut = enc.truncated_targets;
        if cut > 0 {
            let to = l.task.spec().max_target_len;
            errln!("warning: {cut} gold targets cut to {to} tokens (--max-target-len)");
        }
    } else {
        outln!(
            "{}: accuracy {:.4} macro-F1 {:.4} ({} examples, {} truncated to {} tokens{})",
            a.data.display(),
            m.accuracy,
            m.macro_f1,
            m.examples,
            enc.truncated,
            l.task.spec().max_len,
            targets_cut(&enc, l.task.spec())
        );
    }
    Ok(())
}
