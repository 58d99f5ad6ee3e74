//! The scalar type of the CPU reference. The engine runs in f32; the finite-difference tests
//! instantiate the very same op code in f64, so the gradient checks test what ships.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    /// (erf(x), exp(-x²)): GELU's backward needs both, and both come from one exponential.
    fn erf_and_gauss(self) -> (Self, Self) {
        (self.erf(), (-self * self).exp())
    }
    fn max(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    fn neg_infinity() -> Self;
    /// The largest element (-inf when empty): softmax's shift.
    fn row_max(row: &[Self]) -> Self {
        row.iter().copied().fold(Self::neg_infinity(), Self::max)
    }
    /// row = e^(row - m), returning Σ row.
    fn exp_sub_sum(row: &mut [Self], m: Self) -> Self {
        let mut sum = Self::ZERO;
        for x in row.iter_mut() {
            *x = (*x - m).exp();
            sum += *x;
        }
        sum
    }
    /// row = row·s: softmax's normalisation.
    fn scale_row(row: &mut [Self], s: Self) {
        row.iter_mut().for_each(|x| *x *= s);
    }
    /// ds = p·(ds - D)·scale with D = Σ p·ds: softmax's backward over one row.
    fn softmax_bwd_row(ds: &mut [Self], p: &[Self], scale: Self) {
        let d: Self = p.iter().zip(ds.iter()).map(|(&a, &b)| a * b).sum();
        for (x, &pj) in ds.iter_mut().zip(p) {
            *x = pj * (*x - d) * scale;
        }
    }
    /// row = row·scale + add (+ bias): attention's scores, scaled, with the padding mask as an
    /// additive 0 / -inf row and the position bias; a multiply then adds, never fused, so every
    /// instruction set rounds as this scalar reference does.
    fn scale_add_row(row: &mut [Self], scale: Self, add: &[Self], bias: Option<&[Self]>) {
        match bias {
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
    }
    /// The slice as float32, for the vectorised path (src/cpu/simd.rs); None for f64, which
    /// always runs the scalar reference.
    fn as_f32(x: &[Self]) -> Option<&[f32]> {
        let _ = x;
        None
    }
    fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]> {
        let _ = x;
        None
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
    /// Abramowitz-Stegun 7.1.26, the form PyTorch's vectorised CPU erf uses: |error| < 5e-7,
    /// and about seven times faster than libm's erff, which dominated GELU's cost.
    fn erf(self) -> Self {
        let t = 1.0 / (1.0 + 0.327_591_1 * self.abs());
        let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t;
        (1.0 - poly * (-self * self).exp()).copysign(self)
    }
    fn erf_and_gauss(self) -> (Self, Self) {
        let t = 1.0 / (1.0 + 0.327_591_1 * self.abs());
        let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t;
        let gauss = (-self * self).exp();
        ((1.0 - poly * gauss).copysign(self), gauss)
    }
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn neg_infinity() -> Self {
        f32::NEG_INFINITY
    }
    fn row_max(row: &[f32]) -> f32 {
        super::simd::row_max(super::simd::isa(), row)
    }
    fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
        super::simd::exp_sub(super::simd::isa(), row, m)
    }
    fn scale_row(row: &mut [f32], s: f32) {
        super::simd::scale_row(super::simd::isa(), row, s)
    }
    fn softmax_bwd_row(ds: &mut [f32], p: &[f32], scale: f32) {
        super::simd::softmax_bwd_row(super::simd::isa(), ds, p, scale)
    }
    fn scale_add_row(row: &mut [f32], scale: f32, add: &[f32], bias: Option<&[f32]>) {
        super::simd::scale_add_row(super::simd::isa(), row, scale, add, bias)
    }
    fn as_f32(x: &[Self]) -> Option<&[f32]> {
        Some(x)
    }
    fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn max(self, other: Self) -> Self {
        f64::max(self, other)
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn neg_infinity() -> Self {
        f64::NEG_INFINITY
    }
}

/// What a backward op adds its gradient to: the buffer's value with `acc`, else 0, so that
/// writing (`accumulate` false) gives the bits adding into a zeroed buffer gives.
#[inline(always)]
pub fn base<F: Real>(acc: bool, old: F) -> F {
    if acc {
        old
    } else {
        F::ZERO
    }
}
