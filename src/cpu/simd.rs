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

// The AVX-512 intrinsics are stable from rustc 1.89, later than Cargo.toml's rust-version
// (1.80), which the rest of the crate keeps to; this module is the one place that needs more.
// Raising rust-version instead turns on newer lints across the crate (see the perf branch's
// report).
#![allow(clippy::incompatible_msrv)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::backend::Act;

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

/// The instruction set in use, once per process: [`Isa::detect`], or `SOFTPROMPT_SIMD`
/// (`avx512`, `avx2` or `scalar`) when it names one this CPU has.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let asked = std::env::var("SOFTPROMPT_SIMD").ok();
        Isa::available()
            .into_iter()
            .find(|i| asked.as_deref() == Some(i.name()))
            .unwrap_or_else(Isa::detect)
    })
}

/// One vector register of f32 lanes. Every method is an intrinsic of the instruction set
/// the implementing type stands for: call them only inside a function compiled for it
/// (`#[target_feature]`), on a CPU that has it.
#[allow(clippy::missing_safety_doc)]
pub(crate) trait Lanes: Copy {
    type V: Copy;
    const N: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// a·b + c, fused
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    /// the magnitude of `mag` with the sign of `sign`
    unsafe fn copysign(mag: Self::V, sign: Self::V) -> Self::V;
    /// round to nearest, ties to even
    unsafe fn round(a: Self::V) -> Self::V;
    /// 2^n for whole n in [-126, 127]
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// a < b ? x : y, per lane
    unsafe fn select_lt(a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// x > 0 ? x : 0 (NaN gives 0)
    unsafe fn relu(x: Self::V) -> Self::V;
    /// x > 0 ? 1 : 0
    unsafe fn step(x: Self::V) -> Self::V;
    /// the sum of the lanes, pairwise
    unsafe fn sum(a: Self::V) -> f32;
    /// the largest lane
    unsafe fn hmax(a: Self::V) -> f32;
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    type V = __m512;
    const N: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn abs(a: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(a),
            _mm512_set1_epi32(0x7fff_ffff),
        ))
    }
    #[inline(always)]
    unsafe fn copysign(mag: __m512, sign: __m512) -> __m512 {
        let s = _mm512_and_si512(_mm512_castps_si512(sign), _mm512_set1_epi32(i32::MIN));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(Self::abs(mag)), s))
    }
    #[inline(always)]
    unsafe fn round(a: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b);
        _mm512_mask_blend_ps(m, y, x)
    }
    #[inline(always)]
    unsafe fn relu(x: __m512) -> __m512 {
        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_setzero_ps());
        _mm512_maskz_mov_ps(m, x)
    }
    #[inline(always)]
    unsafe fn step(x: __m512) -> __m512 {
        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_setzero_ps());
        _mm512_maskz_mov_ps(m, _mm512_set1_ps(1.0))
    }
    #[inline(always)]
    unsafe fn sum(a: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(a);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
        Avx2::sum(_mm256_add_ps(lo, hi))
    }
    #[inline(always)]
    unsafe fn hmax(a: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(a);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
        Avx2::hmax(_mm256_max_ps(lo, hi))
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    type V = __m256;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn abs(a: __m256) -> __m256 {
        _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn copysign(mag: __m256, sign: __m256) -> __m256 {
        let s = _mm256_and_ps(sign, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN)));
        _mm256_or_ps(Self::abs(mag), s)
    }
    #[inline(always)]
    unsafe fn round(a: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m256) -> __m256 {
        let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b))
    }
    #[inline(always)]
    unsafe fn relu(x: __m256) -> __m256 {
        _mm256_and_ps(x, _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps()))
    }
    #[inline(always)]
    unsafe fn step(x: __m256) -> __m256 {
        _mm256_and_ps(
            _mm256_set1_ps(1.0),
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps()),
        )
    }
    #[inline(always)]
    unsafe fn sum(a: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
    #[inline(always)]
    unsafe fn hmax(a: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

// ---- the math, generic over the register ----

/// e^x (Cephes expf): 0 below -87.3, e^88 above 88.
#[inline(always)]
pub(crate) unsafe fn exp<S: Lanes>(x: S::V) -> S::V {
    let lo = S::splat(-87.3);
    let xc = S::max(S::min(x, S::splat(88.0)), lo);
    let n = S::round(S::mul(xc, S::splat(std::f32::consts::LOG2_E)));
    let r = S::fma(n, S::splat(-0.693_359_4), xc);
    let r = S::fma(n, S::splat(2.121_944_4e-4), r);
    let mut p = S::splat(1.987_569_1e-4);
    p = S::fma(p, r, S::splat(1.398_199_9e-3));
    p = S::fma(p, r, S::splat(8.333_452e-3));
    p = S::fma(p, r, S::splat(4.166_579_6e-2));
    p = S::fma(p, r, S::splat(0.166_666_65));
    p = S::fma(p, r, S::splat(0.5));
    let r2 = S::mul(r, r);
    let y = S::add(S::fma(p, r2, r), S::splat(1.0));
    S::select_lt(x, lo, S::splat(0.0), S::mul(y, S::pow2i(n)))
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044715;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// (erf(z), e^(-z²)) by Abramowitz-Stegun 7.1.26, the scalar reference's formula.
#[inline(always)]
unsafe fn erf_and_gauss<S: Lanes>(z: S::V) -> (S::V, S::V) {
    let one = S::splat(1.0);
    let t = S::div(one, S::fma(S::splat(0.327_591_1), S::abs(z), one));
    let mut p = S::splat(1.061_405_4);
    p = S::fma(p, t, S::splat(-1.453_152));
    p = S::fma(p, t, S::splat(1.421_413_8));
    p = S::fma(p, t, S::splat(-0.284_496_74));
    p = S::fma(p, t, S::splat(0.254_829_6));
    p = S::mul(p, t);
    let gauss = exp::<S>(S::sub(S::splat(0.0), S::mul(z, z)));
    let erf = S::copysign(S::sub(one, S::mul(p, gauss)), z);
    (erf, gauss)
}

/// sigmoid(2u) for GELU's tanh form, u = √(2/π)(x + a x³), and d(2u)/dx.
#[inline(always)]
unsafe fn gelu_tanh_parts<S: Lanes>(x: S::V) -> (S::V, S::V) {
    let x2 = S::mul(x, x);
    let k2 = S::splat(2.0 * SQRT_2_OVER_PI);
    let two_u = S::mul(S::mul(k2, x), S::fma(S::splat(GELU_A), x2, S::splat(1.0)));
    let e = exp::<S>(S::sub(S::splat(0.0), two_u));
    let s = S::div(S::splat(1.0), S::add(S::splat(1.0), e));
    let d_two_u = S::mul(k2, S::fma(S::splat(3.0 * GELU_A), x2, S::splat(1.0)));
    (s, d_two_u)
}

/// sigmoid(x).
#[inline(always)]
unsafe fn sigmoid<S: Lanes>(x: S::V) -> S::V {
    let e = exp::<S>(S::sub(S::splat(0.0), x));
    S::div(S::splat(1.0), S::add(S::splat(1.0), e))
}

/// act(x).
#[inline(always)]
unsafe fn act_value<S: Lanes>(act: Act, x: S::V) -> S::V {
    match act {
        Act::GeluErf => {
            let (erf, _) = erf_and_gauss::<S>(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
            S::mul(S::mul(S::splat(0.5), x), S::add(S::splat(1.0), erf))
        }
        Act::GeluTanh => S::mul(x, gelu_tanh_parts::<S>(x).0),
        Act::Relu => S::relu(x),
        Act::Silu => S::mul(x, sigmoid::<S>(x)),
    }
}

/// (act(x), act'(x)).
#[inline(always)]
unsafe fn act_value_grad<S: Lanes>(act: Act, x: S::V) -> (S::V, S::V) {
    let one = S::splat(1.0);
    match act {
        Act::GeluErf => {
            let (erf, gauss) =
                erf_and_gauss::<S>(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
            let cdf = S::mul(S::splat(0.5), S::add(one, erf));
            let grad = S::fma(S::mul(x, gauss), S::splat(FRAC_1_SQRT_2PI), cdf);
            (S::mul(x, cdf), grad)
        }
        Act::GeluTanh => {
            let (s, d_two_u) = gelu_tanh_parts::<S>(x);
            // d/dx x·s(2u) = s + x·s(1 - s)·d(2u)/dx
            let ds = S::mul(S::mul(s, S::sub(one, s)), d_two_u);
            (S::mul(x, s), S::fma(x, ds, s))
        }
        Act::Relu => (S::relu(x), S::step(x)),
        Act::Silu => {
            let s = sigmoid::<S>(x);
            let grad = S::mul(s, S::fma(x, S::sub(one, s), one));
            (S::mul(x, s), grad)
        }
    }
}

// ---- slice drivers ----

/// Runs `$body` over register-sized blocks of `$len` elements with each `$i` (read) and `$o`
/// (read and written) pointing at the block, then once over the tail padded to a register
/// (zeros after the inputs' values, the padding's results dropped). A macro, not a closure:
/// a closure would be compiled without the instruction set of the function it sits in.
macro_rules! blocks {
    ($S:ty, $len:expr, [$($i:ident = $ip:expr),*], [$($o:ident = $op:expr),*], $body:block) => {{
        let len: usize = $len;
        let full = len / <$S>::N * <$S>::N;
        let mut at = 0;
        while at < full {
            $(let $i: *const f32 = ($ip).add(at);)*
            $(let $o: *mut f32 = ($op).add(at);)*
            $body
            at += <$S>::N;
        }
        let rest = len - full;
        if rest > 0 {
            $(let $i = {
                let mut t = [0f32; 16];
                std::ptr::copy_nonoverlapping(($ip).add(full), t.as_mut_ptr(), rest);
                t
            };)*
            $(let mut $o = {
                let mut t = [0f32; 16];
                std::ptr::copy_nonoverlapping(($op).add(full) as *const f32, t.as_mut_ptr(), rest);
                t
            };)*
            {
                $(let $i: *const f32 = $i.as_ptr();)*
                $(let $o: *mut f32 = $o.as_mut_ptr();)*
                $body
            }
            $(std::ptr::copy_nonoverlapping($o.as_ptr(), ($op).add(full), rest);)*
        }
    }};
}

#[inline(always)]
unsafe fn act_fwd_g<S: Lanes>(out: &mut [f32], inp: &[f32], act: Act) {
    let (xp, yp) = (inp.as_ptr(), out.as_mut_ptr());
    blocks!(S, out.len(), [x = xp], [y = yp], {
        S::store(y, act_value::<S>(act, S::load(x)));
    });
}

#[inline(always)]
unsafe fn act_bwd_g<S: Lanes>(dinp: &mut [f32], dout: &[f32], inp: &[f32], act: Act) {
    let (dyp, xp, dxp) = (dout.as_ptr(), inp.as_ptr(), dinp.as_mut_ptr());
    blocks!(S, dinp.len(), [dy = dyp, x = xp], [dx = dxp], {
        let (_, g) = act_value_grad::<S>(act, S::load(x));
        S::store(dx, S::fma(S::load(dy), g, S::load(dx)));
    });
}

#[inline(always)]
unsafe fn gated_fwd_g<S: Lanes>(out: &mut [f32], gate: &[f32], lin: &[f32], act: Act) {
    let (gp, lp, yp) = (gate.as_ptr(), lin.as_ptr(), out.as_mut_ptr());
    blocks!(S, out.len(), [g = gp, l = lp], [y = yp], {
        S::store(y, S::mul(act_value::<S>(act, S::load(g)), S::load(l)));
    });
}

#[inline(always)]
unsafe fn gated_bwd_g<S: Lanes>(
    dgate: &mut [f32],
    dlin: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    lin: &[f32],
    act: Act,
) {
    let (dyp, gp, lp) = (dout.as_ptr(), gate.as_ptr(), lin.as_ptr());
    let (dgp, dlp) = (dgate.as_mut_ptr(), dlin.as_mut_ptr());
    blocks!(
        S,
        dgate.len(),
        [dy = dyp, g = gp, l = lp],
        [dg = dgp, dl = dlp],
        {
            let dy = S::load(dy);
            let (v, grad) = act_value_grad::<S>(act, S::load(g));
            S::store(dg, S::fma(S::mul(dy, grad), S::load(l), S::load(dg)));
            S::store(dl, S::fma(dy, v, S::load(dl)));
        }
    );
}

/// Σ x in lane order, then across the lanes; padding adds zeros.
#[inline(always)]
unsafe fn sum_g<S: Lanes>(x: &[f32]) -> f32 {
    let mut acc = S::splat(0.0);
    let xp = x.as_ptr();
    blocks!(S, x.len(), [p = xp], [], {
        acc = S::add(acc, S::load(p));
    });
    S::sum(acc)
}

/// Σ (x - c)² (layer norm's variance about the mean, RMS norm's mean square with c = 0).
#[inline(always)]
unsafe fn sum_sq_dev_g<S: Lanes>(x: &[f32], c: f32) -> f32 {
    let (mut acc, cv) = (S::splat(0.0), S::splat(c));
    let full = x.len() / S::N * S::N;
    let mut i = 0;
    while i < full {
        let d = S::sub(S::load(x.as_ptr().add(i)), cv);
        acc = S::fma(d, d, acc);
        i += S::N;
    }
    let mut s = S::sum(acc);
    for &v in &x[full..] {
        s += (v - c) * (v - c);
    }
    s
}

/// y = (x - mu)·rs·w + b (b None: no shift, as RMS norm).
#[inline(always)]
unsafe fn norm_row_g<S: Lanes>(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    mu: f32,
    rs: f32,
) {
    let (muv, rsv) = (S::splat(mu), S::splat(rs));
    let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    match b {
        Some(b) => {
            let bp = b.as_ptr();
            blocks!(S, y.len(), [x = xp, w = wp, b = bp], [y = yp], {
                let xh = S::mul(S::sub(S::load(x), muv), rsv);
                S::store(y, S::fma(xh, S::load(w), S::load(b)));
            })
        }
        None => blocks!(S, y.len(), [x = xp, w = wp], [y = yp], {
            S::store(y, S::mul(S::mul(S::sub(S::load(x), muv), rsv), S::load(w)));
        }),
    }
}

/// (Σ dy·w, Σ dy·w·(x - mu)) over one row.
#[inline(always)]
unsafe fn norm_bwd_sums_g<S: Lanes>(dy: &[f32], x: &[f32], w: &[f32], mu: f32) -> (f32, f32) {
    let (mut a, mut b, muv) = (S::splat(0.0), S::splat(0.0), S::splat(mu));
    let (dyp, xp, wp) = (dy.as_ptr(), x.as_ptr(), w.as_ptr());
    blocks!(S, dy.len(), [dy = dyp, x = xp, w = wp], [], {
        let g = S::mul(S::load(dy), S::load(w));
        a = S::add(a, g);
        b = S::fma(g, S::sub(S::load(x), muv), b);
    });
    (S::sum(a), S::sum(b))
}

/// dx += dy·w·rs - ((x - mu)·k + c0): layer norm's backward row (c0 = mean_g·rs,
/// k = mean_gx·rs²) and RMS norm's (mu = c0 = 0).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn norm_bwd_row_g<S: Lanes>(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    mu: f32,
    rs: f32,
    k: f32,
    c0: f32,
) {
    let (muv, rsv, kv, c0v) = (S::splat(mu), S::splat(rs), S::splat(k), S::splat(c0));
    let (dyp, xp, wp, dxp) = (dy.as_ptr(), x.as_ptr(), w.as_ptr(), dx.as_mut_ptr());
    blocks!(S, dx.len(), [dy = dyp, x = xp, w = wp], [dx = dxp], {
        let g = S::mul(S::mul(S::load(dy), S::load(w)), rsv);
        let t = S::fma(S::sub(S::load(x), muv), kv, c0v);
        S::store(dx, S::add(S::load(dx), S::sub(g, t)));
    });
}

/// row = e^(row - m); returns the sum. -inf entries give 0.
#[inline(always)]
unsafe fn exp_sub_g<S: Lanes>(row: &mut [f32], m: f32) -> f32 {
    let (mut acc, mv) = (S::splat(0.0), S::splat(m));
    let full = row.len() / S::N * S::N;
    let rp = row.as_mut_ptr();
    blocks!(S, row.len(), [], [p = rp], {
        S::store(p, exp::<S>(S::sub(S::load(p), mv)));
    });
    let mut i = 0;
    while i < full {
        acc = S::add(acc, S::load(row.as_ptr().add(i)));
        i += S::N;
    }
    let mut s = S::sum(acc);
    for &v in &row[full..] {
        s += v;
    }
    s
}

/// max over the row (-inf when empty).
#[inline(always)]
unsafe fn max_g<S: Lanes>(row: &[f32]) -> f32 {
    let mut acc = S::splat(f32::NEG_INFINITY);
    let full = row.len() / S::N * S::N;
    let mut i = 0;
    while i < full {
        acc = S::max(acc, S::load(row.as_ptr().add(i)));
        i += S::N;
    }
    let mut m = S::hmax(acc);
    for &v in &row[full..] {
        m = m.max(v);
    }
    m
}

/// ds = p·(ds - Σ p·ds)·scale over one row: attention backward's dS from dP.
#[inline(always)]
unsafe fn softmax_bwd_row_g<S: Lanes>(ds: &mut [f32], p: &[f32], scale: f32) {
    let mut acc = S::splat(0.0);
    let full = p.len() / S::N * S::N;
    let mut i = 0;
    while i < full {
        acc = S::fma(S::load(p.as_ptr().add(i)), S::load(ds.as_ptr().add(i)), acc);
        i += S::N;
    }
    let mut d = S::sum(acc);
    for j in full..p.len() {
        d += p[j] * ds[j];
    }
    let (dv, sv) = (S::splat(d), S::splat(scale));
    let (pp, xp) = (p.as_ptr(), ds.as_mut_ptr());
    blocks!(S, p.len(), [p = pp], [x = xp], {
        S::store(x, S::mul(S::mul(S::load(p), S::sub(S::load(x), dv)), sv));
    });
}

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
    /// dinp (N) += dout · act'(inp).
    act_bwd(dinp: &mut [f32], dout: &[f32], inp: &[f32], act: Act) -> () = act_bwd_g
    | for i in 0..dinp.len() {
        dinp[i] += dout[i] * act.grad(inp[i]);
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
    /// dgate += dout·act'(gate)·lin, dlin += dout·act(gate).
    gated_bwd(dgate: &mut [f32], dlin: &mut [f32], dout: &[f32], gate: &[f32], lin: &[f32], act: Act) -> () = gated_bwd_g
    | for i in 0..dgate.len() {
        dgate[i] += dout[i] * act.grad(gate[i]) * lin[i];
        dlin[i] += dout[i] * act.value(gate[i]);
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
    /// dx += dy·w·rs - ((x - mu)·k + c0).
    norm_bwd_row(dx: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], mu: f32, rs: f32, k: f32, c0: f32) -> () = norm_bwd_row_g
    | for i in 0..dx.len() {
        dx[i] += dy[i] * w[i] * rs - ((x[i] - mu) * k + c0);
    }
);
dispatch!(
    /// row = e^(row - m), returning Σ row.
    exp_sub(row: &mut [f32], m: f32) -> f32 = exp_sub_g
    | row.iter_mut().map(|x| { *x = (*x - m).exp(); *x }).sum()
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
