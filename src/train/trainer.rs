//! The trainer: its settings, the events it reports, and how a run starts, fresh or from its
//! checkpoint. The loop itself is in `run.rs`.

use super::checkpoint::{self, Checkpoint, TrainState, CHECKPOINT_FILE, METRICS_FILE};
use super::data;
use super::encode::Encoded;
use super::metrics::{EvalMetrics, MetricsLog};
use super::model::Model;
use super::optim::{OptimConfig, Optimizer};
use super::step::Params;
use super::task::Task;
use super::update::optimizer_shapes;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::models::Recompute;
use crate::prompt::{PromptInit, PromptTable};
use crate::rng::Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
        /// on resume on the same device, the CPU kernels (GEMM path and SIMD set) the
        /// checkpoint was trained with and this run's, when they differ: the numbers then
        /// follow another rounding
        kernels_changed: Option<(String, String)>,
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
    pub(super) be: &'a B,
    pub(super) model: &'a Model<B>,
    pub(super) task: &'a Task,
    pub(super) train: &'a Encoded,
    pub(super) dev: Option<&'a Encoded>,
    pub(super) test: Option<&'a Encoded>,
    pub cfg: TrainConfig,
    pub(super) out: PathBuf,
    pub params: Params<B>,
    /// PEFT facts of the prompt (init name and text) for saving
    pub(super) table: PromptTable,
    pub(super) opt: Optimizer<B>,
    pub state: TrainState,
    /// the best prompt and head so far
    pub(super) best: Option<(Vec<f32>, Option<HostClsHead>)>,
    pub(super) log: MetricsLog,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    pub(super) lens: Vec<usize>,
    pub(super) resumed_at: Option<u64>,
    /// for the metrics line: losses and tokens since the last line, and when it started
    pub(super) window: (f64, usize, usize, Instant),
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
            head: task.new_head(table.d).map(|h| h.upload(be)).transpose()?,
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
            .map(|mut h| -> Result<_> {
                h.weight = ck.get("head.weight")?.to_vec();
                h.bias = ck.get("head.bias")?.to_vec();
                h.upload(be)
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
        check_rows(model, train, cfg.prompt_len)?;
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
                let state = fresh_state(&cfg, &lens, config, hash);
                (state, None, MetricsLog::create(&metrics_path), None)
            }
            Some(ck) => {
                let (state, best) = resumed_state(be, ck, &mut opt, &params, config, hash, out)?;
                let log = MetricsLog::resume(&metrics_path, state.step)?;
                let at = Some(state.step);
                (state, best, log, at)
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
}

/// Fails on an empty training file, or on a row that does not fit next to the prompt.
fn check_rows<B: Backend>(model: &Model<B>, train: &Encoded, prompt_len: usize) -> Result<()> {
    if train.rows.is_empty() {
        return Err(Error::data(&train.path, 1, "no training rows"));
    }
    if let Some(limit) = model.max_tokens(prompt_len) {
        if let Some(r) = train.rows.iter().find(|r| r.ids.len() > limit) {
            return Err(Error::data(&train.path, r.line, format!("{} tokens + a prompt of {} exceed the model's positions: lower --max-len to {limit}", r.ids.len(), prompt_len)));
        }
    }
    Ok(())
}

/// A fresh run's state: step 0, the first epoch's plan drawn from `cfg.seed`.
fn fresh_state(cfg: &TrainConfig, lens: &[usize], config: Value, hash: String) -> TrainState {
    let mut rng = Rng::new(cfg.seed);
    let plan = data::epoch_plan(lens, cfg.batch_size, cfg.bucket_pool, &mut rng);
    TrainState {
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
        kernels: String::new(),
    }
}

/// The state of checkpoint `ck`, whose settings must hash to `hash`: the optimizer's state
/// goes into `opt`, and the best prompt (and head) so far comes back with the state.
#[allow(clippy::type_complexity)]
fn resumed_state<B: Backend>(
    be: &B,
    ck: Checkpoint,
    opt: &mut Optimizer<B>,
    params: &Params<B>,
    config: Value,
    hash: String,
    out: &Path,
) -> Result<(TrainState, Option<(Vec<f32>, Option<HostClsHead>)>)> {
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
                .map(|h| -> Result<HostClsHead> {
                    Ok(HostClsHead {
                        k: h.k,
                        c: h.c,
                        weight: ck.get("best.head.weight")?.to_vec(),
                        bias: ck.get("best.head.bias")?.to_vec(),
                    })
                })
                .transpose()?;
            Some((p.clone(), head))
        }
        None => None,
    };
    Ok((ck.state, best))
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
