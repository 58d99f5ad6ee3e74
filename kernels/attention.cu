// Fused attention, forward and backward, with key padding, an optional causal mask, grouped-query
// attention (query head h reads key/value head h / (H / Hkv), in place), and a position bias
// computed inside the kernel: T5's relative bias read from the frozen (num_buckets, H) table, or
// ALiBi from the head index alone (attn_alibi_slope in common.cuh).
// bf16 storage, float accumulation, tensor cores through nvcuda::wmma (bf16 16x16x16).
// Nothing of size Tq x Tk is ever stored: forward saves the log-sum-exp per query row, and
// backward recomputes the probabilities from it, one 64 x 64 tile at a time.
//
// Reference: src/cpu/attention.rs (same names, same argument order). Design, tiling and the
// launch plan that src/cuda/attention.rs follows: kernels/ATTENTION.md.
//
// Shapes: q, out, dq, dout: (B, Tq, H, D) bf16; k, v, dk, dv: (B, Tk, Hkv, D) bf16;
// lse, delta: (B, H, Tq) float; key_mask: (B, Tk) int (0 = padded key);
// bias_table: (num_buckets, H) bf16 or NULL; buckets: (Tq + Tk - 1) int or NULL, the bucket of
// the relative position j - i stored at index j - i + Tq - 1; alibi: 1 adds
// slope_h * (j - i - (Tk - Tq)) instead (no table). Positions are aligned at the end: query i
// sits at i + Tk - Tq. Key j is visible to query i iff key_mask[b, j] != 0 and
// (!causal or j <= i + Tk - Tq). A query row that sees no key gets out = 0 and lse = -inf, and
// contributes nothing to any gradient. Prefix tuning: P keys and values in front of the real
// ones, read in place from a (P, width) float table, or per batch row from a (K * P, width)
// stack (prefix_slot, prefix_hidden; AttnPrefix below, ATTENTION.md "Prefix tuning").
//
// The builds with float32 activations (float32, -DSOFTPROMPT_F32, and mixed,
// -DSOFTPROMPT_MIXED; see common.cuh) take the same entry points, signatures and launches
// from attention_f32.cuh instead: plain float32 loops, no tensor cores.
//
// Entry points: attention_fwd, attention_bwd_dq, attention_bwd_dkdv for D <= 64, and the same
// with a _d128 suffix for 64 < D <= 128 (identical signatures and launch configuration; only the
// register arrays differ). attention_fwd_mma[_d128]: the forward on raw mma.sync with S and P
// in registers (attention_mma.cuh; the launcher's choice, SOFTPROMPT_ATTN_FWD). Launches
// (ATTENTION.md): 128 threads; forward and bwd_dq take grid (ceil(Tq / 64), H, B); dynamic
// shared memory from attn_smem_bytes below. Backward runs
// bwd_dq (which also writes delta) and then bwd_dkdv, whose grid is (ceil(Tk / 64) +
// K * ceil(P / 64), Hkv, B): each block walks the H / Hkv query heads of its key/value head in
// turn. Both add into their outputs (each element by one thread, once) and use no
// atomics, so every result is deterministic.
#include "common.cuh"

#ifdef SOFTPROMPT_ACT_F32
#include "attention_f32.cuh"
// No tensor cores here: the mma kernels' names (bf16 build below) run the float32 loops, so
// every build has every kernel; the launcher never picks them in these builds.
ATTN32_FWD(attention_fwd_mma)
ATTN32_FWD(attention_fwd_mma_d128)
ATTN32_BWD_DQ(attention_bwd_dq_mma)
ATTN32_BWD_DQ(attention_bwd_dq_mma_d128)
#else
#include <mma.h>

namespace wmma = nvcuda::wmma;

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

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> attn_acc;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> attn_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> attn_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> attn_b_col;

static_assert(attn_acc::num_elements == 8, "a float 16x16 accumulator holds 8 elements per lane");

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

__device__ __forceinline__ unsigned attn_pack(float a, float b) {
  __nv_bfloat162 p = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<unsigned*>(&p);
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
// tensor, through the warp's staging tile. ADD adds them to what the rows hold (backward's
// gradients, src/backend/mod.rs); else they overwrite (forward's output).
template <int NFM, bool ADD>
__device__ void attn_store_rows(bf16* __restrict__ dst, const attn_acc (&acc)[NFM], float* stage,
                                const float* row_scale, int b, int h, int row0, int T, int H, int D,
                                int NF) {
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
          if (ADD) {
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
          const float y = src[c] * s + (ADD ? __bfloat162float(out[g * 16 + c]) : 0.0f);
          out[g * 16 + c] = __float2bfloat16(y);
        }
      }
    }
  }
}

// Bytes of dynamic shared memory for head dim D: forward (kind 0), bwd_dq (1), bwd_dkdv (2),
// the mma forward (3). ATTENTION.md gives the same formula for the launcher.
__host__ __device__ __forceinline__ unsigned attn_smem_bytes(int kind, int D) {
  const unsigned tile = 64u * (attn_round16(D) + 8) * 2u;
  const unsigned stage = ATTN_WARPS * 16u * ATTN_SLD * 4u, ops = ATTN_WARPS * 16u * ATTN_PLD * 2u;
  const unsigned small = 2048u;
  if (kind == 3) return 3 * tile + small;
  if (kind == 4) return 4 * tile + small;  // the mma bwd_dq
  if (kind == 0) return 3 * tile + stage + ops + small;
  if (kind == 1) return 4 * tile + 2 * stage + ops + small;
  return 4 * tile + 2 * stage + 2 * ops + small;
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
    attn_store_rows<NFM, false>(out, o, Ss, rows_s, b, h, i0 + warp * 16, Tq, H, D, NF);
  }
}

// D <= 64. 4 blocks per SM fit its shared memory (55 KB at D = 64), so cap the registers to match.
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4)
attention_fwd(bf16* __restrict__ out,               // (B, Tq, H, D)
              float* __restrict__ lse,              // (B, H, Tq)
              const bf16* __restrict__ q,           // (B, Tq, H, D)
              const bf16* __restrict__ k,           // (B, Tk, Hkv, D)
              const bf16* __restrict__ v,           // (B, Tk, Hkv, D)
              const float* __restrict__ prefix,     // (K * P, width) or NULL
              const int* __restrict__ prefix_slot,  // (B) or NULL
              const int* __restrict__ prefix_hidden, // (B) or NULL
              const int* __restrict__ key_mask,     // (B, Tk)
              const bf16* __restrict__ bias_table,  // (num_buckets, H) or NULL
              const int* __restrict__ buckets,      // (Tq + P + Tk - 1) or NULL
              int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
              int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_fwd_body<4>(attn_smem, out, lse, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_fwd_d128(bf16* __restrict__ out,               // (B, Tq, H, D)
                   float* __restrict__ lse,              // (B, H, Tq)
                   const bf16* __restrict__ q,           // (B, Tq, H, D)
                   const bf16* __restrict__ k,           // (B, Tk, Hkv, D)
                   const bf16* __restrict__ v,           // (B, Tk, Hkv, D)
                   const float* __restrict__ prefix,     // (K * P, width) or NULL
                   const int* __restrict__ prefix_slot,  // (B) or NULL
                   const int* __restrict__ prefix_hidden, // (B) or NULL
                   const int* __restrict__ key_mask,     // (B, Tk)
                   const bf16* __restrict__ bias_table,  // (num_buckets, H) or NULL
                   const int* __restrict__ buckets,      // (Tq + P + Tk - 1) or NULL
                   int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                   int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_fwd_body<8>(attn_smem, out, lse, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D);
}

#include "attention_mma.cuh"

// attention_fwd on raw mma.sync with S and P in registers (attention_mma.cuh): the same
// arguments and grid, dynamic smem attn_smem_bytes(3, D). The launcher picks it with
// SOFTPROMPT_ATTN_FWD=mma. D <= 64:
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 3)
attention_fwd_mma(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                  const bf16* __restrict__ k, const bf16* __restrict__ v, const float* __restrict__ prefix,
                  const int* __restrict__ prefix_slot, const int* __restrict__ prefix_hidden,
                  const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                  const int* __restrict__ buckets, int alibi, int causal, float scale, int B, int Tq,
                  int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_fwd_mma_body<4>(attn_smem, out, lse, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), key_mask, bias_table, buckets, alibi, causal, scale, Tq, Tk, H, Hkv, D);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 2)
attention_fwd_mma_d128(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                       const bf16* __restrict__ k, const bf16* __restrict__ v,
                       const float* __restrict__ prefix, const int* __restrict__ prefix_slot,
                       const int* __restrict__ prefix_hidden, const int* __restrict__ key_mask,
                       const bf16* __restrict__ bias_table, const int* __restrict__ buckets, int alibi,
                       int causal, float scale, int B, int Tq, int Tk, int H, int Hkv, int D, int P,
                       int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_fwd_mma_body<8>(attn_smem, out, lse, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), key_mask, bias_table, buckets, alibi, causal, scale, Tq, Tk, H, Hkv, D);
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
                                                 int D) {
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
  if (warp_live) attn_store_rows<NFM, true>(dq, acc, Ss, nullptr, b, h, i0 + warp * 16, Tq, H, D, NF);
}

// D <= 64
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dq(bf16* __restrict__ dq,                // (B, Tq, H, D)
                 float* __restrict__ delta,            // (B, H, Tq)
                 const bf16* __restrict__ dout,        // (B, Tq, H, D)
                 const bf16* __restrict__ q,           // (B, Tq, H, D)
                 const bf16* __restrict__ k,           // (B, Tk, Hkv, D)
                 const bf16* __restrict__ v,           // (B, Tk, Hkv, D)
                 const float* __restrict__ prefix,     // (K * P, width) or NULL
                 const int* __restrict__ prefix_slot,  // (B) or NULL
                 const int* __restrict__ prefix_hidden, // (B) or NULL
                 const float* __restrict__ lse,        // (B, H, Tq)
                 const int* __restrict__ key_mask,     // (B, Tk)
                 const bf16* __restrict__ bias_table,  // (num_buckets, H) or NULL
                 const int* __restrict__ buckets,      // (Tq + P + Tk - 1) or NULL
                 int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                 int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_body<4>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dq_d128(bf16* __restrict__ dq,                // (B, Tq, H, D)
                      float* __restrict__ delta,            // (B, H, Tq)
                      const bf16* __restrict__ dout,        // (B, Tq, H, D)
                      const bf16* __restrict__ q,           // (B, Tq, H, D)
                      const bf16* __restrict__ k,           // (B, Tk, Hkv, D)
                      const bf16* __restrict__ v,           // (B, Tk, Hkv, D)
                      const float* __restrict__ prefix,     // (K * P, width) or NULL
                      const int* __restrict__ prefix_slot,  // (B) or NULL
                      const int* __restrict__ prefix_hidden, // (B) or NULL
                      const float* __restrict__ lse,        // (B, H, Tq)
                      const int* __restrict__ key_mask,     // (B, Tk)
                      const bf16* __restrict__ bias_table,  // (num_buckets, H) or NULL
                      const int* __restrict__ buckets,      // (Tq + P + Tk - 1) or NULL
                      int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                      int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_body<8>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D);
}

// attention_bwd_dq on raw mma.sync with S, dP and dS in registers (attention_mma.cuh): the same
// arguments and grid, dynamic smem attn_smem_bytes(4, D). SOFTPROMPT_ATTN_BWD_DQ=mma. D <= 64:
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dq_mma(bf16* __restrict__ dq, float* __restrict__ delta, const bf16* __restrict__ dout,
                     const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                     const float* __restrict__ prefix, const int* __restrict__ prefix_slot,
                     const int* __restrict__ prefix_hidden, const float* __restrict__ lse,
                     const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                     const int* __restrict__ buckets, int alibi, int causal, float scale, int B, int Tq,
                     int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_mma_body<4>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, Tq, Tk, H, Hkv, D);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dq_mma_d128(bf16* __restrict__ dq, float* __restrict__ delta, const bf16* __restrict__ dout,
                          const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                          const float* __restrict__ prefix, const int* __restrict__ prefix_slot,
                          const int* __restrict__ prefix_hidden, const float* __restrict__ lse,
                          const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                          const int* __restrict__ buckets, int alibi, int causal, float scale, int B,
                          int Tq, int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_mma_body<8>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, Tq, Tk, H, Hkv, D);
}

// The first batch row from b on that reads prefix s (b itself without slot: every row reads
// the one prefix); B when none is left. Scanning in the loop's increment rather than skipping
// rows in its body keeps attention_bwd_dkdv at 168 registers (a skip in the body, or one of
// the rows hiding the whole tile too, took it to 234, or spilled).
__device__ __forceinline__ int attn_next_row(const int* __restrict__ slot, int s, int b, int B) {
  while (b < B && slot != nullptr && slot[b] != s) ++b;
  return b;
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
                                                   int D) {
  if (D < 1 || D > 16 * NFM) return;  // the launcher checks D and picks the entry point
  const int Dp = attn_round16(D), NF = Dp / 16, ldt = Dp + 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  const int real_tiles = attn_tiles(Tk);
  const bool is_pre = static_cast<int>(blockIdx.x) >= real_tiles;
  if (is_pre && (blockIdx.z != 0 || dprefix == nullptr)) return;
  const int kvh = blockIdx.y, bz = blockIdx.z, G = H / Hkv;
  // a prefix block column: prefix s of the stack, its key tile j0
  const int pcol = static_cast<int>(blockIdx.x) - real_tiles, ptiles = attn_tiles(pre.P);
  const int s = is_pre ? pcol / ptiles : 0;
  const int j0 = (is_pre ? pcol - s * ptiles : static_cast<int>(blockIdx.x)) * ATTN_BN;
  // prefix s's P rows of the stack and of its gradient (s = 0: the one table)
  pre.table += static_cast<size_t>(s) * pre.P * pre.width;
  if (is_pre) dprefix += static_cast<size_t>(s) * pre.P * pre.width;
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
      attn_load_tile(Qs, q, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
      attn_load_tile(dOs, dout, nullptr, b, h, i0, Tq, H, D, Dp, ldt);
      attn_fill_bias(bias_s, bias_table, buckets, alibi, causal && !is_pre, i0, is_pre ? j0 : pre.P + j0, Tq,
                     pre.P + Tk, H, h);
      if (threadIdx.x < ATTN_BM) {
        const int iq = i0 + threadIdx.x;
        const size_t at = (static_cast<size_t>(b) * H + h) * Tq + iq;
        lse_s[threadIdx.x] = iq < Tq ? lse[at] * ATTN_LOG2E : ATTN_NEG_INF;
        delta_s[threadIdx.x] = iq < Tq ? delta[at] : 0.0f;
      }
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
    attn_store_rows<NFM, true>(dk, dk_acc, Ss, nullptr, bz, kvh, j0 + warp * 16, Tk, Hkv, D, NF);
    attn_store_rows<NFM, true>(dv, dv_acc, Ss, nullptr, bz, kvh, j0 + warp * 16, Tk, Hkv, D, NF);
  }
}

// D <= 64
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dkdv(bf16* __restrict__ dk,                // (B, Tk, Hkv, D)
                   bf16* __restrict__ dv,                // (B, Tk, Hkv, D)
                   float* __restrict__ dprefix,          // (K * P, width) or NULL
                   const bf16* __restrict__ dout,        // (B, Tq, H, D)
                   const bf16* __restrict__ q,           // (B, Tq, H, D)
                   const bf16* __restrict__ k,           // (B, Tk, Hkv, D)
                   const bf16* __restrict__ v,           // (B, Tk, Hkv, D)
                   const float* __restrict__ prefix,     // (K * P, width) or NULL
                   const int* __restrict__ prefix_slot,  // (B) or NULL
                   const int* __restrict__ prefix_hidden, // (B) or NULL
                   const float* __restrict__ lse,        // (B, H, Tq)
                   const float* __restrict__ delta,      // (B, H, Tq)
                   const int* __restrict__ key_mask,     // (B, Tk)
                   const bf16* __restrict__ bias_table,  // (num_buckets, H) or NULL
                   const int* __restrict__ buckets,      // (Tq + P + Tk - 1) or NULL
                   int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                   int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dkdv_body<4>(attn_smem, dk, dv, dprefix, dout, q, k, v, AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, lse, delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dkdv_d128(bf16* __restrict__ dk,                // (B, Tk, Hkv, D)
                        bf16* __restrict__ dv,                // (B, Tk, Hkv, D)
                        float* __restrict__ dprefix,          // (K * P, width) or NULL
                        const bf16* __restrict__ dout,        // (B, Tq, H, D)
                        const bf16* __restrict__ q,           // (B, Tq, H, D)
                        const bf16* __restrict__ k,           // (B, Tk, Hkv, D)
                        const bf16* __restrict__ v,           // (B, Tk, Hkv, D)
                        const float* __restrict__ prefix,     // (K * P, width) or NULL
                        const int* __restrict__ prefix_slot,  // (B) or NULL
                        const int* __restrict__ prefix_hidden, // (B) or NULL
                        const float* __restrict__ lse,        // (B, H, Tq)
                        const float* __restrict__ delta,      // (B, H, Tq)
                        const int* __restrict__ key_mask,     // (B, Tk)
                        const bf16* __restrict__ bias_table,  // (num_buckets, H) or NULL
                        const int* __restrict__ buckets,      // (Tq + P + Tk - 1) or NULL
                        int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
                        int Hkv, int D, int P, int width, int k_off, int v_off) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dkdv_body<8>(attn_smem, dk, dv, dprefix, dout, q, k, v, AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, lse, delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D);
}
#endif  // SOFTPROMPT_ACT_F32

// The KV-cache decode step of generation (all three builds): one new query per batch row
// against the first Tk rows of the caches, without any Tq x Tk storage.
// out, q: (B, H, D); k, v: (B, Tmax, Hkv, D); key_mask: (B, Tmax) (0 = padded key). The query
// sits at position Tk - 1 and so sees every cached key; alibi adds slope_h * (j - (Tk - 1)), a
// bias_table (num_buckets, H) adds T5's relative bias with buckets (2 * Tmax - 1) the lookup of a
// (Tmax, Tmax) attention, of which the step is query row Tk - 1 (key j at j - (Tk - 1) + Tmax - 1).
// grid (Hkv, B), block 128 (4 warps); each block serves the G = H / Hkv query heads of one
// key/value head, so each cached row is read once per step, in chunks of DEC_KC keys with an
// online softmax. Dynamic shared memory attn_decode_smem_bytes(G, D) (src/cuda/attention.rs).
#define DEC_KC 64
#define DEC_WARPS 4

extern "C" __global__ void
attention_decode(act_t* __restrict__ out,            // (B, H, D)
                 const act_t* __restrict__ q,        // (B, H, D)
                 const act_t* __restrict__ k,        // (B, Tmax, Hkv, D)
                 const act_t* __restrict__ v,        // (B, Tmax, Hkv, D)
                 const int* __restrict__ key_mask,   // (B, Tmax)
                 const w_t* __restrict__ bias_table, // (num_buckets, H) or NULL
                 const int* __restrict__ buckets,    // (2 * Tmax - 1) or NULL
                 int alibi, float scale, int B, int Tk, int Tmax, int H, int Hkv, int D) {
  extern __shared__ __align__(16) float dec_smem[];
  const int kvh = blockIdx.x, b = blockIdx.y, G = H / Hkv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* qs = dec_smem;        // (G, D) the queries
  float* os = qs + G * D;      // (G, D) unnormalised outputs
  float* ps = os + G * D;      // (G, DEC_KC) scores, then probabilities, of the chunk
  float* ms = ps + G * DEC_KC;  // (G) running max
  float* ls = ms + G;          // (G) running sum
  float* al = ls + G;          // (G) rescale of the chunk
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
    qs[e] = ld(q, (static_cast<long long>(b) * H + kvh * G) * D + e);
    os[e] = 0.0f;
  }
  for (int g = threadIdx.x; g < G; g += blockDim.x) {
    ms[g] = __int_as_float(0xff800000);
    ls[g] = 0.0f;
  }
  const long long row0 = static_cast<long long>(b) * Tmax;
  for (int c0 = 0; c0 < Tk; c0 += DEC_KC) {
    const int n = min(DEC_KC, Tk - c0);
    __syncthreads();  // q, the previous chunk's probabilities and rescales are settled
    // scores: one warp per key, the G heads in turn
    for (int jj = warp; jj < n; jj += DEC_WARPS) {
      const int j = c0 + jj;
      const bool vis = key_mask[row0 + j] != 0;
      const long long kr = ((row0 + j) * Hkv + kvh) * D;
      for (int g = 0; g < G; ++g) {
        float s = 0.0f;
        for (int d = lane; d < D; d += 32) s += qs[g * D + d] * ld(k, kr + d);
        s = warp_sum(s);
        if (lane == 0) {
          const int h = kvh * G + g;
          const float bias = alibi ? attn_alibi_slope(h, H) * static_cast<float>(j - (Tk - 1))
                             : bias_table != nullptr ? ld(bias_table, static_cast<long long>(buckets[j + Tmax - Tk]) * H + h)
                                                     : 0.0f;
          ps[g * DEC_KC + jj] = vis ? s * scale + bias : __int_as_float(0xff800000);
        }
      }
    }
    __syncthreads();
    // the online softmax of each head over the chunk: one warp per head
    for (int g = warp; g < G; g += DEC_WARPS) {
      float mx = __int_as_float(0xff800000);
      for (int jj = lane; jj < n; jj += 32) mx = fmaxf(mx, ps[g * DEC_KC + jj]);
      mx = warp_max(mx);
      const float m_old = ms[g], m_new = fmaxf(m_old, mx);
      const bool any = m_new != __int_as_float(0xff800000);
      float sum = 0.0f;
      for (int jj = lane; jj < n; jj += 32) {
        const float p = any ? expf(ps[g * DEC_KC + jj] - m_new) : 0.0f;
        ps[g * DEC_KC + jj] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      __syncwarp();
      if (lane == 0) {
        const float alpha = (any && m_old != __int_as_float(0xff800000)) ? expf(m_old - m_new) : (any ? 0.0f : 1.0f);
        al[g] = alpha;
        ls[g] = ls[g] * alpha + sum;
        ms[g] = m_new;
      }
    }
    __syncthreads();
    // os = os * alpha + P V over the chunk: one thread per (head, column)
    for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
      const int g = e / D, d = e % D;
      float acc = os[e] * al[g];
      for (int jj = 0; jj < n; ++jj) {
        const float p = ps[g * DEC_KC + jj];
        if (p != 0.0f) acc += p * ld(v, ((row0 + c0 + jj) * Hkv + kvh) * D + d);
      }
      os[e] = acc;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
    const int g = e / D;
    st(out, (static_cast<long long>(b) * H + kvh * G) * D + e, ls[g] > 0.0f ? os[e] / ls[g] : 0.0f);
  }
}
