//! One GEMM description for both devices: cuBLAS's column-major `cublasGemmEx`,
//! C (m x n) = op(A) (m x k) · op(B) (k x n) + beta·C, with bf16 A and B, float32 compute,
//! and C in bf16 or float32. The linear launchers (matmul.rs) build it; `cuda` hands it to
//! cuBLAS, `emu` to the CPU GEMM (emu.rs).

use crate::backend::DType;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub b: u64,
    pub ldb: usize,
    pub c: u64,
    pub ldc: usize,
    /// 0 (overwrite C) or 1 (accumulate into C)
    pub beta: f32,
    pub ab_type: DType,
    pub c_type: DType,
}
