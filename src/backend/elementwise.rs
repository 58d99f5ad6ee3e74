//! Residual additions, scalings and the squared norm. Reference src/cpu/elementwise.rs,
//! kernels kernels/elementwise.cu, launchers src/cuda/elementwise.rs.

use crate::error::Result;

op_family! {
    /// Elementwise arithmetic over N values, in the activations' type or F32.
    pub trait ElementwiseOps {
        /// out (N) = a + b.
        fn add_fwd(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, n: usize) -> Result<()>;
        /// acc (N) += a.
        fn add_inplace(&self, acc: &mut Self::Buf, a: &Self::Buf, n: usize) -> Result<()>;
        /// x (N) *= s.
        fn scale_inplace(&self, x: &mut Self::Buf, s: f64, n: usize) -> Result<()>;
        /// Σ x² over the first n values of an F32 buffer, reduced on the device in double
        /// precision; only the scalar comes back to the host (the gradient norm).
        fn sum_squares(&self, x: &Self::Buf, n: usize) -> Result<f64>;
    }
}
