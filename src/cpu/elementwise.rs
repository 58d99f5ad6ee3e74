//! Residual additions and scalings. `add_inplace` adds (the residual contract); the others
//! overwrite.

use super::real::Real;
use rayon::prelude::*;

/// out (N) = a + b.
pub fn add_fwd<F: Real>(out: &mut [F], a: &[F], b: &[F]) {
    out.par_iter_mut()
        .zip(a.par_iter().zip(b.par_iter()))
        .for_each(|(o, (&x, &y))| *o = x + y);
}

/// acc (N) += a.
pub fn add_inplace<F: Real>(acc: &mut [F], a: &[F]) {
    acc.par_iter_mut()
        .zip(a.par_iter())
        .for_each(|(o, &x)| *o += x);
}

/// x (N) *= s.
pub fn scale_inplace<F: Real>(x: &mut [F], s: f64) {
    let s = F::from_f64(s);
    x.par_iter_mut().for_each(|v| *v *= s);
}
