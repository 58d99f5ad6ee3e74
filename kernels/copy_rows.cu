// Copying rows by index between the activations' type and float32 (src/cpu/copy_rows.rs):
// a row's keys and values into a float32 store the attention op reads as a prefix, a float32
// prefix's rows into a cache of activations. Launch configuration: src/cuda/copy_rows.rs.
#include "common.cuh"

// out[dst[m]] = inp[src[m]] for inp (N, C), out (R, C), src and dst (M), rounded to out's
// type. One block per copied row; dst holds no row twice, so no two blocks write one row.
template <typename TO, typename TI>
__device__ __forceinline__ void copy_row(TO* out, const TI* inp, const int* src, const int* dst,
                                         int c) {
  const long long from = src[blockIdx.x], to = dst[blockIdx.x];
  for (int i = threadIdx.x * VEC; i < c; i += blockDim.x * VEC) {
    float v[VEC];
    load8(v, inp + from * c, i, c);
    store8(out + to * c, i, c, v);
  }
}

// The four pairs of types; in the builds whose activations are float32 the last three are
// twins of the first, which the launcher calls instead.
extern "C" __global__ void copy_rows(act_t* out, const act_t* inp, const int* src, const int* dst,
                                     int m, int c) {
  copy_row(out, inp, src, dst, c);
}

extern "C" __global__ void copy_rows_to_f32(float* out, const act_t* inp, const int* src,
                                            const int* dst, int m, int c) {
  copy_row(out, inp, src, dst, c);
}

extern "C" __global__ void copy_rows_from_f32(act_t* out, const float* inp, const int* src,
                                              const int* dst, int m, int c) {
  copy_row(out, inp, src, dst, c);
}

extern "C" __global__ void copy_rows_f32(float* out, const float* inp, const int* src,
                                         const int* dst, int m, int c) {
  copy_row(out, inp, src, dst, c);
}
