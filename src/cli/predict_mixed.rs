//! `softprompt predict` with several prompts: `--prompt name=dir` given once or more, each
//! row naming its prompt in `--prompt-field` ("prompt"). One model serves them all; rows of
//! different prompts share batches (`Model::predict_mixed`), and each row's line is the one
//! `predict` with its prompt alone writes, plus `"prompt": name`.

use super::predict::{check_output, row_json, write_predictions, Args};
use super::rows_bar::scoring;
use serde_json::{json, Value};
use softprompt::internals::train::label_twins::{look_alike_key, twin_difference};
use softprompt::{Dataset, Error, Model, Prompt, Result, Row, Task};
use std::path::{Path, PathBuf};

/// The `--prompt` values as (name, folder) pairs, or None for the one plain folder.
pub fn named_prompts(values: &[String]) -> Result<Option<Vec<(String, PathBuf)>>> {
    if let [one] = values {
        if !one.contains('=') || Path::new(one).is_dir() {
            return Ok(None);
        }
    }
    let mut pairs: Vec<(String, PathBuf)> = Vec::new();
    for v in values {
        let Some((name, dir)) = v
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        else {
            return Err(Error::arg(
                "--prompt",
                format!(
                    "\"{v}\": with several prompts each one is name=folder (the name is what a \
                     row's prompt field says)"
                ),
            ));
        };
        if pairs.iter().any(|(n, _)| n == name) {
            return Err(Error::arg(
                "--prompt",
                format!("the name \"{name}\" is given twice"),
            ));
        }
        pairs.push((name.to_string(), PathBuf::from(dir)));
    }
    Ok(Some(pairs))
}

/// One prompt of the run: its name, folder, the prompt and its task.
struct Job {
    name: String,
    prompt: Prompt,
    task: Task,
}

pub fn predict(a: &Args, pairs: &[(String, PathBuf)]) -> Result<()> {
    let dirs: Vec<&Path> = pairs.iter().map(|(_, d)| d.as_path()).collect();
    let first = dirs.first().copied().unwrap_or(Path::new(""));
    check_output(a, &dirs, first)?;
    let mut data = a.fields.load(&a.data, false)?;
    let job_of = row_prompts(a, pairs)?;
    let (model, jobs) = load_jobs(a, pairs, &data, &job_of)?;
    check_output(a, &dirs, model.dir())?;
    // predictions need no gold labels (and an unknown one must not stop them)
    data.examples.iter_mut().for_each(|e| e.label = None);
    let mut rows: Vec<Option<(usize, Row)>> = vec![None; data.examples.len()];
    let mut truncated = 0;
    for (j, job) in jobs.iter().enumerate() {
        let mine = subset(&data, &job_of, j);
        let enc = model.encode(&job.task, &mine)?;
        truncated += enc.truncated;
        let at = (job_of.iter().enumerate()).filter(|(_, &k)| k == j);
        for ((i, _), row) in at.zip(enc.rows) {
            if let Some(slot) = rows.get_mut(i) {
                *slot = Some((j, row));
            }
        }
    }
    let rows: Vec<(usize, Row)> = rows.into_iter().flatten().collect();
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|j| (&j.task, &j.prompt)).collect();
    // every row has its prompt (`row_prompts`): rows[i] is data row i
    let lens: Vec<usize> = rows.iter().map(|(_, r)| r.ids.len()).collect();
    let preds = scoring(&lens, !a.no_progress, |on_batch, stop| {
        model.predict_mixed_until(&refs, &rows, a.batch_size, on_batch, stop)
    })
    .map_err(|e| super::common::at_line(e, &data))?;
    let mut out = String::new();
    for ((ex, (j, row)), p) in data.examples.iter().zip(&rows).zip(&preds) {
        let Some(job) = jobs.get(*j) else { continue };
        let mut obj = row_json(&model, job.task.labels(), ex, row, p)?;
        obj.insert("prompt".into(), json!(job.name));
        out.push_str(&Value::Object(obj).to_string());
        out.push('\n');
    }
    write_predictions(a, &out, preds.len(), (truncated, "each task's max_len"))
}

/// Each row's prompt, an index into `pairs`, from its --prompt-field; a row without one or
/// naming no --prompt is an error naming the file and line.
fn row_prompts(a: &Args, pairs: &[(String, PathBuf)]) -> Result<Vec<usize>> {
    let mut fields = a.fields.clone();
    let field = a.prompt_field.as_deref().unwrap_or("prompt");
    fields.label_field = field.to_string();
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    // the field is read as labels are: a blank one was told "a label needs a name" and to
    // leave the field out, itself refused here (hostile pass 31, INFO-2)
    let named = fields.load(&a.data, false).map_err(|e| match e {
        Error::Data { path, line, msg } if msg.contains("a label needs a name") => {
            let msg = format!(
                "field \"{field}\" is blank: each row names its prompt there, one of {}",
                names.join(", ")
            );
            Error::data(path, line, msg)
        }
        e => e,
    })?;
    (named.examples.iter())
        .map(|ex| {
            let name = ex.label.as_deref().unwrap_or_default();
            names.iter().position(|&n| n == name).ok_or_else(|| {
                // two that print alike read "\"é\" is not one of (é, x)" (hostile pass 35, F4)
                let key = look_alike_key(name);
                if let Some(n) = names.iter().find(|n| look_alike_key(n) == key) {
                    let by = twin_difference(name, n);
                    let msg = format!(
                        "prompt \"{name}\" differs from the --prompt name \"{n}\" only by {by}: \
                         write them alike"
                    );
                    return Error::data(&a.data, ex.line, msg);
                }
                let what = if name.is_empty() {
                    format!("no \"{field}\" field names the row's prompt")
                } else {
                    format!("prompt \"{name}\" is not one of the --prompt names")
                };
                Error::data(
                    &a.data,
                    ex.line,
                    format!(
                        "{what} ({}); set the field with --prompt-field",
                        names.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// The rows of `data` whose prompt is `j`, in file order.
fn subset(data: &Dataset, job_of: &[usize], j: usize) -> Dataset {
    let examples = (data.examples.iter().zip(job_of))
        .filter(|(_, &k)| k == j)
        .map(|(e, _)| e.clone())
        .collect();
    Dataset {
        path: data.path.clone(),
        examples,
    }
}

/// The one model (--model, else the folder the prompts record: they must agree) and each
/// prompt with its task (its task.json with the task flags on top).
fn load_jobs(
    a: &Args,
    pairs: &[(String, PathBuf)],
    data: &Dataset,
    job_of: &[usize],
) -> Result<(Model, Vec<Job>)> {
    let kind = a.device.setup()?;
    let opts = a.task.options()?;
    let prompts = (pairs.iter())
        .map(|(name, dir)| Prompt::load(dir).map_err(|e| of_prompt(name, dir, e)))
        .collect::<Result<Vec<_>>>()?;
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => same_model(pairs, &prompts)?,
    };
    let model = Model::open(&model_dir, kind)?;
    let mut jobs = Vec::new();
    for (j, ((name, dir), mut prompt)) in pairs.iter().zip(prompts).enumerate() {
        let tag = |e| of_prompt(name, dir, e);
        if let Some(warning) = prompt.load_warning() {
            errln!("warning: --prompt {name}: {warning}");
        }
        if let Some(warning) = prompt.check_arch(&model, a.model.is_some()).map_err(tag)? {
            errln!("warning: --prompt {name}={}: {warning}", dir.display());
        }
        // the model named on purpose, as for the architecture: a warning, not a refusal
        let other = a.model.as_ref().and_then(|_| prompt.set_model(&model));
        if let Some(warning) = other {
            errln!(
                "warning: --prompt {name}={}: {warning}: running it on the --model given",
                dir.display()
            );
        }
        let rows = subset(data, job_of, j);
        let task = model.task_for(&prompt, &opts, Some(&rows)).map_err(tag)?;
        if let Some(warning) = task.warning() {
            errln!("warning: --prompt {name}: {warning}");
        }
        jobs.push(Job {
            name: name.clone(),
            prompt,
            task,
        });
    }
    super::common::warn_eos_missing(&model, jobs.iter().map(|j| &j.task));
    Ok((model, jobs))
}

/// The model folder every prompt records; prompts of different models need --model (one
/// model serves them all).
fn same_model(pairs: &[(String, PathBuf)], prompts: &[Prompt]) -> Result<PathBuf> {
    let mut found: Option<(PathBuf, &str)> = None;
    for ((name, prompt_dir), prompt) in pairs.iter().zip(prompts) {
        let (dir, note) = (prompt.model_dir_noted()).map_err(|e| of_prompt(name, prompt_dir, e))?;
        if let Some(note) = note {
            errln!("note: --prompt {name}: {note}");
        }
        let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        match &found {
            None => found = Some((key, name)),
            Some((first, other)) if *first != key => {
                return Err(Error::arg(
                    "--prompt",
                    format!(
                        "prompt \"{name}\" was trained on {} but \"{other}\" on {}: one model \
                         serves every prompt of a run: predict each model's prompts in a run of \
                         their own, or, where the two are copies of one model, name it with \
                         --model",
                        key.display(),
                        first.display()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    found
        .map(|(d, _)| d)
        .ok_or_else(|| Error::arg("--prompt", "no prompt given"))
}

/// `e` with the `--prompt NAME=DIR` it came from named: with several prompts, an error about
/// the task flags or a missing folder said neither which prompt nor which folder.
fn of_prompt(name: &str, dir: &Path, e: Error) -> Error {
    e.tagged(&format!("--prompt {name}={}", dir.display()))
}
