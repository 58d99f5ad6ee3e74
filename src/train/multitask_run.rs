//! The multi-task loop: each step takes the next batch of every task still training (each
//! from its own plan), runs them as one mixed batch (`mixed::step_mixed`: one pass of the
//! model, prompt and prefix tasks alike, or a pass per run of similar prompt lengths where
//! padding costs more; each task's loss and gradients from its own rows),
//! and steps each task's own optimizer. A P-tuning task (or a prefix projection)
//! runs its host encoder before the step, its output the task's table, and its table gradient
//! goes back through the encoder in the update (`update::encoder_fwd`, `update::update`), as
//! `Trainer::step` does. Then each task is evaluated, keeps its best prompt and stops early as a
//! single-task run would (`run.rs`); a task that stops is frozen and its rows leave the
//! batches. One checkpoint holds every task (`multitask_ckpt.rs`), one metrics.jsonl every
//! task's lines (each with its `task`), and each task's kept prompt is a PEFT adapter folder
//! `<out>/<task>/` in its method's layout (`save::save_kept`, the single-task run's).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use super::data;
use super::encode::Encoded;
use super::encoder::HostEncoder;
use super::eval::{eval_overflow, evaluate, final_test_overflow};
use super::metrics::EvalMetrics;
use super::mixed::{step_mixed, MixJob};
use super::multitask::{in_task, MultiTrainer, TaskRun};
use super::multitask_ckpt::MultiCheckpoint;
use super::rate_clock::RateClock;
use super::run::kept_test_line;
use super::save::{checkpoint_tensors, save_kept, Kept};
use super::step::{Grads, Params};
use super::trainer::{trainable, Event, StepInfo, Summary};
use super::update::{encoder_fwd, update};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the run reports: the task it concerns, and the event (as a single-task run's).
pub type TaskEvents<'e> = dyn FnMut(&str, &Event) + 'e;

impl<B: Backend> TaskRun<'_, B> {
    /// The rows of this task's next batch (a new epoch's plan drawn when the plan ran out).
    fn next_rows(&mut self) -> Result<Vec<u32>> {
        if self.state.pos >= self.state.plan.len() {
            self.state.epoch += 1;
            let (b, pool) = (self.cfg.batch_size, self.cfg.bucket_pool);
            self.state.plan = data::epoch_plan(&self.lens, b, pool, &mut self.state.rng);
            self.state.pos = 0;
        }
        let rows = (self.state.plan.get(self.state.pos).cloned()).ok_or_else(|| {
            Error::Device(format!("task `{}`: the batch plan ran out", self.name))
        })?;
        self.state.pos += 1;
        Ok(rows)
    }

    fn is_eval_step(&self) -> bool {
        let s = self.state.step;
        match self.cfg.eval_every {
            0 => s.is_multiple_of(self.steps_per_epoch),
            n => s.is_multiple_of(n),
        }
    }

    fn current(&self, be: &B) -> Result<(Vec<f32>, Option<HostClsHead>)> {
        let head = self.params.head.as_ref().map(|h| h.download(be));
        Ok((be.download(&self.params.prompt)?, head.transpose()?))
    }

    /// The step of the prompt that is kept: the best on dev, or the last without a dev split.
    fn kept_step(&self) -> u64 {
        match self.dev {
            Some(_) => self.state.best_step,
            None => self.state.step,
        }
    }

    /// The prompt that is kept: the best on dev, or the current one without a dev split.
    fn kept(&self, be: &B) -> Result<(Vec<f32>, Option<HostClsHead>)> {
        match (&self.best, self.dev) {
            (Some(best), Some(_)) => Ok(best.clone()),
            _ => self.current(be),
        }
    }

    /// P-tuning or a prefix projection: the encoder of the kept prompt.
    fn kept_encoder(&self) -> Option<&HostEncoder> {
        match (&self.best_encoder, self.dev) {
            (Some(best), Some(_)) => Some(best),
            _ => self.encoder.as_ref(),
        }
    }
}

impl<'a, B: Backend> MultiTrainer<'a, B> {
    /// One step: a batch of every active task, each task's optimizer stepped on its own
    /// gradients. Returns (task index, its step) for each task that stepped.
    pub fn step(&mut self) -> Result<Vec<(usize, StepInfo)>> {
        let be = self.be;
        let active: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks.get(i).is_some_and(|t| t.active()))
            .collect();
        let (mut rows, mut tapes) = (Vec::new(), Vec::new());
        for (k, &i) in active.iter().enumerate() {
            let t = self.task_mut(i)?;
            // P-tuning or a prefix projection: the table is the encoder's output, and its tape
            // is this step's
            tapes.push(encoder_fwd(be, &mut t.params, t.encoder.as_ref())?);
            for r in t.next_rows()? {
                let row = (t.train.rows.get(r as usize)).ok_or_else(|| {
                    Error::Device(format!("task `{}`: row {r} is not in the plan", t.name))
                })?;
                rows.push((k, row.clone()));
            }
        }
        let steps = self.losses_and_grads(&active, &rows)?;
        let mut infos = Vec::new();
        for ((&i, (loss, grads, tokens)), tape) in active.iter().zip(steps).zip(&tapes) {
            let t = self.task_mut(i)?;
            let step = t.state.step + 1;
            if !loss.is_finite() {
                let what = format!("the loss is {loss}");
                return Err(self.diverged_at(i, step, what, step == 1));
            }
            let max_norm = t.cfg.optim.max_grad_norm;
            let encoder = t.encoder.as_mut().zip(tape.as_ref());
            let outcome = update(be, &mut t.opt, &mut t.params, encoder, grads, max_norm);
            let (lr, grad_norm) = outcome.map_err(|e| match e {
                Error::NonFinite(what) => self.diverged_at(i, step, what, step == 1),
                e => e,
            })?;
            let t = self.task_mut(i)?;
            t.state.step = step;
            let epoch = t.state.epoch;
            infos.push((
                i,
                StepInfo {
                    step,
                    epoch,
                    loss,
                    lr,
                    grad_norm,
                    tokens,
                    logged: None,
                },
            ));
        }
        self.step += 1;
        Ok(infos)
    }

    /// Each active task's loss, gradients and tokens on its rows of `rows`. One task alone
    /// steps as `Trainer::step` does (so that a run of one task is that run bit for bit).
    #[allow(clippy::type_complexity)]
    fn losses_and_grads(
        &self,
        active: &[usize],
        rows: &[(usize, super::encode::Row)],
    ) -> Result<Vec<(f64, Grads<B>, usize)>> {
        let (be, model, recompute) = (self.be, self.model, self.run.recompute);
        if let [i] = active {
            let t = self.task(*i)?;
            let all: Vec<u32> = (0..rows.len() as u32).collect();
            let enc = Encoded {
                path: t.train.path.clone(),
                rows: rows.iter().map(|(_, r)| r.clone()).collect(),
                truncated: 0,
                truncated_targets: 0,
            };
            let batch = t.task.batch(&enc, &all)?;
            let mut grads = Grads::zeros(be, &t.params)?;
            let loss =
                (t.task).loss_and_grad(be, model, &t.params, &mut grads, &batch, recompute)?;
            return Ok(vec![(loss, grads, batch.real_tokens)]);
        }
        let jobs: Vec<MixJob<'_, B>> = (active.iter())
            .map(|&i| self.task(i).map(|t| (t.task, &t.params)))
            .collect::<Result<_>>()?;
        let steps = step_mixed(be, model, &jobs, rows, recompute)?;
        Ok(steps
            .into_iter()
            .map(|s| (s.loss, s.grads, s.tokens))
            .collect())
    }

    fn task(&self, i: usize) -> Result<&TaskRun<'a, B>> {
        (self.tasks.get(i)).ok_or_else(|| Error::Device(format!("task {i} is missing")))
    }

    fn task_mut(&mut self, i: usize) -> Result<&mut TaskRun<'a, B>> {
        (self.tasks.get_mut(i)).ok_or_else(|| Error::Device(format!("task {i} is missing")))
    }

    /// The error that stops the run when task `i`'s numbers stopped being finite at `step`.
    fn diverged(&self, i: usize, step: u64, what: String) -> Error {
        self.diverged_at(i, step, what, false)
    }

    /// `diverged`, `before_update`: in the loss of the task's first step.
    fn diverged_at(&self, i: usize, step: u64, what: String, before_update: bool) -> Error {
        let kept = match self.saved_step {
            Some(s) => format!("{CHECKPOINT_FILE} still holds step {s}"),
            None => "nothing was saved".into(),
        };
        let name = self.tasks.get(i).map_or("?", |t| t.name.as_str());
        let advice = super::run::divergence_advice(before_update);
        Error::NonFinite(format!(
            "task `{name}`: {what} at step {step}, so the run stops ({kept}): {advice}"
        ))
    }

    /// Runs to the end (every task's steps, or its early stop), reporting through `on_event`.
    /// Returns each task's summary, in the run's order.
    pub fn run(&mut self, on_event: &mut TaskEvents<'_>) -> Result<Vec<(String, Summary)>> {
        self.run_until(on_event, &AtomicBool::new(false))
    }

    /// As `run`, and when `stop` is set (checked after each step's events), writes the
    /// checkpoint and returns `Error::Interrupted`: the folder resumes from that step.
    pub fn run_until(
        &mut self,
        on_event: &mut TaskEvents<'_>,
        stop: &AtomicBool,
    ) -> Result<Vec<(String, Summary)>> {
        // the states record this run's threads, device and kernels before the first save;
        // the events are told after it, so that a first step's time leaves it out
        let started = self.start();
        if self.resumed_at.is_some() {
            self.export_all()?;
        } else if self.saved_step.is_none() {
            self.save_checkpoint()?;
            self.saved_step = Some(self.step);
            self.log.flush()?;
        }
        for (name, ev) in &started {
            on_event(name, ev);
        }
        // a resumed run keeps the checkpoint's windows (the losses since each task's last
        // line); their rates count the steps this process takes
        self.clocks = self.tasks.iter().map(|_| RateClock::new()).collect();
        let mut early: Vec<bool> = (self.tasks.iter())
            .map(|t| t.state.stopped_early(t.cfg.patience))
            .collect();
        // a task that stopped early before a resume says so once the run starts again
        for (t, _) in self.tasks.iter().zip(&early).filter(|(_, &e)| e) {
            let (step, best_step) = (t.state.step, t.state.best_step);
            on_event(&t.name, &Event::EarlyStop { step, best_step });
        }
        while self.tasks.iter().any(|t| t.active()) {
            let infos = self.step()?;
            let mut save = self.run.save_every > 0 && self.step.is_multiple_of(self.run.save_every);
            for (i, mut info) in infos {
                let name = self.task(i)?.name.clone();
                info.logged = self.log_step(i, &info)?;
                on_event(&name, &Event::Step(info.clone()));
                let between = Instant::now();
                let (stopped, done) = self.end_task_step(i, on_event)?;
                self.leave_out(between.elapsed());
                if let Some(e) = early.get_mut(i) {
                    *e |= stopped;
                }
                // said at the step it stops, the others going on
                if stopped {
                    let best_step = self.task(i)?.state.best_step;
                    on_event(
                        &name,
                        &Event::EarlyStop {
                            step: info.step,
                            best_step,
                        },
                    );
                }
                save |= done;
            }
            if save || self.tasks.iter().all(|t| !t.active()) {
                let between = Instant::now();
                self.save_checkpoint()?;
                self.leave_out(between.elapsed());
                self.saved_step = Some(self.step);
                let path = self.out.join(CHECKPOINT_FILE);
                on_event(
                    "",
                    &Event::Saved {
                        step: self.step,
                        path,
                    },
                );
            }
            if stop.load(Ordering::Relaxed) && self.tasks.iter().any(|t| t.active()) {
                return Err(self.interrupt(on_event));
            }
        }
        let mut out = Vec::new();
        let mut lines = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let stopped = early.get(i).copied().unwrap_or(false);
            let test = self.final_test(t, on_event)?;
            if let Some(m) = &test {
                let mut line = kept_test_line(t.kept_step(), m);
                if let Some(obj) = line.as_object_mut() {
                    obj.insert("task".into(), json!(t.name));
                }
                lines.push(line);
            }
            out.push((
                t.name.clone(),
                Summary {
                    steps: t.state.step,
                    best_step: t.kept_step(),
                    best_dev: t.state.best,
                    test,
                    // at its last step the task ended where it would anyway
                    early_stopped: stopped && t.state.step < t.total_steps,
                },
            ));
        }
        for line in &lines {
            self.log.append(line)?;
        }
        // the log a re-scored run says it saved exists even when nothing was appended
        self.log.settle()?;
        Ok(out)
    }

    /// Each task's `Started` event, by name; records the threads, device and kernels in its
    /// state.
    fn start(&mut self) -> Vec<(String, Event)> {
        let (device, kernels) = (self.be.name(), self.be.kernels());
        let mut started = Vec::with_capacity(self.tasks.len());
        // the count the steps run on, not the one set (`run.rs`, `start`)
        self.run.threads = rayon::current_num_threads();
        for t in &mut self.tasks {
            let resumed = self.resumed_at.is_some();
            let changed = |a: &String, b: &String| {
                (resumed && !a.is_empty() && a != b).then(|| (a.clone(), b.clone()))
            };
            let device_changed = changed(&t.state.device, &device);
            let kernels_changed = (device_changed.is_none()
                && !crate::cpu::gemm_path::same_kernels(&t.state.kernels, &kernels))
            .then(|| changed(&t.state.kernels, &kernels))
            .flatten();
            let threads_changed =
                (resumed && !self.be.device().is_gpu() && t.state.threads != self.run.threads)
                    .then_some((t.state.threads, self.run.threads));
            t.state.threads = self.run.threads;
            t.state.device = device.clone();
            t.state.kernels = kernels.clone();
            let (prompt_params, head_params) = trainable(&t.params, t.encoder.as_ref());
            let ev = Event::Started {
                total_steps: t.total_steps,
                steps_per_epoch: t.steps_per_epoch,
                resumed_at: self.resumed_at.map(|_| t.state.step),
                threads_changed,
                device_changed,
                kernels_changed,
                prompt_params,
                head_params,
                eval_window: t.state.eval_window.loss(),
            };
            started.push((t.name.clone(), ev));
        }
        started
    }

    /// Adds the step to task `i`'s metrics (and evaluation) window, and writes its metrics
    /// line when due: that line's loss, the window's mean.
    fn log_step(&mut self, i: usize, info: &StepInfo) -> Result<Option<f64>> {
        let log_every = self.run.log_every;
        let missing = || Error::Device(format!("task {i} is missing"));
        let clock = self.clocks.get_mut(i).ok_or_else(missing)?;
        clock.add(info.tokens);
        let t = self.tasks.get_mut(i).ok_or_else(missing)?;
        t.state.log_window.add(info.loss, info.tokens);
        t.state.eval_window.add(info.loss, info.tokens);
        let last = info.step == t.total_steps;
        if log_every == 0 || !(info.step.is_multiple_of(log_every) || last) {
            return Ok(None);
        }
        let (sum, n) = std::mem::take(&mut t.state.log_window).loss();
        let loss = sum / n.max(1) as f64;
        let (steps_per_s, tokens_per_s) = clock.take_rates();
        let line = json!({
            "task": t.name, "step": info.step, "epoch": info.epoch, "loss": loss,
            "lr": info.lr, "grad_norm": info.grad_norm, "steps_per_s": steps_per_s,
            "tokens_per_s": tokens_per_s,
        });
        self.log.append(&line)?;
        Ok(Some(loss))
    }

    /// `d` was no step's time (an evaluation, a save): every task's clock leaves it out.
    fn leave_out(&mut self, d: std::time::Duration) {
        self.clocks.iter_mut().for_each(|c| c.leave_out(d));
    }

    /// Task `i`'s evaluation, best prompt and stop after its step: (stopped early, done now).
    fn end_task_step(&mut self, i: usize, on_event: &mut TaskEvents<'_>) -> Result<(bool, bool)> {
        let t = self.task(i)?;
        let last = t.state.step == t.total_steps;
        let mut early = false;
        if t.is_eval_step() || last {
            early = self.eval_and_keep(i, on_event)?;
        }
        let t = self.task_mut(i)?;
        if early || last {
            t.state.done = true;
        }
        let (done, no_dev) = (t.state.done, t.dev.is_none());
        if done
            || (no_dev && self.run.save_every > 0 && self.step.is_multiple_of(self.run.save_every))
        {
            self.export(i)?;
        }
        Ok((early, done))
    }

    /// Task `i`'s dev (and test) evaluation; keeps its prompt when dev accuracy improves.
    /// Returns true when its early stopping triggers.
    fn eval_and_keep(&mut self, i: usize, on_event: &mut TaskEvents<'_>) -> Result<bool> {
        let Some((m, tm)) = self.scores(i)? else {
            return Ok(false);
        };
        let (be, log) = (self.be, &mut self.log);
        let t = (self.tasks.get_mut(i)).ok_or_else(|| Error::Device(format!("task {i}")))?;
        let (step, name) = (t.state.step, t.name.clone());
        let better = t.state.best.is_none_or(|b| m.accuracy > b.accuracy);
        if better {
            t.state.best = Some(m);
            t.state.best_step = step;
            t.state.evals_since_best = 0;
            t.best = Some(t.current(be)?);
            t.best_encoder = t.encoder.clone();
            t.state.best_test = tm.or(t.state.best_test);
        } else {
            t.state.evals_since_best += 1;
        }
        t.state.eval_window = Default::default();
        log.append(&json!({"task": name, "step": step, "split": "dev", "accuracy": m.accuracy, "macro_f1": m.macro_f1, "examples": m.examples, "best": better}))?;
        on_event(
            &name,
            &Event::Eval {
                step,
                split: "dev".into(),
                metrics: m,
                best: better,
            },
        );
        if let Some(tm) = tm {
            log.append(&json!({"task": name, "step": step, "split": "test", "accuracy": tm.accuracy, "macro_f1": tm.macro_f1, "examples": tm.examples}))?;
            on_event(
                &name,
                &Event::Eval {
                    step,
                    split: "test".into(),
                    metrics: tm,
                    best: false,
                },
            );
        }
        let stop = t
            .cfg
            .patience
            .is_some_and(|p| t.state.evals_since_best >= p);
        if better {
            self.export(i)?;
        }
        Ok(stop)
    }

    /// Task `i`'s dev and test scores now, None without a dev split: a score that is not
    /// finite is the task diverging, said with the row's file and line.
    fn scores(&self, i: usize) -> Result<Option<(EvalMetrics, Option<EvalMetrics>)>> {
        let t = (self.tasks.get(i)).ok_or_else(|| Error::Device(format!("task {i}")))?;
        let Some(dev) = t.dev else {
            return Ok(None);
        };
        let eval = |enc: &Encoded, split: &str| -> Result<EvalMetrics> {
            let bs = t.cfg.eval_batch_size;
            let scored = evaluate(self.be, self.model, t.task, &t.params, enc, bs);
            scored
                .map(|(m, _)| m)
                .map_err(|e| match eval_overflow(e, enc, split) {
                    Ok(what) => self.diverged(i, t.state.step, what),
                    Err(e) => e,
                })
        };
        let m = eval(dev, "dev")?;
        let tm = t.test.map(|enc| eval(enc, "test")).transpose()?;
        Ok(Some((m, tm)))
    }

    /// Task `t`'s test split scored with its kept prompt (done at its best step already when
    /// it had a dev split).
    fn final_test(
        &self,
        t: &TaskRun<'_, B>,
        on_event: &mut TaskEvents<'_>,
    ) -> Result<Option<EvalMetrics>> {
        let Some(test) = t.test else {
            return Ok(None);
        };
        let step = t.kept_step();
        let m = match (t.dev, t.state.best_test) {
            (Some(_), Some(m)) => m,
            _ => {
                let (prompt, head) = t.kept(self.be)?;
                let kept = Params {
                    prompt: self.be.upload(DType::F32, &prompt)?,
                    p: t.params.p,
                    d: t.params.d,
                    head: head.map(|h| h.upload(self.be)).transpose()?,
                    prefix: t.params.prefix,
                };
                let bs = t.cfg.eval_batch_size;
                let scored = evaluate(self.be, self.model, t.task, &kept, test, bs);
                let kept = format!("task `{}`'s kept prompt (step {step})", t.name);
                let saved = t.dir(&self.out);
                scored
                    .map_err(|e| final_test_overflow(e, test, &kept, &saved))?
                    .0
            }
        };
        let split = "test (kept prompt)".into();
        on_event(
            &t.name,
            &Event::Eval {
                step,
                split,
                metrics: m,
                best: false,
            },
        );
        Ok(Some(m))
    }

    /// Stops the run at this step with its checkpoint on disk, the error saying how to go on.
    fn interrupt(&mut self, on_event: &mut TaskEvents<'_>) -> Error {
        let step = self.step;
        if self.saved_step != Some(step) {
            let no_dev: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| self.tasks.get(i).is_some_and(|t| t.dev.is_none()))
                .collect();
            let saved = (no_dev.into_iter().try_for_each(|i| self.export(i)))
                .and_then(|()| self.save_checkpoint());
            if let Err(e) = saved {
                return e;
            }
            self.saved_step = Some(step);
            let path = self.out.join(CHECKPOINT_FILE);
            on_event("", &Event::Saved { step, path });
        }
        Error::Interrupted(format!(
            "training stopped at step {step}: {} holds its checkpoint; resume to go on",
            self.out.display()
        ))
    }

    fn export_all(&mut self) -> Result<()> {
        (0..self.tasks.len()).try_for_each(|i| self.export(i))
    }

    /// Writes task `i`'s kept prompt into `<out>/<task>/` (PEFT files in its method's layout,
    /// task.json, head, encoder), as a single-task run writes its folder.
    pub fn export(&mut self, i: usize) -> Result<()> {
        let (be, model) = (self.be, self.model);
        let t = self.task(i)?;
        let best_on_dev = t.dev.is_some() && t.best.is_some();
        let (facts, encoder) = (&t.table, t.kept_encoder());
        let kept = Kept::new(facts, t.kept(be)?, encoder, &t.state, best_on_dev);
        let check = |n: &str, d: &[f32]| self.check_finite(i, n, d);
        save_kept(&t.dir(&self.out), model, t.task, &t.cfg, kept, &check)
    }

    /// Writes `checkpoint.safetensors` atomically: every task's tensors and state.
    pub fn save_checkpoint(&self) -> Result<()> {
        let mut tasks = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let tensors = checkpoint_tensors(
                self.be,
                &t.params,
                t.encoder.as_ref(),
                &t.opt,
                t.best.as_ref(),
                t.best_encoder.as_ref(),
            )?;
            for (name, (_, data)) in &tensors {
                self.check_finite(i, name, data)?;
            }
            let state = t.state.clone();
            tasks.push((t.name.clone(), Checkpoint { state, tensors }));
        }
        let ck = MultiCheckpoint {
            step: self.step,
            tasks,
        };
        self.log.settle()?;
        ck.save(&self.out.join(CHECKPOINT_FILE))
    }

    /// Fails with `Error::NonFinite` when task `i`'s `data` holds NaN or ±inf.
    fn check_finite(&self, i: usize, name: &str, data: &[f32]) -> Result<()> {
        match data.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(k) => {
                let what = format!("`{name}` holds a non-finite value (flat index {k})");
                let step = self.tasks.get(i).map_or(self.step, |t| t.state.step);
                Err(self.diverged(i, step, what))
            }
        }
    }
}

/// `e` with task `name` named (for callers outside this module).
pub fn task_error(name: &str, e: Error) -> Error {
    in_task(name, e)
}
