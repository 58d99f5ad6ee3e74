// LayerNorm (src/cpu/layernorm.rs), forward and backward. One block per row; statistics in
// float32. Launch configuration: src/cuda/layernorm.rs.
#include "common.cuh"

// out (N, C) bf16 = (inp - mean) * rstd * w + bias; mean, rstd (N) f32 saved for backward.
// Two passes over the row (mean, then the centred variance) as the reference does: the
// one-pass E[x²] - E[x]² loses digits when |mean| >> std.
extern "C" __global__ void layernorm_fwd(act_t* out, float* mean, float* rstd, const act_t* inp,
                                         const w_t* w, const w_t* bias, int n, int c,
                                         float eps) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  const act_t* x = inp + row * c;
  float s = 0.0f;
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC];
    load8(v, x, i, c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) s += v[e];
  }
  const float mu = block_sum(s, scratch) / c;
  float ss = 0.0f;
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC];
    load8(v, x, i, c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) ss += i + e < c ? (v[e] - mu) * (v[e] - mu) : 0.0f;
  }
  const float rs = rsqrtf(block_sum(ss, scratch) / c + eps);
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC], wv[VEC], bv[VEC];
    load8(v, x, i, c);
    load8(wv, w, i, c);
    load8(bv, bias, i, c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) v[e] = (v[e] - mu) * rs * wv[e] + bv[e];
    store8(out + row * c, i, c, v);
  }
  if (threadIdx.x == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

// dinp (N, C) += LayerNorm backward of dout (N, C) with `accumulate`, else dinp = it:
// dx = (dy*w - mean(dy*w) - xhat * mean(dy*w*xhat)) * rstd.
extern "C" __global__ void layernorm_bwd(act_t* dinp, const act_t* dout, const act_t* inp,
                                         const w_t* w, const float* mean, const float* rstd,
                                         int n, int c, int accumulate) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  const act_t *x = inp + row * c, *dy = dout + row * c;
  const float mu = mean[row], rs = rstd[row];
  float sg = 0.0f, sgx = 0.0f;
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC], g[VEC], wv[VEC];
    load8(v, x, i, c);
    load8(g, dy, i, c);
    load8(wv, w, i, c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      sg += g[e] * wv[e];
      sgx += g[e] * wv[e] * (v[e] - mu) * rs;
    }
  }
  const float mean_g = block_sum(sg, scratch) / c;
  const float mean_gx = block_sum(sgx, scratch) / c;
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC], g[VEC], wv[VEC], acc[VEC];
    load8(v, x, i, c);
    load8(g, dy, i, c);
    load8(wv, w, i, c);
    grad_base8(acc, dinp + row * c, i, c, accumulate);
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      acc[e] += (g[e] * wv[e] - mean_g - (v[e] - mu) * rs * mean_gx) * rs;
    store8(dinp + row * c, i, c, acc);
  }
}
