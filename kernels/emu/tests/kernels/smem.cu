// Dynamic and multi-dimensional shared memory, and shared-memory misuse.
#include <cuda_runtime.h>

// y[b, :] = reverse(x[b, :]) through dynamic shared memory of n floats.
extern "C" __global__ void reverse_rows(float* y, const float* x, int n) {
  extern __shared__ float row[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = x[blockIdx.x * n + i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) y[blockIdx.x * n + i] = row[n - 1 - i];
}

// Dynamic shared memory declared as raw bytes and used as float4, plus a static array.
extern "C" __global__ void scale_float4(float4* y, const float4* x, int n4) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float scale;
  float4* tile = reinterpret_cast<float4*>(smem_raw);
  if (threadIdx.x == 0) scale = 2.0f;
  for (int i = threadIdx.x; i < n4; i += blockDim.x) tile[i] = x[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    const float4 v = tile[n4 - 1 - i];
    y[i] = make_float4(v.x * scale, v.y * scale, v.z * scale, v.w * scale);
  }
}

// out = in^T through a padded 2-D tile; block (32, 8), in is rows x cols.
extern "C" __global__ void transpose(float* out, const float* in, int rows, int cols) {
  __shared__ float tile[32][33];
  const int x = blockIdx.x * 32 + threadIdx.x;
  for (int j = threadIdx.y; j < 32; j += blockDim.y) {
    const int y = blockIdx.y * 32 + j;
    if (x < cols && y < rows) tile[j][threadIdx.x] = in[y * cols + x];
  }
  __syncthreads();
  const int tx = blockIdx.y * 32 + threadIdx.x;
  for (int j = threadIdx.y; j < 32; j += blockDim.y) {
    const int ty = blockIdx.x * 32 + j;
    if (tx < rows && ty < cols) out[ty * rows + tx] = tile[threadIdx.x][j];
  }
}

// Bug on purpose: 33 threads write a[threadIdx.x] into a 32-element array.
extern "C" __global__ void shared_overflow(float* out) {
  __shared__ float a[32];
  __shared__ float b[32];
  a[threadIdx.x] = 1.0f;
  if (threadIdx.x < 32) b[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = b[threadIdx.x % 32];
}

// 52 KB of static shared memory is over CUDA's 48 KB limit.
extern "C" __global__ void static_too_big(float* out) {
  __shared__ float big[13312];
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

// Every thread reads an element of its own block's shared array that nothing wrote.
extern "C" __global__ void read_unwritten(float* out) {
  __shared__ float never_written[32];
  out[blockIdx.x * blockDim.x + threadIdx.x] = never_written[threadIdx.x];
}

// Bug on purpose: thread 0 writes row[index] of n floats of dynamic shared memory.
extern "C" __global__ void dynamic_overflow(float* out, int index) {
  extern __shared__ float row[];
  if (threadIdx.x == 0) row[index] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = 0.0f;
}
