//! Several prompts trained at once on one frozen model, as `softprompt train --task-data` does.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checks::check_model;
use super::model::{on_engine, Engine, Model};
use super::prompt::Prompt;
use super::task::Task;
use super::train::{check_prompt_len, check_splits, Splits};
use super::until::NEVER;
use crate::error::Result;
use crate::prompt::PromptInit;
use crate::train::checkpoint::CHECKPOINT_FILE;
use crate::train::{Event, Method, MultiTrainer, Summary, TaskJob, TrainConfig};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// One task of a multi-task run ([`Model::train_multi`]).
#[derive(Clone, Debug)]
pub struct MultiTask<'a> {
    /// the task's name: its folder under the output folder (letters, digits, `-`, `_`, `.`),
    /// and the `task` field of its metrics lines
    pub name: String,
    /// its template, labels, verbalizer or head
    pub task: &'a Task,
    /// its rows, encoded by its own task
    pub splits: Splits<'a>,
    /// this task's prompt length (default: the run's `prompt_len`)
    pub prompt_len: Option<usize>,
    /// this task's prompt init (default: the run's `init`)
    pub init: Option<PromptInit>,
    /// this task's method, with its settings (default: the run's `method`): tasks of prompt
    /// tuning, P-tuning and prefix tuning train side by side, each saved in its own method's
    /// layout
    pub method: Option<Method>,
}

/// One task's result: its name, its summary, and its kept prompt (as saved in
/// `<out>/<name>/`).
pub type TaskResult = (String, Summary, Prompt);

impl Model {
    /// Trains one prompt per task in `tasks` at once, each as [`Model::train`] would train it
    /// alone with `cfg` (and its own `prompt_len`, `init` and `method`: prompt tuning,
    /// P-tuning and prefix tuning side by side): its own batch plan drawn from `cfg.seed`, its
    /// own optimizer state and schedule (over its encoder under P-tuning or a prefix
    /// projection), dev evaluation, best prompt and early stopping. Each step runs the next batch of every task still training as one mixed
    /// batch ([`Model::step_mixed`]: one pass of the model, BERT, T5 or decoder-only, unless
    /// prompt lengths differ so much that padding costs more than a second pass; each task's
    /// loss and gradients from its own rows), and steps each
    /// task's optimizer on
    /// its own gradients. A task that stops early is frozen and its rows leave the batches;
    /// the run ends when every task has stopped. Each task's kept prompt is a PEFT adapter
    /// folder `out/<name>/` in its method's layout (with task.json, for `cls` its head, and
    /// its encoder's file), as its single-task run saves it, so
    /// `predict --prompt name=out/name` serves them together; `out/metrics.jsonl` holds every
    /// task's lines (each with its `task`), and `out/checkpoint.safetensors` every task's
    /// state: with `cfg.resume` the run continues bit for bit, and a changed task list or a
    /// task's changed settings are refused by name. A run of one task equals [`Model::train`]
    /// bit for bit. `on_event` hears each task's events with its name (`""` for the run's
    /// checkpoint saves). Returns each task's result in the order of `tasks`.
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let model = Model::open("tests/fixtures/bert_mlm", Device::Cpu)?;
    /// let load = |f: &str| Dataset::load(format!("tests/bad_inputs/data/{f}").as_ref(), &DataSpec::default());
    /// let (train, dev) = (load("train.jsonl")?, load("dev.jsonl")?);
    /// let cfg = TrainConfig { prompt_len: 4, max_steps: Some(4), eval_every: 2, ..Default::default() };
    /// let a = model.task(&TaskOptions::default(), Some(&train), cfg.prompt_len)?;
    /// let b = model.task(&TaskOptions { template: Some("{text} ! [MASK]".into()), ..Default::default() }, Some(&train), 3)?;
    /// let (ta, da) = (model.encode(&a, &train)?, model.encode(&a, &dev)?);
    /// let (tb, db) = (model.encode(&b, &train)?, model.encode(&b, &dev)?);
    /// let tasks = [
    ///     MultiTask { name: "a".into(), task: &a, splits: Splits { train: &ta, dev: Some(&da), test: None }, prompt_len: None, init: None, method: None },
    ///     MultiTask { name: "b".into(), task: &b, splits: Splits { train: &tb, dev: Some(&db), test: None }, prompt_len: Some(3), init: None, method: None },
    /// ];
    /// let out = std::env::temp_dir().join(format!("sp_doc_multi_{}", std::process::id()));
    /// let results = model.train_multi(&tasks, &cfg, &out, &mut |_task, _ev| {})?;
    /// assert_eq!(results.len(), 2);
    /// assert_eq!(results[1].2, Prompt::load(out.join("b"))?); // its own PEFT adapter folder
    /// assert_eq!(results[1].2.rows(), 3);
    /// # std::fs::remove_dir_all(&out).ok();
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn train_multi(
        &self,
        tasks: &[MultiTask<'_>],
        cfg: &TrainConfig,
        out: impl AsRef<Path>,
        on_event: &mut dyn FnMut(&str, &Event),
    ) -> Result<Vec<TaskResult>> {
        self.train_multi_until(tasks, cfg, out, on_event, &NEVER)
    }

    /// As [`Model::train_multi`], and once `stop` is set, the run ends after the step under
    /// way with its checkpoint written, returning [`Error::Interrupted`]; `cfg.resume`
    /// continues it.
    ///
    /// [`Error::Interrupted`]: crate::Error::Interrupted
    pub fn train_multi_until(
        &self,
        tasks: &[MultiTask<'_>],
        cfg: &TrainConfig,
        out: impl AsRef<Path>,
        on_event: &mut dyn FnMut(&str, &Event),
        stop: &AtomicBool,
    ) -> Result<Vec<TaskResult>> {
        crate::cpu::threads::enter_compute()?;
        let out = out.as_ref();
        // an overwrite killed part way left the files it had moved aside hidden
        crate::train::outdir::recover_aside(out)?;
        let resume = cfg.resume && out.join(CHECKPOINT_FILE).exists();
        let jobs = || -> Vec<TaskJob<'_>> {
            (tasks.iter())
                .map(|t| {
                    let mut c = cfg.clone();
                    c.prompt_len = t.prompt_len.unwrap_or(c.prompt_len);
                    c.init = t.init.clone().unwrap_or(c.init);
                    c.method = t.method.unwrap_or(c.method);
                    TaskJob {
                        name: t.name.clone(),
                        task: &t.task.inner,
                        train: t.splits.train,
                        dev: t.splits.dev,
                        test: t.splits.test,
                        cfg: c,
                    }
                })
                .collect()
        };
        let summaries = on_engine!(&self.engine, |be, m| {
            for t in tasks {
                let tag = |e: crate::Error| e.tagged(&format!("task `{}`", t.name));
                check_model(t.task, m).map_err(tag)?;
                let (p, field) = match t.prompt_len {
                    Some(p) => (p, "MultiTask::prompt_len"),
                    None => (cfg.prompt_len, "cfg.prompt_len"),
                };
                check_prompt_len(t.task, p, field, m).map_err(tag)?;
                check_splits(&t.splits, t.task, p, m).map_err(tag)?;
            }
            let mut trainer = if resume {
                MultiTrainer::resume(be, m, jobs(), cfg.clone(), out)?
            } else {
                MultiTrainer::new(be, m, jobs(), cfg.clone(), out)?
            };
            trainer.run_until(on_event, stop)?
        });
        (summaries.into_iter())
            .map(|(name, s)| {
                let p = Prompt::load(out.join(&name))?;
                Ok((name, s, p))
            })
            .collect()
    }
}
