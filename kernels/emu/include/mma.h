// Stand-in for CUDA's mma.h (nvcuda::wmma) under the CPU emulator: detail/wmma.h, through
// cuda_emu.h like every other stand-in.
#pragma once
#include "../cuda_emu.h"
