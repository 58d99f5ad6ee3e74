//! Linear layers against frozen weights: reference src/cpu/matmul.rs, kernels
//! kernels/matmul.cu (bias fill, operand casts; the products run in cuBLAS), launchers
//! src/cuda/matmul.rs. W is (N, K), (out_features, in_features), as checkpoints store it.
//! No weight gradient exists, so backward is dX only and the forward input is never saved.

use crate::error::Result;

op_family! {
    /// Products with a frozen weight.
    pub trait MatmulOps {
        /// out (M, N) = inp (M, K) · Wᵀ + bias (N). `out` may be F32 where activations are
        /// bf16 (the heads' logits).
        fn linear_fwd(
            &self,
            out: &mut Self::Buf,
            inp: &Self::Buf,
            w: &Self::Buf,
            bias: Option<&Self::Buf>,
            m: usize,
            k: usize,
            n: usize,
        ) -> Result<()> = flops(2 * m * k * n);
        /// dinp (M, K) += dout (M, N) · W with `accumulate`, else dinp = dout · W, written whole
        /// (so the first product of a sum needs no zeroed buffer: `Storage::output`). `dout` may
        /// be F32 (d logits).
        fn linear_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            w: &Self::Buf,
            m: usize,
            k: usize,
            n: usize,
            accumulate: bool,
        ) -> Result<()> = flops(2 * m * k * n);
        /// out (M, H, N) = inp (M, H, K) · W_hᵀ for every head h, W (H·N, K) and W_h its rows
        /// h·N..(h+1)·N: a linear layer per head (H = 1: `linear_fwd` without a bias). T5's
        /// cross-attention folds its key and value products into its queries with these two
        /// (src/models/t5/cross.rs).
        fn linear_heads_fwd(
            &self,
            out: &mut Self::Buf,
            inp: &Self::Buf,
            w: &Self::Buf,
            m: usize,
            h: usize,
            k: usize,
            n: usize,
        ) -> Result<()> = flops(2 * m * h * k * n);
        /// dinp (M, H, K) += dout (M, H, N) · W_h for every head h with `accumulate`, else
        /// dinp = dout · W_h written whole (H = 1: `linear_bwd`).
        fn linear_heads_bwd(
            &self,
            dinp: &mut Self::Buf,
            dout: &Self::Buf,
            w: &Self::Buf,
            m: usize,
            h: usize,
            k: usize,
            n: usize,
            accumulate: bool,
        ) -> Result<()> = flops(2 * m * h * k * n);
    }
}
