// Helpers shared by several test kernel files, the way kernels/common.cuh is. Deliberately
// plain `__device__` (not inline): NVRTC compiles each file alone, so kernel authors need not
// mark helpers inline, and the emulator must still link two files that both define them.
#pragma once
#include <cuda_runtime.h>

#define FULL_MASK 0xffffffffu

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
  return v;
}

// Sum over the block; blockDim.x is a multiple of 32. The result is valid in every thread.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0f;
    v = warp_sum(v);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}
