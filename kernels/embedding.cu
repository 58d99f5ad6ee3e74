// Embedding family (src/cpu/embedding.rs): the prompt rows concatenated in front of the token
// embeddings, and the prompt-row gradient. Launch configuration: src/cuda/embedding.rs.
#include "common.cuh"

// out (B, P+T, C) bf16 = concat(prompt[k_b] (P, C) f32, wte[ids] (B, T, C)) + wpe[s] + wtt[type],
// the prompt table (K, P, C) and k_b = prompt_idx[b] (B), 0 when prompt_idx is null (one
// prompt). wpe, wtt, type_ids may be null (T5); prompt rows take token type 0. With prompt_len
// (B) row b is [prompt[k_b, 0..P_b], its T tokens at positions P_b.., zeros for the last
// P - P_b rows]; null: every P_b = P. One block per row (grid.x = B*(P+T)); each thread
// handles 8 consecutive columns at a time.
extern "C" __global__ void embedding_fwd(act_t* out, const float* prompt, const w_t* wte,
                                         const w_t* wpe, const w_t* wtt, const int* ids,
                                         const int* type_ids, const int* prompt_idx,
                                         const int* prompt_len, int b, int t, int p, int c) {
  const int row = blockIdx.x, tt = p + t;
  const int bi = row / tt, s = row % tt;
  const int pb = prompt_len ? prompt_len[bi] : p;
  const bool pad = s >= pb + t;  // behind a shorter prompt: masked out, kept finite
  const long long prow = (prompt_idx ? (long long)prompt_idx[bi] * p : 0) + s;
  const long long id = (s < pb || pad) ? 0 : ids[bi * t + s - pb];
  const long long ty = (s >= pb && !pad && type_ids) ? type_ids[bi * t + s - pb] : 0;
  for (int c0 = threadIdx.x * VEC; c0 < c; c0 += blockDim.x * VEC) {
    float x[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int ci = c0 + e;
      if (ci >= c || pad) {
        x[e] = 0.0f;
        continue;
      }
      x[e] = s < pb ? prompt[prow * c + ci] : ld(wte, id * c + ci);
      if (wpe) x[e] += ld(wpe, (long long)s * c + ci);
      if (wtt) x[e] += ld(wtt, ty * c + ci);
    }
    store8(out + (long long)row * c, c0, c, x);
  }
}

// dprompt (K, P, C) f32 += for each prompt k, the sum over the batch rows b with k_b = k of
// dout[b, 0..P, :] (B, P+T, C) bf16, k_b = prompt_idx[b] (B) or 0 when null; with prompt_len
// (B), of dout[b, 0..P_b, :] only. One thread per table element sums its prompt's rows in
// order: deterministic, no atomics (B is small).
extern "C" __global__ void prompt_grad_bwd(float* dprompt, const act_t* dout,
                                           const int* prompt_idx, const int* prompt_len, int b,
                                           int t, int k, int p, int c) {
  const long long pc = (long long)p * c, n = k * pc, tt = p + t;
  GRID_STRIDE(i, n) {
    const int kk = (int)(i / pc);
    const long long j = i - kk * pc;
    const int s = (int)(j / c);
    float acc = 0.0f;
    for (int bi = 0; bi < b; ++bi) {
      if (prompt_idx && prompt_idx[bi] != kk) continue;
      if (prompt_len && s >= prompt_len[bi]) continue;
      acc += ld(dout, bi * tt * c + j);
    }
    dprompt[i] += acc;
  }
}
