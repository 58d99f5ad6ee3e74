// Raw `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` on the emulator: d = a * b + c for
// one 16 x 8 tile, a 16 x 16 (row), b 16 x 8 (col), bf16 inputs and float accumulators, with
// PTX's documented fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating
// point type"). Kernels call it through kernels/mma.cuh, which is the inline asm on a GPU.
//
// Layout, with g = lane >> 2 (groupID) and t = lane % 4 (threadID_in_group); each .b32 register
// holds two bf16, the lower-numbered element in the low 16 bits:
//   a[0] = A[g][2t..2t+1]      a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]    a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]      b[1] = B[2t+8..2t+9][g]        (B is k x n: rows k, column n)
//   c[0], c[1] = C[g][2t], C[g][2t+1]    c[2], c[3] = C[g+8][2t], C[g+8][2t+1]   (d likewise)
//
// Synchronisation: a warp rendezvous of all 32 lanes (mask 0xffffffff), as on the device,
// where the instruction is .sync.aligned: every lane must execute the same mma. Each lane
// scatters its a and b elements into a per-warp scratch, waits for the others, computes its
// own four d elements and waits again before any lane may reuse the scratch.
// Arithmetic: products of bf16 are exact in float (and in double); d = c + sum over k is summed
// in double and rounded once to float, as the wmma emulation does (the hardware's summation
// order is unspecified; one rounding is the closest model and never depends on the order).
#pragma once

namespace emu::detail::mma_impl {

struct Scratch {
  double a[16][16];  // (m, k)
  double b[16][8];   // (k, n)
};
inline Scratch& scratch(unsigned warp) {
  static thread_local Scratch slots[32];  // one per warp of the largest block (as wmma's)
  return slots[warp];
}

inline double bf16_lo(unsigned r) { return bits_float(r << 16); }
inline double bf16_hi(unsigned r) { return bits_float(r & 0xffff0000u); }

}  // namespace emu::detail::mma_impl

namespace emu::detail {

inline void mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2], const float c[4],
                           const char* file, int line) {
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const unsigned lane = t % 32, g = lane >> 2, tq = lane & 3;
  mma_impl::Scratch& s = mma_impl::scratch(t / 32);
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = g + 8 * (i & 1), col = 2 * tq + 8 * (i >> 1);
    s.a[row][col] = mma_impl::bf16_lo(a[i]);
    s.a[row][col + 1] = mma_impl::bf16_hi(a[i]);
  }
  for (unsigned i = 0; i < 2; ++i) {
    s.b[2 * tq + 8 * i][g] = mma_impl::bf16_lo(b[i]);
    s.b[2 * tq + 8 * i + 1][g] = mma_impl::bf16_hi(b[i]);
  }
  const char* fn = "mma.sync.m16n8k16 (mma_bf16_16816)";
  warp_value(WarpKind::MmaSync, 0xffffffffu, 0, fn, file, line);
  float out[4];
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = g + 8 * (i >> 1), col = 2 * tq + (i & 1);
    double sum = c[i];
    for (int k = 0; k < 16; ++k) sum += s.a[row][k] * s.b[k][col];
    out[i] = static_cast<float>(sum);  // one rounding, to nearest even
  }
  // No lane may overwrite the scratch (its next mma) before every lane has read it; d may be c.
  warp_value(WarpKind::MmaSync, 0xffffffffu, 0, fn, file, line);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

}  // namespace emu::detail
