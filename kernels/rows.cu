// Row selection and pooling (src/cpu/rows.rs): heads compute only the rows their loss reads.
// Launch configuration: src/cuda/rows.rs.
#include "common.cuh"

// out (M, C) = inp[idx[m]] for inp (N, C), idx (M). One block per output row.
template <typename T>
__device__ __forceinline__ void gather_row(T* out, const T* inp, const int* idx, int c) {
  const long long row = blockIdx.x, src = idx[row];
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC];
    load8(v, inp + src * c, i, c);
    store8(out + row * c, i, c, v);
  }
}

extern "C" __global__ void gather_rows(act_t* out, const act_t* inp, const int* idx, int m, int c) {
  gather_row(out, inp, idx, c);
}

// The same for rows of a weight (w_t): the verbalizer rows of the PET decoder. A twin of
// gather_rows in the builds whose weights and activations share a type.
extern "C" __global__ void gather_rows_w(w_t* out, const w_t* inp, const int* idx, int m, int c) {
  gather_row(out, inp, idx, c);
}

// dinp[idx[m]] += dout[m] for dout (M, C). The indices of one launch are distinct (the
// launcher splits a list with repeats into runs without), so blocks never share a row and
// the sum order is the reference's.
extern "C" __global__ void scatter_rows_bwd(act_t* dinp, const act_t* dout, const int* idx, int m,
                                            int c) {
  const long long row = blockIdx.x, dst = idx[row];
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float d[VEC], g[VEC];
    load8(d, dinp + dst * c, i, c);
    load8(g, dout + row * c, i, c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) d[e] += g[e];
    store8(dinp + dst * c, i, c, d);
  }
}

// out (B, C) = sum over s of weight[b, s] * inp[b, s] for inp (B, T, C), weight (B, T): a
// masked mean (weight holds 1/count on pooled rows, 0 elsewhere). grid (B, C / blockDim);
// one thread per output column walks the T rows, so a warp reads 32 consecutive columns.
extern "C" __global__ void mean_pool_fwd(act_t* out, const act_t* inp, const act_t* weight, int b,
                                         int t, int c) {
  const long long bi = blockIdx.x;
  const int col = blockIdx.y * blockDim.x + threadIdx.x;
  if (col >= c) return;
  float acc = 0.0f;
  for (int s = 0; s < t; ++s) {
    const float w = ld(weight, bi * t + s);
    if (w != 0.0f) acc += w * ld(inp, (bi * t + s) * c + col);
  }
  st(out, bi * c + col, acc);
}

// dinp (B, T, C) += weight[b, s] * dout[b] (B, C), or with accumulate 0 written whole: rows of
// weight 0 get zeros, the others 0 + their term (the bits of adding into zeros). One block per
// (b, s) row.
extern "C" __global__ void mean_pool_bwd(act_t* dinp, const act_t* dout, const act_t* weight, int b,
                                         int t, int c, int accumulate) {
  const long long row = blockIdx.x, bi = row / t;
  const float w = ld(weight, row);
  if (w == 0.0f && accumulate) return;
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float d[VEC], g[VEC];
    if (accumulate) {
      load8(d, dinp + row * c, i, c);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) d[e] = 0.0f;
    }
    if (w != 0.0f) {
      load8(g, dout + bi * c, i, c);
#pragma unroll
      for (int e = 0; e < VEC; ++e) d[e] += w * g[e];
    }
    store8(dinp + row * c, i, c, d);
  }
}
