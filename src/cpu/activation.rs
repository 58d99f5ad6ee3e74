//! Activation family: GELU (erf and tanh), ReLU, SiLU, and T5's gated variants.
//! Backward adds into its input gradients with `accumulate`, else writes them whole, as adding
//! into zeros would (src/backend/mod.rs). `Act` itself is declared in
//! src/backend/activation.rs; its scalar math, `value` and `grad`, lives here.

use super::real::{base, Real};
use super::{real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{Act, ActivationOps};
use crate::error::Result;
use rayon::prelude::*;

impl Act {
    /// f(x).
    #[inline(always)]
    pub fn value<F: Real>(self, x: F) -> F {
        let half = F::from_f64(0.5);
        match self {
            Act::GeluErf => {
                half * x * (F::ONE + (x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
            }
            Act::GeluTanh => {
                let inner = F::from_f64(SQRT_2_OVER_PI) * (x + F::from_f64(0.044715) * x * x * x);
                half * x * (F::ONE + inner.tanh())
            }
            Act::Relu => {
                if x > F::ZERO {
                    x
                } else {
                    F::ZERO
                }
            }
            Act::Silu => x / (F::ONE + (-x).exp()),
        }
    }

    /// f'(x).
    #[inline(always)]
    pub fn grad<F: Real>(self, x: F) -> F {
        let half = F::from_f64(0.5);
        match self {
            Act::GeluErf => {
                // one exp serves both terms: erf's own and the density's
                let (erf, gauss) =
                    (x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf_and_gauss();
                half * (F::ONE + erf) + x * gauss * F::from_f64(0.398_942_280_401_432_7)
            }
            Act::GeluTanh => {
                let (k, a) = (F::from_f64(SQRT_2_OVER_PI), F::from_f64(0.044715));
                let th = (k * (x + a * x * x * x)).tanh();
                let dinner = k * (F::ONE + F::from_f64(3.0) * a * x * x);
                half * (F::ONE + th) + half * x * (F::ONE - th * th) * dinner
            }
            Act::Relu => {
                if x > F::ZERO {
                    F::ONE
                } else {
                    F::ZERO
                }
            }
            Act::Silu => {
                let s = F::ONE / (F::ONE + (-x).exp());
                s * (F::ONE + x * (F::ONE - s))
            }
        }
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

/// Elementwise work in chunks: per-element rayon splitting costs more than the math.
const CHUNK: usize = 4096;

/// out (N) = act(inp (N)).
pub fn act_fwd<F: Real>(out: &mut [F], inp: &[F], act: Act) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = act.value(x));
        });
}

/// dinp (N) += dout * act'(inp) with `acc`, else dinp = 0 + it.
pub fn act_bwd<F: Real>(dinp: &mut [F], dout: &[F], inp: &[F], act: Act, acc: bool) {
    dinp.par_chunks_mut(CHUNK)
        .zip(dout.par_chunks(CHUNK).zip(inp.par_chunks(CHUNK)))
        .for_each(|(dx, (dy, x))| {
            dx.iter_mut()
                .zip(dy.iter().zip(x))
                .for_each(|(dx, (&dy, &x))| *dx = base(acc, *dx) + dy * act.grad(x));
        });
}

/// out (N) = act(gate) * lin: T5's gated feed-forward (wi_0 goes through act, wi_1 does not).
pub fn gated_act_fwd<F: Real>(out: &mut [F], gate: &[F], lin: &[F], act: Act) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(lin.par_chunks(CHUNK)))
        .for_each(|(y, (g, l))| {
            for i in 0..y.len() {
                y[i] = act.value(g[i]) * l[i];
            }
        });
}

/// dgate += dout * act'(gate) * lin, dlin += dout * act(gate) with `acc`, else each = 0 + it.
pub fn gated_act_bwd<F: Real>(
    dgate: &mut [F],
    dlin: &mut [F],
    dout: &[F],
    gate: &[F],
    lin: &[F],
    act: Act,
    acc: bool,
) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dlin.par_chunks_mut(CHUNK))
        .zip(
            dout.par_chunks(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(lin.par_chunks(CHUNK))),
        )
        .for_each(|((dg, dl), (dy, (g, l)))| {
            for i in 0..dg.len() {
                dg[i] = base(acc, dg[i]) + dy[i] * act.grad(g[i]) * l[i];
                dl[i] = base(acc, dl[i]) + dy[i] * act.value(g[i]);
            }
        });
}

/// The float32 ops on the instruction set in use (src/cpu/simd.rs), in the same chunks.
pub mod fast {
    use super::CHUNK;
    use crate::backend::Act;
    use crate::cpu::simd::{self, isa};
    use rayon::prelude::*;

    /// out (N) = act(inp (N)).
    pub fn act_fwd(out: &mut [f32], inp: &[f32], act: Act) {
        out.par_chunks_mut(CHUNK)
            .zip(inp.par_chunks(CHUNK))
            .for_each(|(y, x)| simd::act_fwd(isa(), y, x, act));
    }

    /// dinp (N) += dout * act'(inp) with `acc`, else dinp = 0 + it.
    pub fn act_bwd(dinp: &mut [f32], dout: &[f32], inp: &[f32], act: Act, acc: bool) {
        dinp.par_chunks_mut(CHUNK)
            .zip(dout.par_chunks(CHUNK).zip(inp.par_chunks(CHUNK)))
            .for_each(|(dx, (dy, x))| simd::act_bwd(isa(), dx, dy, x, act, acc));
    }

    /// out (N) = act(gate) * lin.
    pub fn gated_act_fwd(out: &mut [f32], gate: &[f32], lin: &[f32], act: Act) {
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(lin.par_chunks(CHUNK)))
            .for_each(|(y, (g, l))| simd::gated_fwd(isa(), y, g, l, act));
    }

    /// dgate += dout * act'(gate) * lin, dlin += dout * act(gate) with `acc`, else each =
    /// 0 + it.
    pub fn gated_act_bwd(
        dgate: &mut [f32],
        dlin: &mut [f32],
        dout: &[f32],
        gate: &[f32],
        lin: &[f32],
        act: Act,
        acc: bool,
    ) {
        dgate
            .par_chunks_mut(CHUNK)
            .zip(dlin.par_chunks_mut(CHUNK))
            .zip(
                dout.par_chunks(CHUNK)
                    .zip(gate.par_chunks(CHUNK).zip(lin.par_chunks(CHUNK))),
            )
            .for_each(|((dg, dl), (dy, (g, l)))| {
                simd::gated_bwd(isa(), dg, dl, dy, g, l, act, acc)
            });
    }
}

impl<F: Real> ActivationOps for CpuBackend<F> {
    fn act_fwd(&self, out: &mut CpuBuf<F>, inp: &CpuBuf<F>, act: Act, n: usize) -> Result<()> {
        let (out, inp) = (real_mut(out, "act out", n)?, real(inp, "act inp", n)?);
        match (F::as_f32(inp), F::as_f32_mut(out)) {
            (Some(x), Some(y)) => fast::act_fwd(y, x, act),
            _ => act_fwd(out, inp, act),
        }
        Ok(())
    }

    fn act_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        inp: &CpuBuf<F>,
        act: Act,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let (dinp, dout, inp) = (
            real_mut(dinp, "act dinp", n)?,
            real(dout, "act dout", n)?,
            real(inp, "act inp", n)?,
        );
        match (F::as_f32(dout), F::as_f32(inp), F::as_f32_mut(dinp)) {
            (Some(dy), Some(x), Some(dx)) => fast::act_bwd(dx, dy, x, act, accumulate),
            _ => act_bwd(dinp, dout, inp, act, accumulate),
        }
        Ok(())
    }

    fn gated_act_fwd(
        &self,
        out: &mut CpuBuf<F>,
        gate: &CpuBuf<F>,
        lin: &CpuBuf<F>,
        act: Act,
        n: usize,
    ) -> Result<()> {
        let (out, gate, lin) = (
            real_mut(out, "gated out", n)?,
            real(gate, "gated gate", n)?,
            real(lin, "gated lin", n)?,
        );
        match (F::as_f32(gate), F::as_f32(lin), F::as_f32_mut(out)) {
            (Some(g), Some(l), Some(y)) => fast::gated_act_fwd(y, g, l, act),
            _ => gated_act_fwd(out, gate, lin, act),
        }
        Ok(())
    }

    fn gated_act_bwd(
        &self,
        dgate: &mut CpuBuf<F>,
        dlin: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        gate: &CpuBuf<F>,
        lin: &CpuBuf<F>,
        act: Act,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let (dgate, dlin) = (
            real_mut(dgate, "gated dgate", n)?,
            real_mut(dlin, "gated dlin", n)?,
        );
        let (dout, gate, lin) = (
            real(dout, "gated dout", n)?,
            real(gate, "gated gate", n)?,
            real(lin, "gated lin", n)?,
        );
        match (
            F::as_f32(dout),
            F::as_f32(gate),
            F::as_f32(lin),
            F::as_f32_mut(dgate),
            F::as_f32_mut(dlin),
        ) {
            (Some(dy), Some(g), Some(l), Some(dg), Some(dl)) => {
                fast::gated_act_bwd(dg, dl, dy, g, l, act, accumulate)
            }
            _ => gated_act_bwd(dgate, dlin, dout, gate, lin, act, accumulate),
        }
        Ok(())
    }
}
