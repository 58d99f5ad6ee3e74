//! Linear layers against frozen weights: reference src/cpu/matmul.rs, kernels
//! kernels/matmul.cu (bias fill, operand casts; the products run in cuBLAS), launchers
//! src/cuda/matmul.rs. W is (N, K), (out_features, in_features), as checkpoints store it.
//! No weight gradient exists, so backward is dX only and the forward input is never saved.

use crate::error::{Error, Result};

/// A per-head product's operands as their errors name them, with the elements each holds:
/// forward writes `out` (M, H, N) from `inp` (M, H, K), backward writes `dinp` (M, H, K) from
/// `dout` (M, H, N); W is (H·N, K) in both.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadsOperands {
    /// the written operand (out, or dinp): its name and elements
    pub dst: (&'static str, usize),
    /// the read operand (inp, or dout)
    pub src: (&'static str, usize),
    /// W (H·N, K)
    pub w: (&'static str, usize),
}

/// What a product's operands are called in its errors: x (M, H, K) is read forward and written
/// backward, y (M, H, N) the other way round.
struct OperandNames {
    inp: &'static str,
    out: &'static str,
    dinp: &'static str,
    dout: &'static str,
    weight: &'static str,
}

/// `linear_heads_fwd`'s operands, or `linear_heads_bwd`'s with `backward`, which each backend
/// checks its buffers against. Sizes whose product overflows are refused here: wrapped to a
/// short length, a buffer would pass its check and the GEMM run past its end.
pub fn check_heads(
    backward: bool,
    m: usize,
    h: usize,
    k: usize,
    n: usize,
) -> Result<HeadsOperands> {
    let names = OperandNames {
        inp: "linear_heads inp",
        out: "linear_heads out",
        dinp: "linear_heads dinp",
        dout: "linear_heads dout",
        weight: "linear_heads weight",
    };
    check_operands(&names, backward, [m, h, k, n])
}

/// `linear_fwd`'s operands (H = 1), or `linear_bwd`'s with `backward`, checked as `check_heads`
/// checks the per-head ones: M·K, M·N and N·K must not overflow.
pub fn check_linear(backward: bool, m: usize, k: usize, n: usize) -> Result<HeadsOperands> {
    let names = OperandNames {
        inp: "linear inp",
        out: "linear out",
        dinp: "linear dinp",
        dout: "linear dout",
        weight: "linear weight",
    };
    check_operands(&names, backward, [m, 1, k, n])
}

fn check_operands(
    names: &OperandNames,
    backward: bool,
    [m, h, k, n]: [usize; 4],
) -> Result<HeadsOperands> {
    let elements = |name: &'static str, sizes: [usize; 3]| {
        // in the order the launchers multiply them, so that none of their products wraps
        let len = sizes.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        len.map(|len| (name, len)).ok_or_else(|| {
            let [a, b, c] = sizes;
            Error::shape(
                name,
                "a size that fits in memory",
                format!("{a} · {b} · {c} elements"),
            )
        })
    };
    let (x_name, y_name) = match backward {
        false => (names.inp, names.out),
        true => (names.dinp, names.dout),
    };
    let (x, y) = (elements(x_name, [m, h, k])?, elements(y_name, [m, h, n])?);
    let w = elements(names.weight, [h, n, k])?;
    Ok(match backward {
        false => HeadsOperands { dst: y, src: x, w },
        true => HeadsOperands { dst: x, src: y, w },
    })
}

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
