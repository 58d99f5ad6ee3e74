// Activation family (src/cpu/activation.rs): GELU (erf and tanh), ReLU, SiLU and T5's gated
// variants. Elementwise, 8 bf16 (16 bytes) per thread per step, grid-stride over the chunks.
// `act` is Act::id(): 0 GELU (erf), 1 GELU (tanh), 2 ReLU, 3 SiLU.
// Launch configuration: src/cuda/activation.rs.
#include "common.cuh"

// f(x) in .x and f'(x) in .y, the formulas of Act::eval.
__device__ __forceinline__ float2 act_eval(int act, float x) {
  switch (act) {
    case 0: {
      const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
      const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
      return make_float2(x * cdf, cdf + x * pdf);
    }
    case 1: {
      const float k = 0.79788456080286536f, a = 0.044715f;
      const float th = tanhf(k * (x + a * x * x * x));
      const float dinner = k * (1.0f + 3.0f * a * x * x);
      return make_float2(0.5f * x * (1.0f + th),
                         0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * dinner);
    }
    case 2:
      return x > 0.0f ? make_float2(x, 1.0f) : make_float2(0.0f, 0.0f);
    default: {
      const float s = 1.0f / (1.0f + expf(-x));
      return make_float2(x * s, s * (1.0f + x * (1.0f - s)));
    }
  }
}

// out (N) = act(inp (N)).
extern "C" __global__ void act_fwd(act_t* out, const act_t* inp, int act, long long n) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float x[VEC];
    load8(x, inp, j * VEC, n);
#pragma unroll
    for (int e = 0; e < VEC; ++e) x[e] = act_eval(act, x[e]).x;
    store8(out, j * VEC, n, x);
  }
}

// dinp (N) += dout * act'(inp) with `accumulate`, else dinp = it.
extern "C" __global__ void act_bwd(act_t* dinp, const act_t* dout, const act_t* inp, int act,
                                   long long n, int accumulate) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float x[VEC], g[VEC], acc[VEC];
    load8(x, inp, j * VEC, n);
    load8(g, dout, j * VEC, n);
    grad_base8(acc, dinp, j * VEC, n, accumulate);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] += g[e] * act_eval(act, x[e]).y;
    store8(dinp, j * VEC, n, acc);
  }
}

// out (N) = act(gate) * lin: T5's gated feed-forward.
extern "C" __global__ void gated_act_fwd(act_t* out, const act_t* gate, const act_t* lin, int act,
                                         long long n) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float g[VEC], l[VEC];
    load8(g, gate, j * VEC, n);
    load8(l, lin, j * VEC, n);
#pragma unroll
    for (int e = 0; e < VEC; ++e) g[e] = act_eval(act, g[e]).x * l[e];
    store8(out, j * VEC, n, g);
  }
}

// dgate += dout * act'(gate) * lin, dlin += dout * act(gate) with `accumulate`, else each = it.
extern "C" __global__ void gated_act_bwd(act_t* dgate, act_t* dlin, const act_t* dout,
                                         const act_t* gate, const act_t* lin, int act,
                                         long long n, int accumulate) {
  GRID_STRIDE(j, (n + VEC - 1) / VEC) {
    float dy[VEC], g[VEC], l[VEC], dg[VEC], dl[VEC];
    load8(dy, dout, j * VEC, n);
    load8(g, gate, j * VEC, n);
    load8(l, lin, j * VEC, n);
    grad_base8(dg, dgate, j * VEC, n, accumulate);
    grad_base8(dl, dlin, j * VEC, n, accumulate);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float2 f = act_eval(act, g[e]);
      dg[e] += dy[e] * f.y * l[e];
      dl[e] += dy[e] * f.x;
    }
    store8(dgate, j * VEC, n, dg);
    store8(dlin, j * VEC, n, dl);
  }
}
