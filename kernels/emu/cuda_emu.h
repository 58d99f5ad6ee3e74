// cuda_emu.h: compiles CUDA C++ kernels as ordinary C++17 and runs them on the CPU.
//
// Blocks run one after another; each thread of a block is a fiber on the launching OS thread.
// README.md beside this file describes the model, the launch ABI, the generated wrapper TU,
// the __shared__ rewrite and the limits. This header is the only one a wrapper TU includes;
// the stand-ins in include/ (cuda_runtime.h, cuda_bf16.h, ...) just include it.
#pragma once

#if !defined(__x86_64__) || !defined(__linux__)
#error "the CUDA emulator's fibers are written for x86-64 Linux"
#endif

// Every system header comes first: the keyword macros below (__noinline__ in particular)
// would break libstdc++, and a kernel file's own #includes then find these already included.
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <math.h>
#include <type_traits>
#include <utility>

extern "C" {
// Status codes returned by emu_launch_<kernel>.
enum emu_status {
  EMU_OK = 0,
  EMU_ERROR_LAUNCH = 1,    // bad grid/block/shared-memory configuration or missing args
  EMU_ERROR_BARRIER = 2,   // __syncthreads reached by some threads but not others
  EMU_ERROR_WARP = 3,      // invalid or mismatched warp-synchronous call
  EMU_ERROR_DEADLOCK = 4,  // every remaining thread waits on something that cannot happen
  EMU_ERROR_SHARED = 5,    // shared-memory limit exceeded or out-of-bounds write
};

// Message describing the last failed launch on the calling OS thread ("" after a success).
const char* emu_last_error(void);
// Seed of the scheduling order and block order (default: $SOFTPROMPT_EMU_SEED, else 1).
void emu_set_seed(unsigned long long seed);
// Stack bytes per fiber for launches that start after the call; 0 restores the default
// ($SOFTPROMPT_EMU_STACK_KB, else 64 KiB, or 256 KiB under AddressSanitizer, whose reports
// run on the fiber's stack). A kernel that overflows its stack hits a guard page (SIGSEGV).
void emu_set_stack_size(size_t bytes);
}

// Execution-space and declaration keywords.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __device_builtin__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// A __shared__ that reaches the compiler was not rewritten (see README.md).
#define __shared__ \
  static_assert(false, "__shared__ must be rewritten by kernels/emu/rewrite.py (see README.md)");

// Kernel sources see a CUDA compiler targeting sm_90; SOFTPROMPT_EMU tells them it is this one.
#define __CUDACC__ 1
#define __CUDA_ARCH__ 900
#define SOFTPROMPT_EMU 1

#include "detail/vector_types.h"
#include "detail/fp16.h"
#include "detail/math.h"
#include "detail/device.h"
#include "detail/wmma.h"
#include "detail/mma.h"
#include "detail/launch.h"

// Constants from math_constants.h, cuda_bf16.h and cuda_fp16.h.
#define CUDART_INF_F __int_as_float(0x7f800000)
#define CUDART_NAN_F __int_as_float(0x7fffffff)
#define CUDART_MIN_DENORM_F __int_as_float(0x00000001)
#define CUDART_MAX_NORMAL_F __int_as_float(0x7f7fffff)
#define CUDART_NEG_ZERO_F __int_as_float(static_cast<int>(0x80000000u))
#define CUDART_ZERO_F 0.0F
#define CUDART_ONE_F 1.0F
#define CUDART_SQRT_HALF_F 0.707106781F
#define CUDART_SQRT_TWO_F 1.414213562F
#define CUDART_SQRT_2_OVER_PI_F 0.797884561F
#define CUDART_PI_F 3.141592654F
#define CUDART_L2E_F 1.442695041F
#define CUDART_LN2_F 0.693147181F
#define CUDART_INF __longlong_as_double(0x7ff0000000000000LL)
#define CUDART_NAN __longlong_as_double(static_cast<long long>(0xfff8000000000000ULL))
#define CUDART_PI 3.1415926535897931e+0
#define CUDART_INF_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x7F80U))
#define CUDART_NAN_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x7FFFU))
#define CUDART_MAX_NORMAL_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x7F7FU))
#define CUDART_ZERO_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x0000U))
#define CUDART_ONE_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x3F80U))
#define CUDART_INF_FP16 __ushort_as_half(static_cast<unsigned short>(0x7C00U))
#define CUDART_NAN_FP16 __ushort_as_half(static_cast<unsigned short>(0x7FFFU))
#define CUDART_MAX_NORMAL_FP16 __ushort_as_half(static_cast<unsigned short>(0x7BFFU))
#define CUDART_ZERO_FP16 __ushort_as_half(static_cast<unsigned short>(0x0000U))
#define CUDART_ONE_FP16 __ushort_as_half(static_cast<unsigned short>(0x3C00U))
