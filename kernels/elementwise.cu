// Residual additions and scalings (src/cpu/elementwise.rs). bf16 for activations, and
// float32 variants (`_f32`) for the prompt gradient. Grid-stride, 8 bf16 per thread per step.
// Launch configuration: src/cuda/elementwise.rs.
#include "common.cuh"

// out (N) = a + b.
extern "C" __global__ void add_fwd(act_t* out, const act_t* a, const act_t* b, long long n) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float x[VEC], y[VEC];
    load8(x, a, j * VEC, n);
    load8(y, b, j * VEC, n);
#pragma unroll
    for (int e = 0; e < VEC; ++e) x[e] += y[e];
    store8(out, j * VEC, n, x);
  }
}

// acc (N) += a.
extern "C" __global__ void add_inplace(act_t* acc, const act_t* a, long long n) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float x[VEC], y[VEC];
    load8(x, acc, j * VEC, n);
    load8(y, a, j * VEC, n);
#pragma unroll
    for (int e = 0; e < VEC; ++e) x[e] += y[e];
    store8(acc, j * VEC, n, x);
  }
}

// x (N) *= s.
extern "C" __global__ void scale_inplace(act_t* x, float s, long long n) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float v[VEC];
    load8(v, x, j * VEC, n);
#pragma unroll
    for (int e = 0; e < VEC; ++e) v[e] *= s;
    store8(x, j * VEC, n, v);
  }
}

// acc (N) f32 += a f32.
extern "C" __global__ void add_inplace_f32(float* acc, const float* a, long long n) {
  GRID_STRIDE(i, n) acc[i] += a[i];
}

// x (N) f32 *= s.
extern "C" __global__ void scale_inplace_f32(float* x, float s, long long n) {
  GRID_STRIDE(i, n) x[i] *= s;
}

// out[0] (double) = sum of x[i]^2 over x (N) f32: the gradient norm. One block walks the
// whole buffer in a fixed order and reduces in double, so the result is the same on every run
// (the clipping coefficient, and so training, stays deterministic); launch 1 x 1024 threads.
extern "C" __global__ void sum_squares_f32(double* out, const float* x, long long n) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const double v = x[i];
    acc += v * v;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < warps ? scratch[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) out[0] = acc;
  }
}
