//! RMS norm stem (T5): reference src/cpu/rmsnorm.rs, kernels kernels/rmsnorm.cu, launchers
//! src/cuda/rmsnorm.rs.

use crate::error::Result;

op_family! {
    /// RMS norm over rows of C (no mean, no bias), saving rstd (N) F32 for backward.
    pub trait RmsNormOps {
        /// out (N, C) = inp * rstd * w, rstd = 1/sqrt(mean(inp^2) + eps).
        fn rmsnorm_fwd(
            &self,
            out: &mut Self::Buf,
            rstd: &mut Self::Buf,
            inp: &Self::Buf,
            w: &Self::Buf,
            n: usize,
            c: usize,
            eps: f64,
        ) -> Result<()>;
        /// dinp (N, C) += RMS-norm backward of dout (N, C) with `accumulate` (T5's residual
        /// stream), else dinp = it, written whole (bit for bit what adding into zeros gives).
        fn rmsnorm_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            inp: &Self::Buf,
            w: &Self::Buf,
            rstd: &Self::Buf,
            n: usize,
            c: usize,
            accumulate: bool,
        ) -> Result<()>;
    }
}
