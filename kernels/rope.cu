// Rotary position embeddings (src/cpu/rope.rs), forward and backward, in place. One thread per
// (row, head, pair): f = pos * inv_freq[i] in float32 as transformers computes it, its cosine
// and sine (sincosf, full precision), and the rotation of (x_i, x_{i+D/2}). Backward rotates by
// -f (the transpose). Launch configuration: src/cuda/rope.rs.
#include "common.cuh"

// x (B*T, H, D): the pairs of row r = b*T + t rotate by pos[r] * inv_freq[i]; sign 1 forward,
// -1 backward. inv_freq (D/2) float, pos (B*T) int.
__device__ void rope_rotate(act_t* x, const float* inv_freq, const int* pos, long long rows, int h,
                            int d, float sign) {
  const int half = d / 2;
  GRID_STRIDE(e, rows * h * half) {
    const int i = static_cast<int>(e % half);
    const long long rh = e / half, r = rh / h;
    const float f = static_cast<float>(pos[r]) * inv_freq[i];
    float s, c;
    sincosf(f, &s, &c);
    s *= sign;
    const long long base = rh * d;
    const float a = ld(x, base + i), b = ld(x, base + i + half);
    st(x, base + i, a * c - b * s);
    st(x, base + i + half, b * c + a * s);
  }
}

// x (B, T, H, D) rotated in place by RoPE at positions pos (B, T).
extern "C" __global__ void rope_fwd(act_t* x, const float* inv_freq, const int* pos, long long rows,
                                    int h, int d) {
  rope_rotate(x, inv_freq, pos, rows, h, d, 1.0f);
}

// dx (B, T, H, D) rotated back in place: RoPE's backward.
extern "C" __global__ void rope_bwd(act_t* dx, const float* inv_freq, const int* pos, long long rows,
                                    int h, int d) {
  rope_rotate(dx, inv_freq, pos, rows, h, d, -1.0f);
}
