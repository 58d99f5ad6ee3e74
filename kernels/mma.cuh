// One tensor-core instruction with a documented fragment layout, for kernels that keep their
// operands in registers: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (sm_80+).
// d (16 x 8 float) = a (16 x 16 bf16) * b (16 x 8 bf16) + c; d may be c. All 32 lanes of the
// warp must execute it together. With g = lane >> 2, t = lane % 4, each .b32 register holding
// two bf16 (the lower-numbered element in the low 16 bits), PTX ISA "Matrix Fragments for
// mma.m16n8k16 with floating point type":
//   a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]    a[2] = A[g][2t+8..]    a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]    (B is k x n)
//   c[0..1] = C[g][2t..2t+1]    c[2..3] = C[g+8][2t..2t+1]
// So the C fragments of two adjacent n8 tiles hold, per lane, exactly the elements that the A
// fragment of one k16 tile needs (FlashAttention-2's registers-only P).
// The emulator (SOFTPROMPT_EMU) runs the same layout as a warp rendezvous (emu/detail/mma.h).
#pragma once

#ifdef SOFTPROMPT_EMU
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2],
                                               const float c[4], const char* file = __builtin_FILE(),
                                               int line = __builtin_LINE()) {
  emu::detail::mma_bf16_16816(d, a, b, c, file, line);
}
#else
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2],
                                               const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
#endif
