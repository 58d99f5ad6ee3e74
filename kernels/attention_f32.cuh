// Fused attention for the builds with float32 activations (float32, -DSOFTPROMPT_F32, and
// mixed, -DSOFTPROMPT_MIXED; attention.cu includes this file instead of its tensor-core
// body). Same entry points, signatures, semantics and launch plan:
// grid (ceil(rows / 64), H, B), 128 threads, and attention.cu's dynamic shared memory, which
// these kernels leave unused. One thread per query row (forward, bwd_dq) or key row
// (bwd_dkdv) runs plain float32 loops: no tensor cores, nothing of size Tq x Tk stored, no
// atomics. It exists for accuracy (`--precision f32` and `mixed`), not speed. The bias table is
// a weight (w_t: bf16 in the mixed build).
//
// Shapes: q, out, dq, dout: (B, Tq, H, D); k, v, dk, dv: (B, Tk, Hkv, D); lse, delta:
// (B, H, Tq); key_mask: (B, Tk); bias_table: (num_buckets, H) or NULL; buckets: (Tq + Tk - 1)
// or NULL. s_ij = scale * q_i . k_j + bias[buckets[j - i + Tq - 1], h], or with alibi
// + slope_h * (j - i - (Tk - Tq)). Query head h reads key/value head h / (H / Hkv); the
// bwd_dkdv grid is (ceil(Tk / 64), Hkv, B), each thread summing over the group's query heads.
#pragma once
#include "common.cuh"

#define ATTN32_ROWS 64  // rows per block: attention.cu's tile height
#define ATTN32_NEG_INF (-__int_as_float(0x7f800000))

// h: the query head; forward and bwd_dq take it from the grid, bwd_dkdv sets it per group head.
struct Attn32 {
  const float *q, *k, *v;
  const w_t* bias_table;
  const int *key_mask, *buckets;
  int alibi, causal;
  float scale;
  int B, Tq, Tk, H, Hkv, D, b, h;

  __device__ int kvh() const { return h / (H / Hkv); }
  __device__ long long q_row(int i) const { return (((long long)b * Tq + i) * H + h) * D; }
  __device__ long long k_row(int j) const { return (((long long)b * Tk + j) * Hkv + kvh()) * D; }
  __device__ long long stat(int i) const { return ((long long)b * H + h) * Tq + i; }
  __device__ bool visible(int i, int j) const {
    return key_mask[(long long)b * Tk + j] != 0 && (!causal || j <= i + Tk - Tq);
  }
  __device__ float score(int i, int j) const {
    const float *qi = q + q_row(i), *kj = k + k_row(j);
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += qi[d] * kj[d];
    s *= scale;
    if (alibi) s += attn_alibi_slope(h, H) * (float)(j - i - (Tk - Tq));
    else if (bias_table) s += ld(bias_table, (long long)buckets[j - i + Tq - 1] * H + h);
    return s;
  }
  // row_i(a) . row_j(c): dout_i . v_j in backward
  __device__ float dot(const float* a, long long ra, const float* c, long long rc) const {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += a[ra + d] * c[rc + d];
    return s;
  }
};

#define ATTN32_MAKE(rows)                                                                    \
  Attn32 a{q, k, v, bias_table, key_mask, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, \
           (int)blockIdx.z, (int)blockIdx.y};                                                \
  const int r = blockIdx.x * ATTN32_ROWS + threadIdx.x;                                   \
  if (threadIdx.x >= ATTN32_ROWS || r >= (rows)) return;

// out_i = sum_j softmax_j(s_ij) v_j over visible keys; lse_i = log sum_j exp(s_ij), or
// out_i = 0 and lse_i = -inf when no key is visible.
__device__ void attn32_fwd(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int* key_mask, const w_t* bias_table, const int* buckets, int alibi,
                           int causal, float scale, int B, int Tq, int Tk, int H, int Hkv, int D) {
  ATTN32_MAKE(Tq)
  const int i = r;
  float* oi = out + a.q_row(i);
  for (int d = 0; d < D; ++d) oi[d] = 0.0f;
  float m = ATTN32_NEG_INF;
  for (int j = 0; j < Tk; ++j)
    if (a.visible(i, j)) m = fmaxf(m, a.score(i, j));
  if (m == ATTN32_NEG_INF) {
    lse[a.stat(i)] = ATTN32_NEG_INF;
    return;
  }
  float sum = 0.0f;
  for (int j = 0; j < Tk; ++j)
    if (a.visible(i, j)) sum += expf(a.score(i, j) - m);
  const float l = m + logf(sum);
  for (int j = 0; j < Tk; ++j) {
    if (!a.visible(i, j)) continue;
    const float p = expf(a.score(i, j) - l);
    const float* vj = v + a.k_row(j);
    for (int d = 0; d < D; ++d) oi[d] += p * vj[d];
  }
  lse[a.stat(i)] = l;
}

// delta_i = sum_j P_ij dP_ij with dP_ij = dout_i . v_j; dq_i = sum_j P_ij (dP_ij - delta_i)
// scale k_j. Adds into dq; overwrites delta.
__device__ void attn32_bwd_dq(float* dq, float* delta, const float* dout, const float* q,
                              const float* k, const float* v, const float* lse, const int* key_mask,
                              const w_t* bias_table, const int* buckets, int alibi, int causal,
                              float scale, int B, int Tq, int Tk, int H, int Hkv, int D) {
  ATTN32_MAKE(Tq)
  const int i = r;
  float* dqi = dq + a.q_row(i);
  const float l = lse[a.stat(i)];
  float dl = 0.0f;
  if (l != ATTN32_NEG_INF) {
    for (int j = 0; j < Tk; ++j)
      if (a.visible(i, j)) dl += expf(a.score(i, j) - l) * a.dot(dout, a.q_row(i), v, a.k_row(j));
    for (int j = 0; j < Tk; ++j) {
      if (!a.visible(i, j)) continue;
      const float p = expf(a.score(i, j) - l);
      const float ds = p * (a.dot(dout, a.q_row(i), v, a.k_row(j)) - dl) * scale;
      const float* kj = k + a.k_row(j);
      for (int d = 0; d < D; ++d) dqi[d] += ds * kj[d];
    }
  }
  delta[a.stat(i)] = dl;
}

// dv_j = sum_i P_ij dout_i; dk_j = sum_i P_ij (dP_ij - delta_i) scale q_i, over the queries
// of every query head of the group that see key j. blockIdx.y is the key/value head. Adds into
// dk and dv.
__device__ void attn32_bwd_dkdv(float* dk, float* dv, const float* dout, const float* q,
                                const float* k, const float* v, const float* lse,
                                const float* delta, const int* key_mask, const w_t* bias_table,
                                const int* buckets, int alibi, int causal, float scale, int B,
                                int Tq, int Tk, int H, int Hkv, int D) {
  ATTN32_MAKE(Tk)
  const int j = r, G = H / Hkv, kv = blockIdx.y;
  a.h = kv * G;
  float *dkj = dk + a.k_row(j), *dvj = dv + a.k_row(j);
  for (int g = 0; g < G; ++g) {
    a.h = kv * G + g;
    for (int i = 0; i < Tq; ++i) {
      const float l = lse[a.stat(i)];
      if (!a.visible(i, j) || l == ATTN32_NEG_INF) continue;
      const float p = expf(a.score(i, j) - l);
      const float ds = p * (a.dot(dout, a.q_row(i), v, a.k_row(j)) - delta[a.stat(i)]) * scale;
      const float *doi = dout + a.q_row(i), *qi = q + a.q_row(i);
      for (int d = 0; d < D; ++d) {
        dvj[d] += p * doi[d];
        dkj[d] += ds * qi[d];
      }
    }
  }
}

// The six entry points of attention.cu; the _d128 ones are the same loops.
#define ATTN32_FWD(name)                                                                         \
  extern "C" __global__ void name(float* out, float* lse, const float* q, const float* k,       \
                                  const float* v, const int* key_mask, const w_t* bias_table,   \
                                  const int* buckets, int alibi, int causal, float scale, int B, \
                                  int Tq, int Tk, int H, int Hkv, int D) {                      \
    attn32_fwd(out, lse, q, k, v, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, \
               H, Hkv, D);                                                                      \
  }
#define ATTN32_BWD_DQ(name)                                                                      \
  extern "C" __global__ void name(float* dq, float* delta, const float* dout, const float* q,   \
                                  const float* k, const float* v, const float* lse,             \
                                  const int* key_mask, const w_t* bias_table,                   \
                                  const int* buckets, int alibi, int causal, float scale, int B, \
                                  int Tq, int Tk, int H, int Hkv, int D) {                      \
    attn32_bwd_dq(dq, delta, dout, q, k, v, lse, key_mask, bias_table, buckets, alibi, causal,   \
                  scale, B, Tq, Tk, H, Hkv, D);                                                 \
  }
#define ATTN32_BWD_DKDV(name)                                                                    \
  extern "C" __global__ void name(float* dk, float* dv, const float* dout, const float* q,      \
                                  const float* k, const float* v, const float* lse,             \
                                  const float* delta, const int* key_mask,                      \
                                  const w_t* bias_table, const int* buckets, int alibi,         \
                                  int causal, float scale, int B, int Tq, int Tk, int H,        \
                                  int Hkv, int D) {                                             \
    attn32_bwd_dkdv(dk, dv, dout, q, k, v, lse, delta, key_mask, bias_table, buckets, alibi,    \
                    causal, scale, B, Tq, Tk, H, Hkv, D);                                       \
  }

ATTN32_FWD(attention_fwd)
ATTN32_FWD(attention_fwd_d128)
ATTN32_BWD_DQ(attention_bwd_dq)
ATTN32_BWD_DQ(attention_bwd_dq_d128)
ATTN32_BWD_DKDV(attention_bwd_dkdv)
ATTN32_BWD_DKDV(attention_bwd_dkdv_d128)
