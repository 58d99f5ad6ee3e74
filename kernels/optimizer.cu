// Optimizer family (src/cpu/optimizer.rs): AdamW and factored Adafactor on the float32
// prompt. The prompt is small (P x C, at most a few hundred thousand numbers), so both
// compute in double, as the reference does, and Adafactor runs as one block whose phases
// are separated by barriers: deterministic, and no second launch for the reductions.
// Launch configuration: src/cuda/optimizer.rs.
#include "common.cuh"

// One AdamW step on param, grad, m, v (N) f32; bc1 = 1 - beta1^step, bc2 = 1 - beta2^step.
extern "C" __global__ void adamw_update(float* param, const float* grad, float* m, float* v,
                                        double lr, double beta1, double beta2, double eps,
                                        double weight_decay, double bc1, double bc2,
                                        long long n) {
  GRID_STRIDE(i, n) {
    const double g = grad[i];
    double p = (double)param[i] * (1.0 - lr * weight_decay);
    const double mi = beta1 * m[i] + (1.0 - beta1) * g;
    const double vi = beta2 * v[i] + (1.0 - beta2) * g * g;
    p -= lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
    m[i] = (float)mi;
    v[i] = (float)vi;
    param[i] = (float)p;
  }
}

__device__ double block_sum_f64(double x, double* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// One factored Adafactor step (no first moment, no parameter scaling) on a (R, C) param;
// row (R) and col (C) hold the factored second moments, beta2t = 1 - step^decay_rate.
// Launched as ONE block: phase 1 row means (a warp per row), phase 2 column means (a thread
// per column), phase 3 the mean of row, phase 4 the RMS of the update, phase 5 the write.
extern "C" __global__ void adafactor_update(float* param, const float* grad, float* row,
                                            float* col, double lr, double beta2t, double eps,
                                            double clip_threshold, double weight_decay, int r,
                                            int c) {
  __shared__ double scratch[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int ri = warp; ri < r; ri += warps) {
    double s = 0.0;
    for (int ci = lane; ci < c; ci += 32) {
      const double g = grad[(long long)ri * c + ci];
      s += g * g + eps;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) row[ri] = (float)(beta2t * row[ri] + (1.0 - beta2t) * (s / c));
  }
  for (int ci = threadIdx.x; ci < c; ci += blockDim.x) {
    double s = 0.0;
    for (int ri = 0; ri < r; ++ri) {
      const double g = grad[(long long)ri * c + ci];
      s += g * g + eps;
    }
    col[ci] = (float)(beta2t * col[ci] + (1.0 - beta2t) * (s / r));
  }
  __syncthreads();
  double rs = 0.0;
  for (int ri = threadIdx.x; ri < r; ri += blockDim.x) rs += row[ri];
  const double row_mean = block_sum_f64(rs, scratch) / r;
  const long long n = (long long)r * c;
  double sq = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const double u = grad[i] / sqrt(row[i / c] / row_mean) / sqrt((double)col[i % c]);
    sq += u * u;
  }
  const double rms = sqrt(block_sum_f64(sq, scratch) / n);
  const double denom = fmax(rms / clip_threshold, 1.0);
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const double u = grad[i] / sqrt(row[i / c] / row_mean) / sqrt((double)col[i % c]) / denom * lr;
    const double x = param[i];
    param[i] = (float)(x - x * weight_decay * lr - u);
  }
}
