//! `Model`: a frozen model folder on a device, and what a prompt does with it (one step,
//! evaluation, prediction, generation, saving). Compute runs with the GIL released.

use crate::data::{dataset, id_list, PyEncoded};
use crate::errors::{arg, compute, renamed_arg, to_py};
use crate::interrupt::Interrupt;
use crate::ints;
use crate::kw::{parse, Kw};
use crate::prompt::PyPrompt;
use crate::task::{prompt_init, PyTask};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use softprompt::{Device, Encoded, EvalMetrics, Model, Prediction, PromptPlacement, Task};
use std::path::PathBuf;

/// A Hugging Face model folder (BERT, T5, BLOOM, Llama, Mistral, Qwen2) loaded on a device.
///
/// Model(dir, device="cpu", precision="bf16", threads=0) loads the model folder `dir` on
/// `device` (`cpu`, `cuda`, `cuda:N`, `emu`) at `precision` (cuda and emu: bf16, f32 or
/// mixed; the CPU computes in float32). `threads` sizes the CPU thread pool as `--threads`
/// does (0: all cores): a process has one, sized by the first Model that gives a count (or,
/// before any, by the first computation, at all cores), and another count later is refused.
#[pyclass(name = "Model", module = "softprompt", frozen, weakref)]
pub struct PyModel {
    pub inner: Model,
}

/// A cls head's arrays: weight (K, d) and bias (K).
type HeadArrays = (Py<PyArray2<f32>>, Py<PyArray1<f32>>);

/// The loss and gradients of one batch (`Model.step`).
#[pyclass(name = "StepOutput", module = "softprompt", frozen)]
pub struct PyStepOutput {
    /// the mean loss over the batch
    #[pyo3(get)]
    loss: f64,
    /// d loss / d prompt, (P, d) float32 (the engine's buffer, moved, not copied)
    #[pyo3(get)]
    prompt_grad: Py<PyArray2<f32>>,
    /// cls: (d loss / d head weight (K, d), d loss / d head bias (K)), else None
    #[pyo3(get)]
    head_grad: Option<HeadArrays>,
    /// real tokens in the batch
    #[pyo3(get)]
    tokens: usize,
}

#[pymethods]
impl PyStepOutput {
    fn __repr__(&self) -> String {
        format!("StepOutput(loss={}, tokens={})", self.loss, self.tokens)
    }
}

/// A (rows, cols) array that owns `v` (moved into numpy, no copy).
fn matrix(py: Python<'_>, v: Vec<f32>, cols: usize) -> PyResult<Py<PyArray2<f32>>> {
    let rows = v.len() / cols.max(1);
    Ok(PyArray1::from_vec(py, v).reshape([rows, cols])?.unbind())
}

/// The rows of `data` (the argument `name`) for `task`: an `Encoded` as is, else the texts
/// (or a file) encoded (Ctrl-C heard between chunks of rows); a file's every row needs a
/// label when `require_label` (as `softprompt eval` reads it).
pub fn rows_of(
    py: Python<'_>,
    model: &Model,
    task: &Task,
    (data, name): (&Bound<'_, PyAny>, &str),
    labels: Option<Vec<Option<String>>>,
    kw: &mut Kw<'_>,
    require_label: bool,
) -> PyResult<Encoded> {
    let spec = kw.data_spec(require_label)?;
    if let Ok(enc) = data.cast::<PyEncoded>() {
        // each would be ignored: an Encoded's rows hold their labels (a step on relabelled
        // rows returned the old labels' loss; hostile pass 22)
        if labels.is_some() {
            return Err(crate::data::labels_unread(name, "an Encoded, whose rows"));
        }
        if let Some(flag) = crate::data::file_flag(&spec) {
            return Err(crate::data::unread_flag(flag, name));
        }
        return Ok(enc.get().inner.clone());
    }
    let ds = dataset(py, data, labels, &spec, name)?;
    Interrupt::batched(py, |between, stop| {
        model.encode_until(task, &ds, between, stop)
    })
}

/// One warning when rows of `enc` (the argument `name`, `data`) hold free targets that
/// greedy generation could never produce, as `softprompt eval` and `train` warn: a file's
/// rows are named by line, rows held in memory by their index in the list (review 14, R14-11).
pub fn warn_stops_inside(
    py: Python<'_>,
    task: &Task,
    enc: &Encoded,
    data: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<()> {
    let Some((n, first)) = task.stops_inside_targets(enc) else {
        return Ok(());
    };
    let from_file = match data.is_instance_of::<PyEncoded>() {
        true => enc.path.is_file(),
        false => crate::paths::path_if_any(data)?.is_some(),
    };
    let rows = match from_file {
        true => format!(
            "{}: {n} row(s) (the first at line {first})",
            enc.path.display()
        ),
        false => format!(
            "{n} row(s) of {name} (the first at index {})",
            first.saturating_sub(1)
        ),
    };
    crate::prompt::user_warning(
        py,
        &format!(
            "{rows} hold a target with a stop token before its end: generation stops at that \
             token, so each is scored a miss"
        ),
    )
}

/// `{"accuracy", "macro_f1", "examples"}`, as `softprompt eval --json` prints.
pub fn metrics_dict<'py>(py: Python<'py>, m: &EvalMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("accuracy", m.accuracy)?;
    d.set_item("macro_f1", m.macro_f1)?;
    d.set_item("examples", m.examples)?;
    Ok(d)
}

/// A prediction as `softprompt predict` writes it: the label, its index, the per-label
/// scores, the generated ids and the score; a generated output (greedy decoding, free
/// targets) also its text as `output`, and as `label` when it is no label's target; and
/// `truncated`, whether its text was cut to the task's max_len (as a served answer's).
fn prediction_dict<'py>(
    py: Python<'py>,
    model: &softprompt::Model,
    task: &Task,
    p: &Prediction,
    truncated: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let label = p.class.and_then(|c| task.labels().get(c)).cloned();
    if p.scores.is_empty() {
        let text = model.detokenize(p.output_ids()).map_err(to_py)?;
        d.set_item("label", p.greedy_label(task.labels(), &text))?;
        d.set_item("output", text)?;
    } else {
        d.set_item("label", label)?;
    }
    d.set_item("class", p.class)?;
    d.set_item("scores", p.scores.clone())?;
    d.set_item("ids", p.ids.clone())?;
    d.set_item("score", p.score)?;
    d.set_item("truncated", truncated)?;
    Ok(d)
}

/// Each row's prediction as a dict, in order, with its row's `truncated`.
fn prediction_list<'py>(
    py: Python<'py>,
    model: &softprompt::Model,
    task: &Task,
    preds: &[Prediction],
    enc: &Encoded,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (i, pred) in preds.iter().enumerate() {
        let cut = enc.rows.get(i).is_some_and(|r| r.truncated);
        list.append(prediction_dict(py, model, task, pred, cut)?)?;
    }
    Ok(list)
}

#[pymethods]
impl PyModel {
    /// The class's docstring says what it takes (help() shows that one, not this).
    #[new]
    #[pyo3(signature = (dir, device="cpu", precision="bf16", threads=0))]
    fn new(
        py: Python<'_>,
        #[pyo3(from_py_with = crate::paths::path)] dir: PathBuf,
        device: &str,
        precision: &str,
        #[pyo3(from_py_with = ints::threads)] threads: usize,
    ) -> PyResult<PyModel> {
        let kind = Device::parse(device, precision).map_err(to_py)?;
        crate::threads::setup(threads)?;
        Ok(PyModel {
            inner: compute(py, || Model::open(&dir, kind))?,
        })
    }

    /// The folder it was loaded from.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// bert, t5, bloom or llama.
    #[getter]
    fn arch(&self) -> &'static str {
        self.inner.arch()
    }

    /// d, the width of a prompt row.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }

    /// The device as the command line prints it.
    #[getter]
    fn device(&self) -> String {
        self.inner.device_name()
    }

    /// The token ids of `text`, special tokens included.
    /// Runs with the GIL released, as compute does (a long text takes a while).
    fn tokenize(&self, py: Python<'_>, text: &str) -> PyResult<Vec<i32>> {
        let m = &self.inner;
        compute(py, || m.tokenize(text))
    }

    /// The text of token ids (each an int32), special tokens left out.
    fn detokenize(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let ids = id_list("ids", "", ids)?;
        self.inner.detokenize(&ids).map_err(to_py)
    }

    /// The task a new prompt of `prompt_len` rows trains: the task flags (task, template,
    /// labels, verbalizer, pooling, free_targets, max_len, max_target_len, decode,
    /// target_end) over the model's defaults, the labels from `data` (a file or (text, label)
    /// pairs) when nothing else gives them.
    #[pyo3(
        signature = (data=None, prompt_len=None, **kwargs),
        text_signature = "($self, data=None, prompt_len=None, *, task=None, template=None, \
        labels=None, \
        verbalizer=None, pooling=None, free_targets=False, max_len=None, \
        max_target_len=None, decode=None, target_end=None, format=None, quoting=None, \
        text_field=\"text\", label_field=\"label\")"
    )]
    fn task(
        &self,
        py: Python<'_>,
        data: Option<Bound<'_, PyAny>>,
        prompt_len: Option<Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyTask> {
        let given = prompt_len.map(|v| ints::prompt_len(&v)).transpose()?;
        let prompt_len = given.unwrap_or(softprompt::TrainConfig::default().prompt_len);
        let mut kw = Kw::new("task", kwargs)?;
        let opts = kw.task_options()?;
        let spec = kw.data_spec(true)?;
        let ds = data
            .map(|d| dataset(py, &d, None, &spec, "data"))
            .transpose()?;
        kw.finish()?;
        let m = &self.inner;
        Ok(PyTask {
            inner: compute(py, || m.task(&opts, ds.as_ref(), prompt_len))?,
            prompt_len: given,
        })
    }

    /// The task of a saved prompt: its task.json (or, for a PEFT folder, the model's
    /// defaults) with the task flags on top.
    #[pyo3(
        signature = (prompt, data=None, **kwargs),
        text_signature = "($self, prompt, data=None, **flags)"
    )]
    fn task_for(
        &self,
        py: Python<'_>,
        prompt: PyRef<'_, PyPrompt>,
        data: Option<Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyTask> {
        let mut kw = Kw::new("task_for", kwargs)?;
        let opts = kw.task_options()?;
        let spec = kw.data_spec(true)?;
        let ds = data
            .map(|d| dataset(py, &d, None, &spec, "data"))
            .transpose()?;
        kw.finish()?;
        let (m, p) = (&self.inner, &prompt.inner);
        let inner = compute(py, || m.task_for(p, &opts, ds.as_ref()))?;
        // a cls head of unknown label order, read in the labels' sorted order
        if let Some(warning) = inner.warning() {
            crate::prompt::user_warning(py, warning)?;
        }
        // a template or pooling other than the prompt's own: the command line's note
        for line in inner.overrides(p) {
            crate::prompt::user_warning(py, &line)?;
        }
        Ok(PyTask {
            inner,
            prompt_len: None,
        })
    }

    /// A new prompt of `prompt_len` rows for `task`, initialised as `init` says (random,
    /// text, sample-vocab, class-labels; with init_text, init_std, init_vocab_first) from
    /// `seed`: the prompt `train` starts from with the same settings. `prompt_len` defaults to
    /// the one the task was made for (else 20); another one is refused.
    #[pyo3(
        signature = (task, prompt_len=None, seed=0, **kwargs),
        text_signature = "($self, task, prompt_len=None, seed=0, *, init=\"random\", \
        init_text=None, \
        init_std=None, init_vocab_first=None)"
    )]
    fn new_prompt(
        &self,
        py: Python<'_>,
        task: PyRef<'_, PyTask>,
        prompt_len: Option<Bound<'_, PyAny>>,
        #[pyo3(from_py_with = ints::seed)] seed: u64,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyPrompt> {
        let given = prompt_len.map(|v| ints::prompt_len(&v)).transpose()?;
        let prompt_len = match (given, task.prompt_len) {
            (Some(n), Some(t)) if n != t => {
                return Err(arg(
                    "prompt_len",
                    format!(
                        "got {n}, but the task was made for prompt_len={t} (its max_len \
                         leaves room for {t} rows): give the same prompt_len to Model.task \
                         and Model.new_prompt, or leave it out here"
                    ),
                ))
            }
            (n, t) => n
                .or(t)
                .unwrap_or(softprompt::TrainConfig::default().prompt_len),
        };
        let mut kw = Kw::new("new_prompt", kwargs)?;
        let init = prompt_init(&mut kw)?;
        kw.finish()?;
        let (m, t) = (&self.inner, &task.inner);
        Ok(PyPrompt {
            inner: compute(py, || m.new_prompt(t, prompt_len, &init, seed))?,
        })
    }

    /// Encodes `data` (a file, texts with `labels`, or (text, label) pairs) for `task`.
    /// Ctrl-C stops it after the chunk of rows under way and raises KeyboardInterrupt; during
    /// the last chunk, it finishes but still raises KeyboardInterrupt, the result discarded.
    #[pyo3(
        signature = (task, data, labels=None, **kwargs),
        text_signature = "($self, task, data, labels=None, **flags)"
    )]
    fn encode(
        &self,
        py: Python<'_>,
        task: PyRef<'_, PyTask>,
        data: Bound<'_, PyAny>,
        #[pyo3(from_py_with = crate::data::label_names)] labels: Option<Vec<Option<String>>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyEncoded> {
        let mut kw = Kw::new("encode", kwargs)?;
        let enc = rows_of(
            py,
            &self.inner,
            &task.inner,
            (&data, "data"),
            labels,
            &mut kw,
            false,
        )?;
        kw.finish()?;
        Ok(PyEncoded { inner: enc })
    }

    /// One training step's numbers on one batch (`Encoded` rows, or texts with `labels`):
    /// the mean loss and the gradients. Nothing is updated.
    #[pyo3(signature = (task, prompt, batch, labels=None))]
    fn step(
        &self,
        py: Python<'_>,
        task: PyRef<'_, PyTask>,
        prompt: PyRef<'_, PyPrompt>,
        batch: Bound<'_, PyAny>,
        #[pyo3(from_py_with = crate::data::label_names)] labels: Option<Vec<Option<String>>>,
    ) -> PyResult<PyStepOutput> {
        let mut kw = Kw::new("step", None)?;
        let enc = rows_of(
            py,
            &self.inner,
            &task.inner,
            (&batch, "batch"),
            labels,
            &mut kw,
            true,
        )?;
        let snapshot = prompt.engine_copy();
        let (m, t, p) = (&self.inner, &task.inner, &snapshot);
        // the engine names `Model::step`'s argument `rows` (a row's `label`); Python's are
        // `batch` and `labels`
        let out = compute(py, || {
            m.step(t, p, &enc.rows)
                .map_err(|e| renamed_arg(e, "rows", "batch"))
                .map_err(|e| renamed_arg(e, "label", "labels"))
        })?;
        let d = prompt.inner.width();
        let head_grad = match out.head_grad {
            Some((w, b)) => Some((matrix(py, w, d)?, PyArray1::from_vec(py, b).unbind())),
            None => None,
        };
        Ok(PyStepOutput {
            loss: out.loss,
            prompt_grad: matrix(py, out.prompt_grad, d)?,
            head_grad,
            tokens: out.tokens,
        })
    }

    /// Accuracy and macro-F1 on the labelled rows of `data` (a file, texts with `labels`,
    /// pairs, or `Encoded`), and every row's prediction. Ctrl-C stops it after the batch
    /// under way and raises KeyboardInterrupt; during the last batch, it finishes but still
    /// raises KeyboardInterrupt, the result discarded.
    #[pyo3(
        signature = (task, prompt, data, labels=None, batch_size=64, **kwargs),
        text_signature = "($self, task, prompt, data, labels=None, batch_size=64, **flags)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        task: PyRef<'_, PyTask>,
        prompt: PyRef<'_, PyPrompt>,
        data: Bound<'_, PyAny>,
        #[pyo3(from_py_with = crate::data::label_names)] labels: Option<Vec<Option<String>>>,
        #[pyo3(from_py_with = ints::batch_size)] batch_size: usize,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyList>)> {
        let mut kw = Kw::new("evaluate", kwargs)?;
        let enc = rows_of(
            py,
            &self.inner,
            &task.inner,
            (&data, "data"),
            labels,
            &mut kw,
            true,
        )?;
        kw.finish()?;
        // as `softprompt eval` warns (review 13, R13-10)
        warn_stops_inside(py, &task.inner, &enc, &data, "data")?;
        let snapshot = prompt.engine_copy();
        let (m, t, p) = (&self.inner, &task.inner, &snapshot);
        let (metrics, preds) = Interrupt::batched(py, |between, stop| {
            m.evaluate_until(t, p, &enc, batch_size, between, stop)
        })?;
        let list = prediction_list(py, m, t, &preds, &enc)?;
        Ok((metrics_dict(py, &metrics)?, list))
    }

    /// Every row's prediction, in order: `{"label", "class", "scores", "ids", "score",
    /// "truncated"}` (truncated: the text was cut to the task's max_len), and `"output"` (the
    /// generated text, also the `label` when it is no label's target) under greedy decoding
    /// or free targets.
    /// Ctrl-C stops it after the batch under way and raises KeyboardInterrupt; during the
    /// last batch, it finishes but still raises KeyboardInterrupt, the result discarded.
    #[pyo3(
        signature = (task, prompt, data, batch_size=64, **kwargs),
        text_signature = "($self, task, prompt, data, batch_size=64, **flags)"
    )]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        task: PyRef<'_, PyTask>,
        prompt: PyRef<'_, PyPrompt>,
        data: Bound<'_, PyAny>,
        #[pyo3(from_py_with = ints::batch_size)] batch_size: usize,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut kw = Kw::new("predict", kwargs)?;
        let enc = rows_of(
            py,
            &self.inner,
            &task.inner,
            (&data, "data"),
            None,
            &mut kw,
            false,
        )?;
        kw.finish()?;
        let snapshot = prompt.engine_copy();
        let (m, t, p) = (&self.inner, &task.inner, &snapshot);
        let preds = Interrupt::batched(py, |between, stop| {
            m.predict_until(t, p, &enc, batch_size, between, stop)
        })?;
        prediction_list(py, m, t, &preds, &enc)
    }

    /// Greedy generation behind the prompt on a decoder-only model: one
    /// `{"output", "text", "ids", "logprob", "truncated"}` per text (output and text: the
    /// generated text). `prompt_placement`: tokens (each row as alone)
    /// or peft (PEFT's placement before the padding). Ctrl-C stops it after the token under
    /// way and raises KeyboardInterrupt; during the last token, it finishes but still raises
    /// KeyboardInterrupt, the result discarded.
    #[pyo3(signature = (task, prompt, texts, max_new_tokens=32, prompt_placement="tokens"))]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        task: PyRef<'_, PyTask>,
        prompt: PyRef<'_, PyPrompt>,
        #[pyo3(from_py_with = crate::data::texts)] texts: Vec<String>,
        #[pyo3(from_py_with = ints::max_new_tokens)] max_new_tokens: usize,
        prompt_placement: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let placement = parse::<PromptPlacement>(Some(prompt_placement.into()), "")?
            .ok_or_else(|| arg("--prompt-placement", "missing"))?;
        let snapshot = prompt.engine_copy();
        let (m, t, p) = (&self.inner, &task.inner, &snapshot);
        let gens = Interrupt::batched(py, |between, stop| {
            m.generate_until(t, p, &texts, max_new_tokens, placement, between, stop)
        })?;
        let list = PyList::empty(py);
        for g in gens {
            let d = PyDict::new(py);
            // "output" as `softprompt generate` and predict's greedy rows say it; "text" as
            // earlier releases said it
            d.set_item("output", &g.text)?;
            d.set_item("text", g.text)?;
            d.set_item("ids", g.ids)?;
            d.set_item("logprob", g.logprob)?;
            d.set_item("truncated", g.truncated)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Writes the prompt into `dir` as `softprompt train` does: PEFT's adapter files
    /// (`PeftModel.from_pretrained` loads them), task.json, and head.safetensors for cls.
    /// A folder that holds a saved prompt is refused unless `overwrite=True`. A P-tuning
    /// prompt (or a prefix with a projection) is saved as its table, the encoder's output:
    /// its prompt_encoder.safetensors is not carried.
    #[pyo3(signature = (dir, prompt, task, overwrite=false))]
    fn save_prompt(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = crate::paths::path)] dir: PathBuf,
        prompt: PyRef<'_, PyPrompt>,
        task: PyRef<'_, PyTask>,
        overwrite: bool,
    ) -> PyResult<()> {
        let snapshot = prompt.engine_copy();
        let (m, t, p) = (&self.inner, &task.inner, &snapshot);
        let opts = softprompt::SaveOptions { overwrite };
        compute(py, || m.save_prompt(&dir, p, t, opts))
    }

    /// Trains a prompt on `train` (a file, or (text, label) pairs) as `softprompt train`
    /// does, writing the prompt (PEFT layout), task.json, metrics.jsonl and the checkpoint
    /// into `out`. Keyword arguments are the command line's flags, underscored, with its
    /// defaults, the method's included (`method` prompt, p-tuning or prefix,
    /// `prefix_projection`, `prefix_placement`, `encoder_reparameterization`,
    /// `encoder_hidden_size`, `encoder_num_layers`); multi-task training (`--task-data`,
    /// `--task-field`, `--task-config`) is the command line's only. `on_event(dict)` hears
    /// every step, evaluation, save and early stop. Ctrl-C ends the run after the step
    /// under way with its checkpoint written and raises KeyboardInterrupt (`resume=True`
    /// continues); during the last step or the final test evaluation, the run finishes
    /// (`Prompt.load(out)` reads its prompt) but still raises KeyboardInterrupt, the result
    /// discarded. Returns (summary dict, the kept Prompt).
    #[pyo3(
        signature = (train, out, dev=None, test=None, on_event=None, **kwargs),
        text_signature = "($self, train, out, dev=None, test=None, on_event=None, *, \
        prompt_len=20, method=\"prompt\", prefix_projection=False, prefix_placement=None, \
        encoder_reparameterization=None, encoder_hidden_size=None, \
        encoder_num_layers=None, init=\"random\", init_text=None, init_std=None, \
        init_vocab_first=None, optimizer=\"adamw\", lr=None, head_lr=None, \
        weight_decay=None, decay_rate=None, schedule=None, warmup_steps=0, \
        max_grad_norm=None, batch_size=32, eval_batch_size=None, epochs=1, \
        max_steps=None, eval_every=0, patience=None, save_every=50, log_every=10, seed=0, \
        recompute=\"none\", bucket_pool=50, no_progress=False, resume=False, \
        overwrite=False, task=None, template=None, labels=None, verbalizer=None, \
        pooling=None, free_targets=False, max_len=None, max_target_len=None, decode=None, \
        target_end=None, format=None, quoting=None, text_field=\"text\", \
        label_field=\"label\")"
    )]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        &self,
        py: Python<'py>,
        train: Bound<'py, PyAny>,
        #[pyo3(from_py_with = crate::paths::path)] out: PathBuf,
        dev: Option<Bound<'py, PyAny>>,
        test: Option<Bound<'py, PyAny>>,
        on_event: Option<Py<PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Bound<'py, PyDict>, PyPrompt)> {
        crate::train::train(self, py, train, out, dev, test, on_event, kwargs)
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({}, {}, d {}, on {})",
            self.inner.dir().display(),
            self.inner.arch(),
            self.inner.hidden_size(),
            self.inner.device_name()
        )
    }
}
