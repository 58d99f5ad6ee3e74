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

    /// f(x) and f'(x).
    pub fn eval<F: Real>(self, x: F) -> (F, F) {
        let half = F::from_f64(0.5);
        match self {
            Act::GeluErf => {
                let cdf =
                    half * (F::ONE + (x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = (-half * x * x).exp() * F::from_f64(0.398_942_280_401_432_7);
                (x * cdf, cdf + x * pdf)
            }
            Act::GeluTanh => {
                let k = F::from_f64(0.797_884_560_802_865_4); // sqrt(2/pi)
                let a = F::from_f64(0.044715);
                let inner = k * (x + a * x * x * x);
                let th = inner.tanh();
                let dinner = k * (F::ONE + F::from_f64(3.0) * a * x * x);
                let y = half * x * (F::ONE + th);
                let dy = half * (F::ONE + th) + half * x * (F::ONE - th * th) * dinner;
                (y, dy)
            }
            Act::Relu => {
                if x > F::ZERO {
                    (x, F::ONE)
                } else {
                    (F::ZERO, F::ZERO)
                }
            }
            Act::Silu => {
                let s = F::ONE / (F::ONE + (-x).exp());
                (x * s, s * (F::ONE + x * (F::ONE - s)))
            }
        }
    }
}

/// out (N) = act(inp (N)).
pub fn act_fwd<F: Real>(out: &mut [F], inp: &[F], act: Act) {
    out.par_iter_mut()
        .zip(inp.par_iter())
        .for_each(|(y, &x)| *y = act.eval(x).0);
}

/// dinp (N) = dout * act'(inp).
pub fn act_bwd<F: Real>(dinp: &mut [F], dout: &[F], inp: &[F], act: Act) {
    dinp.par_iter_mut()
        .zip(dout.par_iter().zip(inp.par_iter()))
        .for_each(|(dx, (&dy, &x))| *dx = dy * act.eval(x).1);
}

/// out (N) = act(gate) * lin: T5's gated feed-forward (wi_0 goes through act, wi_1 does not).
pub fn gated_act_fwd<F: Real>(out: &mut [F], gate: &[F], lin: &[F], act: Act) {
    out.par_iter_mut()
        .zip(gate.par_iter().zip(lin.par_iter()))
        .for_each(|(y, (&g, &l))| *y = act.eval(g).0 * l);
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
        .par_iter_mut()
        .zip(dlin.par_iter_mut())
        .zip(dout.par_iter().zip(gate.par_iter().zip(lin.par_iter())))
        .for_each(|((dg, dl), (&dy, (&g, &l)))| {
            let (f, df) = act.eval(g);
            *dg = dy * df * l;
            *dl = dy * f;
        });
}
