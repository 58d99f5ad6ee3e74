// Helpers of the linear layers (src/cpu/matmul.rs). The products themselves run in cuBLAS
// (bf16 operands, float32 compute) on a GPU and in the CPU GEMM under the emulator; these
// kernels prepare their operands. Launch configuration: src/cuda/matmul.rs.
#include "common.cuh"

// out (M, N) bf16 = bias (N) on every row: the GEMM then adds inp·Wᵀ with beta = 1.
extern "C" __global__ void linear_bias_fill(act_t* out, const w_t* bias, int m, int n) {
  const long long total = (long long)m * n;
  GRID_STRIDE(i, total) st(out, i, ld(bias, i % n));
}

// out (M, N) f32 = bias (N) on every row (the float32 logits of the heads).
extern "C" __global__ void linear_bias_fill_f32(float* out, const w_t* bias, int m, int n) {
  const long long total = (long long)m * n;
  GRID_STRIDE(i, total) out[i] = ld(bias, i % n);
}

// out (N) bf16 = inp (N) f32 rounded to nearest: a float32 gradient (d logits) becomes a bf16
// GEMM operand for linear_bwd in the bf16 build.
extern "C" __global__ void cast_f32_bf16(bf16* out, const float* inp, long long n) {
  GRID_STRIDE(i, n) st(out, i, inp[i]);
}

// hi, lo (N) bf16 with hi + lo = inp (N) f32 to 2^-16 relative at worst: the mixed build's
// float32 activations (and gradients) become two bf16 GEMM operands, and the GEMM runs twice
// on bf16 tensor cores (W·hi, then W·lo accumulated in float32). One rounding of the
// activations to bf16 would flip ReLU masks near zero; the pair keeps 16 bits of mantissa.
extern "C" __global__ void split_bf16(bf16* hi, bf16* lo, const float* inp, long long n) {
  GRID_STRIDE(i, n) {
    const bf16 h = __float2bfloat16(inp[i]);
    hi[i] = h;
    lo[i] = __float2bfloat16(inp[i] - __bfloat162float(h));
  }
}
