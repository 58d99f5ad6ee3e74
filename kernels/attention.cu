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
// stack (prefix_slot, prefix_hidden; AttnPrefix in attention_tiles.cuh, ATTENTION.md "Prefix tuning").
//
// The builds with float32 activations (float32, -DSOFTPROMPT_F32, and mixed,
// -DSOFTPROMPT_MIXED; see common.cuh) take the same entry points, signatures and launches
// from attention_f32.cuh instead: plain float32 loops, no tensor cores.
//
// Entry points (this file: every kernel's signature and launch bounds; the bodies are in the
// headers): attention_fwd, attention_bwd_dq, attention_bwd_dkdv for D <= 64, and the same
// with a _d128 suffix for 64 < D <= 128 (identical signatures and launch configuration; only the
// register arrays differ). attention_fwd_mma[_d128] and attention_bwd_dq_mma[_d128]: the same
// on raw mma.sync with the scores in registers (the launcher's choice, SOFTPROMPT_ATTN_FWD,
// SOFTPROMPT_ATTN_BWD_DQ). Launches (ATTENTION.md): 128 threads; forward and bwd_dq take grid
// (ceil(Tq / 64), H, B); dynamic shared memory from attn_smem_bytes (attention_tiles.cuh).
// Backward runs bwd_dq (which also writes delta) and then bwd_dkdv, whose grid is
// (ceil(Tk / 64) + K * ceil(P / 64), Hkv, B): each block walks the H / Hkv query heads of its
// key/value head in turn. Both add into their outputs with `accumulate`, else overwrite them
// (the last argument; each element is stored by one thread, once, so writing is a plain
// store, bit for bit what adding into zeros gives), and use no atomics, so every result is
// deterministic. dprefix is always added into.
//
// Files, by concern: attention_tiles.cuh (the tile walk, masks, bias window and prefix rows
// every bf16 kernel shares), attention_wmma.cuh (the wmma bodies), attention_mma.cuh (the
// mma.sync bodies, kernels/mma.cuh the instruction), attention_f32.cuh (the float32 builds);
// the KV-cache decode step is attention_decode.cu.
#include "common.cuh"

#ifdef SOFTPROMPT_ACT_F32
#include "attention_f32.cuh"
// No tensor cores here: the mma kernels' names (bf16 build below) run the float32 loops, so
// every build has every kernel; the launcher never picks them in these builds.
ATTN32_FWD(attention_fwd_mma)
ATTN32_FWD(attention_fwd_mma_d128)
ATTN32_BWD_DQ(attention_bwd_dq_mma)
ATTN32_BWD_DQ(attention_bwd_dq_mma_d128)
ATTN32_BWD_DKDV(attention_bwd_dkdv_mma)
ATTN32_BWD_DKDV(attention_bwd_dkdv_mma_d128)
#else
#include "attention_tiles.cuh"
#include "attention_wmma.cuh"
#include "attention_mma.cuh"

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
                 int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_body<4>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, accumulate);
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
                      int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_body<8>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, accumulate);
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
                     int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_mma_body<4>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, Tq, Tk, H, Hkv, D, accumulate);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dq_mma_d128(bf16* __restrict__ dq, float* __restrict__ delta, const bf16* __restrict__ dout,
                          const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                          const float* __restrict__ prefix, const int* __restrict__ prefix_slot,
                          const int* __restrict__ prefix_hidden, const float* __restrict__ lse,
                          const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                          const int* __restrict__ buckets, int alibi, int causal, float scale, int B,
                          int Tq, int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dq_mma_body<8>(attn_smem, dq, delta, dout, q, k, v, attn_row_prefix(AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, blockIdx.z), lse, key_mask, bias_table, buckets, alibi, causal, scale, Tq, Tk, H, Hkv, D, accumulate);
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
                   int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dkdv_body<4>(attn_smem, dk, dv, dprefix, dout, q, k, v, AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, lse, delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, accumulate);
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
                        int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dkdv_body<8>(attn_smem, dk, dv, dprefix, dout, q, k, v, AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, lse, delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, accumulate);
}
// attention_bwd_dkdv on raw mma.sync with S^T, dP^T, P^T and dS^T in registers
// (attention_mma.cuh): the same arguments and grid, dynamic smem attn_smem_bytes(4, D).
// SOFTPROMPT_ATTN_BWD_DKDV=mma. D <= 64:
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dkdv_mma(bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dprefix,
                       const bf16* __restrict__ dout, const bf16* __restrict__ q, const bf16* __restrict__ k,
                       const bf16* __restrict__ v, const float* __restrict__ prefix,
                       const int* __restrict__ prefix_slot, const int* __restrict__ prefix_hidden,
                       const float* __restrict__ lse, const float* __restrict__ delta,
                       const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                       const int* __restrict__ buckets, int alibi, int causal, float scale, int B, int Tq,
                       int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dkdv_mma_body<4, 4>(attn_smem, dk, dv, dprefix, dout, q, k, v, AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, lse, delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, accumulate);
}
// 64 < D <= 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attention_bwd_dkdv_mma_d128(bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dprefix,
                            const bf16* __restrict__ dout, const bf16* __restrict__ q, const bf16* __restrict__ k,
                            const bf16* __restrict__ v, const float* __restrict__ prefix,
                            const int* __restrict__ prefix_slot, const int* __restrict__ prefix_hidden,
                            const float* __restrict__ lse, const float* __restrict__ delta,
                            const int* __restrict__ key_mask, const bf16* __restrict__ bias_table,
                            const int* __restrict__ buckets, int alibi, int causal, float scale, int B,
                            int Tq, int Tk, int H, int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate) {
  extern __shared__ __align__(128) unsigned char attn_smem[];
  attn_bwd_dkdv_mma_body<8, 4>(attn_smem, dk, dv, dprefix, dout, q, k, v, AttnPrefix{prefix, P, width, k_off, v_off, 0}, prefix_slot, prefix_hidden, lse, delta, key_mask, bias_table, buckets, alibi, causal, scale, B, Tq, Tk, H, Hkv, D, accumulate);
}
#endif  // SOFTPROMPT_ACT_F32
