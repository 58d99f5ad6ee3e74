//! Row selection and pooling, so heads compute only the rows their loss reads. Reference
//! src/cpu/rows.rs, kernels kernels/rows.cu, launchers src/cuda/rows.rs.

use crate::error::Result;

op_family! {
    /// Gathers rows by index, and masked mean pooling.
    pub trait RowOps {
        /// out (M, C) = inp[idx[m]] for inp (N, C), idx (M) I32.
        fn gather_rows(
            &self,
            out: &mut Self::Buf,
            inp: &Self::Buf,
            idx: &Self::Buf,
            m: usize,
            c: usize,
        ) -> Result<()>;
        /// dinp[idx[m]] += dout[m] for dout (M, C); indices may repeat.
        fn scatter_rows_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            idx: &Self::Buf,
            m: usize,
            c: usize,
        ) -> Result<()>;
        /// out (B, C) = Σ_s weight[b, s] · inp[b, s] over inp (B, T, C): a masked mean when
        /// `weight` (B, T) F32 holds 1/count on pooled rows and 0 elsewhere.
        fn mean_pool_fwd(
            &self,
            out: &mut Self::Buf,
            inp: &Self::Buf,
            weight: &Self::Buf,
            b: usize,
            t: usize,
            c: usize,
        ) -> Result<()>;
        /// dinp (B, T, C) += weight[b, s] · dout[b]. With `accumulate` false dinp is written
        /// whole (zeros at the rows of weight 0), bit for bit what adding into zeros gives.
        fn mean_pool_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            weight: &Self::Buf,
            b: usize,
            t: usize,
            c: usize,
            accumulate: bool,
        ) -> Result<()>;
    }
}
