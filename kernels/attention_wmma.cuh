// The bf16 attention kernels on nvcuda::wmma (16x16x16 bf16 fragments, float accumulators):
// the bodies of attention_fwd, attention_bwd_dq and attention_bwd_dkdv (their entry points are
// in attention.cu). The fragments' element mapping is unspecified, so scores go through a
// per-warp float staging tile in shared memory, and P and dS back as bf16 operand tiles
// (ATTENTION.md "Fragments and the element mapping"). Needs attention_tiles.cuh.
#pragma once
#include <mma.h>

namespace wmma = nvcuda::wmma;

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> attn_acc;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> attn_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> attn_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> attn_b_col;

static_assert(attn_acc::num_elements == 8, "a float 16x16 accumulator holds 8 elements per lane");

// stage (16 x 64 floats, ld ATTN_SLD) = A (16 x Dp, ld lda) times the transpose of Bm
// (64 x Dp, ld ldb): stage[r][n] = sum_k A[r][k] * Bm[n][k].
__device__ __forceinline__ void attn_abt(float* stage, const bf16* A, int lda, const bf16* Bm, int ldb,
                                         int NF) {
  attn_acc acc[4];
#pragma unroll
  for (int n = 0; n < 4; ++n) wmma::fill_fragment(acc[n], 0.0f);
  for (int kf = 0; kf < NF; ++kf) {
    attn_a a;
    wmma::load_matrix_sync(a, A + kf * 16, lda);
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      attn_b_col bt;
      wmma::load_matrix_sync(bt, Bm + n * 16 * ldb + kf * 16, ldb);
      wmma::mma_sync(acc[n], a, bt, acc[n]);
    }
  }
#pragma unroll
  for (int n = 0; n < 4; ++n) wmma::store_matrix_sync(stage + n * 16, acc[n], ATTN_SLD, wmma::mem_row_major);
}

// acc[f] += Op (16 x 64 bf16, ld ATTN_PLD) times columns 16f..16f+15 of Bm (64 x Dp, ld ldb).
// NFM is the kernel's compile-time bound on NF (register arrays need constant indices).
template <int NFM>
__device__ __forceinline__ void attn_ab_accumulate(attn_acc (&acc)[NFM], const bf16* Op, const bf16* Bm,
                                                   int ldb, int NF) {
#pragma unroll 1
  for (int kk = 0; kk < 4; ++kk) {
    attn_a a;
    wmma::load_matrix_sync(a, Op + kk * 16, ATTN_PLD);
#pragma unroll
    for (int f = 0; f < NFM; ++f) {
      if (f < NF) {
        attn_b_row bm;
        wmma::load_matrix_sync(bm, Bm + kk * 16 * ldb + f * 16, ldb);
        wmma::mma_sync(acc[f], a, bm, acc[f]);
      }
    }
  }
}

// Stores accumulators g..g+3 (columns 16g..16g+63) of a warp's rows to its staging tile.
template <int NFM>
__device__ __forceinline__ void attn_stage_cols(float* stage, const attn_acc (&acc)[NFM], int g, int NF) {
  __syncwarp();  // earlier reads of the staging tile (softmax, previous group) are done
#pragma unroll
  for (int f = 0; f < NFM; ++f)
    if (f >= g && f < g + 4 && f < NF)
      wmma::store_matrix_sync(stage + (f - g) * 16, acc[f], ATTN_SLD, wmma::mem_row_major);
  __syncwarp();
}

// Adds a warp's 16 x D accumulator rows to rows row0 + r < P of the float prefix gradient
// (P, width), at column off (one key/value head's keys or values of this layer), through the
// warp's staging tile.
template <int NFM>
__device__ void attn_add_prefix_rows(float* __restrict__ dst, const attn_acc (&acc)[NFM], float* stage,
                                     int row0, int P, int width, int off, int D, int NF) {
  const int lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  const int t = row0 + r;
  float* out = dst + static_cast<size_t>(t) * width + off;
  for (int g = 0; g < NF; g += 4) {  // 64 columns at a time
    attn_stage_cols(stage, acc, g, NF);
    if (t < P) {
      const float* src = stage + r * ATTN_SLD;
      const int c_end = min(64, D - g * 16);
      for (int c = half; c < c_end; c += 2) out[g * 16 + c] += src[c];
    }
  }
}

// Writes a warp's 16 x D accumulator rows (acc[f] = columns 16f..16f+15), each row r scaled by
// row_scale[r] when given, to rows row0 + r < T of head h, batch b, of a (B, T, H, D) bf16
// tensor, through the warp's staging tile. `add` adds them to what the rows hold (backward's
// gradients with `accumulate`, src/backend/mod.rs); else they overwrite (forward's output,
// backward's without).
template <int NFM>
__device__ void attn_store_rows(bf16* __restrict__ dst, const attn_acc (&acc)[NFM], float* stage,
                                const float* row_scale, int b, int h, int row0, int T, int H, int D,
                                int NF, bool add) {
  const int lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  const int t = row0 + r;
  const bool vec = (D % 8 == 0) && ((reinterpret_cast<unsigned long long>(dst) & 15ull) == 0);
  bf16* out = dst + ((static_cast<size_t>(b) * T + t) * H + h) * D;
  for (int g = 0; g < NF; g += 4) {  // 64 columns at a time
    attn_stage_cols(stage, acc, g, NF);
    if (t < T) {
      const float s = row_scale != nullptr ? row_scale[r] : 1.0f;
      const float* src = stage + r * ATTN_SLD;
      const int c_end = min(64, D - g * 16);
      if (vec) {
        for (int c = half * 8; c < c_end; c += 16) {
          float y[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) y[e] = src[c + e] * s;
          if (add) {
            const bf16x8 old = *reinterpret_cast<const bf16x8*>(out + g * 16 + c);
#pragma unroll
            for (int e = 0; e < 8; ++e) y[e] += __bfloat162float(old.v[e]);
          }
          uint4 w;
          w.x = attn_pack(y[0], y[1]);
          w.y = attn_pack(y[2], y[3]);
          w.z = attn_pack(y[4], y[5]);
          w.w = attn_pack(y[6], y[7]);
          *reinterpret_cast<uint4*>(out + g * 16 + c) = w;
        }
      } else {
        for (int c = half; c < c_end; c += 2) {
          const float y = src[c] * s + (add ? __bfloat162float(out[g * 16 + c]) : 0.0f);
          out[g * 16 + c] = __float2bfloat16(y);
        }
      }
    }
  }
}

// out = softmax(scale * q k^T + bias + mask) v, lse = log-sum-exp per query row (natural log).
// grid (ceil(Tq / 64), H, B), block 128, dynamic smem attn_smem_bytes(0, D).
// Each warp owns 16 query rows and keeps their output in registers (online softmax in base 2).
template <int NFM>
__device__ __forceinline__ void attn_fwd_body(unsigned char* attn_smem, bf16* __restrict__ out,
                                              float* __restrict__ lse, const bf16* __restrict__ q,
                                              const bf16* __restrict__ k, const bf16* __restrict__ v,
                                              const AttnPrefix pre, const int* __restrict__ key_mask,
                                              const bf16* __restrict__ bias_table,
                                              const int* __restrict__ buckets, int alibi, int causal,
                                              float scale, int B, int Tq, int Tk, int H, int Hkv,
                                              int D) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
  // Causal tiles late in the sequence do the most work: start them first.
  const int i0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * ATTN_BM;
  const int il = warp * 16 + r, i = i0 + il;  // this lane's query row (with its partner lane)

  AttnSmem sm{attn_smem};
  bf16* Qs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* Ks = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Vs = sm.take<bf16>(ATTN_BN * ldt * 2);
  float* Ss = sm.take<float>(ATTN_WARPS * 16 * ATTN_SLD * 4) + warp * 16 * ATTN_SLD;
  bf16* Ps = sm.take<bf16>(ATTN_WARPS * 16 * ATTN_PLD * 2) + warp * 16 * ATTN_PLD;
  float* bias_s = sm.take<float>(128 * 4);
  int* key_s = sm.take<int>(ATTN_BN * 4);
  float* rows_s = sm.take<float>(ATTN_WARPS * 16 * 4) + warp * 16;

  // The accumulator's element-to-row mapping is unspecified: learn it from a matrix of row
  // numbers, packed as 8 x 4 bits.
  for (int e = lane; e < 256; e += 32) Ss[(e >> 4) * ATTN_SLD + (e & 15)] = static_cast<float>(e >> 4);
  __syncwarp();
  unsigned rowpack = 0;
  {
    attn_acc rows;
    wmma::load_matrix_sync(rows, Ss, ATTN_SLD, wmma::mem_row_major);
#pragma unroll
    for (int e = 0; e < 8; ++e) rowpack |= static_cast<unsigned>(rows.x[e]) << (4 * e);
  }

  attn_load_tile(Qs, q, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  const bool warp_live = i0 + warp * 16 < Tq;
  const float sl2 = scale * ATTN_LOG2E;
  float m_run = ATTN_NEG_INF, l_run = 0.0f;  // running max (base 2) and sum of this row
  attn_acc o[NFM];
#pragma unroll
  for (int f = 0; f < NFM; ++f) wmma::fill_fragment(o[f], 0.0f);

  // The prefix's tiles, then the real keys' (attn_key_tile). Causal: real keys after the tile's
  // last query are hidden (the bound is evaluated in the loop condition rather than kept in a
  // register: attention_fwd sits at its 128-register cap).
  for (int t = 0; t < attn_tiles(pre.P) + attn_tiles(causal ? min(Tk, i0 + ATTN_BM + Tk - Tq) : Tk); ++t) {
    __syncthreads();  // the previous tile's K, V and tables are no longer read
    if (!attn_key_tile(Ks, Vs, bias_s, key_s, k, v, pre, key_mask, bias_table, buckets, alibi, causal, t,
                       i0, b, h, kvh, Tq, Tk, H, Hkv, D, Dp, ldt))
      continue;  // every key of this tile is padded
    if (!warp_live) continue;

    attn_abt(Ss, Qs + warp * 16 * ldt, ldt, Ks, ldt, NF);
    __syncwarp();
    // Row il: this lane takes columns half, half + 2, ..., its partner the others.
    float x[32];
    float mx = ATTN_NEG_INF;
#pragma unroll
    for (int jj = 0; jj < 32; ++jj) {
      const int c = 2 * jj + half;
      const bool vis = key_s[c] != 0;  // the causal mask is in the bias window
      x[jj] = vis ? Ss[r * ATTN_SLD + c] * sl2 + bias_s[c - il + ATTN_BM - 1] : ATTN_NEG_INF;
      mx = fmaxf(mx, x[jj]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(ATTN_FULL, mx, 1));
    const float m_new = fmaxf(m_run, mx);
    const bool any = m_new != ATTN_NEG_INF;  // else every key so far is hidden from this row
    const float alpha = any ? exp2f(m_run - m_new) : 1.0f;
    float sum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < 32; ++jj) {
      const float p = any ? exp2f(x[jj] - m_new) : 0.0f;
      sum += p;
      Ps[r * ATTN_PLD + 2 * jj + half] = __float2bfloat16(p);
    }
    sum += __shfl_xor_sync(ATTN_FULL, sum, 1);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    if (half == 0) rows_s[r] = alpha;
    __syncwarp();
    float al[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) al[e] = rows_s[(rowpack >> (4 * e)) & 15u];
#pragma unroll
    for (int f = 0; f < NFM; ++f)
      if (f < NF) {
#pragma unroll
        for (int e = 0; e < 8; ++e) o[f].x[e] *= al[e];
      }
    attn_ab_accumulate(o, Ps, Vs, ldt, NF);
  }

  if (warp_live) {
    __syncwarp();
    if (half == 0) {
      rows_s[r] = l_run > 0.0f ? 1.0f / l_run : 0.0f;
      if (i < Tq)
        lse[(static_cast<size_t>(b) * H + h) * Tq + i] =
            l_run > 0.0f ? (m_run + log2f(l_run)) * ATTN_LN2 : ATTN_NEG_INF;
    }
    attn_store_rows<NFM>(out, o, Ss, rows_s, b, h, i0 + warp * 16, Tq, H, D, NF, false);
  }
}

// dq, and delta = sum_j P_ij dP_ij per query row (saved for attention_bwd_dkdv).
// grid (ceil(Tq / 64), H, B), block 128, dynamic smem attn_smem_bytes(1, D).
// Each warp owns 16 query rows; two passes over the key tiles: the first sums delta, the
// second forms dS = P (dP - delta) scale and accumulates dq = dS k in registers.
template <int NFM>
__device__ __forceinline__ void attn_bwd_dq_body(unsigned char* attn_smem, bf16* __restrict__ dq,
                                                 float* __restrict__ delta, const bf16* __restrict__ dout,
                                                 const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                 const bf16* __restrict__ v, const AttnPrefix pre,
                                                 const float* __restrict__ lse,
                                                 const int* __restrict__ key_mask,
                                                 const bf16* __restrict__ bias_table,
                                                 const int* __restrict__ buckets, int alibi, int causal,
                                                 float scale, int B, int Tq, int Tk, int H, int Hkv,
                                                 int D, int accumulate) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
  const int i0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * ATTN_BM;
  const int il = warp * 16 + r, i = i0 + il;

  AttnSmem sm{attn_smem};
  bf16* Qs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* dOs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* Ks = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Vs = sm.take<bf16>(ATTN_BN * ldt * 2);
  float* Ss = sm.take<float>(ATTN_WARPS * 16 * ATTN_SLD * 4) + warp * 16 * ATTN_SLD;
  float* dPs = sm.take<float>(ATTN_WARPS * 16 * ATTN_SLD * 4) + warp * 16 * ATTN_SLD;
  bf16* dSs = sm.take<bf16>(ATTN_WARPS * 16 * ATTN_PLD * 2) + warp * 16 * ATTN_PLD;
  float* bias_s = sm.take<float>(128 * 4);
  int* key_s = sm.take<int>(ATTN_BN * 4);

  attn_load_tile(Qs, q, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  attn_load_tile(dOs, dout, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  const bool warp_live = i0 + warp * 16 < Tq;
  const float sl2 = scale * ATTN_LOG2E;
  const size_t row_stat = (static_cast<size_t>(b) * H + h) * Tq + i;
  const float lse2 = i < Tq ? lse[row_stat] * ATTN_LOG2E : ATTN_NEG_INF;
  const bool row_live = lse2 != ATTN_NEG_INF;  // else the row sees no key: P = 0
  float drow = 0.0f;
  attn_acc acc[NFM];
#pragma unroll
  for (int f = 0; f < NFM; ++f) wmma::fill_fragment(acc[f], 0.0f);

  const int kend = causal ? min(Tk, i0 + ATTN_BM + Tk - Tq) : Tk;
  for (int pass = 0; pass < 2; ++pass) {
    float dsum = 0.0f;
    for (int t = 0; t < attn_tiles(pre.P) + attn_tiles(kend); ++t) {  // prefix tiles first
      __syncthreads();
      if (!attn_key_tile(Ks, Vs, bias_s, key_s, k, v, pre, key_mask, bias_table, buckets, alibi, causal, t,
                         i0, b, h, kvh, Tq, Tk, H, Hkv, D, Dp, ldt))
        continue;
      if (!warp_live) continue;

      attn_abt(Ss, Qs + warp * 16 * ldt, ldt, Ks, ldt, NF);
      attn_abt(dPs, dOs + warp * 16 * ldt, ldt, Vs, ldt, NF);
      __syncwarp();
#pragma unroll 8
      for (int jj = 0; jj < 32; ++jj) {
        const int c = 2 * jj + half;
        const bool vis = row_live && key_s[c] != 0;  // the causal mask is in the bias window
        const float p =
            vis ? exp2f(Ss[r * ATTN_SLD + c] * sl2 + bias_s[c - il + ATTN_BM - 1] - lse2) : 0.0f;
        const float dp = dPs[r * ATTN_SLD + c];
        if (pass == 0) dsum += p * dp;
        else dSs[r * ATTN_PLD + c] = __float2bfloat16(p * (dp - drow) * scale);
      }
      if (pass == 1) {
        __syncwarp();
        attn_ab_accumulate(acc, dSs, Ks, ldt, NF);
      }
    }
    if (pass == 0) {
      drow = dsum + __shfl_xor_sync(ATTN_FULL, dsum, 1);
      if (half == 0 && i < Tq) delta[row_stat] = drow;
    }
  }
  if (warp_live) attn_store_rows<NFM>(dq, acc, Ss, nullptr, b, h, i0 + warp * 16, Tq, H, D, NF, accumulate);
}

// dk = dS^T q and dv = P^T dout for one tile of 64 keys, summed over the H / Hkv query heads that
// read them, recomputing P from lse and using the delta written by attention_bwd_dq.
// grid (ceil(Tk / 64) + K * ceil(P / 64), Hkv, B), block 128, dynamic smem attn_smem_bytes(2, D).
// Each warp owns 16 keys and keeps their dk and dv in registers while the block walks the
// query tiles. The first ceil(Tk / 64) block columns take the real keys of batch row
// blockIdx.z; the rest take the prefix rows, ceil(P / 64) columns per prefix of the stack
// (K sets; K = 1 without prefix_slot). A prefix's rows are read by the batch rows whose slot
// is that prefix (every row without prefix_slot): its blocks of batch row 0 walk the query
// tiles of those rows in batch order, each row's hidden prefix rows at P = 0, and add the sum
// to dprefix (float, at the rows' key and value offsets of that prefix): one block per
// element, no atomics. The other batch rows' prefix blocks, and all of them without dprefix,
// return at once.
template <int NFM>
__device__ __forceinline__ void attn_bwd_dkdv_body(unsigned char* attn_smem, bf16* __restrict__ dk,
                                                   bf16* __restrict__ dv, float* __restrict__ dprefix,
                                                   const bf16* __restrict__ dout,
                                                   const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                   const bf16* __restrict__ v, AttnPrefix pre,
                                                   const int* __restrict__ slot,
                                                   const int* __restrict__ hidden,
                                                   const float* __restrict__ lse,
                                                   const float* __restrict__ delta,
                                                   const int* __restrict__ key_mask,
                                                   const bf16* __restrict__ bias_table,
                                                   const int* __restrict__ buckets, int alibi, int causal,
                                                   float scale, int B, int Tq, int Tk, int H, int Hkv,
                                                   int D, int accumulate) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  const AttnKeyBlock blk = attn_key_block(pre, dprefix, Tk);
  const bool is_pre = blk.is_pre;
  if (is_pre && (blockIdx.z != 0 || dprefix == nullptr)) return;
  const int kvh = blockIdx.y, bz = blockIdx.z, G = H / Hkv, s = blk.s, j0 = blk.j0;
  const int jl = warp * 16 + r;  // this lane's key in the tile (with its partner lane)

  AttnSmem sm{attn_smem};
  bf16* Ks = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Vs = sm.take<bf16>(ATTN_BN * ldt * 2);
  bf16* Qs = sm.take<bf16>(ATTN_BM * ldt * 2);
  bf16* dOs = sm.take<bf16>(ATTN_BM * ldt * 2);
  float* Ss = sm.take<float>(ATTN_WARPS * 16 * ATTN_SLD * 4) + warp * 16 * ATTN_SLD;
  float* dPs = sm.take<float>(ATTN_WARPS * 16 * ATTN_SLD * 4) + warp * 16 * ATTN_SLD;
  bf16* Pb = sm.take<bf16>(ATTN_WARPS * 16 * ATTN_PLD * 2) + warp * 16 * ATTN_PLD;
  bf16* dSb = sm.take<bf16>(ATTN_WARPS * 16 * ATTN_PLD * 2) + warp * 16 * ATTN_PLD;
  float* bias_s = sm.take<float>(128 * 4);
  int* key_s = sm.take<int>(ATTN_BN * 4);
  float* lse_s = sm.take<float>(ATTN_BM * 4);    // log2(e) * lse of the tile's queries
  float* delta_s = sm.take<float>(ATTN_BM * 4);  // delta of the tile's queries

  const int flag = attn_load_keys(Ks, Vs, key_s, k, v, pre, key_mask, is_pre, j0, bz, kvh, Tk, Hkv, D, Dp, ldt);
  const bool any_key = __syncthreads_or(flag);
  const bool warp_live = j0 + warp * 16 < (is_pre ? pre.P : Tk);
  const bool key_live = key_s[jl] != 0;
  const float sl2 = scale * ATTN_LOG2E;
  attn_acc dk_acc[NFM], dv_acc[NFM];
#pragma unroll
  for (int f = 0; f < NFM; ++f) {
    wmma::fill_fragment(dk_acc[f], 0.0f);
    wmma::fill_fragment(dv_acc[f], 0.0f);
  }

  // Causal: queries before j0 - (Tk - Tq) see none of these real keys (all see the prefix).
  const int istart = (causal && any_key && !is_pre) ? max(0, j0 - (Tk - Tq)) / ATTN_BM * ATTN_BM : 0;
  const int iend = any_key ? Tq : 0;
  // the batch rows (this block's, or those reading prefix s), and in each the query heads
  // that read this key/value head, one after the other
  for (int b = is_pre ? attn_next_row(slot, s, 0, B) : bz; b < (is_pre ? B : bz + 1);
       b = is_pre ? attn_next_row(slot, s, b + 1, B) : b + 1) {
    // a prefix row hidden from batch row b is no key of it (always 0 for real keys)
    const int hide = is_pre && hidden != nullptr ? hidden[b] : 0;
    const bool live = key_live && j0 + jl >= hide;
    for (int h = kvh * G; h < (kvh + 1) * G; ++h)
    for (int i0 = istart; i0 < iend; i0 += ATTN_BM) {
      __syncthreads();
      attn_load_query_tile(Qs, dOs, bias_s, lse_s, delta_s, q, dout, lse, delta, bias_table, buckets, alibi,
                           causal, is_pre, pre.P, i0, j0, b, h, Tq, Tk, H, D, Dp, ldt);
      __syncthreads();
      if (!warp_live) continue;

      attn_abt(Ss, Ks + warp * 16 * ldt, ldt, Qs, ldt, NF);    // S^T: 16 keys x 64 queries
      attn_abt(dPs, Vs + warp * 16 * ldt, ldt, dOs, ldt, NF);  // dP^T
      __syncwarp();
#pragma unroll 8
      for (int jj = 0; jj < 32; ++jj) {
        const int c = 2 * jj + half;
        const float l2 = lse_s[c];
        const bool vis = live && l2 != ATTN_NEG_INF;  // the causal mask is in the bias window
        const float p =
            vis ? exp2f(Ss[r * ATTN_SLD + c] * sl2 + bias_s[jl - c + ATTN_BM - 1] - l2) : 0.0f;
        const float ds = p * (dPs[r * ATTN_SLD + c] - delta_s[c]) * scale;
        Pb[r * ATTN_PLD + c] = __float2bfloat16(p);
        dSb[r * ATTN_PLD + c] = __float2bfloat16(ds);
      }
      __syncwarp();
      attn_ab_accumulate(dv_acc, Pb, dOs, ldt, NF);
      attn_ab_accumulate(dk_acc, dSb, Qs, ldt, NF);
    }
  }

  if (!warp_live) return;
  if (is_pre) {
    attn_add_prefix_rows(dprefix, dk_acc, Ss, j0 + warp * 16, pre.P, pre.width, pre.k_off + kvh * D, D, NF);
    attn_add_prefix_rows(dprefix, dv_acc, Ss, j0 + warp * 16, pre.P, pre.width, pre.v_off + kvh * D, D, NF);
  } else {
    attn_store_rows<NFM>(dk, dk_acc, Ss, nullptr, bz, kvh, j0 + warp * 16, Tk, Hkv, D, NF, accumulate);
    attn_store_rows<NFM>(dv, dv_acc, Ss, nullptr, bz, kvh, j0 + warp * 16, Tk, Hkv, D, NF, accumulate);
  }
}
