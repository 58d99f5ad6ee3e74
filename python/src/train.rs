//! `Model.train`: the whole run as `softprompt train` does it, with the same keyword
//! arguments (its flags, underscored) and defaults, the same progress bar and the same files.
//! Ctrl-C stops the run after the step under way with its checkpoint written, then raises
//! KeyboardInterrupt; `resume=True` continues it. During the last step or the final test
//! evaluation, the run finishes with its folder written but still raises KeyboardInterrupt,
//! its summary and prompt discarded (interrupt.rs: a signal is never lost).

use crate::data::dataset;
use crate::errors::to_py;
use crate::interrupt::Interrupt;
use crate::kw::{parse, Kw};
use crate::model::{metrics_dict, PyModel};
use crate::prompt::PyPrompt;
use crate::task::prompt_init;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use softprompt::internals::train::outdir;
use softprompt::{
    ConsoleProgress, Event, Method, OptimConfig, OptimKind, Recompute, Splits, Summary, TrainConfig,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The optimizer flags over `OptimConfig::defaults`, as the command line applies them.
fn optim_config(kw: &mut Kw<'_>) -> PyResult<OptimConfig> {
    let kind: OptimKind =
        parse(Some(kw.get("optimizer", "adamw".to_string())?), "")?.unwrap_or(OptimKind::AdamW);
    let mut o = OptimConfig::defaults(kind);
    if let Some(lr) = kw.take("lr")? {
        o.lr = lr;
    }
    o.head_lr = kw.take("head_lr")?;
    if let Some(wd) = kw.take("weight_decay")? {
        o.weight_decay = wd;
    }
    o.set_decay_rate(kw.take("decay_rate")?)
        .map_err(crate::errors::to_py)?;
    if let Some(s) = parse(kw.take::<String>("schedule")?, "")? {
        o.schedule.kind = s;
    }
    o.schedule.warmup = kw.uint("warmup_steps")?.unwrap_or(0);
    if let Some(n) = kw.take::<f64>("max_grad_norm")? {
        // 0 turns clipping off; NaN and negatives reach `OptimConfig::validate`
        o.max_grad_norm = (n != 0.0).then_some(n);
    }
    Ok(o)
}

/// `method` (prompt, p-tuning, prefix) and its settings' flags, as the command line reads
/// them (`Method::from_flags`).
fn method(kw: &mut Kw<'_>) -> PyResult<Method> {
    let method: String = kw.get("method", "prompt".to_string())?;
    let projection: bool = kw.get("prefix_projection", false)?;
    let placement: Option<String> = kw.take("prefix_placement")?;
    let encoder: Option<String> = kw.take("encoder_reparameterization")?;
    let hidden: Option<usize> = kw.uint("encoder_hidden_size")?;
    let layers: Option<usize> = kw.uint("encoder_num_layers")?;
    Method::from_flags(
        &method,
        projection,
        placement.as_deref(),
        encoder.as_deref(),
        hidden,
        layers,
    )
    .map_err(to_py)
}

/// The loop flags, with the command line's defaults.
fn train_config(kw: &mut Kw<'_>, prompt_len: usize) -> PyResult<TrainConfig> {
    let d = TrainConfig::default();
    Ok(TrainConfig {
        method: method(kw)?,
        prompt_len,
        init: prompt_init(kw)?,
        optim: optim_config(kw)?,
        batch_size: kw.uint("batch_size")?.unwrap_or(d.batch_size),
        eval_batch_size: kw.uint("eval_batch_size")?.unwrap_or(d.eval_batch_size),
        epochs: kw.uint("epochs")?.unwrap_or(d.epochs),
        max_steps: kw.uint("max_steps")?,
        eval_every: kw.uint("eval_every")?.unwrap_or(d.eval_every),
        patience: kw.uint("patience")?,
        save_every: kw.uint("save_every")?.unwrap_or(d.save_every),
        log_every: kw.uint("log_every")?.unwrap_or(d.log_every),
        seed: kw.uint("seed")?.unwrap_or(d.seed),
        recompute: parse::<Recompute>(Some(kw.get("recompute", "none".to_string())?), "")?
            .unwrap_or(Recompute::None),
        bucket_pool: kw.uint("bucket_pool")?.unwrap_or(d.bucket_pool),
        threads: rayon::current_num_threads(),
        overwrite: kw.get("overwrite", false)?,
        resume: kw.get("resume", false)?,
    })
}

/// An event as a dict: `{"event": "step", "step", "epoch", "loss", "lr", "grad_norm",
/// "tokens"}`, `{"event": "eval", "step", "split", "metrics", "best"}`, `"started"`, `"saved"`,
/// `"early_stop"`.
fn event_dict<'py>(py: Python<'py>, ev: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match ev {
        Event::Started {
            total_steps,
            steps_per_epoch,
            resumed_at,
            ..
        } => {
            d.set_item("event", "started")?;
            d.set_item("total_steps", total_steps)?;
            d.set_item("steps_per_epoch", steps_per_epoch)?;
            d.set_item("resumed_at", resumed_at)?;
        }
        Event::Step(s) => {
            d.set_item("event", "step")?;
            d.set_item("step", s.step)?;
            d.set_item("epoch", s.epoch)?;
            d.set_item("loss", s.loss)?;
            d.set_item("lr", s.lr)?;
            d.set_item("grad_norm", s.grad_norm)?;
            d.set_item("tokens", s.tokens)?;
        }
        Event::Eval {
            step,
            split,
            metrics,
            best,
        } => {
            d.set_item("event", "eval")?;
            d.set_item("step", step)?;
            d.set_item("split", split)?;
            d.set_item("metrics", metrics_dict(py, metrics)?)?;
            d.set_item("best", best)?;
        }
        Event::Saved { step, path } => {
            d.set_item("event", "saved")?;
            d.set_item("step", step)?;
            d.set_item("path", path)?;
        }
        Event::EarlyStop { step, best_step } => {
            d.set_item("event", "early_stop")?;
            d.set_item("step", step)?;
            d.set_item("best_step", best_step)?;
        }
    }
    Ok(d)
}

fn summary_dict<'py>(py: Python<'py>, s: &Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("steps", s.steps)?;
    d.set_item("best_step", s.best_step)?;
    let best = s
        .best_dev
        .as_ref()
        .map(|m| metrics_dict(py, m))
        .transpose()?;
    d.set_item("best_dev", best)?;
    let test = s.test.as_ref().map(|m| metrics_dict(py, m)).transpose()?;
    d.set_item("test", test)?;
    d.set_item("early_stopped", s.early_stopped)?;
    Ok(d)
}

/// A path given for a split (the command line refuses a split that is one of the run's
/// files in `out`).
fn split_path(v: &Option<Bound<'_, PyAny>>) -> PyResult<Option<PathBuf>> {
    Ok(v.as_ref()
        .map(crate::paths::path_if_any)
        .transpose()?
        .flatten())
}

/// The body of `Model.train` (see its docstring).
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    model: &PyModel,
    py: Python<'py>,
    train: Bound<'py, PyAny>,
    out: PathBuf,
    dev: Option<Bound<'py, PyAny>>,
    test: Option<Bound<'py, PyAny>>,
    on_event: Option<Py<PyAny>>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Bound<'py, PyDict>, PyPrompt)> {
    let t0 = Instant::now();
    // a callback that cannot be called failed after the first step was trained and saved
    if let Some(f) = on_event.as_ref().filter(|f| !f.bind(py).is_callable()) {
        let got = f.bind(py).get_type().name()?;
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "train(): on_event={}: expected a callable (a function of one dict) or None, got {got}",
            crate::ints::repr(f.bind(py))
        )));
    }
    let mut kw = Kw::new("train", kwargs)?;
    let opts = kw.task_options()?;
    let spec = kw.data_spec(true)?;
    let prompt_len: usize = kw
        .uint("prompt_len")?
        .unwrap_or(TrainConfig::default().prompt_len);
    let no_progress: bool = kw.get("no_progress", false)?;
    let cfg = train_config(&mut kw, prompt_len)?;
    kw.finish()?;
    // after the keywords' own checks: a value of the wrong type is named as such first
    let given = |key: &str| -> PyResult<bool> {
        let v = kwargs.map(|k| k.get_item(key)).transpose()?.flatten();
        Ok(v.is_some_and(|v| !v.is_none()))
    };
    if given("eval_batch_size")? && dev.is_none() && test.is_none() {
        return Err(crate::errors::arg(
            "eval_batch_size",
            "sizes the dev and test evaluations, and this run has neither (--dev, --test): \
             leave it out",
        ));
    }
    let back = outdir::precheck(&out, cfg.resume, cfg.overwrite, outdir::RunKind::SingleTask)
        .map_err(to_py)?;
    for f in &back {
        crate::prompt::user_warning(py, &outdir::put_back_note(f))?;
    }
    let paths = [
        ("train", split_path(&Some(train.clone()))?),
        ("dev", split_path(&dev)?),
        ("test", split_path(&test)?),
    ];
    let inputs: Vec<(&str, &Path)> = (paths.iter())
        .filter_map(|(f, p)| p.as_deref().map(|p| (*f, p)))
        .collect();
    outdir::check_inputs_kept(&out, &inputs).map_err(to_py)?;

    // quoting is for the TSV and CSV files among train, dev and test
    let files: Vec<&Path> = inputs.iter().map(|(_, p)| *p).collect();
    // the paths were read above: a path that cannot be read raised there
    // the data flags are for the files among them; rows in memory read none
    if let Some(flag) = crate::data::file_flag(&spec).filter(|_| files.is_empty()) {
        return Err(crate::data::unread_flag(flag, "every split"));
    }
    let spec_of = |d: &Bound<'py, PyAny>| match split_path(&Some(d.clone())).ok().flatten() {
        Some(p) => spec.for_file(&p, &files),
        None => softprompt::DataSpec {
            require_label: spec.require_label,
            ..Default::default()
        },
    };
    let m = &model.inner;
    let train_data = dataset(py, &train, None, &spec_of(&train), "train")?;
    let task = crate::errors::compute(py, || m.task(&opts, Some(&train_data), prompt_len))?;
    let encode = |d: &Bound<'py, PyAny>, name: &str| -> PyResult<softprompt::Encoded> {
        let ds = dataset(py, d, None, &spec_of(d), name)?;
        Interrupt::batched(py, |between, stop| {
            m.encode_until(&task, &ds, between, stop)
        })
    };
    let train_enc = encode(&train, "train")?;
    let dev_enc = dev.as_ref().map(|d| encode(d, "dev")).transpose()?;
    let test_enc = test.as_ref().map(|d| encode(d, "test")).transpose()?;
    // the splits scored by generation, as `softprompt train` warns (review 14, R14-11)
    for (data, enc, name) in [(&dev, &dev_enc, "dev"), (&test, &test_enc, "test")] {
        if let (Some(data), Some(enc)) = (data, enc) {
            crate::model::warn_stops_inside(py, &task, enc, data, name)?;
        }
    }
    let splits = Splits {
        train: &train_enc,
        dev: dev_enc.as_ref(),
        test: test_enc.as_ref(),
    };
    let (k, d) = (task.labels().len(), m.hidden_size());
    let mut progress =
        ConsoleProgress::new(&cfg, t0, k, d, !no_progress).with_words(crate::errors::python_words);
    let interrupt = Interrupt::default();
    let result = interrupt.run(py, || {
        let mut hear = |ev: &Event| {
            progress.on_event(ev);
            interrupt.check(|py| match &on_event {
                Some(f) => f.call1(py, (event_dict(py, ev)?,)).map(drop),
                None => Ok(()),
            });
        };
        // a row's `label` (the engine's `Row` field) is a row of the `train` argument here
        (m.train_until(&task, splits, &cfg, &out, &mut hear, &interrupt.stop))
            .map_err(|e| crate::errors::renamed_arg(e, "label", "train"))
    });
    progress.finish();
    // interrupted: the checkpoint is written, and the KeyboardInterrupt says how to resume
    let (summary, prompt) = result?;
    Ok((summary_dict(py, &summary)?, PyPrompt { inner: prompt }))
}
