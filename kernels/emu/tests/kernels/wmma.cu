// nvcuda::wmma through the emulator: products in every layout, many warps, element-wise
// fragment access, and the misuses the emulator must reject.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

using namespace nvcuda;

// d = a * b + c for one 16x16x16 tile held by one warp. a and b are 16x16 matrices stored
// row-major with leading dimension 24 (a_col/b_col: stored column-major instead); c and d are
// float with leading dimension 20 (c_col/d_col: column-major).
template <class T, class LA, class LB>
__device__ void gemm_tile(float* d, const T* a, const T* b, const float* c, int c_col, int d_col) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 24);
  wmma::load_matrix_sync(fb, b, 24);
  wmma::load_matrix_sync(acc, c, 20, c_col ? wmma::mem_col_major : wmma::mem_row_major);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 20, d_col ? wmma::mem_col_major : wmma::mem_row_major);
}

template <class T>
__device__ void gemm_any(float* d, const T* a, const T* b, const float* c, int a_col, int b_col,
                         int c_col, int d_col) {
  if (!a_col && !b_col) gemm_tile<T, wmma::row_major, wmma::row_major>(d, a, b, c, c_col, d_col);
  if (!a_col && b_col) gemm_tile<T, wmma::row_major, wmma::col_major>(d, a, b, c, c_col, d_col);
  if (a_col && !b_col) gemm_tile<T, wmma::col_major, wmma::row_major>(d, a, b, c, c_col, d_col);
  if (a_col && b_col) gemm_tile<T, wmma::col_major, wmma::col_major>(d, a, b, c, c_col, d_col);
}

// One warp; global pointers (cudaMalloc-like alignment supplied by the test).
extern "C" __global__ void __launch_bounds__(32) wmma_gemm_bf16(float* d, const __nv_bfloat16* a,
                                                               const __nv_bfloat16* b, const float* c,
                                                               int a_col, int b_col, int c_col, int d_col) {
  gemm_any(d, a, b, c, a_col, b_col, c_col, d_col);
}

extern "C" __global__ void __launch_bounds__(32) wmma_gemm_half(float* d, const __half* a,
                                                               const __half* b, const float* c,
                                                               int a_col, int b_col, int c_col, int d_col) {
  gemm_any(d, a, b, c, a_col, b_col, c_col, d_col);
}

// Half accumulators: d (16x16 half, ld 16) = a * b + c, a row-major and b column-major.
extern "C" __global__ void __launch_bounds__(32) wmma_gemm_half_acc(__half* d, const __half* a,
                                                                   const __half* b, const __half* c) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, __half> acc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// C (M x N, float) = A (M x K) * B (K x N), bf16 row-major, one 16x16 tile per warp with the
// operands staged in shared memory; blockDim (32, wy, wz) warps cover N/16 * M/16 tiles, so the
// warps' scratch must stay apart. M, N, K multiples of 16, M * N / 256 = warps per block.
extern "C" __global__ void __launch_bounds__(1024) wmma_gemm_tiled(float* c, const __nv_bfloat16* a,
                                                                   const __nv_bfloat16* b, int M, int N, int K) {
  extern __shared__ __align__(32) unsigned char smem[];
  __nv_bfloat16* as = reinterpret_cast<__nv_bfloat16*>(smem);  // M x K, ld K + 8
  __nv_bfloat16* bs = as + M * (K + 8);                          // K x N, ld N + 8
  const int t = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const int nt = blockDim.x * blockDim.y * blockDim.z;
  for (int i = t; i < M * K; i += nt) as[(i / K) * (K + 8) + i % K] = a[i];
  for (int i = t; i < K * N; i += nt) bs[(i / N) * (N + 8) + i % N] = b[i];
  __syncthreads();
  const int warp = t / 32, tm = warp / (N / 16), tn = warp % (N / 16);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int k = 0; k < K; k += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
    wmma::load_matrix_sync(fa, as + tm * 16 * (K + 8) + k, K + 8);
    wmma::load_matrix_sync(fb, bs + k * (N + 8) + tn * 16, N + 8);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(c + tm * 16 * N + tn * 16, acc, N, wmma::mem_row_major);
}

// Learns the accumulator's row of each element at run time (the portable way to scale rows in
// registers), then out = diag(row + 1) * (a * b): each element is scaled through x[i].
extern "C" __global__ void __launch_bounds__(32) wmma_row_scale(float* out, const __nv_bfloat16* a,
                                                               const __nv_bfloat16* b) {
  __shared__ __align__(32) float rows[16 * 16];
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) rows[i] = static_cast<float>(i / 16);
  __syncwarp();
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> row_of;
  wmma::load_matrix_sync(row_of, rows, 16, wmma::mem_row_major);
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= row_of.x[i] + 1.0f;
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

// out[lane] = what `lane` reads from shared memory that other lanes stored, with (sync = 1) or
// without a __syncwarp() after store_matrix_sync: without it some seeds read poison.
extern "C" __global__ void __launch_bounds__(32) wmma_store_then_read(float* out, int sync) {
  __shared__ __align__(32) float tile[16 * 16];
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 2.0f);
  wmma::store_matrix_sync(tile, acc, 16, wmma::mem_row_major);
  if (sync) __syncwarp();
  float s = 0.0f;
  for (int i = 0; i < 256; ++i) s += tile[i];
  out[threadIdx.x] = s;
}

// Misuses, selected by `mode`; each must fail the launch:
// 1 misaligned pointer, 2 ldm not a multiple of 16 bytes, 3 lanes in different wmma calls,
// 4 launched with a partial warp (blockDim 16).
extern "C" __global__ void wmma_misuse(float* out, const __nv_bfloat16* a, int mode) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 1.0f);
  if (mode == 1) wmma::load_matrix_sync(fa, a + 1, 16);
  if (mode == 2) wmma::load_matrix_sync(fa, a, 12);
  if (mode == 3) {
    if (threadIdx.x < 16) wmma::load_matrix_sync(fa, a, 16);
    else wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
  }
  if (mode == 4) wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}
