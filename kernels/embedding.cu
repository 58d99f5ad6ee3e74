// Embedding family (src/cpu/embedding.rs): the prompt rows concatenated in front of the token
// embeddings, and the prompt-row gradient. Launch configuration: src/cuda/embedding.rs.
#include "common.cuh"

// out (B, P+T, C) bf16 = concat(prompt (P, C) f32, wte[ids] (B, T, C)) + wpe[s] + wtt[type].
// wpe, wtt, type_ids may be null (T5); prompt rows take token type 0. One block per row
// (grid.x = B*(P+T)); each thread handles 8 consecutive columns at a time.
extern "C" __global__ void embedding_fwd(act_t* out, const float* prompt, const w_t* wte,
                                         const w_t* wpe, const w_t* wtt, const int* ids,
                                         const int* type_ids, int b, int t, int p, int c) {
  const int row = blockIdx.x, tt = p + t;
  const int bi = row / tt, s = row % tt;
  const long long id = s < p ? 0 : ids[bi * t + s - p];
  const long long ty = (s >= p && type_ids) ? type_ids[bi * t + s - p] : 0;
  for (int c0 = threadIdx.x * VEC; c0 < c; c0 += blockDim.x * VEC) {
    float x[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int ci = c0 + e;
      if (ci >= c) {
        x[e] = 0.0f;
        continue;
      }
      x[e] = s < p ? prompt[(long long)s * c + ci] : ld(wte, id * c + ci);
      if (wpe) x[e] += ld(wpe, (long long)s * c + ci);
      if (wtt) x[e] += ld(wtt, ty * c + ci);
    }
    store8(out + (long long)row * c, c0, c, x);
  }
}

// dprompt (P, C) f32 += sum over the batch of dout[:, 0..P, :] (B, P+T, C) bf16. One thread
// per prompt element sums the B rows in order: deterministic, no atomics (B is small).
extern "C" __global__ void prompt_grad_bwd(float* dprompt, const act_t* dout, int b, int t, int p,
                                           int c) {
  const long long n = (long long)p * c, tt = p + t;
  GRID_STRIDE(i, n) {
    float acc = 0.0f;
    for (int bi = 0; bi < b; ++bi) acc += ld(dout, bi * tt * c + i);
    dprompt[i] += acc;
  }
}
