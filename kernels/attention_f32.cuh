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
// (B, H, Tq); key_mask: (B, Tk); bias_table: (num_buckets, H) or NULL; buckets:
// (Tq + P + Tk - 1) or NULL; prefix, dprefix: (K * P, width) float or NULL (P = 0);
// prefix_slot, prefix_hidden: (B) or NULL (K = 1: every batch row reads the one table).
// Keys are numbered over the P + Tk of them: key j < P is row j of batch row b's prefix
// (prefix_slot[b] of the stack; keys at k_off, values at v_off, Hkv * D head-major), hidden
// from b when j < prefix_hidden[b]; key j >= P is the real key j - P. s_ij = scale * q_i . k_j +
// bias[buckets[j - i + Tq - 1], h], or with alibi + slope_h * (j - i - (P + Tk - Tq)). Query
// head h reads key/value head h / (H / Hkv); the bwd_dkdv grid is (ceil(Tk / 64) +
// K * ceil(P / 64), Hkv, B), each thread summing over the group's query heads (and, for a
// prefix row, over the batch rows that read its prefix: only the blocks of batch row 0 run
// those).
#pragma once
#include "common.cuh"

#define ATTN32_ROWS 64  // rows per block: attention.cu's tile height
#define ATTN32_NEG_INF (-__int_as_float(0x7f800000))

// h: the query head; forward and bwd_dq take it from the grid, bwd_dkdv sets it per group head.
struct Attn32 {
  const float *q, *k, *v, *prefix;
  const int *slot, *hidden;  // (B) or NULL
  const w_t* bias_table;
  const int *key_mask, *buckets;
  int alibi, causal;
  float scale;
  int B, Tq, Tk, H, Hkv, D, P, width, k_off, v_off, b, h;

  __device__ int kvh() const { return h / (H / Hkv); }
  __device__ long long q_row(int i) const { return (((long long)b * Tq + i) * H + h) * D; }
  // row j of the real keys (without the prefix)
  __device__ long long k_row(int j) const { return (((long long)b * Tk + j) * Hkv + kvh()) * D; }
  __device__ long long stat(int i) const { return ((long long)b * H + h) * Tq + i; }
  // the first stack row of batch row b's prefix, and its hidden prefix rows
  __device__ long long pre_row() const { return slot ? (long long)slot[b] * P : 0; }
  __device__ int hide() const { return hidden ? hidden[b] : 0; }
  // key j of the P + Tk, and its value
  __device__ const float* key(int j) const {
    return j < P ? prefix + (pre_row() + j) * width + k_off + kvh() * D : k + k_row(j - P);
  }
  __device__ const float* val(int j) const {
    return j < P ? prefix + (pre_row() + j) * width + v_off + kvh() * D : v + k_row(j - P);
  }
  // prefix keys are visible but the hidden ones; the causal mask compares real positions
  __device__ bool visible(int i, int j) const {
    return j < P ? j >= hide()
                 : key_mask[(long long)b * Tk + j - P] != 0 && (!causal || j - P <= i + Tk - Tq);
  }
  __device__ float dot(const float* a, const float* c) const {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += a[d] * c[d];
    return s;
  }
  __device__ float score(int i, int j) const {
    float s = dot(q + q_row(i), key(j)) * scale;
    if (alibi) s += attn_alibi_slope(h, H) * (float)(j - i - (P + Tk - Tq));
    else if (bias_table) s += ld(bias_table, (long long)buckets[j - i + Tq - 1] * H + h);
    return s;
  }
};

#define ATTN32_STRUCT                                                                         \
  Attn32 a{q, k, v, prefix, prefix_slot, prefix_hidden, bias_table, key_mask, buckets, alibi,    \
           causal, scale, B, Tq, Tk, H, Hkv, D, P, width, k_off, v_off, (int)blockIdx.z,        \
           (int)blockIdx.y};
#define ATTN32_MAKE(rows)                                                                    \
  ATTN32_STRUCT                                                                              \
  const int r = blockIdx.x * ATTN32_ROWS + threadIdx.x;                                   \
  if (threadIdx.x >= ATTN32_ROWS || r >= (rows)) return;

// out_i = sum_j softmax_j(s_ij) v_j over visible keys; lse_i = log sum_j exp(s_ij), or
// out_i = 0 and lse_i = -inf when no key is visible.
__device__ void attn32_fwd(float* out, float* lse, const float* q, const float* k, const float* v,
                           const float* prefix, const int* prefix_slot, const int* prefix_hidden,
                           const int* key_mask, const w_t* bias_table,
                           const int* buckets, int alibi, int causal, float scale, int B, int Tq,
                           int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off) {
  ATTN32_MAKE(Tq)
  const int i = r, n = P + Tk;
  float* oi = out + a.q_row(i);
  for (int d = 0; d < D; ++d) oi[d] = 0.0f;
  float m = ATTN32_NEG_INF;
  for (int j = 0; j < n; ++j)
    if (a.visible(i, j)) m = fmaxf(m, a.score(i, j));
  if (m == ATTN32_NEG_INF) {
    lse[a.stat(i)] = ATTN32_NEG_INF;
    return;
  }
  float sum = 0.0f;
  for (int j = 0; j < n; ++j)
    if (a.visible(i, j)) sum += expf(a.score(i, j) - m);
  const float l = m + logf(sum);
  for (int j = 0; j < n; ++j) {
    if (!a.visible(i, j)) continue;
    const float p = expf(a.score(i, j) - l);
    const float* vj = a.val(j);
    for (int d = 0; d < D; ++d) oi[d] += p * vj[d];
  }
  lse[a.stat(i)] = l;
}

// delta_i = sum_j P_ij dP_ij with dP_ij = dout_i . v_j; dq_i = sum_j P_ij (dP_ij - delta_i)
// scale k_j, over the P + Tk keys. Adds into dq with `accumulate` (else zeroes the row first:
// this thread alone writes it); overwrites delta.
__device__ void attn32_bwd_dq(float* dq, float* delta, const float* dout, const float* q,
                              const float* k, const float* v, const float* prefix,
                              const int* prefix_slot, const int* prefix_hidden, const float* lse,
                              const int* key_mask, const w_t* bias_table, const int* buckets,
                              int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                              int Hkv, int D, int P, int width, int k_off, int v_off,
                              int accumulate) {
  ATTN32_MAKE(Tq)
  const int i = r, n = P + Tk;
  float* dqi = dq + a.q_row(i);
  if (!accumulate)
    for (int d = 0; d < D; ++d) dqi[d] = 0.0f;
  const float* doi = dout + a.q_row(i);
  const float l = lse[a.stat(i)];
  float dl = 0.0f;
  if (l != ATTN32_NEG_INF) {
    for (int j = 0; j < n; ++j)
      if (a.visible(i, j)) dl += expf(a.score(i, j) - l) * a.dot(doi, a.val(j));
    for (int j = 0; j < n; ++j) {
      if (!a.visible(i, j)) continue;
      const float p = expf(a.score(i, j) - l);
      const float ds = p * (a.dot(doi, a.val(j)) - dl) * scale;
      const float* kj = a.key(j);
      for (int d = 0; d < D; ++d) dqi[d] += ds * kj[d];
    }
  }
  delta[a.stat(i)] = dl;
}

// Adds to dkj and dvj (D each) the gradient of key j (of the P + Tk) from the queries of
// every query head of a's group (a.b the batch row) that see it.
__device__ void attn32_key_grad(Attn32& a, int j, float* dkj, float* dvj, const float* dout,
                                const float* lse, const float* delta) {
  const int G = a.H / a.Hkv, kv = a.kvh();
  for (int g = 0; g < G; ++g) {
    a.h = kv * G + g;
    for (int i = 0; i < a.Tq; ++i) {
      const float l = lse[a.stat(i)];
      if (!a.visible(i, j) || l == ATTN32_NEG_INF) continue;
      const float p = expf(a.score(i, j) - l);
      const float *doi = dout + a.q_row(i), *qi = a.q + a.q_row(i);
      const float ds = p * (a.dot(doi, a.val(j)) - delta[a.stat(i)]) * a.scale;
      for (int d = 0; d < a.D; ++d) {
        dvj[d] += p * doi[d];
        dkj[d] += ds * qi[d];
      }
    }
  }
}

// dv_j = sum_i P_ij dout_i; dk_j = sum_i P_ij (dP_ij - delta_i) scale q_i, over the queries
// of every query head of the group that see key j. blockIdx.y is the key/value head. The
// first ceil(Tk / 64) block columns take the real keys (adding into dk and dv with
// `accumulate`, else zeroing each key's rows first: its thread alone writes them); the rest take
// the prefix rows, ceil(P / 64) columns for each prefix s of the stack, summed in batch order
// over the batch rows reading s (all of them without prefix_slot) by the blocks of batch row 0
// alone, added into dprefix at the rows' key and value offsets (nothing when dprefix is NULL).
__device__ void attn32_bwd_dkdv(float* dk, float* dv, float* dprefix, const float* dout,
                                const float* q, const float* k, const float* v,
                                const float* prefix, const int* prefix_slot,
                                const int* prefix_hidden, const float* lse, const float* delta,
                                const int* key_mask, const w_t* bias_table, const int* buckets,
                                int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                                int Hkv, int D, int P, int width, int k_off, int v_off,
                                int accumulate) {
  ATTN32_STRUCT
  const int real_tiles = (Tk + ATTN32_ROWS - 1) / ATTN32_ROWS;
  if (threadIdx.x >= ATTN32_ROWS) return;
  a.h = blockIdx.y * (H / Hkv);
  if ((int)blockIdx.x < real_tiles) {
    const int j = blockIdx.x * ATTN32_ROWS + threadIdx.x;
    if (j >= Tk) return;
    if (!accumulate)
      for (int d = 0; d < D; ++d) dk[a.k_row(j) + d] = dv[a.k_row(j) + d] = 0.0f;
    attn32_key_grad(a, P + j, dk + a.k_row(j), dv + a.k_row(j), dout, lse, delta);
    return;
  }
  const int ptiles = (P + ATTN32_ROWS - 1) / ATTN32_ROWS, pcol = blockIdx.x - real_tiles;
  const int s = pcol / ptiles, j = (pcol % ptiles) * ATTN32_ROWS + threadIdx.x;
  if (blockIdx.z != 0 || dprefix == nullptr || j >= P) return;
  float* row = dprefix + ((long long)s * P + j) * width;
  float* dkj = row + k_off + blockIdx.y * D;
  float* dvj = row + v_off + blockIdx.y * D;
  for (int bb = 0; bb < B; ++bb) {
    if (prefix_slot != nullptr && prefix_slot[bb] != s) continue;
    a.b = bb;
    attn32_key_grad(a, j, dkj, dvj, dout, lse, delta);
  }
}

// The six entry points of attention.cu; the _d128 ones are the same loops.
#define ATTN32_FWD(name)                                                                         \
  extern "C" __global__ void name(float* out, float* lse, const float* q, const float* k,       \
                                  const float* v, const float* prefix,                          \
                                  const int* prefix_slot, const int* prefix_hidden,             \
                                  const int* key_mask, const w_t* bias_table,                   \
                                  const int* buckets, int alibi,                                \
                                  int causal, float scale, int B, int Tq, int Tk, int H,        \
                                  int Hkv, int D, int P, int width, int k_off, int v_off) {     \
    attn32_fwd(out, lse, q, k, v, prefix, prefix_slot, prefix_hidden, key_mask, bias_table,    \
               buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, P, width, k_off, v_off);   \
  }
#define ATTN32_BWD_DQ(name)                                                                      \
  extern "C" __global__ void name(float* dq, float* delta, const float* dout, const float* q,   \
                                  const float* k, const float* v, const float* prefix,          \
                                  const int* prefix_slot, const int* prefix_hidden,             \
                                  const float* lse, const int* key_mask,                        \
                                  const w_t* bias_table, const int* buckets, int alibi,         \
                                  int causal, float scale, int B, int Tq, int Tk, int H,        \
                                  int Hkv, int D, int P, int width, int k_off, int v_off,       \
                                  int accumulate) {                                             \
    attn32_bwd_dq(dq, delta, dout, q, k, v, prefix, prefix_slot, prefix_hidden, lse, key_mask, \
                  bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, P, width,    \
                  k_off, v_off, accumulate);                                                    \
  }
#define ATTN32_BWD_DKDV(name)                                                                    \
  extern "C" __global__ void name(float* dk, float* dv, float* dprefix, const float* dout,       \
                                  const float* q, const float* k, const float* v,               \
                                  const float* prefix, const int* prefix_slot,                  \
                                  const int* prefix_hidden, const float* lse,                   \
                                  const float* delta, const int* key_mask,                      \
                                  const w_t* bias_table,                                        \
                                  const int* buckets, int alibi, int causal, float scale,       \
                                  int B, int Tq, int Tk, int H, int Hkv, int D, int P,          \
                                  int width, int k_off, int v_off, int accumulate) {            \
    attn32_bwd_dkdv(dk, dv, dprefix, dout, q, k, v, prefix, prefix_slot, prefix_hidden, lse,  \
                    delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H,   \
                    Hkv, D, P, width, k_off, v_off, accumulate);                                \
  }

ATTN32_FWD(attention_fwd)
ATTN32_FWD(attention_fwd_d128)
ATTN32_BWD_DQ(attention_bwd_dq)
ATTN32_BWD_DQ(attention_bwd_dq_d128)
ATTN32_BWD_DKDV(attention_bwd_dkdv)
ATTN32_BWD_DKDV(attention_bwd_dkdv_d128)
