#!/usr/bin/env bash
# The CI compile gate: installs the pinned NVRTC 13.0 wheels (nvidia-cuda-nvrtc; headers from
# nvidia-cuda-runtime, and crt/mma.h for the attention kernels from nvidia-cuda-crt) into a
# virtual environment, then compiles every kernel for sm_90 with the engine's own options
# (`softprompt kernels`, which adds `-Xptxas -v`) and prints registers, shared memory, stack
# frame and spills per kernel. Fails on a compile error or on any register spill. No GPU needed.
# With NVRTC on LD_LIBRARY_PATH, build.rs also compiles every kernel at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${NVRTC_VENV:-.nvrtc-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*"
cu13=$("$venv/bin/python" -c 'import nvidia, os
for p in nvidia.__path__:
    d = os.path.join(p, "cu13")
    if os.path.exists(os.path.join(d, "lib", "libnvrtc.so.13")): print(d); break')
# NVRTC_INSTALL_ONLY=1: just the wheels (scripts/gpu_check.sh prepare takes their headers)
[ "${NVRTC_INSTALL_ONLY:-0}" = 1 ] && exit 0
export LD_LIBRARY_PATH="$cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SOFTPROMPT_CUDA_INCLUDE="$cu13/include"
cargo run --release --locked --quiet -- kernels --arch sm_90
