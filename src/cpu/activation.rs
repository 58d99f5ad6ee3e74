//! Activation family: GELU (erf and tanh), ReLU, SiLU, and T5's gated variants.
//! Backward overwrites its outputs: each activation's input gradient is a fresh tensor.

use super::real::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// exact GELU, x * Phi(x) (`gelu` in transformers)
    GeluErf,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`)
    GeluTanh,
    Relu,
    /// x * sigmoid(x) (`silu`, `swish`)
    Silu,
}

impl Act {
    /// Maps a transformers `hidden_act` / T5 `dense_act_fn` name.
    pub fn from_hf_name(name: &str) -> Option<Act> {
        match name {
            "gelu" => Some(Act::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Act::GeluTanh),
            "relu" => Some(Act::Relu),
            "silu" | "swish" => Some(Act::Silu),
            _ => None,
        }
    }

    pub const SUPPORTED: &'static str = "gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish";

    pub fn id(self) -> i32 {
        match self {
            Act::GeluErf => 0,
            Act::GeluTanh => 1,
            Act::Relu => 2,
            Act::Silu => 3,
        }
    }

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

/// dinp (N) = dout * act'(inp).
pub fn act_bwd<F: Real>(dinp: &mut [F], dout: &[F], inp: &[F], act: Act) {
    dinp.par_chunks_mut(CHUNK)
        .zip(dout.par_chunks(CHUNK).zip(inp.par_chunks(CHUNK)))
        .for_each(|(dx, (dy, x))| {
            dx.iter_mut()
                .zip(dy.iter().zip(x))
                .for_each(|(dx, (&dy, &x))| *dx = dy * act.grad(x));
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

/// dgate = dout * act'(gate) * lin, dlin = dout * act(gate).
pub fn gated_act_bwd<F: Real>(
    dgate: &mut [F],
    dlin: &mut [F],
    dout: &[F],
    gate: &[F],
    lin: &[F],
    act: Act,
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
                dg[i] = dy[i] * act.grad(g[i]) * l[i];
                dl[i] = dy[i] * act.value(g[i]);
            }
        });
}
