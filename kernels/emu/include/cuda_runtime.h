// Stand-in for CUDA's cuda_runtime.h under the CPU emulator: everything lives in cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
