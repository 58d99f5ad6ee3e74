// The KV-cache decode step of attention (generation), in all three builds. Reference:
// src/cpu/attention_decode.rs; launcher: src/cuda/attention.rs (attention_decode); design:
// ATTENTION.md "Decode step".
#include "common.cuh"

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
