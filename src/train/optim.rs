//! Optimizers over the trainable tensors (the prompt, and the `cls` head), learning-rate
//! schedules and gradient-norm clipping. The updates themselves are the backend's
//! `adamw_update` / `adafactor_update`; this file keeps their state and their step count.
//!
//! Adafactor is set up as Lester et al. (2021) used it for prompt tuning: constant learning
//! rate 0.3, second-moment decay exponent 0.8 (beta2_t = 1 - t^-0.8), no first moment, no
//! parameter scaling, update clipping at RMS 1, weight decay 1e-5.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::backend::{AdafactorHyper, AdamWHyper};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimKind {
    AdamW,
    Adafactor,
}

impl std::str::FromStr for OptimKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adamw" => Ok(OptimKind::AdamW),
            "adafactor" => Ok(OptimKind::Adafactor),
            _ => Err(Error::arg(
                "--optimizer",
                format!("\"{s}\": expected adamw or adafactor"),
            )),
        }
    }
}

impl OptimKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimKind::AdamW => "adamw",
            OptimKind::Adafactor => "adafactor",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    Linear,
}

impl std::str::FromStr for ScheduleKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(ScheduleKind::Constant),
            "linear" => Ok(ScheduleKind::Linear),
            _ => Err(Error::arg(
                "--schedule",
                format!("\"{s}\": expected constant or linear"),
            )),
        }
    }
}

/// The learning-rate multiplier of transformers' `get_constant_schedule_with_warmup` /
/// `get_linear_schedule_with_warmup`: linear warm-up from 0 over `warmup` steps, then 1, or a
/// linear decay that reaches 0 at `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    /// The multiplier for optimizer step `step` (1-based). As in transformers, the scheduler
    /// has stepped `step - 1` times when step `step` runs, so with warm-up the first step's
    /// rate is 0.
    ///
    /// ```
    /// use softprompt::internals::train::optim::{Schedule, ScheduleKind};
    /// let s = Schedule { kind: ScheduleKind::Linear, warmup: 10, total: 110 };
    /// assert_eq!(s.factor(1), 0.0);
    /// assert_eq!(s.factor(6), 0.5);
    /// assert_eq!(s.factor(11), 1.0);
    /// assert_eq!(s.factor(61), 0.5);
    /// assert_eq!(s.factor(111), 0.0);
    /// ```
    pub fn factor(&self, step: u64) -> f64 {
        let s = step.saturating_sub(1);
        if s < self.warmup {
            return s as f64 / self.warmup.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                let left = self.total.saturating_sub(s) as f64;
                (left / self.total.saturating_sub(self.warmup).max(1) as f64).max(0.0)
            }
        }
    }

    /// A warning when the run ends inside its warm-up (`--warmup-steps` at least the total
    /// steps): the rate never reaches `--lr`, and a linear schedule never decays. Legal (and
    /// what transformers would do), so not an error; the command prints it.
    pub fn warning(&self) -> Option<String> {
        (self.warmup > 0 && self.warmup >= self.total).then(|| {
            format!(
                "--warmup-steps {} is not below the run's {} steps: the learning rate never \
                 reaches --lr (at most {:.3} of it, at the last step)",
                self.warmup,
                self.total,
                self.factor(self.total)
            )
        })
    }
}

/// Optimizer settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub lr: f64,
    /// the `cls` head's learning rate (None: `lr`)
    pub head_lr: Option<f64>,
    pub weight_decay: f64,
    /// AdamW
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Adafactor: beta2_t = 1 - t^(-decay_rate)
    pub decay_rate: f64,
    pub clip_threshold: f64,
    pub schedule: Schedule,
    /// clip the global gradient norm to this (None: no clipping)
    pub max_grad_norm: Option<f64>,
}

impl OptimConfig {
    /// AdamW with PyTorch's betas and eps, a constant rate and no clipping.
    pub fn adamw(lr: f64, weight_decay: f64) -> OptimConfig {
        OptimConfig {
            kind: OptimKind::AdamW,
            lr,
            head_lr: None,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decay_rate: 0.8,
            clip_threshold: 1.0,
            schedule: Schedule {
                kind: ScheduleKind::Constant,
                warmup: 0,
                total: 0,
            },
            max_grad_norm: None,
        }
    }

    /// The command line's defaults for `kind`: AdamW at 0.03 with weight decay 0.01, a linear
    /// schedule and the gradient norm clipped to 1; Adafactor as [`OptimConfig::lester`].
    pub fn defaults(kind: OptimKind) -> OptimConfig {
        match kind {
            OptimKind::AdamW => OptimConfig {
                max_grad_norm: Some(1.0),
                schedule: Schedule {
                    kind: ScheduleKind::Linear,
                    warmup: 0,
                    total: 0,
                },
                ..OptimConfig::adamw(0.03, 0.01)
            },
            OptimKind::Adafactor => OptimConfig::lester(),
        }
    }

    /// Lester et al.'s Adafactor: constant 0.3, decay rate 0.8, no parameter scaling, weight
    /// decay 1e-5, update clipping 1.0.
    pub fn lester() -> OptimConfig {
        OptimConfig {
            kind: OptimKind::Adafactor,
            lr: 0.3,
            weight_decay: 1e-5,
            eps: 1e-30,
            ..OptimConfig::adamw(0.3, 1e-5)
        }
    }

    /// Every setting in its range, the error naming its field (`cfg.optim.lr`: the command
    /// line names the flag that sets it): a NaN rate or decay would turn the prompt into NaN,
    /// a negative rate would climb the loss.
    pub fn validate(&self) -> Result<()> {
        let finite = |flag: &str, x: f64, ok: bool, range: &str| -> Result<()> {
            if x.is_finite() && ok {
                Ok(())
            } else {
                Err(Error::arg(
                    flag,
                    format!("{x} is out of range: expected {range}"),
                ))
            }
        };
        // 0 is allowed: it freezes the prompt (or, as the head's rate, the head)
        finite(
            "cfg.optim.lr",
            self.lr,
            self.lr >= 0.0,
            "a finite number >= 0",
        )?;
        if let Some(h) = self.head_lr {
            finite("cfg.optim.head_lr", h, h >= 0.0, "a finite number >= 0")?;
        }
        let wd = self.weight_decay;
        finite(
            "cfg.optim.weight_decay",
            wd,
            wd >= 0.0,
            "a finite number >= 0",
        )?;
        if let Some(n) = self.max_grad_norm {
            finite(
                "cfg.optim.max_grad_norm",
                n,
                n > 0.0,
                "a finite number > 0 (0 turns clipping off)",
            )?;
        }
        // beta2_t = 1 - t^-dr: above 1 the average is dominated by the first steps' gradients
        // (Shazeer & Stern, section 7.2; transformers' Adafactor takes it negated, -0.8)
        let dr = self.decay_rate;
        finite(
            "cfg.optim.decay_rate",
            dr,
            dr > 0.0 && dr <= 1.0,
            "0 < rate <= 1, as Adafactor's beta2_t = 1 - t^-rate needs (Lester et al.: 0.8; \
             transformers writes it negated, decay_rate=-0.8)",
        )?;
        let (b1, b2) = (self.beta1, self.beta2);
        finite(
            "cfg.optim.beta1",
            b1,
            (0.0..1.0).contains(&b1),
            "0 <= beta1 < 1",
        )?;
        finite(
            "cfg.optim.beta2",
            b2,
            (0.0..1.0).contains(&b2),
            "0 <= beta2 < 1",
        )?;
        let eps = self.eps;
        finite("cfg.optim.eps", eps, eps >= 0.0, "a finite number >= 0")?;
        let ct = self.clip_threshold;
        finite(
            "cfg.optim.clip_threshold",
            ct,
            ct > 0.0,
            "a finite number > 0",
        )?;
        Ok(())
    }

    /// `--decay-rate` (None: the default 0.8): only Adafactor reads it, so with AdamW it is
    /// refused rather than ignored.
    pub fn set_decay_rate(&mut self, rate: Option<f64>) -> Result<()> {
        let Some(rate) = rate else { return Ok(()) };
        if self.kind != OptimKind::Adafactor {
            return Err(Error::arg(
                "--decay-rate",
                "is read only by --optimizer adafactor: leave it out with adamw",
            ));
        }
        self.decay_rate = rate;
        Ok(())
    }

    pub fn lr_at(&self, step: u64, head: bool) -> f64 {
        let base = if head {
            self.head_lr.unwrap_or(self.lr)
        } else {
            self.lr
        };
        base * self.schedule.factor(step)
    }
}

/// A named host tensor: (name, shape, values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// One trainable tensor's optimizer state: AdamW's (m, v) of the tensor's size, or
/// Adafactor's factored (row (R), col (C)) second moments. Vectors count as (1, N).
pub struct Slot<B: Backend> {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// AdamW m, or Adafactor row
    pub s1: B::Buf,
    /// AdamW v, or Adafactor col
    pub s2: B::Buf,
    /// the `cls` head (its own learning rate)
    pub head: bool,
}

pub struct Optimizer<B: Backend> {
    pub cfg: OptimConfig,
    pub slots: Vec<Slot<B>>,
    /// optimizer steps taken
    pub step: u64,
}

impl<B: Backend> Optimizer<B> {
    /// State for tensors (name, rows, cols, is_head).
    pub fn new(
        be: &B,
        cfg: OptimConfig,
        shapes: &[(&str, usize, usize, bool)],
    ) -> Result<Optimizer<B>> {
        cfg.validate()?;
        let slots = shapes
            .iter()
            .map(|&(name, rows, cols, head)| {
                let (n1, n2) = match cfg.kind {
                    OptimKind::AdamW => (rows * cols, rows * cols),
                    OptimKind::Adafactor => (rows, cols),
                };
                Ok(Slot {
                    name: name.into(),
                    rows,
                    cols,
                    s1: be.zeros(DType::F32, n1)?,
                    s2: be.zeros(DType::F32, n2)?,
                    head,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Optimizer {
            cfg,
            slots,
            step: 0,
        })
    }

    /// One update of `params[i]` with `grads[i]` (same order as the shapes given to `new`).
    /// Returns the prompt's learning rate at this step.
    pub fn update(&mut self, be: &B, params: &mut [&mut B::Buf], grads: &[&B::Buf]) -> Result<f64> {
        if params.len() != self.slots.len() || grads.len() != self.slots.len() {
            return Err(Error::shape(
                "optimizer tensors",
                self.slots.len(),
                params.len(),
            ));
        }
        self.step += 1;
        let step = self.step;
        for (slot, (p, g)) in self.slots.iter_mut().zip(params.iter_mut().zip(grads)) {
            let lr = self.cfg.lr_at(step, slot.head);
            match self.cfg.kind {
                OptimKind::AdamW => {
                    let hp = AdamWHyper {
                        lr,
                        beta1: self.cfg.beta1,
                        beta2: self.cfg.beta2,
                        eps: self.cfg.eps,
                        weight_decay: self.cfg.weight_decay,
                    };
                    be.adamw_update(p, g, &mut slot.s1, &mut slot.s2, &hp, step)?;
                }
                OptimKind::Adafactor => {
                    let hp = AdafactorHyper {
                        lr,
                        decay_rate: -self.cfg.decay_rate,
                        eps: self.cfg.eps,
                        clip_threshold: self.cfg.clip_threshold,
                        weight_decay: self.cfg.weight_decay,
                    };
                    be.adafactor_update(p, g, &mut slot.s1, &mut slot.s2, &hp, step)?;
                }
            }
        }
        Ok(self.cfg.lr_at(step, false))
    }

    /// The state as named host tensors, for checkpoints: `opt.<name>.m`/`.v` (AdamW) or
    /// `opt.<name>.row`/`.col` (Adafactor).
    pub fn state(&self, be: &B) -> Result<Vec<NamedTensor>> {
        let (a, b) = self.state_names();
        let mut out = Vec::new();
        for s in &self.slots {
            let s1 = be.download(&s.s1)?;
            let s2 = be.download(&s.s2)?;
            out.push((format!("opt.{}.{a}", s.name), vec![s1.len()], s1));
            out.push((format!("opt.{}.{b}", s.name), vec![s2.len()], s2));
        }
        Ok(out)
    }

    /// Restores what `state` wrote; `get` looks a tensor up by name.
    pub fn load_state(
        &mut self,
        be: &B,
        step: u64,
        get: &dyn Fn(&str) -> Result<Vec<f32>>,
    ) -> Result<()> {
        let (a, b) = self.state_names();
        for s in &mut self.slots {
            for (suffix, buf) in [(a, &mut s.s1), (b, &mut s.s2)] {
                let name = format!("opt.{}.{suffix}", s.name);
                let data = get(&name)?;
                crate::error::ensure_len(&name, be.len(buf), data.len())?;
                *buf = be.upload(DType::F32, &data)?;
            }
        }
        self.step = step;
        Ok(())
    }

    fn state_names(&self) -> (&'static str, &'static str) {
        match self.cfg.kind {
            OptimKind::AdamW => ("m", "v"),
            OptimKind::Adafactor => ("row", "col"),
        }
    }
}

/// Clips the global L2 norm of `grads` to `max_norm` as PyTorch's `clip_grad_norm_` does
/// (scale by max_norm / (norm + 1e-6) when that is below 1). Returns the norm before
/// clipping, summed in f64 in a fixed order on the device; one scalar per tensor comes back.
pub fn clip_grad_norm<B: Backend>(
    be: &B,
    grads: &mut [&mut B::Buf],
    max_norm: Option<f64>,
) -> Result<f64> {
    let mut sum = 0.0f64;
    for g in grads.iter() {
        sum += be.sum_squares(g, be.len(g))?;
    }
    let norm = sum.sqrt();
    if let Some(max) = max_norm {
        let coef = max / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                let n = be.len(g);
                be.scale_inplace(g, coef, n)?;
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::traits::*;
    use crate::cpu::CpuBackend;

    #[test]
    fn schedules_match_transformers() {
        // transformers: lr_lambda(s) for s = step - 1
        let c = Schedule {
            kind: ScheduleKind::Constant,
            warmup: 4,
            total: 100,
        };
        let got: Vec<f64> = (1..=7).map(|s| c.factor(s)).collect();
        assert_eq!(got, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        let l = Schedule {
            kind: ScheduleKind::Linear,
            warmup: 0,
            total: 4,
        };
        let got: Vec<f64> = (1..=6).map(|s| l.factor(s)).collect();
        assert_eq!(got, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
        let l = Schedule {
            kind: ScheduleKind::Linear,
            warmup: 2,
            total: 6,
        };
        let got: Vec<f64> = (1..=7).map(|s| l.factor(s)).collect();
        assert_eq!(got, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    /// A warm-up as long as the run, or longer, is warned about (it was accepted silently);
    /// a shorter one, or none, is not.
    #[test]
    fn warmup_past_the_run_warns() {
        let s = |warmup, total| Schedule {
            kind: ScheduleKind::Linear,
            warmup,
            total,
        };
        let w = s(100, 3).warning().unwrap();
        assert!(
            w.contains("--warmup-steps 100") && w.contains("3 steps"),
            "{w}"
        );
        // the last step runs at (3 - 1) / 100 of --lr
        assert!(w.contains("0.020"), "{w}");
        assert!(s(4, 4).warning().is_some());
        assert_eq!(s(3, 4).warning(), None);
        assert_eq!(s(0, 0).warning(), None);
    }

    /// One Lester Adafactor step on a (2, 3) tensor, against numbers computed by hand from
    /// transformers' Adafactor (scale_parameter=False, relative_step=False,
    /// warmup_init=False, beta1=None, decay_rate=-0.8, clip_threshold=1.0):
    /// step 1: beta2t = 1 - 1^-0.8 = 0, so row = mean_c(g^2 + 1e-30), col = mean_r(g^2 + 1e-30).
    #[test]
    #[allow(clippy::excessive_precision)] // PyTorch's printed values, kept as printed
    fn adafactor_step_by_hand() {
        let be = CpuBackend::<f32>::new();
        let g = [0.1f32, -0.2, 0.3, 0.4, 0.0, -0.5];
        let p0 = [1.0f32, 2.0, -1.0, 0.5, 0.25, -2.0];
        let mut p = be.upload(DType::F32, &p0).unwrap();
        let gb = be.upload(DType::F32, &g).unwrap();
        let mut opt =
            Optimizer::new(&be, OptimConfig::lester(), &[("prompt", 2, 3, false)]).unwrap();
        opt.update(&be, &mut [&mut p], &[&gb]).unwrap();
        // by hand, in f64
        let gg: Vec<f64> = g.iter().map(|&x| x as f64).collect();
        let row: [f64; 2] = [(0.01 + 0.04 + 0.09) / 3.0, (0.16 + 0.0 + 0.25) / 3.0];
        let col: [f64; 3] = [(0.01 + 0.16) / 2.0, (0.04 + 0.0) / 2.0, (0.09 + 0.25) / 2.0];
        let row_mean = (row[0] + row[1]) / 2.0;
        let mut u = [0.0f64; 6];
        for i in 0..6 {
            u[i] = gg[i] / ((row[i / 3] / row_mean).sqrt() * col[i % 3].sqrt());
        }
        let rms = (u.iter().map(|x| x * x).sum::<f64>() / 6.0).sqrt();
        let want: Vec<f32> = (0..6)
            .map(|i| {
                let x = p0[i] as f64;
                (x - x * 1e-5 * 0.3 - u[i] / rms.max(1.0) * 0.3) as f32
            })
            .collect();
        let got = be.download(&p).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{got:?} vs {want:?}");
        }
        assert!((rms - 1.1141890766951397).abs() < 1e-7, "{rms}"); // from f32 gradients
                                                                   // transformers' own Adafactor (torch 2.15, transformers 5.24), two steps:
                                                                   //   p = Parameter([[1, 2, -1], [0.5, 0.25, -2]])
                                                                   //   opt = Adafactor([p], lr=0.3, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
                                                                   //                   beta1=None, weight_decay=1e-5, scale_parameter=False,
                                                                   //                   relative_step=False, warmup_init=False)
                                                                   //   grads [[.1, -.2, .3], [.4, 0, -.5]] then [[.05, .1, -.3], [.2, -.1, .5]]
        let torch1 = [
            0.8705610036849976f32,
            2.533672571182251,
            -1.2745723724365234,
            0.19745534658432007,
            0.2499992549419403,
            -1.7325811386108398,
        ];
        let torch2 = [
            0.7749955058097839f32,
            2.1815624237060547,
            -0.9686734676361084,
            -0.025946468114852905,
            0.4557795822620392,
            -2.0305356979370117,
        ];
        for (a, b) in got.iter().zip(&torch1) {
            assert!((a - b).abs() <= 1e-6, "{got:?} vs {torch1:?}");
        }
        let st = opt.state(&be).unwrap();
        assert_eq!(st[0].0, "opt.prompt.row");
        assert!((st[0].2[1] as f64 - row[1]).abs() < 1e-8); // stored in f32
        let g2 = be
            .upload(DType::F32, &[0.05, 0.1, -0.3, 0.2, -0.1, 0.5])
            .unwrap();
        opt.update(&be, &mut [&mut p], &[&g2]).unwrap();
        let got = be.download(&p).unwrap();
        for (a, b) in got.iter().zip(&torch2) {
            assert!((a - b).abs() <= 2e-6, "{got:?} vs {torch2:?}");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let be = CpuBackend::<f32>::new();
        let mut a = be.upload(DType::F32, &[3.0, 0.0]).unwrap();
        let mut b = be.upload(DType::F32, &[4.0]).unwrap();
        let norm = clip_grad_norm(&be, &mut [&mut a, &mut b], Some(1.0)).unwrap();
        assert_eq!(norm, 5.0);
        let a = be.download(&a).unwrap();
        assert!((a[0] - 0.6).abs() < 1e-6, "{a:?}");
        let mut c = be.upload(DType::F32, &[0.3]).unwrap();
        assert_eq!(
            clip_grad_norm(&be, &mut [&mut c], Some(1.0)).unwrap(),
            0.30000001192092896
        );
        assert_eq!(be.download(&c).unwrap(), [0.3]);
    }
}
