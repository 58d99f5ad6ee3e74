//! The trainer: its settings, the events it reports, and how a run starts, fresh or from its
//! checkpoint (the checks, settings and state every run shares are in `start.rs`). The loop
//! itself is in `run.rs`.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{self, Checkpoint, TrainState, CHECKPOINT_FILE, METRICS_FILE};
use super::encode::Encoded;
use super::encoder::HostEncoder;
use super::metrics::{EvalMetrics, MetricsLog};
use super::model::Model;
use super::optim::{OptimConfig, OptimKind, Optimizer};
use super::outdir::{self, OutLock};
use super::ptuning::Method;
use super::rate_clock::RateClock;
use super::start::{
    check_rows, checkpoint_trained, fresh_state, fresh_trained, model_key, other_settings,
    precheck, resolve_init, resumed_state, settings_diff, settings_json, step_counts, InitFacts,
    Trained,
};
use super::step::Params;
use super::task::Task;
use super::update::new_optimizer;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::models::Recompute;
use crate::prompt::{PromptInit, PromptTable};
use serde_json::json;
use std::path::{Path, PathBuf};

/// How the trainer runs. Everything here except `log_every`, `threads`, `overwrite` and
/// `resume` shapes the numbers and goes into the checkpoint's settings hash. The defaults are
/// the command line's (`softprompt train --help`).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// prompt tuning, or P-tuning with its encoder's settings
    pub method: Method,
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
    /// batches per length-sorted pool, at most a quarter of an epoch's (1: no bucketing)
    pub bucket_pool: usize,
    /// rayon threads in use (results are bit-identical for the same count): a run records the
    /// count of the pool it runs on, whatever this says (it sizes no pool: the command line's
    /// `--threads` and Python's `Model(threads=N)` do)
    pub threads: usize,
    /// a fresh run replaces a run already in the output folder (its files only) instead of
    /// refusing; not a setting of the numbers
    pub overwrite: bool,
    /// continue from the output folder's checkpoint when there is one (the same settings
    /// needed; a finished run is re-scored); not a setting of the numbers
    pub resume: bool,
}

impl TrainConfig {
    /// Every setting in its range, the error naming its field (`cfg.batch_size`: the command
    /// line names the flag that sets it) and what it accepts (the optimizer's own settings:
    /// `OptimConfig::validate`).
    pub fn validate(&self) -> Result<()> {
        self.validate_run()?;
        at_least_1("cfg.prompt_len", self.prompt_len as u64)?;
        self.init.check()?;
        self.method.validate()?;
        self.method.check_init(&self.init)
    }

    /// The settings every task of a multi-task run shares (all but the prompt's length, init
    /// and method), each in its range: checked once for the run, not tagged with a task.
    pub(crate) fn validate_run(&self) -> Result<()> {
        at_least_1("cfg.batch_size", self.batch_size as u64)?;
        at_least_1("cfg.eval_batch_size", self.eval_batch_size as u64)?;
        at_least_1("cfg.bucket_pool", self.bucket_pool as u64)?;
        // --epochs 0 is nonsense even when --max-steps overrides it
        at_least_1("cfg.epochs", self.epochs)?;
        if let Some(n) = self.max_steps {
            at_least_1("cfg.max_steps", n)?;
        }
        if let Some(p) = self.patience {
            at_least_1("cfg.patience", p as u64)?;
        }
        self.optim.validate()
    }
}

impl TrainConfig {
    /// A warning when `--patience` can never end a run of `total` steps early: it evaluates
    /// on dev every `--eval-every` steps (0: every `steps_per_epoch`) and at its last step;
    /// the first evaluation sets the best, so the earliest stop comes `patience` evaluations
    /// after it, which must fall before the last. Legal, so not an error; the command prints
    /// it.
    pub fn patience_warning(&self, total: u64, steps_per_epoch: u64) -> Option<String> {
        let patience = u64::from(self.patience?);
        let every = match self.eval_every {
            0 => steps_per_epoch.max(1),
            n => n,
        };
        let evals = total.div_ceil(every);
        let how = match self.eval_every {
            0 => "at each epoch's end".to_string(),
            n => format!("every {n} steps (--eval-every)"),
        };
        (patience + 1 >= evals).then(|| {
            format!(
                "--patience {patience} never stops this run early: it evaluates on dev {evals} \
                 times in its {total} steps ({how} and at the last), and a stop comes \
                 {patience} evaluation{} after the first at the earliest",
                if patience == 1 { "" } else { "s" }
            )
        })
    }
}

impl TrainConfig {
    /// A warning when Adafactor would train a classifier head (`head`) at its prompt rate:
    /// Lester et al.'s 0.3 is for a prompt, and on the zero-initialised linear head each
    /// weight moves by about the rate every step, so the loss climbs (on MiniLM the dev
    /// accuracy falls from 0.66 to 0.51; with a head rate of 0.01 it trains). Legal, so not
    /// an error; the command prints it.
    pub fn head_lr_warning(&self, head: bool) -> Option<String> {
        let o = &self.optim;
        (head && o.kind == OptimKind::Adafactor && o.head_lr.is_none()).then(|| {
            format!(
                "--optimizer adafactor trains the cls head at --lr {} too: a rate for a prompt, \
                 too large for a linear head (its loss climbs); pass --head-lr 0.01, say",
                o.lr
            )
        })
    }
}

impl TrainConfig {
    /// A warning when a rate times `--weight-decay` is 1 or more: the decoupled decay
    /// (p ← p·(1 − lr·wd), AdamW's and Adafactor's) flips the prompt's sign or grows it each
    /// step, whatever the gradient, and the run's loss turned NaN a step later with advice
    /// (--max-grad-norm) that cannot help (hostile pass 28, F3). `head`: a cls head trains,
    /// at its own rate.
    pub fn decay_warning(&self, head: bool) -> Option<String> {
        let o = &self.optim;
        let head_lr = o.head_lr.filter(|_| head);
        let (flag, lr) = match head_lr {
            Some(h) if h > o.lr => ("--head-lr", h),
            _ => ("--lr", o.lr),
        };
        (lr * o.weight_decay >= 1.0).then(|| {
            format!(
                "{flag} {lr} times --weight-decay {} is {} (1 or more): each step's weight decay \
                 multiplies the weights by 1 - {flag} x --weight-decay, 0 or less, which zeroes \
                 them or flips their sign (and grows them past 2) whatever the gradient; lower \
                 either",
                o.weight_decay,
                lr * o.weight_decay
            )
        })
    }
}

/// `x` of `flag` is at least 1, else an error naming the flag.
fn at_least_1(flag: &str, x: u64) -> Result<()> {
    match x >= 1 {
        true => Ok(()),
        false => Err(Error::arg(flag, "is 0: expected at least 1")),
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Prompt,
            prompt_len: 20,
            init: PromptInit::Random { std: 1.0 },
            optim: OptimConfig::defaults(OptimKind::AdamW),
            batch_size: 32,
            eval_batch_size: 64,
            epochs: 1,
            max_steps: None,
            eval_every: 0,
            patience: None,
            save_every: 50,
            log_every: 10,
            seed: 0,
            recompute: Recompute::None,
            bucket_pool: 50,
            threads: rayon::current_num_threads(),
            overwrite: false,
            resume: false,
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
        /// the train loss summed since the last dev evaluation, and its steps: a resumed run's
        /// from its checkpoint, so that its next evaluation reports the loss of the same steps
        /// as an uninterrupted run (a fresh run, or a checkpoint written before it was
        /// recorded: 0 steps)
        eval_window: (f64, u64),
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
    /// when the step wrote a metrics.jsonl line (every `log_every` steps, and the last): that
    /// line's loss, the mean over the steps since the line before; `Trainer::step` alone
    /// writes none
    pub logged: Option<f64>,
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    /// the kept prompt's step: the best dev evaluation's, or without a dev split the last
    pub best_step: u64,
    pub best_dev: Option<EvalMetrics>,
    pub test: Option<EvalMetrics>,
    /// the patience ran out before the last step (at the last one, the run ended where it
    /// would anyway, though `Event::EarlyStop` says the patience ran out)
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
    /// P-tuning or a prefix projection: the encoder whose output `params.prompt` is, and the
    /// one that gave `best`
    pub(super) encoder: Option<HostEncoder>,
    pub(super) best_encoder: Option<HostEncoder>,
    pub(super) log: MetricsLog,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    pub(super) lens: Vec<usize>,
    pub(super) resumed_at: Option<u64>,
    /// the rates of the metrics line under way (`state.log_window`): the steps it timed
    pub(super) clock: RateClock,
    /// the step of the checkpoint on disk (None: none written by this trainer or resumed)
    pub(super) saved_step: Option<u64>,
    /// the output folder's lock, held while the trainer lives
    pub(super) _lock: OutLock,
}

/// What a run reads, borrowed for the trainer's life: the backend, the model, the task and
/// its encoded splits (train, dev, test).
type Inputs<'a, B> = (
    &'a B,
    &'a Model<B>,
    &'a Task,
    &'a Encoded,
    Option<&'a Encoded>,
    Option<&'a Encoded>,
);

/// Where a run starts: its trained tensors, fresh or read from the checkpoint.
struct Start<B: Backend> {
    trained: Trained<B>,
    /// the checkpoint a resumed run continues (None: a fresh run)
    ck: Option<Checkpoint>,
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
        precheck(be, model, task, train, [dev, test], &cfg)?;
        super::start::check_head_lr([task.spec.kind], &cfg)?;
        let mut cfg = cfg;
        cfg.init = resolve_init(&cfg.init, task, model)?;
        let start = Start {
            trained: fresh_trained(be, model, task, &cfg)?,
            ck: None,
        };
        Self::build((be, model, task, train, dev, test), cfg, out, start)
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
        precheck(be, model, task, train, [dev, test], &cfg)?;
        let mut cfg = cfg;
        cfg.init = resolve_init(&cfg.init, task, model)?;
        let path = out.join(CHECKPOINT_FILE);
        let ck = Checkpoint::load(&path)?;
        super::start::check_projection_width(&ck, &cfg.method, model, &path)?;
        // the settings that fix the tensors' shapes first, so that a checkpoint of another
        // run is named as such rather than by a shape, and the training rows, which its batch
        // plan indexes (another file of fewer rows was called a corrupt checkpoint; hostile
        // pass 24, F4); the full comparison is in `build`
        let shaping = json!({
            "model": model_key(&model.dir),
            "task": task.spec.to_json(),
            "train_rows": super::start::rows_hash(train),
            "prompt_len": cfg.prompt_len,
            "method": cfg.method.settings(cfg.prompt_len, encoder_width(&cfg.method, model)),
        });
        let diff = settings_diff(
            &json!({
                "model": ck.state.config.get("model"),
                "task": ck.state.config.get("task"),
                "train_rows": ck.state.config.get("train_rows"),
                "prompt_len": ck.state.config.get("prompt_len"),
                "method": ck.state.config.get("method"),
            }),
            &shaping,
        );
        if !diff.is_empty() {
            return Err(other_settings(out, &diff));
        }
        ck.state.check(&path, train.rows.len())?;
        let start = Start {
            trained: checkpoint_trained(be, model, task, &cfg, &ck)?,
            ck: Some(ck),
        };
        Self::build((be, model, task, train, dev, test), cfg, out, start)
    }

    /// The trainer of `run` from `start`: its optimizer, output folder, metrics and state.
    fn build(run: Inputs<'a, B>, cfg: TrainConfig, out: &Path, start: Start<B>) -> Result<Self> {
        let (be, model, task, train, dev, test) = run;
        let Start { trained, ck } = start;
        let Trained {
            params,
            table,
            encoder,
            best_encoder,
        } = trained;
        check_rows(model, train, cfg.prompt_len)?;
        let (steps_per_epoch, total_steps) = step_counts(&cfg, train.rows.len());
        let mut cfg = cfg;
        cfg.optim.schedule.total = total_steps;
        let mut opt = new_optimizer(be, cfg.optim, &params, encoder.as_ref())?;
        let config = settings_json(
            &cfg,
            task,
            (train, dev, test),
            model,
            InitFacts::of_table(&table),
        );
        let hash = checkpoint::fnv1a(&config.to_string());
        let lens = train.lens();
        // nothing is written before the folder is ours, and a fresh run replaces an earlier
        // one only when asked
        outdir::check_folder(out, "out", "`out`")?;
        let lock = OutLock::acquire(out)?;
        if ck.is_none() {
            outdir::prepare_fresh(out, cfg.overwrite, outdir::RunKind::SingleTask, &[])?;
        }
        let metrics_path = out.join(METRICS_FILE);
        let (state, best, log, resumed_at) = match ck {
            None => {
                let state = fresh_state(&cfg, &lens, config, hash);
                (state, None, MetricsLog::create(&metrics_path), None)
            }
            Some(ck) => {
                let (state, best) = resumed_state(
                    be,
                    ck,
                    &mut opt,
                    &params,
                    (config, hash),
                    (&cfg, train.rows.len()),
                    out,
                )?;
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
            encoder,
            best_encoder,
            log,
            total_steps,
            steps_per_epoch,
            lens,
            resumed_at,
            clock: RateClock::new(),
            saved_step: resumed_at,
            _lock: lock,
        })
    }

    /// Trainable parameters: the prompt's, and the head's.
    pub fn trainable(&self) -> (usize, usize) {
        trainable(&self.params, self.encoder.as_ref())
    }
}

/// Trainable parameters of `params`: the table's (or its host encoder's), and the head's.
pub(super) fn trainable<B: Backend>(
    params: &Params<B>,
    encoder: Option<&HostEncoder>,
) -> (usize, usize) {
    let prompt = match encoder {
        Some(e) => e.tensors().values().map(Vec::len).sum(),
        None => params.p * params.d,
    };
    (prompt, params.head.as_ref().map_or(0, |h| h.num_params()))
}

/// The width the method's encoder works at (`Method::encoder_width`).
pub(crate) fn encoder_width<B: Backend>(method: &Method, model: &Model<B>) -> usize {
    method.encoder_width(&model.net)
}

/// The trained table's width: the model's d, or under prefix tuning N·2·Hkv·D.
pub(crate) fn table_width<B: Backend>(method: &Method, model: &Model<B>) -> usize {
    match method {
        Method::Prefix(pre) => {
            let (blocks, kv) = model.net.prefix_layout(pre.placement);
            blocks * 2 * kv
        }
        _ => model.hidden_size(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(patience: Option<u32>, eval_every: u64) -> TrainConfig {
        TrainConfig {
            patience,
            eval_every,
            ..TrainConfig::default()
        }
    }

    /// Evaluations at steps 10, 20, 30 (and 35, the last): the first sets the best, so
    /// patience 2 can stop at step 30, before the end; patience 3 only at the last step.
    #[test]
    fn patience_warns_when_no_stop_can_come_before_the_last_step() {
        assert_eq!(cfg(Some(2), 10).patience_warning(35, 7), None);
        let w = cfg(Some(3), 10).patience_warning(35, 7).unwrap();
        assert!(
            w.starts_with("--patience 3 never stops this run early"),
            "{w}"
        );
        assert!(
            w.contains("4 times in its 35 steps (every 10 steps (--eval-every)"),
            "{w}"
        );
        assert_eq!(cfg(None, 10).patience_warning(35, 7), None);
        // each epoch: 3 epochs of 10 steps, 3 evaluations
        assert_eq!(cfg(Some(1), 0).patience_warning(30, 10), None);
        // hostile pass 28, F3
        let mut decay = cfg(None, 10);
        decay.optim.weight_decay = 0.5;
        decay.optim.lr = 1.0;
        assert_eq!(decay.decay_warning(false), None);
        decay.optim.lr = 2.0;
        let w = decay.decay_warning(false).unwrap();
        assert!(
            w.starts_with("--lr 2 times --weight-decay 0.5 is 1 (1 or more)"),
            "{w}"
        );
        (decay.optim.lr, decay.optim.head_lr) = (0.01, Some(4.0));
        assert_eq!(decay.decay_warning(false), None, "no head");
        let w = decay.decay_warning(true).unwrap();
        assert!(w.starts_with("--head-lr 4 times"), "{w}");
        let w = cfg(Some(2), 0).patience_warning(30, 10).unwrap();
        assert!(
            w.contains("3 times in its 30 steps (at each epoch's end"),
            "{w}"
        );
    }
}
