// Raw mma.sync m16n8k16 (kernels/mma.cuh) through the emulator: fragments loaded from global
// memory with plain 32-bit loads in PTX's documented layout, and the same with two registers
// swapped (a misplaced fragment, which must give wrong numbers).
#include <cuda_bf16.h>
#include "../mma.cuh"

// Warp w of the block computes tile w: d[w] (16 x 8 float, row-major) = a[w] (16 x 16 bf16,
// row-major) * b[w] (16 x 8 bf16, k x n, row-major) + c[w] (16 x 8 float). misplace: 1 swaps
// a[1] and a[2] (rows g + 8 and columns 2t + 8 exchanged), 2 swaps b[0] and b[1].
extern "C" __global__ void __launch_bounds__(1024) mma_tile_bf16(float* d, const __nv_bfloat16* a,
                                                                 const __nv_bfloat16* b, const float* c,
                                                                 int misplace) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  a += warp * 256;
  b += warp * 128;
  c += warp * 128;
  d += warp * 128;
  unsigned fa[4], fb[2];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
    fa[i] = *reinterpret_cast<const unsigned*>(a + row * 16 + col);
  }
  for (int i = 0; i < 2; ++i) {  // two k rows of column g: not adjacent in a row-major b
    const unsigned short* bits = reinterpret_cast<const unsigned short*>(b);
    fb[i] = static_cast<unsigned>(bits[(2 * t + 8 * i) * 8 + g]) |
            static_cast<unsigned>(bits[(2 * t + 8 * i + 1) * 8 + g]) << 16;
  }
  if (misplace == 1) {
    const unsigned x = fa[1];
    fa[1] = fa[2];
    fa[2] = x;
  }
  if (misplace == 2) {
    const unsigned x = fb[0];
    fb[0] = fb[1];
    fb[1] = x;
  }
  float fc[4], fd[4];
  for (int i = 0; i < 4; ++i) fc[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
  mma_bf16_16816(fd, fa, fb, fc);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = fd[i];
}

// A partial warp (16 threads) or lanes that skip the mma: the launch must fail.
extern "C" __global__ void __launch_bounds__(32) mma_misuse(float* d, int skip_odd_lanes) {
  unsigned fa[4] = {0, 0, 0, 0}, fb[2] = {0, 0};
  float fc[4] = {0, 0, 0, 0}, fd[4];
  if (skip_odd_lanes && threadIdx.x % 2) return;
  mma_bf16_16816(fd, fa, fb, fc);
  d[threadIdx.x] = fd[0];
}
