// bf16/half types and device math functions inside kernels.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math_constants.h>

extern "C" __global__ void bf16_axpy(__nv_bfloat16* y, const __nv_bfloat16* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(a * __bfloat162float(x[i]) + __bfloat162float(y[i]));
}

// Pairs in, four floats per pair out: low, high, low+high in bf16 math, half round trip.
extern "C" __global__ void pair_ops(float* out, const __nv_bfloat162* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const __nv_bfloat162 v = x[i];
  const __nv_bfloat162 w = __floats2bfloat162_rn(__low2float(v), __high2float(v));
  const __nv_bfloat16 sum = w.x + w.y;
  const __half2 h = __floats2half2_rn(__low2float(v), __high2float(v));
  out[4 * i + 0] = __low2float(w);
  out[4 * i + 1] = __high2float(w);
  out[4 * i + 2] = __bfloat162float(sum);
  out[4 * i + 3] = __half2float(__hadd(h.x, h.y));
}

constexpr int kMathOutputs = 20;

extern "C" __global__ void math_fns(float* out, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  float* o = out + kMathOutputs * i;
  o[0] = expf(v);
  o[1] = __expf(v);
  o[2] = logf(fabsf(v) + 1.0f);
  o[3] = __logf(fabsf(v) + 1.0f);
  o[4] = erff(v);
  o[5] = tanhf(v);
  o[6] = rsqrtf(fabsf(v) + 1.0f);
  o[7] = sqrtf(fabsf(v));
  o[8] = fmaxf(v, 0.5f);
  o[9] = fminf(v, 0.5f);
  o[10] = __fdividef(v, 3.0f);
  o[11] = __frcp_rn(v + 10.0f);
  o[12] = fmaf(v, 2.0f, 1.0f);
  o[13] = isinf(v / 0.0f) ? 1.0f : 0.0f;
  o[14] = isnan(sqrtf(-1.0f - fabsf(v))) ? 1.0f : 0.0f;
  o[15] = INFINITY == CUDART_INF_F ? 1.0f : 0.0f;
  o[16] = max(v, 0.0f) + (float)min(3, 4);
  o[17] = __saturatef(v);
  o[18] = __int_as_float(__float_as_int(v));
  o[19] = __ldg(&x[i]) * CUDART_PI_F;
}
