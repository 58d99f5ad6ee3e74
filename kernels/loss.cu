// Loss family (src/cpu/loss.rs): softmax cross-entropy, forward and backward fused, the
// gradient written over the logits. The T5 vocabulary loss calls it on row chunks, so only a
// (rows, V) float32 chunk of logits exists at a time; the PET head calls it on the verbalizer
// columns of the mask rows. Launch configuration: src/cuda/loss.rs.
#include "common.cuh"

// In: logits (M, V) f32. Out: the same buffer holds (softmax - onehot) * grad_scale, and
// losses (M) f32 each row's cross-entropy; rows whose target is -100 get loss 0 and gradient 0.
// One block per row: an online max/sum pass, then the gradient pass.
extern "C" __global__ void cross_entropy_fwd_bwd(float* logits, float* losses, const int* targets,
                                                 int m, int v, float grad_scale) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  float* x = logits + row * v;
  const int target = targets[row];
  if (target == -100) {
    for (int i = threadIdx.x; i < v; i += blockDim.x) x[i] = 0.0f;
    if (threadIdx.x == 0) losses[row] = 0.0f;
    return;
  }
  // each thread keeps its own running max and the sum of exp relative to it
  float mx = __int_as_float(0xff800000), sum = 0.0f;
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    const float xi = x[i];
    if (xi > mx) {
      sum = sum * expf(mx - xi) + 1.0f;
      mx = xi;
    } else {
      sum += expf(xi - mx);
    }
  }
  const float row_max = block_max(mx, scratch);
  const float total = block_sum(mx == __int_as_float(0xff800000) ? 0.0f : sum * expf(mx - row_max), scratch);
  const float target_logit = x[target] - row_max;
  __syncthreads();  // every thread has read x[target] before it is overwritten
  const float inv = 1.0f / total;
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    const float g = expf(x[i] - row_max) * inv * grad_scale;
    x[i] = i == target ? g - grad_scale : g;
  }
  if (threadIdx.x == 0) losses[row] = logf(total) - target_logit;
}
