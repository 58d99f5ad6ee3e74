//! Training, evaluation and prediction on real data. The command line (`softprompt train`,
//! `eval`, `predict`) is a thin layer over this module.
//!
//! The pieces, in the order a run uses them:
//! - [`Model`]: a frozen model folder (BERT or T5) with its tokenizer;
//! - [`data::Dataset`]: a jsonl/tsv/csv file of texts and labels;
//! - [`Task`]: `pet`, `cls` or `seq2seq`, resolved against the tokenizer; it encodes rows,
//!   builds right-padded batches, and computes a batch's loss and prompt gradient
//!   ([`Task::loss_and_grad`]) or its per-label scores ([`Task::scores`]);
//! - [`optim::Optimizer`]: AdamW or Lester's Adafactor over the prompt (and the `cls` head);
//! - [`Trainer`]: the loop: bucketed deterministic batches, schedules, clipping, evaluation on
//!   a dev split, the best prompt, early stopping, metrics, atomic checkpoints and resume.
//!
//! One training step by hand, on the committed PET fixture:
//!
//! ```
//! use softprompt::{Backend, CpuBackend, backend::DType, rng::Rng, prompt::PromptInit};
//! use softprompt::models::Recompute;
//! use softprompt::train::{Model, Task, TaskSpec, TaskKind, Params, Grads, evaluate, predict_all};
//! use softprompt::train::{optimizer_shapes, optimizer_step};
//! use softprompt::train::checkpoint::{save_prompt_dir, load_prompt_dir};
//! use softprompt::train::data::{Dataset, DataSpec};
//! use softprompt::train::optim::{OptimConfig, Optimizer};
//!
//! let be = CpuBackend::<f32>::new();
//! let model = Model::load(&be, "tests/fixtures/bert_mlm".as_ref()).unwrap();
//! let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
//! spec.label_words = vec!["bad".into(), "great".into()];
//! spec.max_len = 48; // the fixture has 64 positions, and the prompt takes 4
//! let task = Task::new(spec, &model).unwrap();
//! let data = Dataset::parse("mem.jsonl".as_ref(),
//!     "{\"text\": \"The movie was great.\", \"label\": \"positive\"}\n\
//!      {\"text\": \"Terrible plot.\", \"label\": \"negative\"}\n", &DataSpec::default()).unwrap();
//! let enc = task.encode(&model.tokenizer, &data).unwrap();
//!
//! // a prompt of 4 rows, initialised from a text
//! let table = model.init_prompt(&be, 4, &PromptInit::Text("great movie".into()), &mut Rng::new(0)).unwrap();
//! let mut params = Params { prompt: be.upload(DType::F32, &table.data).unwrap(), p: 4, d: 48, head: None };
//!
//! // loss and prompt gradient of one batch
//! let batch = task.batch(&enc, &[0, 1]);
//! let mut grads = Grads::zeros(&be, &params).unwrap();
//! let loss = task.loss_and_grad(&be, &model, &params, &mut grads, &batch, Recompute::None).unwrap();
//! assert!(loss > 0.0);
//!
//! // one AdamW step (clipped to norm 1), then the loss is lower
//! let mut opt = Optimizer::new(&be, OptimConfig::adamw(0.05, 0.0), &optimizer_shapes(&params)).unwrap();
//! let (lr, grad_norm) = optimizer_step(&be, &mut opt, &mut params, grads, Some(1.0)).unwrap();
//! assert!(lr == 0.05 && grad_norm > 0.0);
//! let mut g2 = Grads::zeros(&be, &params).unwrap();
//! let loss2 = task.loss_and_grad(&be, &model, &params, &mut g2, &batch, Recompute::None).unwrap();
//! assert!(loss2 < loss, "{loss2} >= {loss}");
//!
//! // evaluate: accuracy and macro-F1, and per-row predictions with per-label scores
//! let (metrics, preds) = evaluate(&be, &model, &task, &params, &enc, 8).unwrap();
//! assert_eq!(metrics.examples, 2);
//! assert_eq!(preds[0].scores.len(), 2);
//!
//! // save (PEFT layout + task.json), load again, and predict the same
//! let out = std::env::temp_dir().join(format!("sp_doc_prompt_{}", std::process::id()));
//! let mut saved = table.clone();
//! saved.data = be.download(&params.prompt).unwrap();
//! let info = model.adapter_info(task.spec.kind.peft_task_type());
//! save_prompt_dir(&out, &saved, None, &task.spec, &model.dir, &info, serde_json::json!({})).unwrap();
//! let back = load_prompt_dir(&out).unwrap();
//! assert_eq!(back.prompt.data, saved.data);
//! assert_eq!(back.task.as_ref(), Some(&task.spec));
//! let reloaded = Params { prompt: be.upload(DType::F32, &back.prompt.data).unwrap(), p: 4, d: 48, head: back.head };
//! assert_eq!(predict_all(&be, &model, &task, &reloaded, &enc, 8).unwrap(), preds);
//! ```

pub mod checkpoint;
pub mod data;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod task;

pub use metrics::EvalMetrics;
pub use model::Model;
pub use task::{Batch, Decode, Encoded, Grads, Params, Prediction, Task, TaskKind, TaskSpec};

use crate::backend::{Backend, DType};
use crate::cuda::nvtx;
use crate::error::{Error, Result};
use crate::models::heads::ClsHead;
use crate::models::Recompute;
use crate::prompt::{PromptInit, PromptTable};
use crate::rng::Rng;
use checkpoint::{Checkpoint, TrainState, CHECKPOINT_FILE, METRICS_FILE};
use metrics::MetricsLog;
use optim::{OptimConfig, Optimizer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Scores every row of `enc` (in length order, `batch_size` rows at a time) and returns the
/// metrics against the gold labels with the predictions in file order. Rows without a label
/// are predicted but not counted.
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    params: &Params<B>,
    enc: &Encoded,
    batch_size: usize,
) -> Result<(EvalMetrics, Vec<Prediction>)> {
    let preds = predict_all(be, model, task, params, enc, batch_size)?;
    let (mut gold, mut pred) = (Vec::new(), Vec::new());
    if task.spec.free_targets {
        // exact match of the generated target; classes are the distinct target texts
        let mut ids: BTreeMap<Vec<i32>, usize> = BTreeMap::new();
        for (row, p) in enc.rows.iter().zip(&preds) {
            if row.target.is_empty() {
                continue;
            }
            let n = ids.len();
            gold.push(*ids.entry(row.target.clone()).or_insert(n));
            let n = ids.len();
            pred.push(*ids.entry(p.ids.clone()).or_insert(n));
        }
    } else {
        for (row, p) in enc.rows.iter().zip(&preds) {
            if let Some(g) = row.label {
                gold.push(g);
                // greedy output that is no label's target counts as wrong
                pred.push(p.class.unwrap_or(usize::MAX / 2));
            }
        }
        let k = task.spec.labels.len();
        for p in pred.iter_mut() {
            if *p >= k {
                *p = k; // one extra "none of the labels" class
            }
        }
    }
    Ok((metrics::classification_metrics(&gold, &pred), preds))
}

/// Predictions for every row of `enc`, in file order (batched in length order).
pub fn predict_all<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    params: &Params<B>,
    enc: &Encoded,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let mut order: Vec<u32> = (0..enc.rows.len() as u32).collect();
    order.sort_by_key(|&i| enc.rows[i as usize].ids.len());
    let mut out: Vec<Option<Prediction>> = vec![None; enc.rows.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let batch = task.batch(enc, chunk);
        for (&i, p) in chunk.iter().zip(task.predict(be, model, params, &batch)?) {
            out[i as usize] = Some(p);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The optimizer shapes for `params`: the prompt (P, d), then the `cls` head's weight
/// (K, d) and bias (1, K), in the order `optimizer_step` passes them.
pub fn optimizer_shapes<B: Backend>(params: &Params<B>) -> Vec<(&'static str, usize, usize, bool)> {
    let mut shapes = vec![("prompt", params.p, params.d, false)];
    if let Some(h) = &params.head {
        shapes.push(("head.weight", h.k, h.c, true));
        shapes.push(("head.bias", 1, h.k, true));
    }
    shapes
}

/// Clips the gradients to `max_grad_norm` (None: no clipping) and applies one optimizer
/// update to the prompt and the head. Returns the prompt's learning rate and the gradient
/// norm before clipping.
pub fn optimizer_step<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut Params<B>,
    grads: Grads<B>,
    max_grad_norm: Option<f64>,
) -> Result<(f64, f64)> {
    let mut gbufs = vec![grads.prompt];
    let mut pbufs = vec![be.zeros(DType::F32, 0)?];
    std::mem::swap(&mut pbufs[0], &mut params.prompt);
    if let Some(h) = &params.head {
        gbufs.push(be.upload(DType::F32, &grads.head_weight)?);
        gbufs.push(be.upload(DType::F32, &grads.head_bias)?);
        pbufs.push(be.upload(DType::F32, &h.weight)?);
        pbufs.push(be.upload(DType::F32, &h.bias)?);
    }
    let outcome = clip_and_update(be, opt, &mut pbufs, &mut gbufs, max_grad_norm);
    // the prompt goes back into `params` even when the update failed
    let mut pbufs = pbufs.into_iter();
    params.prompt = pbufs
        .next()
        .ok_or_else(|| Error::Device("prompt buffer lost".into()))?;
    let (lr, norm) = outcome?;
    if let Some(h) = params.head.as_mut() {
        h.weight = be.download(
            &pbufs
                .next()
                .ok_or_else(|| Error::Device("head buffer lost".into()))?,
        )?;
        h.bias = be.download(
            &pbufs
                .next()
                .ok_or_else(|| Error::Device("head buffer lost".into()))?,
        )?;
    }
    Ok((lr, norm))
}

fn clip_and_update<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut [B::Buf],
    grads: &mut [B::Buf],
    max_grad_norm: Option<f64>,
) -> Result<(f64, f64)> {
    let mut grefs: Vec<&mut B::Buf> = grads.iter_mut().collect();
    let norm = optim::clip_grad_norm(be, &mut grefs, max_grad_norm)?;
    let mut prefs: Vec<&mut B::Buf> = params.iter_mut().collect();
    let grefs: Vec<&B::Buf> = grads.iter().collect();
    Ok((opt.update(be, &mut prefs, &grefs)?, norm))
}

/// How the trainer runs. Everything here except `log_every` and `threads` shapes the numbers
/// and goes into the checkpoint's settings hash.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub prompt_len: usize,
    pub init: PromptInit,
    pub optim: OptimConfig,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// epochs to run (ignored when `max_steps` is set)
    pub epochs: u64,
    pub max_steps: Option<u64>,
    /// evaluate on dev every this many steps (0: at the end of each epoch)
    pub eval_every: u64,
    /// stop after this many evaluations without a better dev accuracy
    pub patience: Option<u32>,
    /// write the checkpoint every this many steps (and always at the end)
    pub save_every: u64,
    /// append a metrics line every this many steps
    pub log_every: u64,
    pub seed: u64,
    pub recompute: Recompute,
    /// batches per length-sorted pool (1: no bucketing)
    pub bucket_pool: usize,
    /// rayon threads in use (recorded; results are bit-identical for the same count)
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            prompt_len: 20,
            init: PromptInit::Random { std: 1.0 },
            optim: OptimConfig::adamw(0.03, 0.0),
            batch_size: 32,
            eval_batch_size: 64,
            epochs: 1,
            max_steps: None,
            eval_every: 0,
            patience: None,
            save_every: 100,
            log_every: 10,
            seed: 0,
            recompute: Recompute::None,
            bucket_pool: 50,
            threads: rayon::current_num_threads(),
        }
    }
}

/// What the trainer reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        total_steps: u64,
        steps_per_epoch: u64,
        resumed_at: Option<u64>,
        /// on resume on the CPU or emu, the threads the checkpoint was trained with and this
        /// run's, when they differ: the result is then not bit-identical to an uninterrupted run
        threads_changed: Option<(usize, usize)>,
        /// on resume, the device (and build of the kernels) the checkpoint was trained on and
        /// this run's, when they differ: the numbers then follow another rounding
        device_changed: Option<(String, String)>,
        prompt_params: usize,
        head_params: usize,
    },
    Step(StepInfo),
    Eval {
        step: u64,
        split: String,
        metrics: EvalMetrics,
        best: bool,
    },
    Saved {
        step: u64,
        path: PathBuf,
    },
    EarlyStop {
        step: u64,
        best_step: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub best_step: u64,
    pub best_dev: Option<EvalMetrics>,
    pub test: Option<EvalMetrics>,
    pub early_stopped: bool,
}

/// The training loop over one task and its splits; writes into `out`.
pub struct Trainer<'a, B: Backend> {
    be: &'a B,
    model: &'a Model<B>,
    task: &'a Task,
    train: &'a Encoded,
    dev: Option<&'a Encoded>,
    test: Option<&'a Encoded>,
    pub cfg: TrainConfig,
    out: PathBuf,
    pub params: Params<B>,
    /// PEFT facts of the prompt (init name and text) for saving
    table: PromptTable,
    opt: Optimizer<B>,
    pub state: TrainState,
    /// the best prompt and head so far
    best: Option<(Vec<f32>, Option<ClsHead>)>,
    log: MetricsLog,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    lens: Vec<usize>,
    resumed_at: Option<u64>,
    /// for the metrics line: losses and tokens since the last line, and when it started
    window: (f64, usize, usize, Instant),
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// A fresh run: initialises the prompt (and head) from `cfg.seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        be: &'a B,
        model: &'a Model<B>,
        task: &'a Task,
        train: &'a Encoded,
        dev: Option<&'a Encoded>,
        test: Option<&'a Encoded>,
        cfg: TrainConfig,
        out: &Path,
    ) -> Result<Self> {
        let init = match &cfg.init {
            PromptInit::ClassLabels { from_first, .. } => PromptInit::ClassLabels {
                label_ids: task.label_token_ids(&model.tokenizer)?,
                from_first: *from_first,
            },
            other => other.clone(),
        };
        // separate streams: the prompt's init, and the data order
        let mut init_rng = Rng::new(cfg.seed ^ 0x5052_4f4d_5054_u64);
        let table = model.init_prompt(be, cfg.prompt_len, &init, &mut init_rng)?;
        let params = Params {
            prompt: be.upload(DType::F32, &table.data)?,
            p: table.p,
            d: table.d,
            head: task.new_head(table.d),
        };
        Self::build(
            be, model, task, train, dev, test, cfg, out, params, table, None,
        )
    }

    /// Continues the run whose checkpoint is in `out`, bit for bit. Fails when the settings
    /// differ from the checkpoint's, naming them.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        be: &'a B,
        model: &'a Model<B>,
        task: &'a Task,
        train: &'a Encoded,
        dev: Option<&'a Encoded>,
        test: Option<&'a Encoded>,
        cfg: TrainConfig,
        out: &Path,
    ) -> Result<Self> {
        let path = out.join(CHECKPOINT_FILE);
        let ck = Checkpoint::load(&path)?;
        let prompt = ck.get("prompt")?.to_vec();
        let d = model.hidden_size();
        if prompt.len() != cfg.prompt_len * d {
            return Err(Error::file(
                &path,
                format!(
                    "the prompt holds {} values, expected P {} x d {d}",
                    prompt.len(),
                    cfg.prompt_len
                ),
            ));
        }
        let mut table = PromptTable::from_data(cfg.prompt_len, d, prompt.clone())?;
        table.init = ck
            .state
            .config
            .get("init")
            .and_then(|v| v.as_str())
            .unwrap_or("RANDOM")
            .to_string();
        table.init_text = ck
            .state
            .config
            .get("init_text")
            .and_then(|v| v.as_str())
            .map(String::from);
        let head = task
            .new_head(d)
            .map(|mut h| -> Result<ClsHead> {
                h.weight = ck.get("head.weight")?.to_vec();
                h.bias = ck.get("head.bias")?.to_vec();
                Ok(h)
            })
            .transpose()?;
        let params = Params {
            prompt: be.upload(DType::F32, &prompt)?,
            p: cfg.prompt_len,
            d,
            head,
        };
        Self::build(
            be,
            model,
            task,
            train,
            dev,
            test,
            cfg,
            out,
            params,
            table,
            Some(ck),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        be: &'a B,
        model: &'a Model<B>,
        task: &'a Task,
        train: &'a Encoded,
        dev: Option<&'a Encoded>,
        test: Option<&'a Encoded>,
        cfg: TrainConfig,
        out: &Path,
        params: Params<B>,
        table: PromptTable,
        ck: Option<Checkpoint>,
    ) -> Result<Self> {
        if train.rows.is_empty() {
            return Err(Error::data(&train.path, 1, "no training rows"));
        }
        if let Some(limit) = model.max_tokens(cfg.prompt_len) {
            if let Some(r) = train.rows.iter().find(|r| r.ids.len() > limit) {
                return Err(Error::data(&train.path, r.line, format!("{} tokens + a prompt of {} exceed the model's positions: lower --max-len to {limit}", r.ids.len(), cfg.prompt_len)));
            }
        }
        let steps_per_epoch = train.rows.len().div_ceil(cfg.batch_size.max(1)) as u64;
        let total_steps = cfg.max_steps.unwrap_or(cfg.epochs * steps_per_epoch);
        let mut cfg = cfg;
        cfg.optim.schedule.total = total_steps;
        let mut opt = Optimizer::new(be, cfg.optim, &optimizer_shapes(&params))?;
        let config = settings_json(&cfg, task, train, model, &table);
        let hash = checkpoint::fnv1a(&config.to_string());
        let lens = train.lens();
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let metrics_path = out.join(METRICS_FILE);
        let (state, best, log, resumed_at) = match ck {
            None => {
                let mut rng = Rng::new(cfg.seed);
                let plan = data::epoch_plan(&lens, cfg.batch_size, cfg.bucket_pool, &mut rng);
                let state = TrainState {
                    format: checkpoint::CHECKPOINT_FORMAT,
                    step: 0,
                    epoch: 1,
                    plan,
                    pos: 0,
                    rng,
                    best: None,
                    best_test: None,
                    best_step: 0,
                    evals_since_best: 0,
                    done: false,
                    config_hash: hash,
                    config,
                    threads: cfg.threads,
                    device: String::new(),
                };
                (state, None, MetricsLog::create(&metrics_path), None)
            }
            Some(ck) => {
                if ck.state.config_hash != hash {
                    let diff = checkpoint::config_diff(&ck.state.config, &config);
                    return Err(Error::file(out.join(CHECKPOINT_FILE), format!("the checkpoint was written with other settings; resume with the same flags, or train into a new --out. Differences: {}", diff.join("; "))));
                }
                opt.load_state(be, ck.state.step, &|n| ck.get(n).map(|d| d.to_vec()))?;
                let best = match ck.tensors.get("best.prompt") {
                    Some((_, p)) => {
                        let head = params
                            .head
                            .as_ref()
                            .map(|h| -> Result<ClsHead> {
                                Ok(ClsHead {
                                    weight: ck.get("best.head.weight")?.to_vec(),
                                    bias: ck.get("best.head.bias")?.to_vec(),
                                    ..h.clone()
                                })
                            })
                            .transpose()?;
                        Some((p.clone(), head))
                    }
                    None => None,
                };
                let log = MetricsLog::resume(&metrics_path, ck.state.step)?;
                let at = Some(ck.state.step);
                (ck.state, best, log, at)
            }
        };
        Ok(Trainer {
            be,
            model,
            task,
            train,
            dev,
            test,
            cfg,
            out: out.to_path_buf(),
            params,
            table,
            opt,
            state,
            best,
            log,
            total_steps,
            steps_per_epoch,
            lens,
            resumed_at,
            window: (0.0, 0, 0, Instant::now()),
        })
    }

    /// Trainable parameters: the prompt's, and the head's.
    pub fn trainable(&self) -> (usize, usize) {
        (
            self.params.p * self.params.d,
            self.params.head.as_ref().map_or(0, |h| h.num_params()),
        )
    }

    /// One optimizer step on the next batch of the plan.
    pub fn step(&mut self) -> Result<StepInfo> {
        let be = self.be;
        let step = self.state.step + 1;
        let _range = nvtx::enabled().then(|| nvtx::Range::push(&format!("train step {step}")));
        if self.state.pos >= self.state.plan.len() {
            self.state.epoch += 1;
            self.state.plan = data::epoch_plan(
                &self.lens,
                self.cfg.batch_size,
                self.cfg.bucket_pool,
                &mut self.state.rng,
            );
            self.state.pos = 0;
        }
        let rows = self.state.plan[self.state.pos].clone();
        self.state.pos += 1;
        let batch = self.task.batch(self.train, &rows);
        let mut grads = Grads::zeros(be, &self.params)?;
        let loss = self.task.loss_and_grad(
            be,
            self.model,
            &self.params,
            &mut grads,
            &batch,
            self.cfg.recompute,
        )?;
        if !loss.is_finite() {
            return Err(Error::Device(format!(
                "the loss is {loss} at step {}: lower --lr or set --max-grad-norm",
                self.state.step + 1
            )));
        }
        let (lr, grad_norm) = optimizer_step(
            be,
            &mut self.opt,
            &mut self.params,
            grads,
            self.cfg.optim.max_grad_norm,
        )?;
        self.state.step += 1;
        Ok(StepInfo {
            step: self.state.step,
            epoch: self.state.epoch,
            loss,
            lr,
            grad_norm,
            tokens: batch.real_tokens,
        })
    }

    /// Evaluates the current prompt on `enc`.
    pub fn evaluate(&self, enc: &Encoded) -> Result<EvalMetrics> {
        Ok(evaluate(
            self.be,
            self.model,
            self.task,
            &self.params,
            enc,
            self.cfg.eval_batch_size,
        )?
        .0)
    }

    fn is_eval_step(&self) -> bool {
        let s = self.state.step;
        if self.cfg.eval_every > 0 {
            s % self.cfg.eval_every == 0
        } else {
            s % self.steps_per_epoch == 0
        }
    }

    /// Runs to the end (all steps, or early stopping), reporting through `on_event`.
    pub fn run(&mut self, on_event: &mut dyn FnMut(&Event)) -> Result<Summary> {
        let (pp, hp) = self.trainable();
        // on a GPU the host's thread count does not enter the numbers
        let on_gpu = self.be.name().starts_with("cuda");
        let threads_changed =
            (self.resumed_at.is_some() && !on_gpu && self.state.threads != self.cfg.threads)
                .then_some((self.state.threads, self.cfg.threads));
        let device = self.be.name();
        let device_changed = (self.resumed_at.is_some()
            && !self.state.device.is_empty()
            && self.state.device != device)
            .then(|| (self.state.device.clone(), device.clone()));
        // later checkpoints record the count and the device that wrote them
        self.state.threads = self.cfg.threads;
        self.state.device = device;
        on_event(&Event::Started {
            total_steps: self.total_steps,
            steps_per_epoch: self.steps_per_epoch,
            resumed_at: self.resumed_at,
            threads_changed,
            device_changed,
            prompt_params: pp,
            head_params: hp,
        });
        if self.resumed_at.is_some() {
            // the exported prompt may be older than the checkpoint if a run died in between
            self.export()?;
        }
        self.window = (0.0, 0, 0, Instant::now());
        let mut early = false;
        while !self.state.done && self.state.step < self.total_steps {
            let info = self.step()?;
            self.window.0 += info.loss;
            self.window.1 += 1;
            self.window.2 += info.tokens;
            on_event(&Event::Step(info.clone()));
            if self.cfg.log_every > 0 && info.step % self.cfg.log_every == 0 {
                self.log_line(&info)?;
            }
            let last = self.state.step == self.total_steps;
            if self.is_eval_step() || last {
                early = self.eval_and_keep(on_event)?;
                if early {
                    self.state.done = true;
                }
            }
            if last {
                self.state.done = true;
            }
            if self.state.done
                || (self.cfg.save_every > 0 && self.state.step % self.cfg.save_every == 0)
            {
                if self.state.done || self.dev.is_none() {
                    self.export()?;
                }
                self.save_checkpoint()?;
                on_event(&Event::Saved {
                    step: self.state.step,
                    path: self.out.join(CHECKPOINT_FILE),
                });
            }
        }
        if self.state.step == 0 {
            self.export()?;
        }
        if early {
            on_event(&Event::EarlyStop {
                step: self.state.step,
                best_step: self.state.best_step,
            });
        }
        // the test split, scored with the prompt that was kept (already done at its step
        // when the run had a dev split)
        let test = match self.test {
            Some(t) => {
                let m = match (self.dev, self.state.best_test) {
                    (Some(_), Some(m)) => m,
                    _ => {
                        let kept = self.kept_params()?;
                        evaluate(
                            self.be,
                            self.model,
                            self.task,
                            &kept,
                            t,
                            self.cfg.eval_batch_size,
                        )?
                        .0
                    }
                };
                let step = if self.dev.is_some() {
                    self.state.best_step
                } else {
                    self.state.step
                };
                on_event(&Event::Eval {
                    step,
                    split: "test (kept prompt)".into(),
                    metrics: m,
                    best: false,
                });
                Some(m)
            }
            None => None,
        };
        Ok(Summary {
            steps: self.state.step,
            best_step: self.state.best_step,
            best_dev: self.state.best,
            test,
            early_stopped: early,
        })
    }

    fn log_line(&mut self, info: &StepInfo) -> Result<()> {
        let (sum, n, tokens, t0) = self.window;
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        self.log.append(&json!({
            "step": info.step, "epoch": info.epoch, "loss": sum / n.max(1) as f64, "lr": info.lr,
            "grad_norm": info.grad_norm, "steps_per_s": n as f64 / secs, "tokens_per_s": tokens as f64 / secs,
        }))?;
        self.window = (0.0, 0, 0, Instant::now());
        Ok(())
    }

    /// Dev (and test) evaluation at this step; keeps the prompt when dev accuracy improves.
    /// Returns true when early stopping triggers.
    fn eval_and_keep(&mut self, on_event: &mut dyn FnMut(&Event)) -> Result<bool> {
        let step = self.state.step;
        let Some(dev) = self.dev else {
            return Ok(false);
        };
        let m = self.evaluate(dev)?;
        let better = self.state.best.map_or(true, |b| m.accuracy > b.accuracy);
        if better {
            self.state.best = Some(m);
            self.state.best_step = step;
            self.state.evals_since_best = 0;
            self.best = Some((
                self.be.download(&self.params.prompt)?,
                self.params.head.clone(),
            ));
            self.export()?;
        } else {
            self.state.evals_since_best += 1;
        }
        self.log.append(&json!({"step": step, "split": "dev", "accuracy": m.accuracy, "macro_f1": m.macro_f1, "examples": m.examples, "best": better}))?;
        on_event(&Event::Eval {
            step,
            split: "dev".into(),
            metrics: m,
            best: better,
        });
        if let Some(t) = self.test {
            let tm = self.evaluate(t)?;
            if better {
                self.state.best_test = Some(tm);
            }
            self.log.append(&json!({"step": step, "split": "test", "accuracy": tm.accuracy, "macro_f1": tm.macro_f1, "examples": tm.examples}))?;
            on_event(&Event::Eval {
                step,
                split: "test".into(),
                metrics: tm,
                best: false,
            });
        }
        Ok(self
            .cfg
            .patience
            .is_some_and(|p| self.state.evals_since_best >= p))
    }

    /// The prompt that is kept: the best on dev, or the current one without a dev split.
    fn kept_params(&self) -> Result<Params<B>> {
        let (prompt, head) = match (&self.best, self.dev) {
            (Some((p, h)), Some(_)) => (p.clone(), h.clone()),
            _ => (
                self.be.download(&self.params.prompt)?,
                self.params.head.clone(),
            ),
        };
        Ok(Params {
            prompt: self.be.upload(DType::F32, &prompt)?,
            p: self.params.p,
            d: self.params.d,
            head,
        })
    }

    /// Writes the kept prompt into the output folder (PEFT files, task.json, head).
    pub fn export(&mut self) -> Result<()> {
        let kept = self.kept_params()?;
        let mut table = self.table.clone();
        table.data = self.be.download(&kept.prompt)?;
        let extra = json!({
            "step": if self.dev.is_some() && self.best.is_some() { self.state.best_step } else { self.state.step },
            "dev_accuracy": self.state.best.map(|m| m.accuracy),
            "seed": self.cfg.seed,
        });
        checkpoint::save_prompt_dir(
            &self.out,
            &table,
            kept.head.as_ref(),
            &self.task.spec,
            &self.model.dir,
            &self
                .model
                .adapter_info(self.task.spec.kind.peft_task_type()),
            extra,
        )
    }

    /// Writes `checkpoint.safetensors` atomically.
    pub fn save_checkpoint(&self) -> Result<()> {
        let be = self.be;
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "prompt".to_string(),
            (
                vec![self.params.p, self.params.d],
                be.download(&self.params.prompt)?,
            ),
        );
        if let Some(h) = &self.params.head {
            tensors.insert("head.weight".into(), (vec![h.k, h.c], h.weight.clone()));
            tensors.insert("head.bias".into(), (vec![h.k], h.bias.clone()));
        }
        for (name, shape, data) in self.opt.state(be)? {
            tensors.insert(name, (shape, data));
        }
        if let Some((p, h)) = &self.best {
            tensors.insert(
                "best.prompt".into(),
                (vec![self.params.p, self.params.d], p.clone()),
            );
            if let Some(h) = h {
                tensors.insert(
                    "best.head.weight".into(),
                    (vec![h.k, h.c], h.weight.clone()),
                );
                tensors.insert("best.head.bias".into(), (vec![h.k], h.bias.clone()));
            }
        }
        Checkpoint {
            state: self.state.clone(),
            tensors,
        }
        .save(&self.out.join(CHECKPOINT_FILE))
    }
}

/// The settings that shape the numbers, as one JSON object (hashed into checkpoints).
fn settings_json<B: Backend>(
    cfg: &TrainConfig,
    task: &Task,
    train: &Encoded,
    model: &Model<B>,
    table: &PromptTable,
) -> Value {
    let o = &cfg.optim;
    // the training rows themselves, so that a changed file is noticed
    let mut rows = String::new();
    for r in &train.rows {
        rows.push_str(&format!(
            "{:?}{:?}{:?}{};",
            r.ids, r.label, r.target, r.mask_pos
        ));
    }
    json!({
        "model": model.dir.display().to_string(),
        "task": task.spec.to_json(),
        "train_rows": checkpoint::fnv1a(&rows),
        "prompt_len": cfg.prompt_len,
        "init": table.init,
        "init_text": table.init_text,
        "init_spec": format!("{:?}", cfg.init),
        "optimizer": o.kind.name(),
        "lr": o.lr, "head_lr": o.head_lr, "weight_decay": o.weight_decay,
        "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps, "decay_rate": o.decay_rate, "clip_threshold": o.clip_threshold,
        "schedule": format!("{:?}", o.schedule.kind), "warmup": o.schedule.warmup,
        "max_grad_norm": o.max_grad_norm,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs, "max_steps": cfg.max_steps,
        "eval_every": cfg.eval_every, "patience": cfg.patience,
        "seed": cfg.seed,
        "recompute": format!("{:?}", cfg.recompute),
        "bucket_pool": cfg.bucket_pool,
    })
}
