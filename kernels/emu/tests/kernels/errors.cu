// Kernels that misuse barriers and warp intrinsics; every launch must fail cleanly.
#include <cuda_runtime.h>
#include "test_common.cuh"

extern "C" __global__ void early_exit_then_barrier(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void two_barrier_sites(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void barrier_in_divergent_loop(float* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    out[i] = 1.0f;
    __syncthreads();
  }
}

extern "C" __global__ void shfl_after_lane_exit(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, 1.0f, 1);
}

// Lane 7 goes to a barrier while the rest of its warp waits for it in a shuffle.
extern "C" __global__ void shfl_lane_elsewhere(float* out) {
  float v = 1.0f;
  if (threadIdx.x % 32 != 7) v = __shfl_down_sync(FULL_MASK, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

extern "C" __global__ void shfl_partial_warp(float* out) {
  out[threadIdx.x] = warp_sum(1.0f);
}

extern "C" __global__ void mask_without_self(unsigned* out) {
  out[threadIdx.x] = __ballot_sync(0x1u, 1);
}

extern "C" __global__ void mismatched_intrinsics(unsigned* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __ballot_sync(FULL_MASK, 1);
  else out[threadIdx.x] = __any_sync(FULL_MASK, 1);
}
