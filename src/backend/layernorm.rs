//! LayerNorm stem (BERT): reference src/cpu/layernorm.rs, kernels kernels/layernorm.cu,
//! launchers src/cuda/layernorm.rs.

use crate::error::Result;

op_family! {
    /// LayerNorm over rows of C, saving mean and rstd (N) F32 for backward.
    pub trait LayerNormOps {
        /// out (N, C) = (inp - mean) * rstd * w + bias.
        fn layernorm_fwd(
            &self,
            out: &mut Self::Buf,
            mean: &mut Self::Buf,
            rstd: &mut Self::Buf,
            inp: &Self::Buf,
            w: &Self::Buf,
            bias: &Self::Buf,
            n: usize,
            c: usize,
            eps: f64,
        ) -> Result<()>;
        /// dinp (N, C) += LayerNorm backward of dout (N, C) with `accumulate`, else dinp = it,
        /// written whole (bit for bit what adding into zeros gives).
        fn layernorm_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            inp: &Self::Buf,
            w: &Self::Buf,
            mean: &Self::Buf,
            rstd: &Self::Buf,
            n: usize,
            c: usize,
            accumulate: bool,
        ) -> Result<()>;
    }
}
