// The `cls` head (src/cpu/head.rs): a trainable linear classifier on pooled states, its
// softmax cross-entropy gradient and its backward. Weight, bias, logits and their gradients
// are float32; pooled states are activations (act_t). Everything is tiny (K labels), so the
// kernels favour the reference's order over speed: each result is summed by one thread in
// the reference's order, no atomics, deterministic. Launch configuration: src/cuda/head.rs.
#include "common.cuh"

// logits (B, K) = bias (K) + pooled (B, C) . weight^T (K, C). One thread per logit,
// grid-stride over B*K.
extern "C" __global__ void cls_head_fwd(float* logits, const act_t* pooled, const float* weight,
                                        const float* bias, int b, int k, int c) {
  GRID_STRIDE(i, (long long)b * k) {
    const long long bi = i / k, ki = i % k;
    const act_t* x = pooled + bi * c;
    const float* w = weight + ki * c;
    float acc = 0.0f;
    for (int ci = 0; ci < c; ++ci) acc += ld(x, ci) * w[ci];
    logits[i] = bias[ki] + acc;
  }
}

// dlogits (B, K) = (softmax(logits) - onehot(labels)) / B, the softmax in double precision.
// One thread per row.
extern "C" __global__ void cls_xent_grad(float* dlogits, const float* logits, const int* labels,
                                        int b, int k) {
  GRID_STRIDE(bi, (long long)b) {
    const float* row = logits + bi * k;
    float m = __int_as_float(0xff800000);
    for (int j = 0; j < k; ++j) m = fmaxf(m, row[j]);
    double sum = 0.0;
    for (int j = 0; j < k; ++j) sum += exp((double)(row[j] - m));
    for (int j = 0; j < k; ++j) {
      const double p = exp((double)(row[j] - m)) / sum;
      dlogits[bi * k + j] = (float)((p - (j == labels[bi] ? 1.0 : 0.0)) / b);
    }
  }
}

// dweight (K, C) += dlogits^T . pooled, dbias (K) += sum_b dlogits, dpooled (B, C) += dlogits .
// weight; with accumulate 0 each sum starts from 0 instead of the buffer (written whole, the bits
// of adding into zeros). One grid-stride loop over the K*C + K + B*C results; each sums in the
// reference's order (over b for the weight and bias, over k for dpooled).
extern "C" __global__ void cls_head_bwd(float* dweight, float* dbias, act_t* dpooled,
                                        const float* dlogits, const act_t* pooled,
                                        const float* weight, int b, int k, int c, int accumulate) {
  const long long nw = (long long)k * c, nb = k, np = (long long)b * c;
  GRID_STRIDE(i, nw + nb + np) {
    if (i < nw) {
      const long long ki = i / c, ci = i % c;
      float acc = accumulate ? dweight[i] : 0.0f;
      for (int bi = 0; bi < b; ++bi) acc += dlogits[(long long)bi * k + ki] * ld(pooled, bi * (long long)c + ci);
      dweight[i] = acc;
    } else if (i < nw + nb) {
      const long long ki = i - nw;
      float acc = accumulate ? dbias[ki] : 0.0f;
      for (int bi = 0; bi < b; ++bi) acc += dlogits[(long long)bi * k + ki];
      dbias[ki] = acc;
    } else {
      const long long j = i - nw - nb, bi = j / c, ci = j % c;
      float acc = accumulate ? ld(dpooled, j) : 0.0f;
      for (int ki = 0; ki < k; ++ki) acc += dlogits[bi * k + ki] * weight[ki * (long long)c + ci];
      st(dpooled, j, acc);
    }
  }
}
