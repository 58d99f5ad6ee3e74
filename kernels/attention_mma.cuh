// The attention kernels on raw mma.sync (m16n8k16, kernels/mma.cuh), FlashAttention-2 style:
// the forward, then bwd_dq and bwd_dkdv further down (attn_smem_bytes(4, D)); scores,
// softmax and probabilities never leave the registers. The forward first: Part of attention.cu's bf16
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

// s (16 x 8NN, NN n8 tiles of C fragments) = the warp's Q rows (16 x Dp at Qw) times K^T, K the
// first 8NN rows at Ks (NN = 8: a whole tile of 64 keys). The backward's dkdv passes K as Qw and
// Q as Ks: S^T.
template <int NN>
__device__ __forceinline__ void attn_mma_scores(float (&s)[NN][4], const bf16* Qw, const bf16* Ks, int ldt,
                                                int NF) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c2 = 2 * (lane & 3);
#pragma unroll
  for (int n = 0; n < NN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
#pragma unroll 1
  for (int kf = 0; kf < NF; ++kf) {
    const int c = kf * 16 + c2;
    const unsigned a[4] = {attn_ld_pair(Qw, g, c, ldt), attn_ld_pair(Qw, g + 8, c, ldt),
                           attn_ld_pair(Qw, g, c + 8, ldt), attn_ld_pair(Qw, g + 8, c + 8, ldt)};
#pragma unroll
    for (int n = 0; n < NN; ++n) {
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

// o (the warp's 16 x Dp rows, NT = Dp / 8 n8 tiles of C fragments) += p (16 x 8NP, the score
// fragments' layout) times Bs (8NP x Dp, ld ldt: V, or K for dq, dO and Q for dkdv), p rounded
// to bf16 A fragments in registers: the C fragments of n8 tiles 2kk and 2kk + 1 are the A
// fragment of keys 16kk .. 16kk + 15.
template <int NTM, int NP>
__device__ __forceinline__ void attn_mma_pb(float (&o)[NTM][4], const float (&p)[NP][4], const bf16* Bs, int ldt,
                                            int NT) {
  static_assert(NP % 2 == 0, "p holds whole k16 tiles");
  const int lane = threadIdx.x & 31, g = lane >> 2, c2 = 2 * (lane & 3);
#pragma unroll
  for (int kk = 0; kk < NP / 2; ++kk) {
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
// elements of o, row r scaled by row_scale[r]. `add` adds them to what the rows hold (the
// gradients with `accumulate`, src/backend/mod.rs); else they overwrite (out, and the
// gradients without).
template <int NTM>
__device__ __forceinline__ void attn_mma_write_rows(bf16* __restrict__ dst, const float (&o)[NTM][4],
                                                    const float (&row_scale)[2], int b, int h, int i, int T,
                                                    int H, int D, bool add) {
  const int c2 = 2 * (threadIdx.x & 3);
#pragma unroll
  for (int r = 0; r < 2; ++r, i += 8) {
    if (i >= T) continue;
    bf16* row = dst + ((static_cast<size_t>(b) * T + i) * H + h) * D;
#pragma unroll
    for (int f = 0; f < NTM; ++f) {
      const int c = f * 8 + c2;
      float y0 = o[f][2 * r] * row_scale[r], y1 = o[f][2 * r + 1] * row_scale[r];
      if (add && c < D) y0 += __bfloat162float(row[c]);
      if (add && c + 1 < D) y1 += __bfloat162float(row[c + 1]);
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
  attn_mma_write_rows<2 * NFM>(out, o, inv, b, h, i0 + il, Tq, H, D, false);
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
                                                     float scale, int Tq, int Tk, int H, int Hkv, int D, int accumulate) {
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
  if (warp_live) attn_mma_write_rows<2 * NFM>(dq, acc, one, b, h, i0 + il, Tq, H, D, accumulate);
}

// Adds the lane's elements of acc (a warp's rows row and row + 8, columns 8f + 2t and
// 8f + 2t + 1, t = lane % 4) to those rows < P of the float prefix gradient (P, width), at
// column off (one key/value head's keys or values of this layer).
template <int NTM>
__device__ __forceinline__ void attn_mma_add_prefix_rows(float* __restrict__ dst, const float (&acc)[NTM][4],
                                                         int row, int P, int width, int off, int D) {
  const int c2 = 2 * (threadIdx.x & 3);
#pragma unroll
  for (int r = 0; r < 2; ++r, row += 8) {
    if (row >= P) continue;
    float* out = dst + static_cast<size_t>(row) * width + off;
#pragma unroll
    for (int f = 0; f < NTM; ++f) {
      const int c = f * 8 + c2;
      if (c < D) out[c] += acc[f][2 * r];
      if (c + 1 < D) out[c + 1] += acc[f][2 * r + 1];
    }
  }
}

// dk = dS^T q and dv = P^T dout as attention_bwd_dkdv computes them (the same grid, block
// columns, batch-row walk and prefix gradient; attention_wmma.cuh), with S^T = K Q^T,
// dP^T = V dO^T, P^T and dS^T in registers: a warp's 16 keys are the rows of its C fragments
// (lane l: keys g = l / 4 and g + 8 of them), the queries their columns. dv += P^T dO and
// dk += dS^T Q take P^T and dS^T as bf16 A fragments (attn_mma_pb, dO and Q read k-major), dk
// and dv stay in registers for the whole walk. NQ: the n8 tiles of queries taken at a time (8: the
// whole tile; 4: two halves, fewer live scores). grid (ceil(Tk / 64) + K * ceil(P / 64), Hkv, B),
// block 128, dynamic smem attn_smem_bytes(4, D): K, V, Q, dO.
template <int NFM, int NQ>
__device__ __forceinline__ void attn_bwd_dkdv_mma_body(
    unsigned char* attn_smem, bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dprefix,
    const bf16* __restrict__ dout, const bf16* __restrict__ q, const bf16* __restrict__ k,
    const bf16* __restrict__ v, AttnPrefix pre, const int* __restrict__ slot, const int* __restrict__ hidden,
    const float* __restrict__ lse, const float* __restrict__ delta, const int* __restrict__ key_mask,
    const bf16* __restrict__ bias_table, const int* __restrict__ buckets, int alibi, int causal, float scale,
    int B, int Tq, int Tk, int H, int Hkv, int D, int accumulate) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c2 = 2 * (lane & 3);
  const AttnKeyBlock blk = attn_key_block(pre, dprefix, Tk);
  const bool is_pre = blk.is_pre;
  if (is_pre && (blockIdx.z != 0 || dprefix == nullptr)) return;
  const int kvh = blockIdx.y, bz = blockIdx.z, G = H / Hkv, s = blk.s, j0 = blk.j0;
  const int jl = warp * 16 + (lane >> 2);  // this lane's first key in the tile; jl + 8 the second

  AttnSmem sm{attn_smem};
  bf16* Ks = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Vs = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Qs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* dOs = sm.take<bf16>(ATTN_BM * ldt * 2);
  float* bias_s = sm.take<float>(128 * 4);
  int* key_s = sm.take<int>(ATTN_BN * 4);
  float* lse_s = sm.take<float>(ATTN_BM * 4);    // log2(e) * lse of the tile's queries
  float* delta_s = sm.take<float>(ATTN_BM * 4);  // delta of the tile's queries

  const int flag = attn_load_keys(Ks, Vs, key_s, k, v, pre, key_mask, is_pre, j0, bz, kvh, Tk, Hkv, D, Dp, ldt);
  const bool any_key = __syncthreads_or(flag);
  const bool warp_live = j0 + warp * 16 < (is_pre ? pre.P : Tk);
  const bool key_live0 = key_s[jl] != 0, key_live1 = key_s[jl + 8] != 0;
  const float sl2 = scale * ATTN_LOG2E;
  float dk_acc[2 * NFM][4], dv_acc[2 * NFM][4];
#pragma unroll
  for (int f = 0; f < 2 * NFM; ++f)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[f][e] = dv_acc[f][e] = 0.0f;

  // Causal: queries before j0 - (Tk - Tq) see none of these real keys (all see the prefix).
  const int istart = (causal && any_key && !is_pre) ? max(0, j0 - (Tk - Tq)) / ATTN_BM * ATTN_BM : 0;
  const int iend = any_key ? Tq : 0;
  // the batch rows (this block's, or those reading prefix s), and in each the query heads
  // that read this key/value head, one after the other
  for (int b = is_pre ? attn_next_row(slot, s, 0, B) : bz; b < (is_pre ? B : bz + 1);
       b = is_pre ? attn_next_row(slot, s, b + 1, B) : b + 1) {
    // a prefix row hidden from batch row b is no key of it (always 0 for real keys)
    const int hide = is_pre && hidden != nullptr ? hidden[b] : 0;
    const bool live0 = key_live0 && j0 + jl >= hide, live1 = key_live1 && j0 + jl + 8 >= hide;
    for (int h = kvh * G; h < (kvh + 1) * G; ++h)
    for (int i0 = istart; i0 < iend; i0 += ATTN_BM) {
      __syncthreads();
      attn_load_query_tile(Qs, dOs, bias_s, lse_s, delta_s, q, dout, lse, delta, bias_table, buckets, alibi,
                           causal, is_pre, pre.P, i0, j0, b, h, Tq, Tk, H, D, Dp, ldt);
      __syncthreads();
      if (!warp_live) continue;

#pragma unroll 1
      for (int q0 = 0; q0 < ATTN_BM; q0 += 8 * NQ) {  // NQ n8 tiles of the tile's queries
        float st[NQ][4], dpt[NQ][4];  // S^T, dP^T: 16 keys x 8NQ queries
        attn_mma_scores(st, Ks + warp * 16 * ldt, Qs + q0 * ldt, ldt, NF);
        attn_mma_scores(dpt, Vs + warp * 16 * ldt, dOs + q0 * ldt, ldt, NF);
#pragma unroll
        for (int n = 0; n < NQ; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int c = q0 + n * 8 + c2 + (e & 1), r = e >> 1;
            const float l2 = lse_s[c];
            const bool vis = (r ? live1 : live0) && l2 != ATTN_NEG_INF;  // causal: in the bias window
            const float p = vis ? exp2f(st[n][e] * sl2 + bias_s[jl + 8 * r - c + ATTN_BM - 1] - l2) : 0.0f;
            st[n][e] = p;                                   // P^T
            dpt[n][e] = p * (dpt[n][e] - delta_s[c]) * scale;  // dS^T
          }
        attn_mma_pb(dv_acc, st, dOs + q0 * ldt, ldt, 2 * NF);
        attn_mma_pb(dk_acc, dpt, Qs + q0 * ldt, ldt, 2 * NF);
      }
    }
  }

  if (!warp_live) return;
  if (is_pre) {
    attn_mma_add_prefix_rows(dprefix, dk_acc, j0 + jl, pre.P, pre.width, pre.k_off + kvh * D, D);
    attn_mma_add_prefix_rows(dprefix, dv_acc, j0 + jl, pre.P, pre.width, pre.v_off + kvh * D, D);
  } else {
    const float one[2] = {1.0f, 1.0f};
    attn_mma_write_rows<2 * NFM>(dk, dk_acc, one, bz, kvh, j0 + jl, Tk, Hkv, D, accumulate);
    attn_mma_write_rows<2 * NFM>(dv, dv_acc, one, bz, kvh, j0 + jl, Tk, Hkv, D, accumulate);
  }
}
