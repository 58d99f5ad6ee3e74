// Atomics from many blocks, on global and shared memory.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

struct Counters {
  float* f;
  double* d;
  int* i;
  unsigned* u;
  unsigned long long* ull;
  int* imax;
  int* imin;
  unsigned* umax;
  unsigned* umin;
  int* cas;
  int* exch;
  __half* h;
  __nv_bfloat16* bf;
};

extern "C" __global__ void atomics_all(Counters c) {
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(c.f, 1.0f);
  atomicAdd(c.d, 0.5);
  atomicAdd(c.i, g);
  atomicAdd(c.u, 2u);
  atomicAdd(c.ull, (unsigned long long)g << 20);
  atomicMax(c.imax, g - 100);
  atomicMin(c.imin, 50 - g);
  atomicMax(c.umax, (unsigned)g);
  atomicMin(c.umin, (unsigned)g + 7u);
  int old = *c.cas, assumed;
  do {
    assumed = old;
    old = atomicCAS(c.cas, assumed, assumed + 1);
  } while (old != assumed);
  atomicExch(c.exch, g);
  atomicAdd(c.h, __float2half(1.0f));
  atomicAdd(c.bf, __float2bfloat16(1.0f));
}

// Per-block histogram in shared memory, merged into global memory.
extern "C" __global__ void histogram(unsigned* hist, const int* x, int n) {
  __shared__ unsigned bins[16];
  if (threadIdx.x < 16) bins[threadIdx.x] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&bins[x[i] & 15], 1u);
  __syncthreads();
  if (threadIdx.x < 16) atomicAdd(&hist[threadIdx.x], bins[threadIdx.x]);
}
