//! `softprompt train` over several tasks at once (`--task-data NAME=DIR`, repeated, or
//! `--task-field FIELD` over one --train file): one prompt per task, trained together on one
//! frozen model (`Model::train_multi`), each saved as its own adapter folder `--out/NAME/`.
//! Every task takes the command line's task and method flags; `--task-config FILE` (a JSON
//! object by task name) sets a task's own, its method (`method` and the method flags' keys)
//! included.

use super::{data_files, describe, on_device, prompt_init, train_config_with, Args};
use crate::cli::common::{
    as_flags, rows_line, warn_eos_missing, warn_stops_inside, MethodArgs, TaskArgs,
};
use serde_json::Value;
use softprompt::internals::train::{multitask, outdir};
use softprompt::{
    Dataset, Encoded, Error, Event, Method, Model, MultiTask, PromptInit, Result, Splits, Task,
    TaskResult, TrainConfig,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One task's data and flags, before the model.
struct TaskInput {
    name: String,
    flags: TaskArgs,
    prompt_len: Option<usize>,
    init: Option<PromptInit>,
    /// its own method (`--task-config`'s `method` and the method's keys)
    method: Option<Method>,
    /// the keys its `--task-config` entry sets: an error about one names the key, not the flag
    config_keys: Vec<String>,
    /// train, dev, test
    data: [Option<Dataset>; 3],
}

/// A task's encoded splits.
struct EncodedTask {
    name: String,
    task: Task,
    train: Encoded,
    dev: Option<Encoded>,
    test: Option<Encoded>,
    prompt_len: Option<usize>,
    init: Option<PromptInit>,
    method: Option<Method>,
}

pub(super) fn train(a: &Args) -> Result<()> {
    let t0 = Instant::now();
    let back = outdir::precheck(&a.out, a.resume, a.overwrite, outdir::RunKind::MultiTask)?;
    back.iter()
        .for_each(|f| errln!("note: {}", outdir::put_back_note(f)));
    let mut inputs = match &a.task_field {
        Some(field) => by_field(a, field)?,
        None => by_folder(a)?,
    };
    for t in &inputs {
        multitask::check_name(&t.name)?;
    }
    let names: Vec<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
    multitask::check_distinct_names(&names)?;
    check_inputs_kept(a, &inputs)?;
    apply_config(a, &mut inputs)?;
    check_open_files(a, inputs.len())?;
    let kind = a.device.setup()?;
    // after the device's setup: the settings read the thread count it sets
    let cfg = run_config(a, &inputs)?;
    // the run's flags in their ranges before the model is loaded and the data encoded
    cfg.validate()?;
    let model = Model::open(&a.model, kind)?;
    outln!(
        "model {} ({}, d {}) on {}",
        a.model.display(),
        model.arch(),
        model.hidden_size(),
        on_device(&model)
    );
    let config_keys: Vec<(String, Vec<String>)> = (inputs.iter())
        .map(|t| (t.name.clone(), t.config_keys.clone()))
        .collect();
    let encoded = (inputs.into_iter())
        .map(|t| encode_task(&model, a, t))
        .collect::<Result<Vec<_>>>()?;
    warn_eos_missing(&model, encoded.iter().map(|e| &e.task));
    let tasks: Vec<MultiTask<'_>> = (encoded.iter())
        .map(|e| MultiTask {
            name: e.name.clone(),
            task: &e.task,
            splits: Splits {
                train: &e.train,
                dev: e.dev.as_ref(),
                test: e.test.as_ref(),
            },
            prompt_len: e.prompt_len,
            init: e.init.clone(),
            method: e.method,
        })
        .collect();
    let mut totals = HashMap::new();
    let stop = crate::cli::signals::stop_flag();
    let results = model.train_multi_until(
        &tasks,
        &cfg,
        &a.out,
        &mut |name, ev| {
            warn_at_start(name, ev, &cfg);
            print_event(name, ev, &mut totals)
        },
        stop,
    );
    let results = results.map_err(|e| config_named(e, a, &config_keys))?;
    print_summary(&results, t0, a);
    Ok(())
}

/// Each task folder holds two descriptors for the whole run (its lock file, and the folder
/// itself): the soft open-file limit is raised for them as far as the hard one allows, and a
/// run past even that is refused before anything is read or written (past ~500 tasks under
/// `ulimit -n` 1024 a task folder failed with the OS's bare "Too many open files", its data
/// encoded and an empty folder left; hostile pass 35, F7).
fn check_open_files(a: &Args, tasks: usize) -> Result<()> {
    let need = 2 * tasks as u64 + crate::open_files::RESERVE;
    let Some((now, refused)) = crate::open_files::raise_to(need) else {
        return Ok(());
    };
    if now >= need {
        return Ok(());
    }
    let failed = refused.map_or(String::new(), |e| format!(" (raising it failed: {e})"));
    let flag = match a.task_field {
        Some(_) => "--task-field",
        None => "--task-data",
    };
    Err(Error::arg(
        flag,
        format!(
            "{tasks} tasks hold {} open files for the whole run (each task folder's lock file \
             and the folder) beside the run's own, {need} in all, but the open-file limit \
             (ulimit -n) is {now}{failed}: raise the hard limit (ulimit -Hn, limits.conf, \
             LimitNOFILE=) or train fewer tasks in one run",
            2 * tasks
        ),
    ))
}

/// The run's settings; their init (the command line's) is that of the tasks without one of
/// their own, its flags checked against it only when such a task exists.
fn run_config(a: &Args, inputs: &[TaskInput]) -> Result<TrainConfig> {
    let takers: Vec<&str> = (inputs.iter())
        .filter(|t| t.init.is_none())
        .map(|t| t.name.as_str())
        .collect();
    let init = match takers.as_slice() {
        // read by no task: every task has its own
        [] => PromptInit::Random { std: 1.0 },
        _ => prompt_init(a).map_err(|e| {
            e.tagged(&format!(
                "the command line's --init, of task(s) {}",
                takers.join(", ")
            ))
        })?,
    };
    train_config_with(a, init)
}

/// Refuses an input file that the run replaces in --out, or that --overwrite removes there
/// (a task's folder included), naming the flag that gave it.
fn check_inputs_kept(a: &Args, inputs: &[TaskInput]) -> Result<()> {
    let flagged = [
        ("--train", &a.train),
        ("--dev", &a.dev),
        ("--test", &a.test),
    ];
    let mut kept: Vec<(&str, &Path)> = match &a.task_field {
        Some(_) => (flagged.iter())
            .filter_map(|(f, p)| p.as_deref().map(|p| (*f, p)))
            .collect(),
        None => Vec::new(),
    };
    if a.task_field.is_none() {
        let data = inputs.iter().flat_map(|t| t.data.iter().flatten());
        kept.extend(data.map(|d| ("--task-data", d.path.as_path())));
    }
    let names: Vec<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
    outdir::check_task_inputs_kept(&a.out, &names, &kept)
}

/// `--task-data NAME=DIR`: DIR holds train.jsonl (or .tsv, .csv) and optionally dev and test.
fn by_folder(a: &Args) -> Result<Vec<TaskInput>> {
    let mut out = Vec::new();
    // --quoting is for the TSV and CSV files of every folder (GLUE's TSV folders beside JSON
    // lines ones)
    let all = folder_files(a);
    let files: Vec<&Path> = all.iter().map(PathBuf::as_path).collect();
    for v in &a.task_data {
        let (name, dir) = v.split_once('=').ok_or_else(|| {
            Error::arg("--task-data", format!("{v:?}: expected NAME=DIR (a folder with train.jsonl, and dev.jsonl, test.jsonl if any)"))
        })?;
        let dir = Path::new(dir);
        if !dir.is_dir() {
            return Err(Error::arg("--task-data", format!("{name}={}: not a folder (expected one holding train.jsonl, and dev.jsonl, test.jsonl if any)", dir.display())));
        }
        let split = |s: &str| -> Result<Option<Dataset>> {
            let found = split_files(dir, s);
            // train.jsonl beside train.csv: one was read and the other ignored without a word
            if let [first, second, ..] = found.as_slice() {
                return Err(Error::arg(
                    "--task-data",
                    format!(
                        "{name}={}: holds both {} and {}: which is the {s} split? keep one",
                        dir.display(),
                        first.display(),
                        second.display()
                    ),
                ));
            }
            (found.first())
                .map(|p| a.data.load_among(p, &files, true))
                .transpose()
        };
        let train = split("train")?.ok_or_else(|| {
            Error::arg(
                "--task-data",
                format!(
                    "{name}={}: holds no train.jsonl (or train.tsv, train.csv)",
                    dir.display()
                ),
            )
        })?;
        let dev = split("dev")?;
        if dev.is_none() {
            check_no_dev(a, name, dir)?;
        }
        out.push(TaskInput {
            name: name.to_string(),
            flags: a.task.clone(),
            prompt_len: None,
            init: None,
            method: None,
            config_keys: Vec::new(),
            data: [Some(train), dev, split("test")?],
        });
    }
    Ok(out)
}

/// The data files of every --task-data folder.
fn folder_files(a: &Args) -> Vec<PathBuf> {
    let dirs =
        (a.task_data.iter()).filter_map(|v| v.split_once('=').map(|(_, dir)| Path::new(dir)));
    dirs.flat_map(|dir| ["train", "dev", "test"].map(|s| split_files(dir, s)))
        .flatten()
        .collect()
}

/// A task folder's files for split `s` (train, dev, test), of every extension read.
fn split_files(dir: &Path, s: &str) -> Vec<PathBuf> {
    (["jsonl", "tsv", "csv"].iter())
        .map(|e| dir.join(format!("{s}.{e}")))
        .filter(|p| p.is_file())
        .collect()
}

/// A task folder `dir` without a dev split: the flags that evaluate during the run are
/// refused naming the file to add (--dev is not read with --task-data).
fn check_no_dev(a: &Args, name: &str, dir: &Path) -> Result<()> {
    let flag = match (a.patience.is_some(), a.eval_every > 0) {
        (true, _) => "--patience",
        (false, true) => "--eval-every",
        _ => return Ok(()),
    };
    Err(Error::arg(
        flag,
        format!(
            "evaluates on each task's dev split, and task `{name}` has none: put a dev.jsonl \
             (or dev.tsv, dev.csv) in {}",
            dir.display()
        ),
    ))
}

/// `--task-field FIELD`: each row of --train (--dev, --test) names its task in FIELD; the
/// tasks are the names in --train, in the order they first appear.
fn by_field(a: &Args, field: &str) -> Result<Vec<TaskInput>> {
    let train_path = a
        .train
        .as_deref()
        .ok_or_else(|| Error::arg("--task-field", "needs --train"))?;
    let splits = [Some(train_path), a.dev.as_deref(), a.test.as_deref()];
    let mut fields = a.data.clone();
    fields.label_field = field.to_string();
    let mut names: Vec<String> = Vec::new();
    let mut out: Vec<TaskInput> = Vec::new();
    for (s, path) in splits.iter().enumerate() {
        let Some(path) = path else { continue };
        let data = a.data.load_among(path, &data_files(a), true)?;
        // the field is read as labels are: a blank one is the task's fault, and leaving the
        // field out (the label's advice) is refused here too (hostile pass 25, F4)
        let named = (fields.load_among(path, &data_files(a), false)).map_err(|e| match e {
            Error::Data { path, line, msg } if msg.contains("a label needs a name") => {
                let msg = format!(
                    "field \"{field}\" is blank: each row names its task there (--task-field)"
                );
                Error::data(path, line, msg)
            }
            e => e,
        })?;
        for (ex, tagged) in data.examples.iter().zip(&named.examples) {
            let name = tagged.label.clone().unwrap_or_default();
            if name.is_empty() {
                return Err(Error::data(
                    path,
                    ex.line,
                    format!("no \"{field}\" field names the row's task (--task-field)"),
                ));
            }
            let k = match names.iter().position(|n| *n == name) {
                Some(k) => k,
                None if s == 0 => {
                    // named with the row it is on (hostile pass 25, F4)
                    multitask::check_name(&name).map_err(|e| {
                        let why = match e {
                            Error::Arg { msg, .. } => msg,
                            e => e.to_string(),
                        };
                        Error::data(
                            path,
                            ex.line,
                            format!("field \"{field}\", a task name: {why}"),
                        )
                    })?;
                    names.push(name.clone());
                    out.push(TaskInput {
                        name: name.clone(),
                        flags: a.task.clone(),
                        prompt_len: None,
                        init: None,
                        method: None,
                        config_keys: Vec::new(),
                        data: [None, None, None],
                    });
                    names.len() - 1
                }
                None => {
                    return Err(Error::data(
                        path,
                        ex.line,
                        format!(
                            "task \"{name}\" has no rows in --train ({})",
                            names.join(", ")
                        ),
                    ))
                }
            };
            let slot = out
                .get_mut(k)
                .and_then(|t| t.data.get_mut(s))
                .ok_or_else(|| Error::arg("--task-field", "task index"))?;
            slot.get_or_insert_with(|| Dataset {
                path: path.to_path_buf(),
                examples: Vec::new(),
            })
            .examples
            .push(ex.clone());
        }
    }
    let flags = ["--train", "--dev", "--test"];
    for t in &out {
        for (s, path) in splits.iter().enumerate() {
            if let (Some(path), None) = (path, t.data.get(s).and_then(|d| d.as_ref())) {
                let flag = flags.get(s).copied().unwrap_or("--dev");
                return Err(Error::file(path, format!("task \"{}\" has no rows in {flag}: every task named in --train needs its own", t.name)));
            }
        }
    }
    Ok(out)
}

/// The `--task-config` keys of a task's method: the method flags' names.
const METHOD_KEYS: [&str; 6] = [
    "method",
    "prefix_projection",
    "prefix_placement",
    "encoder_reparameterization",
    "encoder_hidden_size",
    "encoder_num_layers",
];

/// A task settings file is a few lines: a bound far above any real one.
const MAX_TASK_CONFIG_BYTES: u64 = 16 << 20;

/// `--task-config FILE`: {"NAME": {"template": ..., "labels": ..., "prompt_len": 8, ...}}
/// overrides the command line's task flags for that task; `"method": "prefix"` (and the
/// method flags' keys) gives it its own method.
fn apply_config(a: &Args, inputs: &mut [TaskInput]) -> Result<()> {
    let Some(path) = &a.task_config else {
        return Ok(());
    };
    // /dev/zero was read until memory ran out: read at most the bound (a pipe, as from
    // `<(...)`, still works)
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_TASK_CONFIG_BYTES + 1),
        &mut text,
    )
    .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > MAX_TASK_CONFIG_BYTES {
        return Err(Error::file(
            path,
            format!(
                "--task-config holds more than {} MB: expected a JSON file of task settings",
                MAX_TASK_CONFIG_BYTES >> 20
            ),
        ));
    }
    // a BOM, as editors on Windows write one, is skipped as in the data files
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
    if let Some(k) = softprompt::internals::train::data_formats::repeated_key(text) {
        return Err(Error::file(
            path,
            format!("the key \"{k}\" appears twice in an object: which value is meant?"),
        ));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| Error::file(path, "expected a JSON object by task name"))?;
    let names: Vec<String> = inputs.iter().map(|t| t.name.clone()).collect();
    // whether a task's own init read the command line's --init-text, --init-std,
    // --init-vocab-first
    let mut read = [false; 3];
    for (name, o) in obj {
        let t = (inputs.iter_mut().find(|t| t.name == *name)).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "names task \"{name}\", which is not one of this run's ({})",
                    names.join(", ")
                ),
            )
        })?;
        let o = o.as_object().ok_or_else(|| {
            Error::file(
                path,
                format!("task \"{name}\": expected an object of settings"),
            )
        })?;
        let (mut init, mut init_text) = (None, None);
        // a task of its own method starts from that method's defaults: the command line's
        // method flags belong to the command line's method
        let mut method = match o.get("method") {
            Some(_) => MethodArgs::default(),
            None => a.method.clone(),
        };
        for (k, x) in o {
            let bad = |want: &str| {
                Error::file(
                    path,
                    format!("task \"{name}\": `{k}` is {x}: expected {want}"),
                )
            };
            let text = || -> Result<String> {
                match x {
                    Value::String(s) => Ok(s.clone()),
                    Value::Array(_) | Value::Object(_)
                        if matches!(k.as_str(), "labels" | "verbalizer") =>
                    {
                        Ok(x.to_string())
                    }
                    _ => Err(bad("a string")),
                }
            };
            let count = || {
                x.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| bad("a non-negative integer"))
            };
            let f = &mut t.flags;
            match k.as_str() {
                "task" => f.task = Some(text()?),
                "template" => f.template = Some(text()?),
                "labels" => f.labels = Some(match x.as_array() {
                    Some(l) => l.iter().map(|s| s.as_str().map(String::from).ok_or_else(|| bad("strings"))).collect::<Result<Vec<_>>>()?.join(","),
                    None => text()?,
                }),
                // task.json's [[label, word], ...] as --verbalizer reads it
                "verbalizer" => f.verbalizer = Some(text()?),
                "pooling" => f.pooling = Some(text()?),
                "free_targets" => f.free_targets = x.as_bool().ok_or_else(|| bad("true or false"))?,
                "max_len" => f.max_len = Some(count()?),
                "max_target_len" => f.max_target_len = Some(count()?),
                "target_end" => f.target_end = Some(text()?),
                // 0 was reported as the flag, --prompt-len, after the model was loaded
                "prompt_len" => t.prompt_len = Some(count().and_then(|n| match n {
                    0 => Err(bad("at least 1")),
                    n => Ok(n),
                })?),
                "init" => init = Some(text()?),
                "init_text" => init_text = Some(text()?),
                "method" => method.method = text()?,
                "prefix_projection" => method.prefix_projection = x.as_bool().ok_or_else(|| bad("true or false"))?,
                "prefix_placement" => method.prefix_placement = Some(text()?),
                "encoder_reparameterization" => method.encoder_reparameterization = Some(text()?),
                "encoder_hidden_size" => method.encoder_hidden_size = Some(count()?),
                "encoder_num_layers" => method.encoder_num_layers = Some(count()?),
                _ => return Err(Error::file(path, format!("task \"{name}\": unknown setting `{k}` (expected task, template, labels, verbalizer, pooling, free_targets, max_len, max_target_len, target_end, prompt_len, init, init_text, {})", METHOD_KEYS.join(", ")))),
            }
        }
        t.config_keys = o.keys().cloned().collect();
        if METHOD_KEYS.iter().any(|k| o.contains_key(*k)) {
            let tag = format!("task \"{name}\" (--task-config {})", path.display());
            // in range here, where the error names the file's key (`encoder_num_layers` 0 was
            // named as --encoder-num-layers after the model loaded; hostile pass 35, F1)
            let own = (method.method()).and_then(|m| m.validate().map(|()| m));
            t.method = Some(own.map_err(|e| config_error(e, path, name, &t.config_keys, &tag))?);
        }
        let tag = format!("task \"{name}\" (--task-config {})", path.display());
        if init.is_some() || o.contains_key("init_text") {
            // the file's `init: text` without any text, named as the file's keys before
            // from_flags names the command line's --init text and --init-text
            if init.as_deref() == Some("text") && init_text.is_none() && a.init_text.is_none() {
                return Err(Error::file(
                    path,
                    format!(
                        "task \"{name}\": `init` is \"text\": needs `init_text`, the words the \
                         prompt starts from (or --init-text, for every task)"
                    ),
                ));
            }
            let kind = init.unwrap_or_else(|| a.init.clone());
            // the command line's companions of an init are for the tasks whose init reads
            // them: --init-text "for every task" was refused on a task of `init: random`
            // (hostile pass 35, F2)
            let reads = |inits: &[&str]| inits.contains(&kind.as_str());
            read[0] |= init_text.is_none() && a.init_text.is_some() && reads(&["text"]);
            read[1] |= a.init_std.is_some() && reads(&["random"]);
            read[2] |= a.init_vocab_first.is_some() && reads(&["sample-vocab", "class-labels"]);
            let init_text = init_text.or(a.init_text.clone().filter(|_| reads(&["text"])));
            let std = a.init_std.filter(|_| reads(&["random"]));
            let first = (a.init_vocab_first).filter(|_| reads(&["sample-vocab", "class-labels"]));
            let own = PromptInit::from_flags(&kind, init_text, std, first);
            t.init = Some(own.map_err(|e| config_error(e, path, name, &t.config_keys, &tag))?);
        }
        check_init_method(a, t).map_err(|e| config_error(e, path, name, &t.config_keys, &tag))?;
    }
    // where every task has its own init, the command line's companions no task reads are
    // refused, as elsewhere (`run_config` checks them for the tasks of the command line's
    // init; verification 34, F-1: they were dropped without a word)
    if inputs.iter().all(|t| t.init.is_some()) {
        let given = [
            ("--init-text", a.init_text.is_some()),
            ("--init-std", a.init_std.is_some()),
            ("--init-vocab-first", a.init_vocab_first.is_some()),
        ];
        if let Some((flag, _)) = (given.iter().zip(read))
            .find(|((_, g), r)| *g && !r)
            .map(|(f, _)| *f)
        {
            return Err(Error::arg(
                flag,
                "is read by no task: every task's --task-config entry sets its own init, and \
                 none of them reads it",
            ));
        }
    }
    Ok(())
}

/// A task whose `--task-config` entry sets its init or its method: the init applies to that
/// method (checked here, so that an error names the file and its key, not a flag).
/// The command line's own, when it fails, is named where it is read (`run_config`).
fn check_init_method(a: &Args, t: &TaskInput) -> Result<()> {
    if t.init.is_none() && t.method.is_none() {
        return Ok(());
    }
    let method = t.method.or_else(|| a.method.method().ok());
    let init = t.init.clone().or_else(|| prompt_init(a).ok());
    match (method, init) {
        (Some(method), Some(init)) => method.check_init(&init),
        _ => Ok(()),
    }
}

/// A training error about one task's setting that its `--task-config` entry set, named as
/// that file's key (the encoder's memory refusal, checked once the model's width is known,
/// named --encoder-hidden-size; hostile pass 35, F1).
fn config_named(e: Error, a: &Args, keys: &[(String, Vec<String>)]) -> Error {
    let (Some(config), Error::Arg { flag, msg }) = (&a.task_config, &e) else {
        return e;
    };
    for (name, keys) in keys {
        let tag = format!("task `{name}`");
        if let Some(rest) = msg.strip_prefix(&format!("{tag}: ")) {
            let e = Error::arg(flag.clone(), rest);
            return config_error(e, config, name, keys, &tag);
        }
    }
    e
}

/// `e` about a flag whose value the task's `--task-config` entry set (`keys`) as an error of
/// that file naming the key the user wrote (`max_len`, not `--max-len`); any other error
/// tagged with `tag`.
fn config_error(e: Error, config: &Path, name: &str, keys: &[String], tag: &str) -> Error {
    let e = as_flags(e);
    if let Error::Arg { flag, msg } = &e {
        let key = flag.trim_start_matches("--").replace('-', "_");
        if keys.contains(&key) {
            return Error::file(
                config,
                format!("task \"{name}\": `{key}` (as {flag}): {msg}"),
            );
        }
    }
    e.tagged(tag)
}

/// The task resolved on the model, its splits encoded.
fn encode_task(model: &Model, a: &Args, t: TaskInput) -> Result<EncodedTask> {
    let p = t.prompt_len.unwrap_or(a.prompt_len);
    let [train, dev, test] = t.data;
    // an error of the task's settings (flags, or --task-config over them) names the task
    let tag = match &a.task_config {
        Some(c) => format!(
            "task `{}` (--task-config {} over the flags)",
            t.name,
            c.display()
        ),
        None => format!("task `{}`", t.name),
    };
    let task = (t.flags.options())
        .and_then(|o| model.task(&o, train.as_ref(), p).map_err(as_flags))
        .map_err(|e| match &a.task_config {
            Some(c) => config_error(e, c, &t.name, &t.config_keys, &tag),
            None => e.tagged(&tag),
        })?;
    outln!("task {}: {}", t.name, describe(task.spec()));
    let enc = |d: Option<Dataset>, split: &str| -> Result<Option<Encoded>> {
        let Some(d) = d else { return Ok(None) };
        let e = model.encode(&task, &d)?;
        outln!(
            "  {split:<5} {}: {}",
            d.path.display(),
            rows_line(&e, task.spec())
        );
        if split != "train" {
            warn_stops_inside(&task, &e);
        }
        Ok(Some(e))
    };
    let train = enc(train, "train")?
        .ok_or_else(|| Error::arg("--task-data", format!("task {}: no training rows", t.name)))?;
    let (dev, test) = (enc(dev, "dev")?, enc(test, "test")?);
    Ok(EncodedTask {
        name: t.name,
        task,
        train,
        dev,
        test,
        prompt_len: t.prompt_len,
        init: t.init,
        method: t.method,
    })
}

/// A fresh task's warnings, as a single-task run gives them: a warm-up past its last step, a
/// patience that cannot stop it early.
fn warn_at_start(name: &str, ev: &Event, cfg: &TrainConfig) {
    let Event::Started {
        total_steps,
        steps_per_epoch,
        resumed_at: None,
        head_params,
        ..
    } = ev
    else {
        return;
    };
    let schedule = softprompt::Schedule {
        total: *total_steps,
        ..cfg.optim.schedule
    };
    let patience = cfg.patience_warning(*total_steps, *steps_per_epoch);
    let head_lr = cfg.head_lr_warning(*head_params > 0);
    let decay = cfg.decay_warning(*head_params > 0);
    for w in schedule
        .warning()
        .into_iter()
        .chain(patience)
        .chain(head_lr)
        .chain(decay)
    {
        outln!("[{name}] warning: {w}");
    }
}

/// One line per evaluation, early stop and resume, and a loss line per metrics.jsonl line
/// (every --log-every steps and the task's last: its loss is that line's, the mean since the
/// line before). `totals`: each task's steps, from its `Started` event.
fn print_event(name: &str, ev: &Event, totals: &mut HashMap<String, u64>) {
    match ev {
        Event::Started {
            total_steps,
            resumed_at,
            prompt_params,
            head_params,
            ..
        } => {
            totals.insert(name.to_string(), *total_steps);
            let resumed = resumed_at.map_or(String::new(), |s| format!(", resumed at step {s}"));
            outln!("[{name}] {total_steps} steps, {prompt_params} prompt + {head_params} head parameters{resumed}");
        }
        Event::Step(s) => {
            if let Some(loss) = s.logged {
                outln!(
                    "[{name}] step {} loss {loss:.4} lr {:.3e} grad-norm {:.3}",
                    s.step,
                    s.lr,
                    s.grad_norm
                );
            }
        }
        Event::Eval {
            step,
            split,
            metrics,
            best,
        } => {
            let mark = if *best { " (best)" } else { "" };
            outln!(
                "[{name}] step {step} {split} accuracy {:.4} macro-F1 {:.4}{mark}",
                metrics.accuracy,
                metrics.macro_f1
            );
        }
        // the patience ran out at the task's last step: it ends where it would anyway
        Event::EarlyStop { step, best_step } if totals.get(name) == Some(step) => {
            outln!("[{name}] patience ran out at step {step}, the last (best step {best_step})");
        }
        Event::EarlyStop { step, best_step } => {
            outln!("[{name}] early stop at step {step} (best step {best_step}): frozen, its rows leave the batches");
        }
        _ => {}
    }
}

fn print_summary(results: &[TaskResult], t0: Instant, a: &Args) {
    for (name, s, _) in results {
        let best = s.best_dev.map_or(String::new(), |m| {
            format!(
                " | best dev accuracy {:.4} at step {}",
                m.accuracy, s.best_step
            )
        });
        let test = s.test.map_or(String::new(), |m| {
            format!(
                " | test accuracy {:.4} macro-F1 {:.4}",
                m.accuracy, m.macro_f1
            )
        });
        outln!(
            "done [{name}]: {} steps{best}{test} | saved to {}",
            s.steps,
            a.out.join(name).display()
        );
    }
    outln!(
        "all tasks in {:.0}s (checkpoint.safetensors, metrics.jsonl in {})",
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
}
