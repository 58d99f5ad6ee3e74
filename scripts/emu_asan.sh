#!/usr/bin/env bash
# The kernel tests with the emulated kernels (and the emulator) built with AddressSanitizer:
# any out-of-bounds access of a kernel, in global or shared memory, fails at the faulting line.
# A separate target folder keeps the instrumented build apart from the normal one.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOFTPROMPT_EMU_ASAN=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/asan}
# Rust's own allocations are not instrumented; leak checking would flag the test harness.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
# without the default `serve` feature: its HTTP stack has nothing to do with the kernels
cargo test --release --locked --no-default-features --features emu --test cuda_kernels -- "$@"
