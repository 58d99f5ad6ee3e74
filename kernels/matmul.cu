// Helpers of the linear layers (src/cpu/matmul.rs). The products themselves run in cuBLAS
// (bf16 operands, float32 compute) on a GPU and in the CPU GEMM under the emulator; these
// kernels prepare their operands. Launch configuration: src/cuda/matmul.rs.
#include "common.cuh"

// out (M, N) bf16 = bias (N) on every row: the GEMM then adds inp·Wᵀ with beta = 1.
extern "C" __global__ void linear_bias_fill(store_t* out, const store_t* bias, int m, int n) {
  const long long total = (long long)m * n;
  GRID_STRIDE(i, total) out[i] = bias[i % n];
}

// out (M, N) f32 = bias (N) on every row (the float32 logits of the heads).
extern "C" __global__ void linear_bias_fill_f32(float* out, const store_t* bias, int m, int n) {
  const long long total = (long long)m * n;
  GRID_STRIDE(i, total) out[i] = ld(bias, i % n);
}

// out (N) bf16 = inp (N) f32 rounded to nearest: a float32 gradient (d logits) becomes a bf16
// GEMM operand for linear_bwd.
extern "C" __global__ void cast_f32_bf16(store_t* out, const float* inp, long long n) {
  GRID_STRIDE(i, n) st(out, i, inp[i]);
}
