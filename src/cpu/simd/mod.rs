//! Explicit SIMD for the float32 CPU path: the elementwise and row-wise ops (activations and
//! their backwards, layer and RMS norms, softmax's exponentials) on AVX-512F or AVX2 + FMA,
//! chosen once at run time from the CPU's features, with the scalar code of each op's stem as
//! the reference and the fallback (other CPUs, other architectures, the f64 checks).
//!
//! Each op is written once, generic over [`Lanes`] (one vector register of f32 lanes), and
//! instantiated per instruction set behind `#[target_feature]`; a slice's tail shorter than a
//! register goes through the same vector code on a padded copy, so every element of a slice
//! gets the same arithmetic. Sums over a row run in lane order, then across lanes: the order
//! differs from the scalar reference's, so results differ in the last bits, and differ
//! between instruction sets (the checkpoint records which one trained, see [`Isa::name`]).
//! Tests compare each op on each instruction set this CPU has with the scalar reference
//! (tests/simd_ops.rs).
//!
//! The functions: `exp` (Cephes' expf: a degree-6 polynomial after reduction by ln 2, within
//! 2 ulp; 0 below -87.3, the value at 88 above 88), GELU in both forms (`tanh` form as
//! x·sigmoid(2u), one exponential), SiLU, and their derivatives.

use std::sync::OnceLock;

use crate::backend::Act;
use crate::cpu::real::base;

/// The instruction set the float32 CPU ops run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// 16 lanes, AVX-512F
    Avx512,
    /// 8 lanes, AVX2 and FMA
    Avx2,
    /// the scalar reference code
    Scalar,
}

impl Isa {
    /// What the CPU supports, best first: AVX-512F, then AVX2 + FMA, else scalar.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU can run, best first (the tests run each).
    pub fn available() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
        }
        v.push(Isa::Scalar);
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }
}

/// The instruction set in use, once per process: `SOFTPROMPT_SIMD` when set, else
/// [`Isa::detect`].
pub fn isa() -> Isa {
    // a bad value is refused at start (env::check); here it counts as unset
    *ISA.get_or_init(|| from_env().ok().flatten().unwrap_or_else(Isa::detect))
}

/// The instruction set this process fixed at its first use.
static ISA: OnceLock<Isa> = OnceLock::new();

/// `SOFTPROMPT_SIMD` checked: a name this CPU runs, and, once the process has fixed its set
/// (at its first CPU computation), that set: a later value was accepted and not used (a process has one,
/// as it has one GEMM path and one thread pool).
pub fn check_env() -> crate::error::Result<()> {
    match (from_env()?, ISA.get()) {
        (Some(asked), Some(&fixed)) if asked != fixed => Err(crate::error::Error::arg(
            "SOFTPROMPT_SIMD",
            format!(
                "{}: the instruction set of this process is already {} (a process has one)",
                asked.name(),
                fixed.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// `SOFTPROMPT_SIMD`: one of the instruction sets this CPU runs (`avx512`, `avx2`,
/// `scalar`), or None when unset.
pub fn from_env() -> crate::error::Result<Option<Isa>> {
    let here = Isa::available();
    let names: Vec<&str> = here.iter().map(|i| i.name()).collect();
    let expected = format!("one this CPU runs: {}", names.join(", "));
    crate::env::parse("SOFTPROMPT_SIMD", &expected, |s| {
        here.iter().copied().find(|i| i.name() == s)
    })
}

mod lanes;
mod math;

use lanes::Lanes;
#[cfg(target_arch = "x86_64")]
use lanes::{Avx2, Avx512};
use math::*;

// ---- the per-instruction-set entry points ----

/// Declares `pub fn $name(isa, args...)` that runs `$generic::<Lanes>` compiled for the
/// instruction set, or `$scalar` for `Isa::Scalar`.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $generic:ident | $scalar:expr) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name(isa: Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $generic::<Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $generic::<Avx2>($($arg),*)
                }
                match isa {
                    // SAFETY: `Isa` names an instruction set only after `is_x86_feature_detected`
                    // found it (Isa::detect, Isa::available); the slices' lengths are checked
                    // by the callers below.
                    Isa::Avx512 if is_x86_feature_detected!("avx512f") => return unsafe { avx512($($arg),*) },
                    Isa::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = isa;
            $scalar
        }
    };
}

dispatch!(
    /// out (N) = act(inp).
    act_fwd(out: &mut [f32], inp: &[f32], act: Act) -> () = act_fwd_g
    | for (y, &x) in out.iter_mut().zip(inp) {
        *y = act.value(x);
    }
);
dispatch!(
    /// dinp (N) += dout · act'(inp) with `acc`, else dinp = 0 + it (as adding into zeros).
    act_bwd(dinp: &mut [f32], dout: &[f32], inp: &[f32], act: Act, acc: bool) -> () = act_bwd_g
    | for i in 0..dinp.len() {
        dinp[i] = base(acc, dinp[i]) + dout[i] * act.grad(inp[i]);
    }
);
dispatch!(
    /// out (N) = act(gate) · lin.
    gated_fwd(out: &mut [f32], gate: &[f32], lin: &[f32], act: Act) -> () = gated_fwd_g
    | for i in 0..out.len() {
        out[i] = act.value(gate[i]) * lin[i];
    }
);
dispatch!(
    /// dgate += dout·act'(gate)·lin, dlin += dout·act(gate) with `acc`, else each = 0 + it.
    gated_bwd(dgate: &mut [f32], dlin: &mut [f32], dout: &[f32], gate: &[f32], lin: &[f32], act: Act, acc: bool) -> () = gated_bwd_g
    | for i in 0..dgate.len() {
        dgate[i] = base(acc, dgate[i]) + dout[i] * act.grad(gate[i]) * lin[i];
        dlin[i] = base(acc, dlin[i]) + dout[i] * act.value(gate[i]);
    }
);
dispatch!(
    /// Σ x.
    sum(x: &[f32]) -> f32 = sum_g
    | x.iter().sum()
);
dispatch!(
    /// Σ (x - c)².
    sum_sq_dev(x: &[f32], c: f32) -> f32 = sum_sq_dev_g
    | x.iter().map(|&v| (v - c) * (v - c)).sum()
);
dispatch!(
    /// y = (x - mu)·rs·w (+ b).
    norm_row(y: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, mu: f32, rs: f32) -> () = norm_row_g
    | for i in 0..y.len() {
        y[i] = (x[i] - mu) * rs * w[i] + b.map_or(0.0, |b| b[i]);
    }
);
dispatch!(
    /// (Σ dy·w, Σ dy·w·(x - mu)).
    norm_bwd_sums(dy: &[f32], x: &[f32], w: &[f32], mu: f32) -> (f32, f32) = norm_bwd_sums_g
    | (0..dy.len()).fold((0.0, 0.0), |(a, b), i| (a + dy[i] * w[i], b + dy[i] * w[i] * (x[i] - mu)))
);
dispatch!(
    /// dx += dy·w·rs - ((x - mu)·k + c0) with `acc`, else dx = 0 + it.
    norm_bwd_row(dx: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], mu: f32, rs: f32, k: f32, c0: f32, acc: bool) -> () = norm_bwd_row_g
    | for i in 0..dx.len() {
        dx[i] = base(acc, dx[i]) + (dy[i] * w[i] * rs - ((x[i] - mu) * k + c0));
    }
);
dispatch!(
    /// row = e^(row - m), returning Σ row.
    exp_sub(row: &mut [f32], m: f32) -> f32 = exp_sub_g
    | row.iter_mut().map(|x| { *x = (*x - m).exp(); *x }).sum()
);
dispatch!(
    /// row = row·s (softmax's normalisation).
    scale_row(row: &mut [f32], s: f32) -> () = scale_row_g
    | row.iter_mut().for_each(|x| *x *= s)
);
dispatch!(
    /// max of the row.
    row_max(row: &[f32]) -> f32 = max_g
    | row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
);
dispatch!(
    /// ds = p·(ds - Σ p·ds)·scale.
    softmax_bwd_row(ds: &mut [f32], p: &[f32], scale: f32) -> () = softmax_bwd_row_g
    | {
        let d: f32 = p.iter().zip(ds.iter()).map(|(&a, &b)| a * b).sum();
        for (x, &pj) in ds.iter_mut().zip(p) {
            *x = pj * (*x - d) * scale;
        }
    }
);
dispatch!(
    /// row = row·scale + bias + add (a multiply, then adds: never fused).
    scale_add_row(row: &mut [f32], scale: f32, add: &[f32], bias: Option<&[f32]>) -> () = scale_add_row_g
    | match bias {
        Some(b) => {
            for ((x, &a), &b) in row.iter_mut().zip(add).zip(b) {
                *x = *x * scale + b + a;
            }
        }
        None => {
            for (x, &a) in row.iter_mut().zip(add) {
                *x = *x * scale + a;
            }
        }
    }
);

/// e^x on each element (for the tests of the exponential itself).
pub fn exp_slice(isa: Isa, x: &mut [f32]) {
    exp_sub(isa, x, 0.0);
}

/// Runs `iters` rounds of independent fused multiply-adds on the instruction set's widest
/// registers (16 chains, more than the FMA units' latency × throughput) and returns the
/// floating-point operations done (2 per lane per FMA) and a value that keeps the work alive.
/// The ceiling benchmark's measure of the FMA peak.
pub fn fma_loop(isa: Isa, iters: usize) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        #[inline(always)]
        unsafe fn chains<S: Lanes>(iters: usize) -> f32 {
            let (a, b) = (S::splat(0.999_999), S::splat(1e-7));
            let mut acc = [S::splat(1.0); 16];
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = S::fma(*x, a, b);
                }
            }
            let mut s = S::splat(0.0);
            for x in acc {
                s = S::add(s, x);
            }
            S::sum(s)
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(iters: usize) -> f32 {
            chains::<Avx512>(iters)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(iters: usize) -> f32 {
            chains::<Avx2>(iters)
        }
        let per = (iters * 16 * 2) as f64;
        match isa {
            // SAFETY: as in `dispatch!`: the feature is checked here.
            Isa::Avx512 if is_x86_feature_detected!("avx512f") => {
                return (per * 16.0, unsafe { avx512(iters) })
            }
            Isa::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
                return (per * 8.0, unsafe { avx2(iters) })
            }
            _ => {}
        }
    }
    let mut acc = [1.0f32; 16];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(0.999_999, 1e-7);
        }
    }
    ((iters * 16 * 2) as f64, acc.iter().sum())
}
