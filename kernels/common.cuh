// Helpers shared by the kernel files: bf16 <-> float, 16-byte vectors of 8 bf16, and warp and
// block reductions. Plain __device__ functions (NVRTC compiles each file as its own module,
// and the emulator wraps each file in an anonymous namespace, so nothing collides).
#pragma once
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

// The storage types of the three builds (NVRTC and the emulator compile every file in each;
// src/backend.rs `Precision` names them). The prompt, its gradient, optimizer state and
// statistics are float32 in all three.
//   bf16 (default):              weights w_t and activations act_t in bf16
//   float32 (-DSOFTPROMPT_F32):  both float32, for exact checks of the whole CUDA path
//   mixed (-DSOFTPROMPT_MIXED):  weights bf16, activations float32: a forward pass accurate
//                                enough that ReLU masks stay where float32 puts them
// SOFTPROMPT_ACT_F32 marks the two builds whose activations are float32.
#if defined(SOFTPROMPT_F32)
typedef float w_t;
typedef float act_t;
#define SOFTPROMPT_ACT_F32 1
#elif defined(SOFTPROMPT_MIXED)
typedef bf16 w_t;
typedef float act_t;
#define SOFTPROMPT_ACT_F32 1
#else
typedef bf16 w_t;
typedef bf16 act_t;
#endif

__device__ __forceinline__ float ld(const bf16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ void st(bf16* p, long long i, float x) { p[i] = __float2bfloat16(x); }
__device__ __forceinline__ void st(float* p, long long i, float x) { p[i] = x; }

// Eight bf16 in one 16-byte access: elementwise kernels move 16 bytes per thread per access.
struct __align__(16) bf16x8 {
  bf16 v[8];
};
constexpr int VEC = 8;

__device__ __forceinline__ bool aligned16(const void* p) {
  return ((unsigned long long)p & 15ull) == 0;
}

// Loads elements [i0, i0+8) of p as floats; elements at or past n read as 0. One 16-byte
// access when all 8 are inside and the address is 16-byte aligned (whole buffers always are:
// allocations are 256-byte aligned), else scalar accesses.
__device__ __forceinline__ void load8(float out[VEC], const bf16* p, long long i0, long long n) {
  if (i0 + VEC <= n && aligned16(p + i0)) {
    const bf16x8 r = *reinterpret_cast<const bf16x8*>(p + i0);
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = __bfloat162float(r.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = i0 + e < n ? __bfloat162float(p[i0 + e]) : 0.0f;
  }
}

// Stores elements [i0, min(i0+8, n)) of p, as load8 reads them.
__device__ __forceinline__ void store8(bf16* p, long long i0, long long n, const float in[VEC]) {
  if (i0 + VEC <= n && aligned16(p + i0)) {
    bf16x8 r;
#pragma unroll
    for (int e = 0; e < VEC; ++e) r.v[e] = __float2bfloat16(in[e]);
    *reinterpret_cast<bf16x8*>(p + i0) = r;
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      if (i0 + e < n) p[i0 + e] = __float2bfloat16(in[e]);
  }
}

// The float32 build's load8/store8: two 16-byte accesses when aligned, else scalar ones.
__device__ __forceinline__ void load8(float out[VEC], const float* p, long long i0, long long n) {
  if (i0 + VEC <= n && aligned16(p + i0)) {
    const float4 a = *reinterpret_cast<const float4*>(p + i0);
    const float4 b = *reinterpret_cast<const float4*>(p + i0 + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = i0 + e < n ? p[i0 + e] : 0.0f;
  }
}

__device__ __forceinline__ void store8(float* p, long long i0, long long n, const float in[VEC]) {
  if (i0 + VEC <= n && aligned16(p + i0)) {
    *reinterpret_cast<float4*>(p + i0) = make_float4(in[0], in[1], in[2], in[3]);
    *reinterpret_cast<float4*>(p + i0 + 4) = make_float4(in[4], in[5], in[6], in[7]);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      if (i0 + e < n) p[i0 + e] = in[e];
  }
}

// What a backward op adds its gradient to, elements [i0, i0+8) of p: their values with
// `accumulate`, else zeros, so that writing gives the bits adding into a zeroed buffer gives
// (src/backend/mod.rs, the accumulation rule) without reading it.
template <typename T>
__device__ __forceinline__ void grad_base8(float out[VEC], const T* p, long long i0, long long n,
                                           int accumulate) {
  if (accumulate) {
    load8(out, p, i0, n);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = 0.0f;
  }
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Sum over the block; every thread gets the result. blockDim.x must be a multiple of 32
// (the launchers use 32..1024). `scratch` holds 32 floats of shared memory; the leading
// barrier lets callers reuse it for consecutive reductions.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_sum(x);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(x);
}

__device__ __forceinline__ float block_max(float x, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_max(x);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : __int_as_float(0xff800000);
  return warp_max(x);
}

// ALiBi's slope of head h of H (BLOOM's rule; src/backend/attention.rs `alibi_slope`): with n
// the largest power of two up to H, 2^(-8(h+1)/n) for the first n heads, then
// 2^(-4(2(h-n)+1)/n) for the rest.
__device__ __forceinline__ float attn_alibi_slope(int h, int H) {
  const int n = 1 << (31 - __clz(H));
  return h < n ? exp2f(-8.0f * static_cast<float>(h + 1) / static_cast<float>(n))
               : exp2f(-4.0f * static_cast<float>(2 * (h - n) + 1) / static_cast<float>(n));
}

// Grid-stride loop over [0, n).
#define GRID_STRIDE(i, n)                                                          \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)gridDim.x * blockDim.x)
