// The forward attention on raw mma.sync (m16n8k16, kernels/mma.cuh), FlashAttention-2 style:
// scores, softmax and probabilities never leave the registers. Part of attention.cu's bf16
// build (after attention_tiles.cuh: attn_key_tile, AttnPrefix, AttnSmem); the entry
// points attention_fwd_mma[_d128] are declared there. Same semantics, arguments, grid and
// block as attention_fwd (ATTENTION.md); dynamic shared memory attn_smem_bytes(3, D): the Q,
// K, V tiles and the small block, no staging.
//
// Per key tile each warp (16 query rows) computes S = Q K^T as 8 n8 tiles of C fragments
// (lane l holds rows g = l / 4 and g + 8, keys 8n + 2t, 8n + 2t + 1 of each, t = l % 4), adds
// scale, bias and masks in place, takes the row max and sum over the 4 lanes of a group with
// two __shfl_xor_sync, and turns the probabilities into bf16 A fragments in registers: the C
// fragments of n8 tiles 2kk and 2kk + 1 are, element for element, the A fragment of keys
// 16kk .. 16kk + 15 (mma.cuh). O (16 x Dp per warp, Dp / 8 n8 tiles of C fragments) stays in
// registers for the whole walk. Fragments are read from shared memory with plain loads per
// the documented layout: Q and K two adjacent bf16 at a time, V (k along its rows) two rows.
#include "mma.cuh"

// Elements (row, col) and (row, col + 1) of a bf16 tile as one .b32 (col and ld even).
__device__ __forceinline__ unsigned attn_ld_pair(const bf16* tile, int row, int col, int ld) {
  return *reinterpret_cast<const unsigned*>(tile + row * ld + col);
}

// Elements (row, col) and (row + 1, col) as one .b32, the first in the low half: a B fragment
// of a k-major tile (V, whose rows are the product's k).
__device__ __forceinline__ unsigned attn_ld_rows(const bf16* tile, int row, int col, int ld) {
  const unsigned short* t = reinterpret_cast<const unsigned short*>(tile);
  return static_cast<unsigned>(t[row * ld + col]) | static_cast<unsigned>(t[(row + 1) * ld + col]) << 16;
}

// s (16 x 64, 8 n8 tiles of C fragments) = the warp's Q rows (16 x Dp at Qw) times K^T.
__device__ __forceinline__ void attn_mma_scores(float (&s)[8][4], const bf16* Qw, const bf16* Ks, int ldt,
                                                int NF) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c2 = 2 * (lane & 3);
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
#pragma unroll 1
  for (int kf = 0; kf < NF; ++kf) {
    const int c = kf * 16 + c2;
    const unsigned a[4] = {attn_ld_pair(Qw, g, c, ldt), attn_ld_pair(Qw, g + 8, c, ldt),
                           attn_ld_pair(Qw, g, c + 8, ldt), attn_ld_pair(Qw, g + 8, c + 8, ldt)};
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const unsigned kb[2] = {attn_ld_pair(Ks, n * 8 + g, c, ldt), attn_ld_pair(Ks, n * 8 + g, c + 8, ldt)};
      mma_bf16_16816(s[n], a, kb, s[n]);
    }
  }
}

// The online softmax of one key tile on the score fragments, in base 2: s becomes P (float,
// before its rounding to bf16), m_run / l_run the running max and sum of the lane's rows il
// and il + 8 (local to the query tile), alpha their rescale factors for O.
__device__ __forceinline__ void attn_mma_softmax(float (&s)[8][4], float (&m_run)[2], float (&l_run)[2],
                                                 float (&alpha)[2], const float* bias_s, const int* key_s,
                                                 int il, float sl2) {
  const int c2 = 2 * (threadIdx.x & 3);
  float mx[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int c = n * 8 + c2 + (e & 1), row = il + 8 * (e >> 1);
      const bool vis = key_s[c] != 0;  // the causal mask is in the bias window
      s[n][e] = vis ? s[n][e] * sl2 + bias_s[c - row + ATTN_BM - 1] : ATTN_NEG_INF;
      mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
    }
  float sum[2] = {0.0f, 0.0f};
  bool any[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {  // the 4 lanes of a group hold a row's 64 keys
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(ATTN_FULL, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(ATTN_FULL, mx[r], 2));
    const float m_new = fmaxf(m_run[r], mx[r]);
    any[r] = m_new != ATTN_NEG_INF;  // else every key so far is hidden from this row
    alpha[r] = any[r] ? exp2f(m_run[r] - m_new) : 1.0f;
    m_run[r] = m_new;
  }
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = e >> 1;
      s[n][e] = any[r] ? exp2f(s[n][e] - m_run[r]) : 0.0f;
      sum[r] += s[n][e];
    }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    sum[r] += __shfl_xor_sync(ATTN_FULL, sum[r], 1);
    sum[r] += __shfl_xor_sync(ATTN_FULL, sum[r], 2);
    l_run[r] = l_run[r] * alpha[r] + sum[r];
  }
}

// o (the warp's 16 x Dp rows, NT = Dp / 8 n8 tiles of C fragments) += p (16 x 64, the score
// fragments' layout) times Bs (64 x Dp, ld ldt: V, or K for dq), p rounded to bf16 A fragments
// in registers: the C fragments of n8 tiles 2kk and 2kk + 1 are the A fragment of keys
// 16kk .. 16kk + 15.
template <int NTM>
__device__ __forceinline__ void attn_mma_pb(float (&o)[NTM][4], const float (&p)[8][4], const bf16* Bs, int ldt,
                                            int NT) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c2 = 2 * (lane & 3);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const unsigned a[4] = {attn_pack(p[2 * kk][0], p[2 * kk][1]), attn_pack(p[2 * kk][2], p[2 * kk][3]),
                           attn_pack(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                           attn_pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
    const int key = kk * 16 + c2;
#pragma unroll
    for (int f = 0; f < NTM; ++f)
      if (f < NT) {
        const unsigned bb[2] = {attn_ld_rows(Bs, key, f * 8 + g, ldt), attn_ld_rows(Bs, key + 8, f * 8 + g, ldt)};
        mma_bf16_16816(o[f], a, bb, o[f]);
      }
  }
}

// Rows i and i + 8 (those < T) of head h, batch b, of a (B, T, H, D) bf16 tensor from the lane's
// elements of o, row r scaled by row_scale[r]. ADD adds them to what the rows hold (dq,
// src/backend/mod.rs); else they overwrite (out).
template <int NTM, bool ADD>
__device__ __forceinline__ void attn_mma_write_rows(bf16* __restrict__ dst, const float (&o)[NTM][4],
                                                    const float (&row_scale)[2], int b, int h, int i, int T,
                                                    int H, int D) {
  const int c2 = 2 * (threadIdx.x & 3);
#pragma unroll
  for (int r = 0; r < 2; ++r, i += 8) {
    if (i >= T) continue;
    bf16* row = dst + ((static_cast<size_t>(b) * T + i) * H + h) * D;
#pragma unroll
    for (int f = 0; f < NTM; ++f) {
      const int c = f * 8 + c2;
      float y0 = o[f][2 * r] * row_scale[r], y1 = o[f][2 * r + 1] * row_scale[r];
      if (ADD && c < D) y0 += __bfloat162float(row[c]);
      if (ADD && c + 1 < D) y1 += __bfloat162float(row[c + 1]);
      if (c + 1 < D && D % 2 == 0) {  // 4-byte aligned: every row starts at a multiple of D
        *reinterpret_cast<unsigned*>(row + c) = attn_pack(y0, y1);
      } else {
        if (c < D) row[c] = __float2bfloat16(y0);
        if (c + 1 < D) row[c + 1] = __float2bfloat16(y1);
      }
    }
  }
}

// grid (ceil(Tq / 64), H, B), block 128, dynamic smem attn_smem_bytes(3, D). NFM: the kernel's
// bound on Dp / 16 (4 or 8).
template <int NFM>
__device__ __forceinline__ void attn_fwd_mma_body(unsigned char* attn_smem, bf16* __restrict__ out,
                                                  float* __restrict__ lse, const bf16* __restrict__ q,
                                                  const bf16* __restrict__ k, const bf16* __restrict__ v,
                                                  const AttnPrefix pre, const int* __restrict__ key_mask,
                                                  const bf16* __restrict__ bias_table,
                                                  const int* __restrict__ buckets, int alibi, int causal,
                                                  float scale, int Tq, int Tk, int H, int Hkv, int D) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
  // Causal tiles late in the sequence do the most work: start them first.
  const int i0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * ATTN_BM;
  const int il = warp * 16 + (lane >> 2);  // this lane's first row in the tile; il + 8 the second

  AttnSmem sm{attn_smem};
  bf16* Qs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* Ks = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Vs = sm.take<bf16>(ATTN_BN * ldt * 2);
  float* bias_s = sm.take<float>(128 * 4);
  int* key_s = sm.take<int>(ATTN_BN * 4);

  attn_load_tile(Qs, q, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  const bool warp_live = i0 + warp * 16 < Tq;
  const float sl2 = scale * ATTN_LOG2E;
  float m_run[2] = {ATTN_NEG_INF, ATTN_NEG_INF}, l_run[2] = {0.0f, 0.0f};
  float o[2 * NFM][4];
#pragma unroll
  for (int f = 0; f < 2 * NFM; ++f)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[f][e] = 0.0f;

  // The prefix's tiles, then the real keys' (attn_key_tile); causal: up to the tile's last query.
  const int tiles = attn_tiles(pre.P) + attn_tiles(causal ? min(Tk, i0 + ATTN_BM + Tk - Tq) : Tk);
  for (int t = 0; t < tiles; ++t) {
    __syncthreads();  // the previous tile's K, V and tables are no longer read
    if (!attn_key_tile(Ks, Vs, bias_s, key_s, k, v, pre, key_mask, bias_table, buckets, alibi, causal, t,
                       i0, b, h, kvh, Tq, Tk, H, Hkv, D, Dp, ldt))
      continue;  // every key of this tile is padded
    if (!warp_live) continue;
    float s[8][4], alpha[2];
    attn_mma_scores(s, Qs + warp * 16 * ldt, Ks, ldt, NF);
    attn_mma_softmax(s, m_run, l_run, alpha, bias_s, key_s, il, sl2);
#pragma unroll
    for (int f = 0; f < 2 * NFM; ++f)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[f][e] *= alpha[e >> 1];
    attn_mma_pb(o, s, Vs, ldt, 2 * NF);
  }
  if (!warp_live) return;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = i0 + il + 8 * r;
    inv[r] = l_run[r] > 0.0f ? 1.0f / l_run[r] : 0.0f;
    if ((lane & 3) == 0 && i < Tq)
      lse[(static_cast<size_t>(b) * H + h) * Tq + i] =
          l_run[r] > 0.0f ? (m_run[r] + log2f(l_run[r])) * ATTN_LN2 : ATTN_NEG_INF;
  }
  attn_mma_write_rows<2 * NFM, false>(out, o, inv, b, h, i0 + il, Tq, H, D);
}

// dq and delta as attention_bwd_dq computes them (two passes over the key tiles: the first
// sums delta_i = sum_j P_ij dP_ij, the second adds dq += dS K with dS = P (dP - delta) scale),
// with S = Q K^T, dP = dO V^T, P, dS in registers (attn_mma_scores, attn_mma_pb).
// grid (ceil(Tq / 64), H, B), block 128, dynamic smem attn_smem_bytes(4, D): Q, dO, K, V.
template <int NFM>
__device__ __forceinline__ void attn_bwd_dq_mma_body(unsigned char* attn_smem, bf16* __restrict__ dq,
                                                     float* __restrict__ delta, const bf16* __restrict__ dout,
                                                     const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                     const bf16* __restrict__ v, const AttnPrefix pre,
                                                     const float* __restrict__ lse,
                                                     const int* __restrict__ key_mask,
                                                     const bf16* __restrict__ bias_table,
                                                     const int* __restrict__ buckets, int alibi, int causal,
                                                     float scale, int Tq, int Tk, int H, int Hkv, int D) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c2 = 2 * (lane & 3);
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
  const int i0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * ATTN_BM;
  const int il = warp * 16 + (lane >> 2);  // this lane's first row in the tile; il + 8 the second

  AttnSmem sm{attn_smem};
  bf16* Qs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* dOs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* Ks = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Vs = sm.take<bf16>(ATTN_BN * ldt * 2);
  float* bias_s = sm.take<float>(128 * 4);
  int* key_s = sm.take<int>(ATTN_BN * 4);

  attn_load_tile(Qs, q, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  attn_load_tile(dOs, dout, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  const bool warp_live = i0 + warp * 16 < Tq;
  const float sl2 = scale * ATTN_LOG2E;
  float lse2[2], drow[2] = {0.0f, 0.0f};  // a row that sees no key has lse -inf: P = 0
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = i0 + il + 8 * r;
    lse2[r] = i < Tq ? lse[(static_cast<size_t>(b) * H + h) * Tq + i] * ATTN_LOG2E : ATTN_NEG_INF;
  }
  float acc[2 * NFM][4];
#pragma unroll
  for (int f = 0; f < 2 * NFM; ++f)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[f][e] = 0.0f;

  const int kend = causal ? min(Tk, i0 + ATTN_BM + Tk - Tq) : Tk;
  for (int pass = 0; pass < 2; ++pass) {
    float dsum[2] = {0.0f, 0.0f};
    for (int t = 0; t < attn_tiles(pre.P) + attn_tiles(kend); ++t) {  // prefix tiles first
      __syncthreads();
      if (!attn_key_tile(Ks, Vs, bias_s, key_s, k, v, pre, key_mask, bias_table, buckets, alibi, causal, t,
                         i0, b, h, kvh, Tq, Tk, H, Hkv, D, Dp, ldt))
        continue;
      if (!warp_live) continue;
      float s[8][4], dp[8][4];
      attn_mma_scores(s, Qs + warp * 16 * ldt, Ks, ldt, NF);
      attn_mma_scores(dp, dOs + warp * 16 * ldt, Vs, ldt, NF);
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = n * 8 + c2 + (e & 1), r = e >> 1;
          const bool vis = lse2[r] != ATTN_NEG_INF && key_s[c] != 0;  // causal: in the bias window
          const float p = vis ? exp2f(s[n][e] * sl2 + bias_s[c - (il + 8 * r) + ATTN_BM - 1] - lse2[r]) : 0.0f;
          if (pass == 0) dsum[r] += p * dp[n][e];
          else s[n][e] = p * (dp[n][e] - drow[r]) * scale;  // dS
        }
      if (pass == 1) attn_mma_pb(acc, s, Ks, ldt, 2 * NF);
    }
    if (pass == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {  // the 4 lanes of a group hold a row's keys
        drow[r] = dsum[r] + __shfl_xor_sync(ATTN_FULL, dsum[r], 1);
        drow[r] += __shfl_xor_sync(ATTN_FULL, drow[r], 2);
        const int i = i0 + il + 8 * r;
        if (c2 == 0 && i < Tq) delta[(static_cast<size_t>(b) * H + h) * Tq + i] = drow[r];
      }
    }
  }
  const float one[2] = {1.0f, 1.0f};
  if (warp_live) attn_mma_write_rows<2 * NFM, true>(dq, acc, one, b, h, i0 + il, Tq, H, D);
}
