#!/usr/bin/env python3
"""Compiles kernels/*.cu with NVRTC for sm_90, as the engine does at start-up, and prints the
compiler's resource report per kernel (registers, spills, stack frame, shared memory).
Exits 1 on a compile error or on any register spill or stack frame.

Needs the 13.0 wheels (the project pins NVRTC 13.0: newer NVRTC emits PTX a 13.0 driver rejects):
    python3 -m venv .venv
    .venv/bin/pip install 'nvidia-cuda-nvrtc==13.0.*' 'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-crt==13.0.*'
nvidia-cuda-runtime has cuda_bf16.h and mma.h; mma.h includes crt/mma.h, which is in
nvidia-cuda-crt. Then:
    .venv/bin/python scripts/nvrtc_check.py [kernels/attention.cu ...]
"""
import ctypes
import glob
import os
import re
import sys


def cuda_root():
    import nvidia  # namespace package of the wheels

    for base in nvidia.__path__:
        root = os.path.join(base, "cu13")
        if os.path.exists(os.path.join(root, "lib", "libnvrtc.so.13")):
            return root
    sys.exit("libnvrtc.so.13 not found: install the nvidia-cuda-nvrtc==13.0.* wheel")


def compile_file(nvrtc, path, include):
    with open(path, "rb") as f:
        source = f.read()
    prog = ctypes.c_void_p()
    check = lambda rc, what: rc == 0 or sys.exit(f"{what} failed: {nvrtc.nvrtcGetErrorString(rc).decode()}")
    check(nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source, os.path.basename(path).encode(), 0, None, None),
          "nvrtcCreateProgram")
    opts = [b"--gpu-architecture=sm_90", b"--std=c++17", b"--include-path=" + include.encode(),
            b"--ptxas-options=-v", b"--ptxas-options=--warn-on-spills", b"--ptxas-options=--warn-on-local-memory-usage"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    cubin_size = ctypes.c_size_t()
    if rc == 0:
        nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(cubin_size))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), cubin_size.value


def main(argv):
    root = cuda_root()
    # NVRTC dlopens its builtins by name: load them first so that no LD_LIBRARY_PATH is needed.
    ctypes.CDLL(os.path.join(root, "lib", "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(os.path.join(root, "lib", "libnvrtc.so.13"))
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value}, sm_90")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = argv[1:] or sorted(glob.glob(os.path.join(here, "kernels", "*.cu")))
    bad = False
    for path in files:
        rc, log, cubin = compile_file(nvrtc, path, os.path.join(root, "include"))
        print(f"== {os.path.relpath(path, here)}: {'ok' if rc == 0 else 'FAILED'} ({cubin} bytes of CUBIN)")
        kernel = None
        for line in log.splitlines():
            m = re.search(r"Compiling entry function '(\w+)'", line)
            if m:
                kernel = m.group(1)
            if rc != 0 or "warning" in line or "error" in line:
                print("   ", line)
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m and any(int(x) for x in m.groups()):
                bad = True
            m = re.search(r"Used (\d+) registers.*", line)
            if m:
                print(f"    {kernel}: {m.group(0).strip()}")
            m = re.search(r"\d+ bytes stack frame.*", line)
            if m:
                print(f"    {kernel}: {m.group(0).strip()}")
        bad |= rc != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
