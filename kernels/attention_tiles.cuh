// The tile walk that every bf16 attention kernel shares, wmma (attention_wmma.cuh) and raw
// mma.sync (attention_mma.cuh) alike: the tile geometry, the shared-memory carving, the loads
// of Q, K, V and dO tiles (padded keys zeroed), T5's bias / ALiBi / causal window, key flags,
// prefix tuning's rows (AttnPrefix: a table or a stack with per-row slots and hidden rows) and
// the key-tile walk over the prefix and then the real keys. Included by attention.cu's bf16
// build only; semantics and launch plan: ATTENTION.md.
#pragma once

#define ATTN_THREADS 128  // 4 warps
#define ATTN_WARPS 4
#define ATTN_BM 64        // query rows per tile: 16 per warp
#define ATTN_BN 64        // key rows per tile
#define ATTN_SLD (ATTN_BN + 4)         // floats per row of a warp's 16 x 64 staging tile
#define ATTN_PLD (ATTN_BN + 8)         // bf16 per row of a warp's 16 x 64 operand tile
#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2 0.6931471805599453f
#define ATTN_NEG_INF (-__int_as_float(0x7f800000))
#define ATTN_FULL 0xffffffffu

// Shared memory, carved in this order; every region is a multiple of 128 bytes:
//   tiles:  n_tiles x 64 rows x (Dp + 8) bf16     (Q, K, V, dO: Dp = D rounded up to 16)
//   stage:  n_stage x 4 warps x 16 x ATTN_SLD float (S, dP as stored from the accumulators)
//   ops:    n_ops   x 4 warps x 16 x ATTN_PLD bf16  (P, dS as operands of the next product)
//   small:  2048 bytes (bias window, key flags, per-row statistics)
// forward: 3 tiles, 1 stage, 1 ops; bwd_dq: 4, 2, 1; bwd_dkdv: 4, 2, 2.
struct AttnSmem {
  unsigned char* p;
  template <class T>
  __device__ T* take(unsigned bytes) {
    T* r = reinterpret_cast<T*>(p);
    p += (bytes + 127u) & ~127u;
    return r;
  }
};

__host__ __device__ __forceinline__ int attn_round16(int d) { return (d + 15) & ~15; }

// Loads rows [row0, row0 + 64) of head h, batch b, of a (B, T, H, D) tensor into a 64 x ldt
// tile. Rows >= T, columns >= D, and (when mask is given) rows whose key_mask is 0 become 0,
// so padded keys contribute exact zeros whatever their contents.
__device__ void attn_load_tile(bf16* tile, const bf16* __restrict__ src, const int* __restrict__ mask,
                               int b, int h, int row0, int T, int H, int D, int Dp, int ldt) {
  const size_t stride = static_cast<size_t>(H) * D;
  const bf16* base = src + (static_cast<size_t>(b) * T * H + h) * D;
  const bool vec = (D % 8 == 0) && ((reinterpret_cast<unsigned long long>(src) & 15ull) == 0);
  if (vec) {
    const int cpr = Dp / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < ATTN_BN * cpr; c += ATTN_THREADS) {
      const int r = c / cpr, col = (c % cpr) * 8, t = row0 + r;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (t < T && col < D && (mask == nullptr || mask[static_cast<size_t>(b) * T + t] != 0))
        val = *reinterpret_cast<const uint4*>(base + t * stride + col);
      *reinterpret_cast<uint4*>(tile + r * ldt + col) = val;
    }
  } else {
    for (int e = threadIdx.x; e < ATTN_BN * Dp; e += ATTN_THREADS) {
      const int r = e / Dp, col = e % Dp, t = row0 + r;
      bf16 val = __float2bfloat16(0.0f);
      if (t < T && col < D && (mask == nullptr || mask[static_cast<size_t>(b) * T + t] != 0))
        val = base[t * stride + col];
      tile[r * ldt + col] = val;
    }
  }
}

// The bias window of query tile i0 and key tile j0 (threads 0..126; the caller's barrier
// follows): bias_s[t] = log2(e) * bias of relative position j - i = j0 - i0 + t - 63 (0 without
// a bias, or where that position is out of the table's range), so element (query i, key j) of
// the tile reads bias_s[(j - j0) - (i - i0) + 63]. 127 table reads (or slopes) per tile pair
// instead of 4096; ALiBi's window is slope_h * (j - i - (Tk - Tq)). The causal mask depends on
// j - i alone too (hidden when j - i > Tk - Tq): the window holds -inf there, so the score
// loops test key padding only.
__device__ void attn_fill_bias(float* bias_s, const bf16* __restrict__ bias_table,
                               const int* __restrict__ buckets, int alibi, int causal, int i0,
                               int j0, int Tq, int Tk, int H, int h) {
  const int t = threadIdx.x;
  if (t < ATTN_BM + ATTN_BN - 1) {
    const int rel = j0 - i0 + t - (ATTN_BM - 1);  // j - i
    const int idx = rel + Tq - 1;                  // index into buckets
    float val = 0.0f;
    if (causal && rel > Tk - Tq)
      val = ATTN_NEG_INF;
    else if (alibi)
      val = attn_alibi_slope(h, H) * static_cast<float>(rel - (Tk - Tq)) * ATTN_LOG2E;
    else if (bias_table != nullptr && idx >= 0 && idx < Tq + Tk - 1)
      val = __bfloat162float(bias_table[buckets[idx] * H + h]) * ATTN_LOG2E;
    bias_s[t] = val;
  }
}

__device__ __forceinline__ int attn_key_flag(const int* __restrict__ key_mask, int b, int j, int Tk) {
  return j < Tk && key_mask[static_cast<size_t>(b) * Tk + j] != 0;
}

// Prefix tuning's keys and values of one layer, read in place from the (P, width) float table
// that every layer shares (src/backend/attention.rs `PrefixKv`): row r holds this layer's keys
// at k_off and its values at v_off, Hkv * D head-major. They sit in front of the Tk real keys,
// at positions 0..P-1 (the real keys at P..P+Tk-1), and every query sees all of them but the
// first `hide`. P = 0 (table NULL): no prefix.
// Batches mixing prefixes (`PrefixRows`) pass a (K * P, width) stack and, per batch row b,
// slot[b] (the prefix it reads) and hidden[b] (its leading rows at -inf: a shorter prefix sits
// left-padded in its P rows); attn_row_prefix narrows the stack to row b's P rows. NULL slot and
// hidden: every row reads the one table and hides nothing.
struct AttnPrefix {
  const float* table;
  int P, width, k_off, v_off;
  int hide;  // leading prefix rows hidden from this block's batch row
};

// The prefix as batch row b reads it: its slot's P rows of the stack, its hidden count.
__device__ __forceinline__ AttnPrefix attn_row_prefix(AttnPrefix pre, const int* __restrict__ slot,
                                                      const int* __restrict__ hidden, int b) {
  if (slot != nullptr) pre.table += static_cast<size_t>(slot[b]) * pre.P * pre.width;
  pre.hide = hidden != nullptr ? hidden[b] : 0;
  return pre;
}

// Tiles of 64 over n keys (0 when n <= 0).
__device__ __forceinline__ int attn_tiles(int n) { return n > 0 ? (n + ATTN_BN - 1) / ATTN_BN : 0; }

// Loads prefix rows [row0, row0 + 64) of key/value head kvh, its keys or (values) its values,
// into a 64 x ldt bf16 tile, rounded from float; hidden rows (< hide), rows >= P and columns
// >= D become 0, as padded keys do.
__device__ void attn_load_prefix(bf16* tile, const AttnPrefix& pre, bool values, int kvh, int row0,
                                 int D, int Dp, int ldt) {
  const float* base = pre.table + (values ? pre.v_off : pre.k_off) + kvh * D;
  for (int e = threadIdx.x; e < ATTN_BN * Dp; e += ATTN_THREADS) {
    const int r = e / Dp, col = e % Dp, t = row0 + r;
    float val = 0.0f;
    if (t >= pre.hide && t < pre.P && col < D) val = base[static_cast<size_t>(t) * pre.width + col];
    tile[r * ldt + col] = __float2bfloat16(val);
  }
}

// Whether prefix row j is a visible key: hide <= j < P.
__device__ __forceinline__ int attn_prefix_flag(const AttnPrefix& pre, int j) {
  return j >= pre.hide && j < pre.P;
}

// Loads key tile j0 of the prefix rows (is_pre) or of batch row b's real keys into Ks and Vs,
// and its key flags into key_s (prefix rows hide..P-1, real keys by key_mask); returns this
// thread's flag (0 past the tile's 64 keys). The caller's barrier follows.
__device__ __forceinline__ int attn_load_keys(bf16* Ks, bf16* Vs, int* key_s, const bf16* __restrict__ k,
                                              const bf16* __restrict__ v, const AttnPrefix& pre,
                                              const int* __restrict__ key_mask, bool is_pre, int j0, int b,
                                              int kvh, int Tk, int Hkv, int D, int Dp, int ldt) {
  if (is_pre) {
    attn_load_prefix(Ks, pre, false, kvh, j0, D, Dp, ldt);
    attn_load_prefix(Vs, pre, true, kvh, j0, D, Dp, ldt);
  } else {
    attn_load_tile(Ks, k, key_mask, b, kvh, j0, Tk, Hkv, D, Dp, ldt);
    attn_load_tile(Vs, v, key_mask, b, kvh, j0, Tk, Hkv, D, Dp, ldt);
  }
  int flag = 0;
  if (threadIdx.x < ATTN_BN)
    key_s[threadIdx.x] = flag = is_pre ? attn_prefix_flag(pre, j0 + static_cast<int>(threadIdx.x))
                                       : attn_key_flag(key_mask, b, j0 + threadIdx.x, Tk);
  return flag;
}

// Tile t of a query tile's walk over the keys: the prefix's tiles first (positions 0..P-1),
// then the real keys' (P..P+Tk-1). Loads its K and V, fills the bias window for query tile i0
// over the P + Tk keys (the causal mask on real keys only: prefix keys are always visible) and
// the key flags (visible prefix rows, real keys by key_mask). Returns whether any key of the
// tile is visible; a block-wide barrier, so every thread calls it.
__device__ bool attn_key_tile(bf16* Ks, bf16* Vs, float* bias_s, int* key_s, const bf16* __restrict__ k,
                              const bf16* __restrict__ v, const AttnPrefix& pre,
                              const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                              const int* __restrict__ buckets, int alibi, int causal, int t, int i0,
                              int b, int h, int kvh, int Tq, int Tk, int H, int Hkv, int D, int Dp,
                              int ldt) {
  const int ptiles = attn_tiles(pre.P);
  const bool is_pre = t < ptiles;
  const int j0 = (is_pre ? t : t - ptiles) * ATTN_BN;
  const int flag = attn_load_keys(Ks, Vs, key_s, k, v, pre, key_mask, is_pre, j0, b, kvh, Tk, Hkv, D, Dp, ldt);
  attn_fill_bias(bias_s, bias_table, buckets, alibi, causal && !is_pre, i0,
                 is_pre ? j0 : pre.P + j0, Tq, pre.P + Tk, H, h);
  return __syncthreads_or(flag);
}

__device__ __forceinline__ unsigned attn_pack(float a, float b) {
  __nv_bfloat162 p = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<unsigned*>(&p);
}

// The keys of a bwd_dkdv block: grid x runs over the ceil(Tk / 64) real key tiles, then
// ceil(P / 64) tiles per prefix of the stack. is_pre: a prefix block, of prefix s (0 for real
// keys), j0 its first key (a row of the prefix, or a real key). pre.table moves to prefix s's P
// rows of the stack (s = 0: the one table) and, for a prefix block, dprefix to its gradient's.
struct AttnKeyBlock {
  bool is_pre;
  int s, j0;
};

__device__ __forceinline__ AttnKeyBlock attn_key_block(AttnPrefix& pre, float* __restrict__& dprefix, int Tk) {
  const int real_tiles = attn_tiles(Tk);
  const bool is_pre = static_cast<int>(blockIdx.x) >= real_tiles;
  const int pcol = static_cast<int>(blockIdx.x) - real_tiles, ptiles = attn_tiles(pre.P);
  const int s = is_pre ? pcol / ptiles : 0;
  const int j0 = (is_pre ? pcol - s * ptiles : static_cast<int>(blockIdx.x)) * ATTN_BN;
  pre.table += static_cast<size_t>(s) * pre.P * pre.width;
  if (is_pre) dprefix += static_cast<size_t>(s) * pre.P * pre.width;
  return AttnKeyBlock{is_pre, s, j0};
}

// Query tile i0 of head h, batch row b, as the dkdv kernels read it against key tile j0 (of the
// prefix rows when is_pre, P of them): Q and dO into 64 x ldt tiles, the bias window (the causal
// mask on real keys only), and log2(e) * lse and delta of its 64 queries (-inf and 0 past Tq).
// The caller's barrier follows.
__device__ __forceinline__ void attn_load_query_tile(bf16* Qs, bf16* dOs, float* bias_s, float* lse_s,
                                                     float* delta_s, const bf16* __restrict__ q,
                                                     const bf16* __restrict__ dout, const float* __restrict__ lse,
                                                     const float* __restrict__ delta,
                                                     const bf16* __restrict__ bias_table,
                                                     const int* __restrict__ buckets, int alibi, int causal,
                                                     bool is_pre, int P, int i0, int j0, int b, int h, int Tq,
                                                     int Tk, int H, int D, int Dp, int ldt) {
  attn_load_tile(Qs, q, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  attn_load_tile(dOs, dout, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
  attn_fill_bias(bias_s, bias_table, buckets, alibi, causal && !is_pre, i0, is_pre ? j0 : P + j0, Tq, P + Tk, H,
                 h);
  if (threadIdx.x < ATTN_BM) {
    const int iq = i0 + threadIdx.x;
    const size_t at = (static_cast<size_t>(b) * H + h) * Tq + iq;
    lse_s[threadIdx.x] = iq < Tq ? lse[at] * ATTN_LOG2E : ATTN_NEG_INF;
    delta_s[threadIdx.x] = iq < Tq ? delta[at] : 0.0f;
  }
}

// The first batch row from b on that reads prefix s (b itself without slot: every row reads
// the one prefix); B when none is left. Scanning in the loop's increment rather than skipping
// rows in its body keeps attention_bwd_dkdv at 168 registers (a skip in the body, or one of
// the rows hiding the whole tile too, took it to 234, or spilled).
__device__ __forceinline__ int attn_next_row(const int* __restrict__ slot, int s, int b, int B) {
  while (b < B && slot != nullptr && slot[b] != s) ++b;
  return b;
}

// Bytes of dynamic shared memory for head dim D: forward (kind 0), bwd_dq (1), bwd_dkdv (2),
// the mma forward (3), the mma bwd_dq and bwd_dkdv (4). ATTENTION.md gives the same formula for the launcher.
__host__ __device__ __forceinline__ unsigned attn_smem_bytes(int kind, int D) {
  const unsigned tile = 64u * (attn_round16(D) + 8) * 2u;
  const unsigned stage = ATTN_WARPS * 16u * ATTN_SLD * 4u, ops = ATTN_WARPS * 16u * ATTN_PLD * 2u;
  const unsigned small = 2048u;
  if (kind == 3) return 3 * tile + small;
  if (kind == 4) return 4 * tile + small;  // the mma bwd_dq and bwd_dkdv
  if (kind == 0) return 3 * tile + stage + ops + small;
  if (kind == 1) return 4 * tile + 2 * stage + ops + small;
  return 4 * tile + 2 * stage + 2 * ops + small;
}
