//! The one measure of how close computed numbers are to expected ones: the reference format's,
//! for `parity` and `bench`, and the one every test's `assert_close` applies.
//!
//! The measure is the relative L2 error with an explicit floor on its denominator,
//!
//! ```text
//! rel_err = ‖got − want‖₂ / max(‖want‖₂, floor)
//! ```
//!
//! the reference format's "Comparison" (shared/docs/reference-format.md): a tensor is measured
//! with floor [`TENSOR_FLOOR`], a scalar (where the formula reads
//! |got − want| / max(|want|, floor)) with [`SCALAR_FLOOR`]; [`reference_floor`] picks
//! between them. A test whose expected values can cancel to near zero measures against the
//! data's scale instead: floor = scale·√n. Beside it [`Closeness`] keeps what a report
//! needs: the max abs error and where it occurs, the first non-finite pair, and both lengths.
//! Any non-finite value, or a length mismatch, makes `rel_err` NaN, so no tolerance passes.
//!
//! Sums run in f64 in element order, so a result is reproducible bit for bit.

use std::fmt::Write as _;

/// The floor on ‖want‖₂ for a tensor: it only guards the division (an all-zero `want` then
/// needs ‖got‖₂ ≤ 1e-30·tol).
pub const TENSOR_FLOOR: f64 = 1e-30;

/// The floor on |want| for a scalar such as the loss: below 1e-6 in magnitude, the error
/// is measured against 1e-6.
pub const SCALAR_FLOOR: f64 = 1e-6;

/// How many got/want pairs [`Closeness::describe`] lists from the start.
const FIRST_PAIRS: usize = 4;

/// The reference format's floor for an expected tensor of `len` elements: [`SCALAR_FLOOR`]
/// for one element, [`TENSOR_FLOOR`] otherwise.
pub fn reference_floor(len: usize) -> f64 {
    if len == 1 {
        SCALAR_FLOOR
    } else {
        TENSOR_FLOOR
    }
}

/// The closeness of `got` to `want`, element by element.
///
/// ```
/// use softprompt::internals::closeness::{Closeness, TENSOR_FLOOR};
///
/// let want = [3.0f64, 4.0];
/// let got = [3.0f32, 4.5];
/// let c = Closeness::of(&got, &want, TENSOR_FLOOR);
/// assert_eq!(c.rel_err, 0.1); // ‖(0, 0.5)‖ / ‖(3, 4)‖
/// assert_eq!((c.max_abs, c.worst), (0.5, 1));
/// assert!(c.within(0.1) && !c.within(0.05));
/// assert!(c.describe(&got, &want).contains("max abs err 5.000e-1 at [1]"));
///
/// // a NaN, or a length mismatch, fails every tolerance
/// let c = Closeness::of(&[f32::NAN, 4.0], &want, TENSOR_FLOOR);
/// assert!(!c.finite() && c.first_non_finite == Some(0) && !c.within(f64::INFINITY));
/// assert!(!Closeness::of(&[3.0f64], &want, TENSOR_FLOOR).len_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closeness {
    /// ‖got − want‖₂ / max(‖want‖₂, floor); NaN when the lengths differ or any value is
    /// not finite.
    pub rel_err: f64,
    /// max_i |got_i − want_i| over the pairs compared (a NaN difference is skipped, an
    /// infinite one counts).
    pub max_abs: f64,
    /// The first index where `max_abs` occurs (0 when nothing was compared).
    pub worst: usize,
    /// The first index where `got` or `want` is NaN or infinite.
    pub first_non_finite: Option<usize>,
    /// ‖got − want‖₂ and ‖want‖₂ over the pairs compared.
    pub diff_norm: f64,
    pub want_norm: f64,
    /// The floor on the denominator that `rel_err` used.
    pub floor: f64,
    /// The two lengths; only their common prefix is compared.
    pub got_len: usize,
    pub want_len: usize,
}

impl Closeness {
    /// Measures `got` against `want` (f32 or f64 slices, in any mix) with the given floor on
    /// ‖want‖₂.
    pub fn of<G: Copy + Into<f64>, W: Copy + Into<f64>>(
        got: &[G],
        want: &[W],
        floor: f64,
    ) -> Closeness {
        let (mut diff2, mut want2, mut max_abs, mut worst) = (0.0f64, 0.0f64, 0.0f64, 0);
        let mut first_non_finite = None;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g, w): (f64, f64) = (g.into(), w.into());
            if first_non_finite.is_none() && !(g.is_finite() && w.is_finite()) {
                first_non_finite = Some(i);
            }
            let d = g - w;
            diff2 += d * d;
            want2 += w * w;
            if d.abs() > max_abs {
                max_abs = d.abs();
                worst = i;
            }
        }
        let (diff_norm, want_norm) = (diff2.sqrt(), want2.sqrt());
        let comparable = got.len() == want.len() && first_non_finite.is_none();
        Closeness {
            rel_err: if comparable {
                diff_norm / want_norm.max(floor)
            } else {
                f64::NAN
            },
            max_abs,
            worst,
            first_non_finite,
            diff_norm,
            want_norm,
            floor,
            got_len: got.len(),
            want_len: want.len(),
        }
    }

    /// Whether both slices have the same length.
    pub fn len_ok(&self) -> bool {
        self.got_len == self.want_len
    }

    /// Whether every value compared is finite.
    pub fn finite(&self) -> bool {
        self.first_non_finite.is_none()
    }

    /// Whether `rel_err <= tol`: false on a length mismatch or any non-finite value.
    pub fn within(&self, tol: f64) -> bool {
        self.rel_err <= tol
    }

    /// One line for a report, given the slices that were measured: the relative error and
    /// its parts, the max abs error with the pair where it occurs, the first non-finite pair,
    /// and the first few pairs.
    pub fn describe<G: Copy + Into<f64>, W: Copy + Into<f64>>(
        &self,
        got: &[G],
        want: &[W],
    ) -> String {
        let pair = |i: usize| -> String {
            let (g, w): (f64, f64) = (got[i].into(), want[i].into());
            format!("[{i}] got {g:.8e} want {w:.8e}")
        };
        let mut s = String::new();
        if !self.len_ok() {
            let _ = write!(
                s,
                "LENGTH MISMATCH: got {} values, want {}; ",
                self.got_len, self.want_len
            );
        }
        let n = self.got_len.min(self.want_len);
        let _ = write!(
            s,
            "{n} values, rel err {:.3e} (‖got − want‖ {:.3e} / max(‖want‖ {:.3e}, floor {:.0e}))",
            self.rel_err, self.diff_norm, self.want_norm, self.floor
        );
        if let Some(i) = self.first_non_finite {
            let _ = write!(s, ", NON-FINITE at {}", pair(i));
        }
        if n > 0 {
            let skipped = if self.finite() {
                ""
            } else {
                " (NaN differences skipped)"
            };
            let _ = write!(
                s,
                ", max abs err{skipped} {:.3e} at {}",
                self.max_abs,
                pair(self.worst)
            );
        }
        let first: Vec<String> = (0..n.min(FIRST_PAIRS)).map(pair).collect();
        let _ = write!(s, "; first pairs: {}", first.join(", "));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_floor_measures_small_values_absolutely() {
        let c = Closeness::of(&[3e-7f32], &[1e-7f32], reference_floor(1));
        assert!((c.rel_err - 2e-1).abs() < 1e-6, "{}", c.rel_err);
        let c = Closeness::of(&[2.0f64], &[4.0f64], reference_floor(1));
        assert_eq!(c.rel_err, 0.5);
    }

    #[test]
    fn all_zero_want_needs_zero_got() {
        assert_eq!(
            Closeness::of(&[0.0f64; 3], &[0.0f64; 3], TENSOR_FLOOR).rel_err,
            0.0
        );
        assert!(!Closeness::of(&[0.0, 1e-20], &[0.0f64; 2], TENSOR_FLOOR).within(1.0));
    }

    #[test]
    fn non_finite_and_length_mismatch_fail() {
        let c = Closeness::of(&[1.0, f64::INFINITY, f64::NAN], &[1.0f64; 3], TENSOR_FLOOR);
        assert_eq!(c.first_non_finite, Some(1));
        assert_eq!((c.max_abs, c.worst), (f64::INFINITY, 1));
        assert!(c.rel_err.is_nan() && !c.within(f64::INFINITY));
        let c = Closeness::of(&[1.0f64; 2], &[1.0f64; 3], TENSOR_FLOOR);
        assert!(!c.len_ok() && c.rel_err.is_nan());
        assert!(c
            .describe(&[1.0f64; 2], &[1.0f64; 3])
            .starts_with("LENGTH MISMATCH"));
        let empty: [f32; 0] = [];
        assert_eq!(Closeness::of(&empty, &empty, TENSOR_FLOOR).rel_err, 0.0);
        assert!(Closeness::of(&empty, &empty, TENSOR_FLOOR)
            .describe(&empty, &empty)
            .starts_with("0 values"));
    }
}
