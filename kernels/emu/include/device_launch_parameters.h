// Stand-in for CUDA's device_launch_parameters.h under the CPU emulator: everything lives in cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
