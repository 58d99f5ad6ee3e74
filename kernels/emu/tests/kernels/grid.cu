// Multi-dimensional grids and blocks, kernel parameters of many types.
#include <cuda_runtime.h>

// out[block * threads + thread] = (packed threadIdx, blockIdx.x, blockIdx.y, blockIdx.z).
extern "C" __global__ void write_ids(uint4* out, uint4* dims) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[block * threads + t] =
      make_uint4(threadIdx.x | threadIdx.y << 10 | threadIdx.z << 20, blockIdx.x, blockIdx.y, blockIdx.z);
  if (block == 0 && t == 0) {
    const dim3 b = blockDim;
    dims[0] = make_uint4(b.x, b.y, b.z, warpSize);
    dims[1] = make_uint4(gridDim.x, gridDim.y, gridDim.z, 0);
  }
}

struct Shape {
  int B, T;
  float scale;
};

extern "C" __global__ void many_params(double* out, signed char c, short s, int i, long long q,
                                       float f, double d, size_t z, Shape shape, const float* p) {
  if (threadIdx.x != 0) return;
  out[0] = c;
  out[1] = s;
  out[2] = i;
  out[3] = (double)q;
  out[4] = f;
  out[5] = d;
  out[6] = (double)z;
  out[7] = shape.B * 1000 + shape.T + shape.scale;
  out[8] = p[1];
}

extern "C" __global__ void no_params() {}

// Needs a deep stack: a local array of `kWords` ints per thread.
extern "C" __global__ void big_frame(int* out) {
  constexpr int kWords = 24 * 1024;
  volatile int local[kWords];
  for (int i = 0; i < kWords; ++i) local[i] = i;
  out[threadIdx.x] = local[kWords - 1 - threadIdx.x];
}
