// Warp-synchronous intrinsics.
#include <cuda_runtime.h>
#include "test_common.cuh"

// For case c: out[c*32 + lane] = the lane whose value lane `lane` received.
// mode 0: __shfl_sync, 1: __shfl_up_sync, 2: __shfl_down_sync, 3: __shfl_xor_sync.
extern "C" __global__ void shfl_probe(int* out, const int* mode, const int* arg, const int* width, int cases) {
  const int lane = threadIdx.x;
  for (int c = 0; c < cases; ++c) {
    int r = -1;
    switch (mode[c]) {
      case 0: r = __shfl_sync(FULL_MASK, lane, arg[c], width[c]); break;
      case 1: r = __shfl_up_sync(FULL_MASK, lane, (unsigned)arg[c], width[c]); break;
      case 2: r = __shfl_down_sync(FULL_MASK, lane, (unsigned)arg[c], width[c]); break;
      case 3: r = __shfl_xor_sync(FULL_MASK, lane, arg[c], width[c]); break;
    }
    out[c * 32 + lane] = r;
  }
}

// Segment sums: out[k*n + tid] for k = full xor, width-16 xor, width-8 down, width-16 down.
extern "C" __global__ void segment_sums(float* out, const float* x, int n) {
  const int tid = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = x[tid];
  float a = v, b = v, c = v, d = v;
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(FULL_MASK, a, o);
  for (int o = 8; o > 0; o >>= 1) b += __shfl_xor_sync(FULL_MASK, b, o, 16);
  for (int o = 4; o > 0; o >>= 1) c += __shfl_down_sync(FULL_MASK, c, o, 8);
  for (int o = 8; o > 0; o >>= 1) d += __shfl_down_sync(FULL_MASK, d, o, 16);
  out[0 * n + tid] = a;
  out[1 * n + tid] = b;
  out[2 * n + tid] = c;
  out[3 * n + tid] = d;
}

// 64-bit and 16-bit payloads go through shuffles intact.
extern "C" __global__ void shfl_types(double* d, __nv_bfloat16* h, long long* q) {
  const int lane = threadIdx.x;
  d[lane] = __shfl_sync(FULL_MASK, 1.0 + lane * 1e-12, 31 - lane);
  h[lane] = __shfl_down_sync(FULL_MASK, __float2bfloat16((float)lane), 1);
  q[lane] = __shfl_xor_sync(FULL_MASK, (long long)lane << 40, 5);
}

// Votes and reductions; out has 9 slots per thread.
extern "C" __global__ void votes(unsigned* out, const int* pred) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = pred[t];
  unsigned* o = out + 9 * t;
  o[0] = __ballot_sync(FULL_MASK, p);
  o[1] = __any_sync(FULL_MASK, p);
  o[2] = __all_sync(FULL_MASK, p);
  o[3] = __reduce_add_sync(FULL_MASK, (unsigned)(lane * 3));
  o[4] = (unsigned)__reduce_min_sync(FULL_MASK, lane - 7);
  o[5] = __reduce_max_sync(FULL_MASK, (unsigned)(lane * 5 % 32));
  o[6] = __reduce_xor_sync(FULL_MASK, (unsigned)lane);
  // Two independent half-warp rendezvous, then a full-warp one.
  if (lane < 16) o[7] = __ballot_sync(0x0000ffffu, p);
  else o[7] = __ballot_sync(0xffff0000u, p);
  __syncwarp();
  o[8] = __reduce_or_sync(FULL_MASK, 1u << lane);
}

// Lanes below 10 reach one __activemask() call, the rest another; then all reach a third.
extern "C" __global__ void active_masks(unsigned* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned m;
  if (threadIdx.x % 32 < 10) m = __activemask();
  else m = __activemask();
  out[2 * t] = m;
  out[2 * t + 1] = __activemask();
}
