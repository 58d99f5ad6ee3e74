//! `softprompt eval`: accuracy and macro-F1 of a saved prompt on a labelled file.

use super::common::{fail, resolve_model, DataArgs, DeviceArgs, TaskArgs};
use softprompt::device::{with_backend, WithBackend};
use softprompt::train::{evaluate, Model, Params, Task};
use softprompt::{backend::DType, Backend, Result};
use std::path::PathBuf;

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
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub fields: DataArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: Args) -> i32 {
    match args
        .device
        .setup()
        .and_then(|kind| with_backend(kind, Job(&args)))
    {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// Everything `eval` and `predict` need from a prompt folder.
pub struct Loaded<B: Backend> {
    pub model: Model<B>,
    pub task: Task,
    pub params: Params<B>,
}

pub fn load<B: Backend>(
    be: &B,
    prompt: &std::path::Path,
    model_flag: Option<&std::path::Path>,
    task_args: &TaskArgs,
    data: Option<&softprompt::train::data::Dataset>,
) -> Result<Loaded<B>> {
    let saved = softprompt::train::checkpoint::load_prompt_dir(prompt)?;
    let peft_base = saved
        .prompt
        .layout
        .config
        .as_ref()
        .and_then(|c| c.get("base_model_name_or_path"))
        .and_then(|v| v.as_str())
        .map(String::from);
    let recorded: Vec<std::path::PathBuf> = saved
        .model_abs
        .iter()
        .chain(&saved.model)
        .cloned()
        .collect();
    let model_dir = resolve_model(model_flag, &recorded, prompt, peft_base.as_deref())?;
    let model = Model::load(be, &model_dir)?;
    if saved.prompt.d != model.hidden_size() {
        return Err(softprompt::Error::file(
            prompt,
            format!(
                "the prompt is {} wide but {} has hidden size {}",
                saved.prompt.d,
                model_dir.display(),
                model.hidden_size()
            ),
        ));
    }
    let spec = task_args.spec(saved.task.clone(), &model, data, saved.prompt.p)?;
    if saved.task.is_none() {
        eprintln!(
            "note: {} has no task.json (a PEFT folder?): task {}, template {:?}, labels {:?}{}",
            prompt.display(),
            spec.kind.name(),
            spec.template,
            spec.labels,
            if spec.label_words.is_empty() {
                String::new()
            } else {
                format!(", words {:?}", spec.label_words)
            }
        );
    }
    let task = Task::new(spec, &model)?;
    model.check_lengths(saved.prompt.p, Some(task.spec.max_len))?;
    let head = match (task.new_head(model.hidden_size()), saved.head) {
        (None, _) => None,
        (Some(fresh), Some(h)) if h.k == fresh.k => Some(h),
        (Some(fresh), Some(h)) => return Err(softprompt::Error::file(prompt.join("head.safetensors"), format!("the head has {} labels but the task {}", h.k, fresh.k))),
        (Some(_), None) => return Err(softprompt::Error::file(prompt, "--task cls needs the classifier head (head.safetensors) trained with the prompt; this folder has none")),
    };
    let params = Params {
        prompt: be.upload(DType::F32, &saved.prompt.data)?,
        p: saved.prompt.p,
        d: saved.prompt.d,
        head: head.map(|h| h.upload(be)).transpose()?,
    };
    Ok(Loaded {
        model,
        task,
        params,
    })
}

fn eval<B: Backend>(be: &B, a: &Args) -> Result<()> {
    let data = a.fields.load(&a.data, true)?;
    let l = load(be, &a.prompt, a.model.as_deref(), &a.task, Some(&data))?;
    let enc = l.task.encode(&l.model.tokenizer, &data)?;
    let (m, _) = evaluate(be, &l.model, &l.task, &l.params, &enc, a.batch_size)?;
    if a.json {
        println!("{}", m.to_json());
    } else {
        println!(
            "{}: accuracy {:.4} macro-F1 {:.4} ({} examples, {} truncated to {} tokens)",
            a.data.display(),
            m.accuracy,
            m.macro_f1,
            m.examples,
            enc.truncated,
            l.task.spec.max_len
        );
    }
    Ok(())
}

struct Job<'a>(&'a Args);

impl WithBackend for Job<'_> {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        eval(&be, self.0)
    }
}
