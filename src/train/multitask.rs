//! Several prompts trained at once on one frozen model (#17 item 2): each task keeps what a
//! single-task run keeps (its own plan drawn from its seed, its own optimizer and schedule,
//! dev evaluation, best prompt and early stopping), and each step runs one batch of every task
//! still training through `mixed::step_mixed` (one encoder pass per prompt length). So each
//! task follows the trajectory of its own `Trainer` run up to the rounding of the mixed batch,
//! and a run of one task is that run bit for bit. Each task has its own method (prompt
//! tuning, P-tuning or prefix tuning: its `cfg.method`), and starts, as its `Trainer` would,
//! from `start::fresh_trained` or `start::checkpoint_trained` (its table, head and host
//! encoder). How a run starts, fresh or from its checkpoint, is here; the loop is in `multitask_run.rs`, the checkpoint file in
//! `multitask_ckpt.rs`.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{self, Checkpoint, TrainState, CHECKPOINT_FILE, METRICS_FILE};
use super::encode::Encoded;
use super::encoder::HostEncoder;
use super::metrics::MetricsLog;
use super::model::Model;
use super::multitask_ckpt::MultiCheckpoint;
use super::optim::Optimizer;
use super::outdir::{self, OutLock};
use super::rate_clock::RateClock;
use super::save::Best;
use super::start::{self, Trained};
use super::step::Params;
use super::task::Task;
use super::trainer::TrainConfig;
use super::update::new_optimizer;
use crate::backend::Backend;
use crate::error::{BatchSetting, Error, Result};
use crate::prompt::PromptTable;
use std::path::{Path, PathBuf};

/// One task of a multi-task run, as the caller hands it: a name (its folder under the output
/// folder), the task, its splits and its settings (the shape of the numbers: prompt length,
/// init, optimizer, batch size, steps, evaluation, seed; `log_every`, `save_every`,
/// `overwrite` and `resume` are the run's).
pub struct TaskJob<'a> {
    pub name: String,
    pub task: &'a Task,
    pub train: &'a Encoded,
    pub dev: Option<&'a Encoded>,
    pub test: Option<&'a Encoded>,
    pub cfg: TrainConfig,
}

/// A task's part of the run: what a single-task `Trainer` holds for its task.
pub struct TaskRun<'a, B: Backend> {
    pub name: String,
    pub(super) task: &'a Task,
    pub(super) train: &'a Encoded,
    pub(super) dev: Option<&'a Encoded>,
    pub(super) test: Option<&'a Encoded>,
    /// its settings, the schedule's length set to its steps
    pub cfg: TrainConfig,
    /// its table (a prompt, or a prefix) and head
    pub params: Params<B>,
    /// the table's PEFT facts (init name and text)
    pub(super) table: PromptTable,
    /// P-tuning or a prefix projection: the encoder whose output `params.prompt` is, and the
    /// one that gave `best`
    pub(super) encoder: Option<HostEncoder>,
    pub(super) best_encoder: Option<HostEncoder>,
    pub(super) opt: Optimizer<B>,
    /// its step, epoch, plan, RNG, best and patience, as a single-task checkpoint holds them
    pub state: TrainState,
    /// the best table and head so far
    pub(super) best: Option<Best>,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    pub(super) lens: Vec<usize>,
}

impl<B: Backend> TaskRun<'_, B> {
    /// Still training: not stopped early and steps left.
    pub fn active(&self) -> bool {
        !self.state.done && self.state.step < self.total_steps
    }

    /// Its folder under the run's output folder.
    pub(super) fn dir(&self, out: &Path) -> PathBuf {
        out.join(&self.name)
    }
}

/// The multi-task loop over `tasks`; writes into `out` (one folder per task, one checkpoint
/// and one metrics.jsonl for the run).
pub struct MultiTrainer<'a, B: Backend> {
    pub(super) be: &'a B,
    pub(super) model: &'a Model<B>,
    pub tasks: Vec<TaskRun<'a, B>>,
    pub(super) out: PathBuf,
    /// `log_every`, `save_every`, `threads`: the run's
    pub(super) run: TrainConfig,
    /// steps taken by the run (the most any task took)
    pub step: u64,
    pub(super) log: MetricsLog,
    pub(super) resumed_at: Option<u64>,
    /// each task's rates of its metrics line under way: the steps it timed
    pub(super) clocks: Vec<RateClock>,
    pub(super) saved_step: Option<u64>,
    /// `out`'s lock, and each task folder's (a single-task run into one is refused)
    pub(super) _locks: (OutLock, Vec<OutLock>),
}

/// A task name: a folder name of letters, digits, `-`, `_` and `.` (not `.` or `..`), and
/// not the name of a file the run writes into --out (`metrics.jsonl`: the task's folder and
/// the run's file would be one path).
pub fn check_name(name: &str) -> Result<()> {
    if !crate::fsutil::is_folder_name(name) {
        return Err(Error::arg(
            "task name",
            format!(
                "{name:?}: expected letters, digits, '-', '_' or '.', and not `.` or `..` \
                 alone (it names the task's folder under `out`)"
            ),
        ));
    }
    // in any case: `Metrics.jsonl` is metrics.jsonl on a case-insensitive file system
    let run_file = |f: &&str| f.eq_ignore_ascii_case(name);
    if outdir::RUN_FILES.iter().any(run_file) || run_file(&outdir::LOCK_FILE) {
        return Err(Error::arg(
            "task name",
            format!(
                "{name:?} is the name of a file the run writes into `out`; the task's folder \
                 would be that path: name the task otherwise"
            ),
        ));
    }
    Ok(())
}

/// `e` with the task it came from named (the flag or file it names stays).
pub(super) fn in_task(name: &str, e: Error) -> Error {
    e.tagged(&format!("task `{name}`"))
}

/// The names: at least one task, each a folder name, none twice.
fn check_names(jobs: &[TaskJob<'_>]) -> Result<()> {
    if jobs.is_empty() {
        return Err(Error::arg(
            "tasks",
            "none given: expected at least one task",
        ));
    }
    for j in jobs {
        check_name(&j.name)?;
    }
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    check_distinct_names(&names)
}

/// No name twice, nor two that differ only in case (`x`, `X`): their folders under --out are
/// one folder on a case-insensitive file system (macOS, Windows), where one task's files
/// overwrote the other's.
pub fn check_distinct_names(names: &[&str]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        let folded = name.to_lowercase();
        let Some(other) = (names.iter().take(i)).find(|k| k.to_lowercase() == folded) else {
            continue;
        };
        let msg = match other == name {
            true => format!("`{name}` is given twice: each task needs its own name"),
            false => format!(
                "`{other}` and `{name}` differ only in case: their folders under `out` would \
                 be one folder on a case-insensitive file system (macOS, Windows): name them \
                 apart"
            ),
        };
        return Err(Error::arg("task name", msg));
    }
    Ok(())
}

/// Each task's settings checked (`Trainer`'s checks, the task named).
fn precheck_all<B: Backend>(
    be: &B,
    model: &Model<B>,
    jobs: &[TaskJob<'_>],
    run: &TrainConfig,
) -> Result<()> {
    check_names(jobs)?;
    // the run's own settings (--patience 0) were tagged with the first task
    run.validate_run()?;
    for j in jobs {
        start::precheck(be, model, j.task, j.train, [j.dev, j.test], &j.cfg)
            .and_then(|()| start::check_rows(model, j.train, j.cfg.prompt_len))
            .map_err(|e| in_task(&j.name, e))?;
    }
    // a step holds one batch of every task at once
    let rows: usize = jobs
        .iter()
        .map(|j| j.cfg.batch_size.min(j.train.rows.len()))
        .sum();
    let longest = |j: &TaskJob<'_>| {
        let ids = j.train.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let target = j
            .train
            .rows
            .iter()
            .map(|r| r.target.len())
            .max()
            .unwrap_or(0);
        (j.cfg.prompt_len + ids, target)
    };
    let tokens = jobs.iter().map(|j| longest(j).0).max().unwrap_or(0);
    let target = jobs.iter().map(|j| longest(j).1).max().unwrap_or(0);
    model.check_step_memory(be, rows, tokens, target, BatchSetting::Train)
}

impl<'a, B: Backend> MultiTrainer<'a, B> {
    /// A fresh run: each task's prompt (and head) initialised from its `cfg.seed`, as a
    /// single-task run of it would be.
    pub fn new(
        be: &'a B,
        model: &'a Model<B>,
        jobs: Vec<TaskJob<'a>>,
        run: TrainConfig,
        out: &Path,
    ) -> Result<Self> {
        precheck_all(be, model, &jobs, &run)?;
        start::check_head_lr(jobs.iter().map(|j| j.task.spec.kind), &run)?;
        // every init resolved, every prompt made (and refused: class labels that are not the
        // task's, or tokenize to nothing; --init-vocab-first past the vocabulary) and its
        // optimizer allocated before the lock and the folders: a refused run leaves an
        // earlier run's files alone
        let mut tasks = Vec::with_capacity(jobs.len());
        for mut j in jobs {
            let name = j.name.clone();
            let in_this = |e| in_task(&name, e);
            j.cfg.init = start::resolve_init(&j.cfg.init, j.task, model).map_err(in_this)?;
            let trained = start::fresh_trained(be, model, j.task, &j.cfg).map_err(in_this)?;
            tasks.push(task_run(be, model, j, trained).map_err(in_this)?);
        }
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        outdir::check_task_folders(out, &names)?;
        let lock = lock_out(out)?;
        let kind = outdir::RunKind::MultiTask;
        let task_locks = outdir::prepare_fresh(out, run.overwrite, kind, &names)?;
        let log = MetricsLog::create(&out.join(METRICS_FILE));
        let locks = (lock, task_locks);
        Ok(Self::assemble(be, model, tasks, run, out, log, None, locks))
    }

    /// Continues the run whose checkpoint is in `out`, bit for bit. Fails when the task list
    /// or a task's settings differ from the checkpoint's, naming them.
    pub fn resume(
        be: &'a B,
        model: &'a Model<B>,
        jobs: Vec<TaskJob<'a>>,
        run: TrainConfig,
        out: &Path,
    ) -> Result<Self> {
        precheck_all(be, model, &jobs, &run)?;
        let path = out.join(CHECKPOINT_FILE);
        let mut ck = MultiCheckpoint::load(&path)?;
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        ck.check_names(&path, &names)?;
        outdir::check_task_folders(out, &names)?;
        let lock = lock_out(out)?;
        for &n in &names {
            outdir::check_resumed_task_folder(&out.join(n)).map_err(|e| in_task(n, e))?;
        }
        // dropped on a refusal below: the folders it made go again (review 21, R21-2)
        let task_locks = outdir::lock_task_folders(out, &names)?;
        let mut parts = Vec::with_capacity(jobs.len());
        for mut j in jobs {
            let part = ck.take(&path, &j.name)?;
            start::check_projection_width(&part, &j.cfg.method, model, &path)
                .map_err(|e| in_task(&j.name, e))?;
            j.cfg.init = start::resolve_init(&j.cfg.init, j.task, model)?;
            parts.push((j, part));
        }
        let diffs = (parts.iter())
            .map(|(j, part)| (j.name.as_str(), task_diff(model, j, part)))
            .collect::<Vec<_>>();
        if let Some(e) = other_settings(&path, &diffs) {
            return Err(e);
        }
        let mut tasks = Vec::new();
        for (j, part) in parts {
            tasks.push(resume_task(be, model, j, part, out)?);
        }
        let log = MetricsLog::resume(&out.join(METRICS_FILE), ck.step)?;
        let step = ck.step;
        Ok(Self::assemble(
            be,
            model,
            tasks,
            run,
            out,
            log,
            Some(step),
            (lock, task_locks.keep()),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        be: &'a B,
        model: &'a Model<B>,
        tasks: Vec<TaskRun<'a, B>>,
        run: TrainConfig,
        out: &Path,
        log: MetricsLog,
        resumed_at: Option<u64>,
        (lock, task_locks): (OutLock, Vec<OutLock>),
    ) -> Self {
        MultiTrainer {
            be,
            model,
            step: resumed_at.unwrap_or(0),
            tasks,
            out: out.to_path_buf(),
            run,
            log,
            resumed_at,
            clocks: Vec::new(),
            saved_step: resumed_at,
            _locks: (lock, task_locks),
        }
    }
}

/// The output folder refused when it is a model's, then locked.
fn lock_out(out: &Path) -> Result<OutLock> {
    outdir::check_folder(out, "out", "`out`")?;
    OutLock::acquire(out)
}

/// A task's run around what it trains: its steps, optimizer, settings (hashed into a fresh
/// state, its first epoch's plan drawn from its seed; a resumed run replaces it).
fn task_run<'a, B: Backend>(
    be: &B,
    model: &Model<B>,
    j: TaskJob<'a>,
    trained: Trained<B>,
) -> Result<TaskRun<'a, B>> {
    let (steps_per_epoch, total_steps) = start::step_counts(&j.cfg, j.train.rows.len());
    let mut cfg = j.cfg;
    cfg.optim.schedule.total = total_steps;
    let opt = new_optimizer(be, cfg.optim, &trained.params, trained.encoder.as_ref())?;
    let config = start::settings_json(
        &cfg,
        j.task,
        (j.train, j.dev, j.test),
        model,
        start::InitFacts::of_table(&trained.table),
    );
    let hash = checkpoint::fnv1a(&config.to_string());
    let lens = j.train.lens();
    let state = start::fresh_state(&cfg, &lens, config, hash);
    Ok(TaskRun {
        name: j.name,
        task: j.task,
        train: j.train,
        dev: j.dev,
        test: j.test,
        cfg,
        params: trained.params,
        table: trained.table,
        encoder: trained.encoder,
        best_encoder: trained.best_encoder,
        opt,
        state,
        best: None,
        total_steps,
        steps_per_epoch,
        lens,
    })
}

/// A task's settings against its part of the checkpoint (`ck`): what differs, none when
/// they hash alike. `j`'s init is resolved.
fn task_diff<B: Backend>(model: &Model<B>, j: &TaskJob<'_>, ck: &Checkpoint) -> Vec<String> {
    let facts = start::InitFacts::of_checkpoint(ck);
    let config = start::settings_json(&j.cfg, j.task, (j.train, j.dev, j.test), model, facts);
    match ck.state.config_hash == checkpoint::fnv1a(&config.to_string()) {
        true => Vec::new(),
        false => start::settings_diff(&ck.state.config, &config),
    }
}

/// The refusal of a resume whose tasks' settings differ from the checkpoint's (`diffs`, each
/// task's): a difference every task has is the run's (a flag of the command line), named
/// once, the others by task; a changed --lr was blamed on the first task alone (hostile pass
/// 25, F7). None when nothing differs.
fn other_settings(path: &Path, diffs: &[(&str, Vec<String>)]) -> Option<Error> {
    let every = |d: &String| diffs.len() > 1 && diffs.iter().all(|(_, ds)| ds.contains(d));
    let run: Vec<&str> = (diffs.first().into_iter())
        .flat_map(|(_, ds)| ds.iter().filter(|d| every(d)).map(String::as_str))
        .collect();
    let mut named = Vec::new();
    if !run.is_empty() {
        named.push(format!("every task: {}", run.join("; ")));
    }
    for (name, ds) in diffs {
        let own: Vec<&str> = ds
            .iter()
            .filter(|d| !every(d))
            .map(String::as_str)
            .collect();
        if !own.is_empty() {
            named.push(format!("task `{name}`: {}", own.join("; ")));
        }
    }
    (!named.is_empty()).then(|| {
        Error::file(
            path,
            format!(
                "the run was trained with other settings; resume with the same flags and \
                 tasks file, or train into a new `out`. Differences: {}",
                named.join("; ")
            ),
        )
    })
}

/// A task's run from its part of the checkpoint (`ck`, its tensors without the task's
/// prefix), whose settings `task_diff` found the same. `j`'s init is resolved.
fn resume_task<'a, B: Backend>(
    be: &B,
    model: &Model<B>,
    j: TaskJob<'a>,
    ck: Checkpoint,
    out: &Path,
) -> Result<TaskRun<'a, B>> {
    let (name, path) = (j.name.clone(), out.join(CHECKPOINT_FILE));
    let cfg = j.cfg.clone();
    ck.state
        .check(&path, j.train.rows.len())
        .map_err(|e| in_task(&name, e))?;
    let trained =
        start::checkpoint_trained(be, model, j.task, &cfg, &ck).map_err(|e| in_task(&name, e))?;
    let mut t = task_run(be, model, j, trained)?;
    let hashed = (t.state.config.clone(), t.state.config_hash.clone());
    let (state, best) = start::resumed_state(
        be,
        ck,
        &mut t.opt,
        &t.params,
        hashed,
        (&t.cfg, t.train.rows.len()),
        out,
    )
    .map_err(|e| in_task(&name, e))?;
    t.state = state;
    t.best = best;
    Ok(t)
}
