//! `softprompt predict`: one JSON line per input row, with the predicted label and the
//! per-label scores. With several `--prompt name=dir` pairs each row names its prompt
//! (`predict_mixed.rs`).

use super::common::{fail, DataArgs, DeviceArgs, TaskArgs};
use super::eval::load;
use super::rows_bar::scoring;
use crate::prediction_json::prediction_json;
use serde_json::{json, Map, Value};
use softprompt::{Error, Example, Model, Prediction, Result, Row};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// prompt folder (from `softprompt train`, or PEFT's with the task flags); or, given once
    /// or more as name=dir, the prompts the rows name in their --prompt-field, batched together
    /// (prefix-tuning folders too)
    #[arg(long, required = true)]
    pub(super) prompt: Vec<String>,
    /// with name=dir prompts: the field (JSON key or column name) naming each row's prompt
    /// ("prompt")
    #[arg(long)]
    pub(super) prompt_field: Option<String>,
    /// input rows (jsonl, tsv or csv); labels are not needed
    #[arg(long)]
    pub(super) data: PathBuf,
    /// model folder (default: the one recorded with the prompt)
    #[arg(long)]
    pub(super) model: Option<PathBuf>,
    /// write here instead of stdout (atomically); an existing file is refused unless
    /// --overwrite
    #[arg(long)]
    pub(super) output: Option<PathBuf>,
    /// replace the --output file if it exists (never the data, the prompt's or the model's
    /// files) instead of refusing
    #[arg(long, requires = "output")]
    pub(super) overwrite: bool,
    /// rows per batch (memory grows with it)
    #[arg(long, default_value_t = 64)]
    pub(super) batch_size: usize,
    /// no progress bar (it is drawn on stderr only while that is a terminal)
    #[arg(long)]
    pub(super) no_progress: bool,
    #[command(flatten)]
    pub(super) fields: DataArgs,
    #[command(flatten)]
    pub(super) task: TaskArgs,
    #[command(flatten)]
    pub(super) device: DeviceArgs,
}

pub fn run(args: Args) -> i32 {
    match predict(&args) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// `--output` must not replace a file the command reads (the data, the prompt's files or the
/// model's), nor, without `--overwrite`, any file there.
pub(super) fn check_output(a: &Args, prompts: &[&Path], model_dir: &Path) -> Result<()> {
    let Some(out) = &a.output else {
        return Ok(());
    };
    check_writable_file(out)?;
    check_inputs_kept(a, out, prompts, model_dir)?;
    check_not_there(out, a.overwrite)
}

/// Nothing the user has is replaced unless asked: an existing `--output` needs `--overwrite`.
fn check_not_there(out: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && std::fs::symlink_metadata(out).is_ok() {
        return Err(Error::arg(
            "--output",
            format!(
                "{} exists: pass --overwrite to replace it, or name another file",
                out.display()
            ),
        ));
    }
    Ok(())
}

/// `out` is none of the files the command reads.
fn check_inputs_kept(a: &Args, out: &Path, prompts: &[&Path], model_dir: &Path) -> Result<()> {
    let mut inputs = vec![(a.data.clone(), "the --data file")];
    let folders = (prompts.iter()).map(|&d| (d, "a file of a --prompt folder"));
    for (dir, what) in folders.chain([(model_dir, "a file of the model folder")]) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            inputs.extend(entries.flatten().map(|e| (e.path(), what)));
        }
    }
    match inputs
        .iter()
        .find(|(p, _)| softprompt::internals::fsutil::same_file(out, p))
    {
        Some((p, what)) => Err(Error::arg(
            "--output",
            format!(
                "{} is {what} ({}), which this command reads: write the predictions to another file",
                out.display(),
                p.display()
            ),
        )),
        None => Ok(()),
    }
}

/// `--output` names an ordinary file in a folder that exists: the write goes to a temporary
/// file renamed over the target, which would replace a device, a pipe or a link (and its
/// target would never see the predictions), and a mistyped folder is not created.
fn check_writable_file(out: &Path) -> Result<()> {
    let refuse = |why: String| Err(Error::arg("--output", why));
    if out.as_os_str() == "-" {
        return refuse(
            "\"-\" is not standard output here: leave out --output to print the predictions".into(),
        );
    }
    if let Ok(meta) = std::fs::symlink_metadata(out) {
        if !meta.file_type().is_file() {
            return refuse(format!(
                "{} exists and is not an ordinary file (a folder, device, pipe or link): name a file to write",
                out.display()
            ));
        }
    }
    match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => refuse(format!(
            "the folder {} does not exist: create it first",
            dir.display()
        )),
        _ => Ok(()),
    }
}

fn predict(a: &Args) -> Result<()> {
    if let Some(pairs) = super::predict_mixed::named_prompts(&a.prompt)? {
        return super::predict_mixed::predict(a, &pairs);
    }
    if a.prompt_field.is_some() {
        // one prompt serves every row: the field would be read by nothing
        return Err(Error::arg(
            "--prompt-field",
            "names each row's prompt among several --prompt name=folder pairs; one plain \
             --prompt folder reads no field: leave it out",
        ));
    }
    let prompt_dir = PathBuf::from(a.prompt.first().map_or("", String::as_str));
    // before anything runs (the model folder is checked again once it is known)
    check_output(a, &[&prompt_dir], &prompt_dir)?;
    let mut data = a.fields.load(&a.data, false)?;
    let l = load(
        &a.device,
        &prompt_dir,
        a.model.as_deref(),
        &a.task,
        Some(&data),
    )?;
    check_output(a, &[&prompt_dir], l.model.dir())?;
    // predictions need no gold labels (and an unknown one must not stop them)
    data.examples.iter_mut().for_each(|e| e.label = None);
    let enc = l.model.encode(&l.task, &data)?;
    let scored = scoring(&enc.lens(), !a.no_progress, |on_batch, stop| {
        (l.model).predict_until(&l.task, &l.prompt, &enc, a.batch_size, on_batch, stop)
    });
    let preds = scored.map_err(|e| super::common::at_line(e, &data))?;
    let mut out = String::new();
    for ((ex, row), p) in data.examples.iter().zip(&enc.rows).zip(&preds) {
        let obj = row_json(&l.model, l.task.labels(), ex, row, p)?;
        out.push_str(&Value::Object(obj).to_string());
        out.push('\n');
    }
    let to = format!("{} tokens", l.task.spec().max_len);
    write_predictions(a, &out, preds.len(), (enc.truncated, &to))
}

/// One row's output line: its line and text, the label with the per-label scores (or the
/// generated text), and whether the text was cut.
pub(super) fn row_json(
    model: &Model,
    labels: &[String],
    ex: &Example,
    row: &Row,
    p: &Prediction,
) -> Result<Map<String, Value>> {
    let mut obj = Map::new();
    obj.insert("line".into(), json!(ex.line));
    obj.insert("text".into(), json!(ex.text));
    let pred = prediction_json(model, labels, p, row.truncated).map_err(|e| match e {
        Error::NonFinite(msg) => Error::NonFinite(format!("line {}: {msg}", ex.line)),
        e => e,
    })?;
    obj.extend(pred);
    Ok(obj)
}

/// The lines to --output (atomically, with a note on stderr) or to stdout (with a warning on
/// stderr when texts were cut). `cut`: how many texts were cut, and to what.
pub(super) fn write_predictions(
    a: &Args,
    out: &str,
    n: usize,
    (cut, to): (usize, &str),
) -> Result<()> {
    match &a.output {
        Some(path) => {
            // again: the file may have appeared while the rows were scored
            check_not_there(path, a.overwrite)?;
            softprompt::internals::fsutil::write_atomic(path, out.as_bytes())?;
            errln!(
                "wrote {n} predictions to {} ({cut} truncated to {to})",
                path.display()
            );
        }
        // a closed pipe (`| head`) is the reader's choice, not an error; any other failure
        // (a full disk behind `> file`) is reported as every command's is (`cli::run`)
        None => {
            out!("{out}");
            warn_truncated(cut, n, to);
        }
    }
    Ok(())
}

/// A warning on stderr that `cut` of `n` texts were cut to `to` (the model saw only their
/// first tokens), for output that has no room for the count (stdout, `--json`).
pub(super) fn warn_truncated(cut: usize, n: usize, to: &str) {
    if cut > 0 {
        errln!("warning: {cut} of {n} texts truncated to {to} (--max-len)");
    }
}
