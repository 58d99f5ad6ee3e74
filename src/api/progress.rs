//! The command line's progress display for a training run: the bar with the loss's moving
//! average and throughput, and the lines printed above it as the trainer reports (settings,
//! resume warnings, evaluations, early stopping). `softprompt train` and the Python package
//! show the same.

use crate::internals::stdout::DrawnBar;
use crate::prompt_encoder::EncoderKind;
use crate::train::optim::Schedule;
use crate::train::ptuning::Method;
use crate::train::{Event, TrainConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Instant;

/// The progress bar, and the lines printed above it as the trainer reports.
pub struct ConsoleProgress {
    pub(crate) pb: ProgressBar,
    /// the command's start: evaluation lines print the seconds since
    t0: Instant,
    /// the last event heard, and the seconds between each step's event and the event before
    /// it: steps/s and tokens/s count the steps' own time, as metrics.jsonl's rates do (the
    /// time of every dev evaluation and save made the bar's rate drop after each; review 10,
    /// R10-9)
    last_event: Instant,
    stepping_secs: f64,
    /// the loss's moving average, and the steps and tokens so far
    ema: Option<f64>,
    tokens: usize,
    steps: u64,
    /// the train loss summed since the last dev evaluation, and its steps (a resumed run:
    /// from the checkpoint)
    window: (f64, u64),
    /// the run's steps: a stop at the last one is no early stop
    total: u64,
    /// prompt rows, classes and hidden size, for the `trainable` line
    prompt_len: usize,
    /// prefix tuning: the trained table is a prefix (with a projection: true)
    prefix: Option<bool>,
    k: usize,
    d: usize,
    /// the optimizer and loop settings, printed once the trainer has accepted them
    settings: String,
    /// the schedule, whose length the trainer's first event gives (for its warning)
    schedule: Schedule,
    /// the run's settings, for the warnings its first event allows
    cfg: TrainConfig,
    /// rewrites a warning's words for the caller (the command line's flags as they are)
    words: fn(&str) -> String,
    /// whether the bar is drawn (not `--no-progress`), and its registration once the run
    /// has started (before, a warning redrew an empty "0/0" bar), for the warnings written
    /// through `errln!` to hide it
    shown: bool,
    drawn: Option<DrawnBar>,
}

/// "optimizer adamw lr 0.03 (Linear schedule, warm-up 0), ...": what the run trains with.
fn settings_line(cfg: &TrainConfig) -> String {
    let o = &cfg.optim;
    let method = match cfg.method {
        Method::Prompt => String::new(),
        Method::PTuning(pt) => {
            let hidden = pt.hidden.map_or("= model width".into(), |h| h.to_string());
            match pt.kind {
                EncoderKind::Mlp => format!("p-tuning, MLP encoder (hidden {hidden}) | "),
                EncoderKind::Lstm => format!(
                    "p-tuning, LSTM encoder (hidden {hidden}, {} layers) | ",
                    pt.num_layers
                ),
            }
        }
        Method::Prefix(pre) => {
            let proj = match (pre.projection, pre.hidden) {
                (false, _) => String::new(),
                (true, h) => format!(
                    ", projection (hidden {})",
                    h.map_or("= model width".into(), |h| h.to_string())
                ),
            };
            format!("prefix tuning, {} placement{proj} | ", pre.placement.name())
        }
    };
    let head = o.head_lr.map_or(String::new(), |h| format!(" (head {h})"));
    format!(
        "{method}optimizer {} lr {}{head} ({:?} schedule, warm-up {}), weight decay {}, clip {} | batch {}, seed {}, {} threads",
        o.kind.name(), o.lr, o.schedule.kind, o.schedule.warmup, o.weight_decay,
        o.max_grad_norm.map_or("none".into(), |n| n.to_string()), cfg.batch_size, cfg.seed, cfg.threads
    )
}

impl ConsoleProgress {
    /// The bar for a run of `cfg` over a model of width `d` and a task of `labels` labels;
    /// `t0` is when the command started (evaluation lines print the seconds since); with
    /// `bar` false only the lines are printed.
    pub fn new(
        cfg: &TrainConfig,
        t0: Instant,
        labels: usize,
        d: usize,
        bar: bool,
    ) -> ConsoleProgress {
        // its length comes with the trainer's first event, and it is shown from then: a line
        // said before drew a full "0/0" bar (review 11, R11-13)
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:28.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < ETA {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        ConsoleProgress {
            pb,
            t0,
            last_event: Instant::now(),
            stepping_secs: 0.0,
            ema: None,
            tokens: 0,
            steps: 0,
            window: (0.0, 0),
            total: 0,
            prompt_len: cfg.prompt_len,
            prefix: match cfg.method {
                Method::Prefix(pre) => Some(pre.projection),
                _ => None,
            },
            k: labels,
            d,
            settings: settings_line(cfg),
            schedule: cfg.optim.schedule,
            cfg: cfg.clone(),
            words: str::to_string,
            shown: bar,
            drawn: None,
        }
    }

    /// Warnings in other words than the command line's flags (Python: its keywords).
    pub fn with_words(self, words: fn(&str) -> String) -> ConsoleProgress {
        ConsoleProgress { words, ..self }
    }

    fn say(&self, line: String) {
        let line = match line.starts_with("warning: ") {
            true => (self.words)(&line),
            false => line,
        };
        self.pb
            .suspend(|| crate::internals::stdout::write(format_args!("{line}"), true));
    }

    /// The lines at the start: warnings about a resumed run, then what trains.
    fn started(&mut self, ev: &Event) {
        let Event::Started {
            total_steps,
            steps_per_epoch,
            resumed_at,
            threads_changed,
            device_changed,
            kernels_changed,
            prompt_params,
            head_params,
            eval_window,
        } = ev
        else {
            return;
        };
        (self.window, self.total) = (*eval_window, *total_steps);
        let (k, d) = (self.k, self.d);
        self.say(self.settings.clone());
        let schedule = Schedule {
            total: *total_steps,
            ..self.schedule
        };
        // said once, when the run starts (a resumed run heard it then)
        if resumed_at.is_none() {
            let patience = (self.cfg).patience_warning(*total_steps, *steps_per_epoch);
            let head_lr = self.cfg.head_lr_warning(*head_params > 0);
            let decay = self.cfg.decay_warning(*head_params > 0);
            for w in schedule
                .warning()
                .into_iter()
                .chain(patience)
                .chain(head_lr)
                .chain(decay)
            {
                self.say(format!("warning: {w}"));
            }
        }
        self.pb.set_length(*total_steps);
        self.pb.set_position(resumed_at.unwrap_or(0));
        if self.shown && self.drawn.is_none() {
            self.pb.set_draw_target(ProgressDrawTarget::stderr());
            self.drawn = Some(DrawnBar::new(&self.pb));
        }
        if let Some((was, now)) = device_changed {
            self.say(format!(
                "warning: the checkpoint was trained on {was} and this run uses {now}: the numbers \
                 round differently from here on, so the result will differ from an uninterrupted run"
            ));
        }
        if let Some((was, now)) = kernels_changed {
            // "gemm/avx512": the GEMM path, then the SIMD instruction set; in brackets what
            // else the library ran by ("mkl[sequential]", "gemm[avx512]": the CPU's own)
            let settings = crate::cpu::gemm_path::resume_settings(was);
            self.say(format!(
                "warning: the checkpoint was trained with the CPU kernels {was} and this run uses {now}: \
                 the result will not be bit-identical to an uninterrupted run (resume with \
                 {settings}, and no other of those settings, on the same CPU, for that)"
            ));
        }
        if let Some((was, now)) = threads_changed {
            let threads = if *was == 1 { "thread" } else { "threads" };
            self.say(format!(
                "warning: the checkpoint was trained with {was} {threads} and this run uses {now}: \
                 the result will not be bit-identical to an uninterrupted run (resume with --threads {was} for that)"
            ));
        }
        // P-tuning trains its encoder, whose count is not P x d
        let prompt = match (*prompt_params == self.prompt_len * d, self.prefix) {
            (true, _) => format!("prompt {} x {d} = {prompt_params}", self.prompt_len),
            (false, Some(false)) => format!(
                "prefix {} x {} = {prompt_params}",
                self.prompt_len,
                prompt_params / self.prompt_len.max(1)
            ),
            (false, Some(true)) => format!("prefix projection {prompt_params}"),
            (false, None) => format!("prompt encoder {prompt_params}"),
        };
        self.say(format!(
            "trainable: {prompt}{} | {total_steps} steps ({steps_per_epoch} per epoch){}",
            if *head_params > 0 {
                format!(", head {k} x {d} + {k} = {head_params}")
            } else {
                String::new()
            },
            resumed_at.map_or(String::new(), |s| format!(" | resumed at step {s}"))
        ));
    }

    /// Prints what `ev` reports: the bar's position and message, evaluation lines above it.
    pub fn on_event(&mut self, ev: &Event) {
        let heard = std::mem::replace(&mut self.last_event, Instant::now());
        match ev {
            Event::Started { .. } => self.started(ev),
            Event::Step(info) => {
                self.ema = Some(self.ema.map_or(info.loss, |e| 0.95 * e + 0.05 * info.loss));
                self.tokens += info.tokens;
                self.steps += 1;
                self.window.0 += info.loss;
                self.window.1 += 1;
                self.stepping_secs += heard.elapsed().as_secs_f64();
                let secs = self.stepping_secs.max(1e-9);
                self.pb.set_position(info.step);
                self.pb.set_message(format!(
                    "loss {:.4} | {:.2} steps/s | {:.0} tok/s",
                    self.ema.unwrap_or(0.0),
                    self.steps as f64 / secs,
                    self.tokens as f64 / secs
                ));
            }
            Event::Eval {
                step,
                split,
                metrics,
                ..
            } if split.starts_with("test (kept") => {
                self.say(format!(
                    "kept prompt (step {step}): test accuracy {:.4} macro-F1 {:.4} ({} rows)",
                    metrics.accuracy, metrics.macro_f1, metrics.examples
                ));
            }
            Event::Eval {
                step,
                split,
                metrics,
                best,
            } => {
                let train_loss = if split == "dev" && self.window.1 > 0 {
                    format!(" | train loss {:.4}", self.window.0 / self.window.1 as f64)
                } else {
                    String::new()
                };
                if split == "dev" {
                    self.window = (0.0, 0);
                }
                self.say(format!(
                    "step {step:>5} | {split:<4} accuracy {:.4} macro-F1 {:.4} ({} rows){}{train_loss} | {:.0}s",
                    metrics.accuracy, metrics.macro_f1, metrics.examples, if *best { " *best*" } else { "" }, self.t0.elapsed().as_secs_f64()
                ));
            }
            Event::Saved { .. } => {}
            // the patience ran out at the last step: the run ends where it would anyway
            Event::EarlyStop { step, best_step } if *step == self.total => self.say(format!(
                "patience ran out at step {step}, the last: no better dev accuracy since step {best_step}"
            )),
            Event::EarlyStop { step, best_step } => self.say(format!(
                "early stop at step {step}: no better dev accuracy since step {best_step}"
            )),
        }
    }
}

impl ConsoleProgress {
    /// Clears the bar at the end of the run.
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::StepInfo;
    use std::time::Duration;

    /// The bar's steps/s counts the steps' own time: the time of a save (or a dev
    /// evaluation) between two steps made it drop after each (review 10, R10-9).
    #[test]
    fn the_bar_rate_leaves_out_what_runs_between_steps() {
        let mut progress =
            ConsoleProgress::new(&TrainConfig::default(), Instant::now(), 2, 8, false);
        let step = |step| {
            Event::Step(StepInfo {
                step,
                epoch: 0,
                loss: 1.0,
                lr: 0.1,
                grad_norm: 1.0,
                tokens: 10,
                logged: None,
            })
        };
        progress.on_event(&step(1));
        std::thread::sleep(Duration::from_millis(400));
        progress.on_event(&Event::Saved {
            step: 1,
            path: "checkpoint.safetensors".into(),
        });
        progress.on_event(&step(2));
        let message = progress.pb.message();
        let rate = message
            .split(" | ")
            .nth(1)
            .and_then(|r| r.strip_suffix(" steps/s"));
        let rate: f64 = rate.and_then(|r| r.parse().ok()).expect(&message);
        // counting the save, 2 steps in 0.4 s or more: 5 steps/s at most
        assert!(rate > 20.0, "{message}");
    }
}
