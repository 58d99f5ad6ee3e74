// Block reductions through shared memory and barriers.
#include <cuda_runtime.h>
#include "test_common.cuh"

// out[b] = sum(x[b*n .. b*n+n)), tree reduction in shared memory; blockDim.x == 256.
extern "C" __global__ void __launch_bounds__(256) reduce_tree(float* out, const float* __restrict__ x, int n) {
  __shared__ float buf[256];
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
  buf[threadIdx.x] = s;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// Same result through warp shuffles; block_sum is called twice to reuse its shared memory.
extern "C" __global__ void reduce_warps(float* out, const float* x, int n) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
  const float total = block_sum(s);
  const float count = block_sum(1.0f);
  if (threadIdx.x == 0) {
    out[2 * blockIdx.x] = total;
    out[2 * blockIdx.x + 1] = count;
  }
}

// Bug on purpose: reads a neighbour's slot without a barrier in between.
extern "C" __global__ void neighbour_no_barrier(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = (float)threadIdx.x;
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

extern "C" __global__ void neighbour_barrier(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = (float)threadIdx.x;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// __syncthreads_count/and/or over a predicate.
extern "C" __global__ void barrier_votes(int* out, const int* pred) {
  const int p = pred[threadIdx.x];
  const int count = __syncthreads_count(p);
  const int all = __syncthreads_and(p);
  const int any = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[0] = count;
    out[1] = all;
    out[2] = any;
  }
}

// Each iteration is one barrier; used to measure context switches.
extern "C" __global__ void barrier_loop(int* out, int iterations) {
  __shared__ int counter;
  if (threadIdx.x == 0) counter = 0;
  __syncthreads();
  for (int i = 0; i < iterations; ++i) {
    if (threadIdx.x == i % blockDim.x) counter += 1;
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = counter;
}
