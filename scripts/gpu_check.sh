#!/usr/bin/env bash
# One command for a lent H200 (well inside 10 minutes): the resource report of every kernel
# compiled by the machine's own NVRTC, the kernel tests (bf16, float32 and mixed builds), `parity
# --device cuda` on every fixture in bf16 (generation in float32 only), on the harsh and the
# P-tuning ones with --precision f32 at 1e-4 and on the 12 realistic ones with --precision
# mixed at 1e-3,
# the attention kernels on wmma and on raw mma.sync (SOFTPROMPT_ATTN_FWD, _BWD_DQ and _BWD_DKDV =
# wmma, then = mma: per-kernel device time from `softprompt profile`, and a bench line with mma),
# and `softprompt bench` beside scripts/bench_torch.py on the same GPU. Writes
# bench/results/<date>-<commit>.json plus a short table.
#
# The device machine has no Rust toolchain and no network, so the binaries are built here:
#   scripts/gpu_check.sh prepare     # here: release binary + kernel test binary into .gpu/
#   scripts/gpu_check.sh run         # there, from the repository root, with .gpu carried
# (the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".gpu"], timeout_s=540);
# bench lines that would run past GPU_CHECK_BUDGET, 480 s, are skipped and say so)
# then, here, copy the results file it left under $OUT into bench/results/ and commit it.
# The binaries link only glibc (2.36 here; the device image is newer), libcuda, NVRTC and
# cuBLAS are loaded at run time from the device's CUDA install or its Python wheels.
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    set -e
    cargo build --release --locked
    local test_bin
    test_bin=$(cargo test --release --locked --no-run --test cuda_kernels --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_kernels":
        print(m["executable"])' | tail -1)
    rm -rf .gpu && mkdir -p .gpu
    cp target/release/softprompt .gpu/softprompt
    cp "$test_bin" .gpu/cuda_kernels
    # cuda_bf16.h and crt/mma.h (5 MB) from the compile gate's pinned wheels, for a machine
    # whose only CUDA is PyTorch's wheels
    NVRTC_INSTALL_ONLY=1 bash scripts/nvrtc_check.sh
    cp -r "$(ls -d .nvrtc-venv/lib/python3*/site-packages/nvidia/cu13/include | head -1)" .gpu/include
    # debug info would take the pair past the 64 MiB a device call may carry
    strip --strip-debug .gpu/softprompt .gpu/cuda_kernels
    git rev-parse --short HEAD > .gpu/commit
    ls -la .gpu
}

# libcuda comes with the driver; NVRTC, cuBLAS and the headers from the CUDA toolkit when it is
# there (/usr/local/cuda), else from the Python wheels next to PyTorch.
cuda_env() {
    local cu13=""
    cu13=$("${PYTHON:-python3}" -c 'import nvidia, os
for p in nvidia.__path__:
    d = os.path.join(p, "cu13")
    if os.path.isdir(os.path.join(d, "lib")): print(d); break' 2>/dev/null || true)
    local libs="" inc=""
    for d in /usr/local/cuda/lib64 ${cu13:+$cu13/lib}; do
        ls "$d"/libnvrtc.so* >/dev/null 2>&1 && libs="$libs:$d"
    done
    # PyTorch's wheels lack crt/mma.h: `prepare` carries the pinned 13.0 headers in .gpu/include
    # (a dry run here finds them in the compile gate's venv, scripts/nvrtc_check.sh)
    local gate
    gate=$(ls -d "$PWD"/.nvrtc-venv/lib/python3*/site-packages/nvidia/cu13/include 2>/dev/null | head -1)
    for d in /usr/local/cuda/include ${cu13:+$cu13/include} "$PWD/.gpu/include" ${gate:+"$gate"}; do
        if [ -z "$inc" ] && [ -f "$d/cuda_bf16.h" ] && [ -f "$d/crt/mma.h" ]; then inc=$d; fi
    done
    export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export SOFTPROMPT_CUDA_INCLUDE="$inc"
    export SOFTPROMPT_CACHE="${TMPDIR:-/tmp}/softprompt-cache"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "SOFTPROMPT_CUDA_INCLUDE=$SOFTPROMPT_CUDA_INCLUDE"
}

run() {
    local out=${OUT:-bench/tmp/gpu_check} bin=.gpu/softprompt dev=cuda tdev=cuda
    local py=${PYTHON:-python3}
    # GPU_CHECK_DRY=1: every step on a machine without a GPU (the emu device from an emu build
    # in target/release, PyTorch on the CPU, tiny shapes), to try this script before a session
    # with a device; its numbers mean nothing.
    local dry=${GPU_CHECK_DRY:-0}
    if [ "$dry" = 1 ]; then
        bin=target/release/softprompt dev=emu tdev=cpu out=${OUT:-bench/tmp/gpu_check_dry}
    fi
    mkdir -p "$out"
    local commit date results
    commit=$(cat .gpu/commit 2>/dev/null || echo unknown)
    date=$(date -u +%Y-%m-%d)
    results="$out/$date-$commit.json"
    if [ "$dry" = 1 ]; then
        echo "dry run on $(hostname): emu device, PyTorch on the CPU" | tee "$out/gpu.txt"
    else
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    fi
    # not in a pipeline: its exports must reach the steps below
    cuda_env > "$out/env.txt"
    cat "$out/env.txt"
    local status=0
    # the device tool stops the command at its timeout_s (540 below) and the results file is
    # written last: bench lines that could run past this budget (seconds from here, with room
    # for the rest) are skipped, so that it always is
    local budget=${GPU_CHECK_BUDGET:-480}
    local start=$SECONDS
    # GPU_CHECK_STEPS: the steps to run (a lease too short for all of them runs them over two
    # calls); GPU_CHECK_BENCH: an extended regex the bench lines ("spec|impls|limit") must match
    local steps=" ${GPU_CHECK_STEPS:-report tests parity ceiling attn bench} "
    local bench_filter=${GPU_CHECK_BENCH:-.}
    step() { [[ $steps == *" $1 "* ]]; }
    # a parity run that hangs on the device must not eat the bench's time or the results file
    parity_time_left() {
        (( SECONDS - start + 60 <= budget )) && return 0
        echo "skipped (the ${budget} s budget is spent): $1" | tee -a "$out/parity.log"
        status=1; return 1
    }
    : > "$out/parity.log"
    : > "$out/bench.jsonl"
    if step report; then
    echo "== kernels: NVRTC resource report (sm_90)"
    timeout 120 "$bin" kernels --arch sm_90 --json > "$out/kernels.json" 2> "$out/kernels.err" || status=1
    cat "$out/kernels.err"
    # the table from the same report (compiling the three builds again would cost a minute)
    "$py" - "$out/kernels.json" <<'PY' | tail -40
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["kernels"]
except Exception as e:
    raise SystemExit(f"no NVRTC report: {e}")
print(f"{'kernel':<28} {'file':<22} {'regs':>5} {'smem(B)':>8} {'stack':>6} {'spill st/ld':>12}")
for r in rows:
    print(f"{r['kernel']:<28} {r['file']:<22} {r['registers']:>5} {r['smem_bytes']:>8} {r['stack_bytes']:>6} "
          f"{str(r['spill_stores']) + '/' + str(r['spill_loads']):>12}")
spills = [r["kernel"] + " (" + r["file"] + ")" for r in rows if r["spill_stores"] or r["spill_loads"]]
print("spills: " + (", ".join(spills) if spills else "none") + f" ({len(rows)} kernels)")
PY
    fi
    if step tests; then
    echo "== kernel tests on the $dev device (bf16, float32 and mixed builds)"
    if [ "$dry" = 1 ]; then
        # .gpu/cuda_kernels is built without the emulator; the emu tests need the emu build
        SOFTPROMPT_TEST_VERBOSE=1 timeout 600 cargo test --release --locked --features emu --test cuda_kernels -- emu --nocapture > "$out/kernel_tests.log" 2>&1 || status=1
    else
        SOFTPROMPT_SYNC=1 SOFTPROMPT_TEST_VERBOSE=1 timeout 240 .gpu/cuda_kernels cuda --test-threads 1 --nocapture > "$out/kernel_tests.log" 2>&1 || status=1
    fi
    grep -E "^(FAIL|test |test result)" "$out/kernel_tests.log" | tail -30
    if ! grep -qE "^test result: ok\. [1-9]" "$out/kernel_tests.log"; then
        echo "FAIL: no kernel test ran"; status=1
    fi
    fi
    if step parity; then
    echo "== parity --device $dev (bf16; tests/parity_emu.rs's tolerances)"
    for ref in tests/fixtures/*/ref_*.safetensors tests/fixtures/realistic/*/ref_*.safetensors; do
        local model tol; model=$(dirname "$ref")
        # greedy tokens on bf16 activations part ways with float32's after a near tie, and
        # every later logit with them: as tests/parity_emu.rs, generation is checked in f32
        if [[ $(basename "$ref") == ref_generate_* ]]; then
            echo "skip (generation: f32 below) $ref"; continue
        fi
        parity_time_left "$ref" || continue
        # tests/parity_emu.rs's tolerance: the harsh fixtures max(2e-2, 2x PyTorch's worst bf16
        # error); the realistic set 2e-2, or for a ReLU model max(2e-2, 2x PyTorch's on the
        # prompt gradient) (parity takes one tolerance for all tensors: the others sit far below)
        tol=$(python3 - "$ref" <<'PY'
import json, re, sys
path = sys.argv[1]
name = "/".join(path.split("/")[-2:])[: -len(".safetensors")]
rows = {m.group(1): [float(m.group(i)) for i in (2, 3, 4)]
        for m in re.finditer(r'\(\s*"([^"]+)",\s*([-\d.e]+),\s*([-\d.e]+),\s*([-\d.e]+),?\s*\)',
                             open("tests/parity_emu.rs").read())}  # rustfmt may split a row
row = rows.get(name, [0.0, 0.0, 0.0])
if "/realistic/" in path:
    configs = json.load(open("tests/fixtures/realistic/random_configs.json"))["configs"]
    act = next(c.get("act", c.get("ff", "")) for c in configs if c["name"] == name.split("/")[0])
    print(max(2e-2, 2 * row[2]) if "relu" in act else 2e-2)
else:
    print(max(2e-2, 2 * max(row)))
PY
)
        if timeout 60 "$bin" parity --device "$dev" --precision bf16 --tol "$tol" --model "$model" --reference "$ref" >> "$out/parity.log" 2>&1; then
            echo "PASS $ref"
        else
            echo "FAIL $ref"; status=1
        fi
    done
    # the harsh fixtures (every head and pooling); the emulator also runs the realistic set
    echo "== parity --device $dev --precision f32 (float32 kernels and GEMMs, at 1e-4)"
    for ref in tests/fixtures/*/ref_*.safetensors tests/fixtures/deep/*/ref_*ptuning*.safetensors; do
        # a deep-prompt reference sits in deep/<model>/ beside the model's own folder
        local model=${ref%/*}; model=${model/\/deep\//\/}
        parity_time_left "f32 $ref" || continue
        if timeout 60 "$bin" parity --device "$dev" --precision f32 --model "$model" --reference "$ref" >> "$out/parity.log" 2>&1; then
            echo "PASS f32 $ref"
        else
            echo "FAIL f32 $ref"; status=1
        fi
    done
    # bf16-exact weights: tests/parity_emu.rs's MIXED_REALISTIC_TOL, ReLU models included
    echo "== parity --device $dev --precision mixed (bf16 weights, float32 activations, at 1e-3)"
    for ref in tests/fixtures/realistic/*/ref_*.safetensors; do
        parity_time_left "mixed $ref" || continue
        if timeout 60 "$bin" parity --device "$dev" --precision mixed --tol 1e-3 --model "$(dirname "$ref")" --reference "$ref" >> "$out/parity.log" 2>&1; then
            echo "PASS mixed $ref"
        else
            echo "FAIL mixed $ref"; status=1
        fi
    done
    fi
    if step ceiling; then
    echo "== bf16 GEMM ceiling (cuBLAS through torch, 8192^3, median of 20)"
    timeout 60 "$py" - "$tdev" > "$out/gemm_ceiling.json" 2>> "$out/bench.err" <<'PY' || status=1
import json, sys, torch
if sys.argv[1] != "cuda":
    print(json.dumps({"gemm": "skipped: dry run", "tflops": float("nan")}))
    raise SystemExit
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); a @ b; e.record(); torch.cuda.synchronize()
    times.append(s.elapsed_time(e))
ms = sorted(times)[len(times) // 2]
print(json.dumps({"gemm": f"{n}x{n}x{n} bf16", "ms": ms, "tflops": 2 * n**3 / ms / 1e9}))
PY
    cat "$out/gemm_ceiling.json"
    fi
    : > "$out/attn_mma.txt"  # goes into the results file as "attn_mma"
    if step attn; then
    # kernels/ATTENTION.md: attention_fwd, attention_bwd_dq and attention_bwd_dkdv (wmma, the
    # default) against their mma twins (raw mma.sync, the scores in registers) on issue #16's
    # Llama shape (D = 128, causal): the per-kernel device time of one profiled step with all
    # three of each, then one bench line with mma
    echo "== attention: SOFTPROMPT_ATTN_FWD, _BWD_DQ and _BWD_DKDV = wmma vs mma"
    local attn_spec="llama-3.2-3b --batch 4 --seq 768 --prompt 200 --target-len 256" attn_limit=90
    [ "$dry" = 1 ] && attn_spec="bert-base --batch 1 --seq 8 --prompt 2" attn_limit=120
    for kern in wmma mma; do
        if (( SECONDS - start + attn_limit > budget )); then
            echo "skipped (the ${budget} s budget is spent): profile with $kern" | tee -a "$out/attn_mma.txt"
            continue
        fi
        echo "-- SOFTPROMPT_ATTN_FWD=$kern SOFTPROMPT_ATTN_BWD_DQ=$kern SOFTPROMPT_ATTN_BWD_DKDV=$kern: profile --preset $attn_spec" >> "$out/attn_mma.txt"
        # shellcheck disable=SC2086
        SOFTPROMPT_ATTN_FWD=$kern SOFTPROMPT_ATTN_BWD_DQ=$kern SOFTPROMPT_ATTN_BWD_DKDV=$kern \
            timeout "$attn_limit" "$bin" profile --preset $attn_spec --device "$dev" \
            >> "$out/attn_mma.txt" 2>&1 || status=1
    done
    grep -E "^(-- |skipped|attention_(fwd|bwd))" "$out/attn_mma.txt"
    if (( SECONDS - start + attn_limit <= budget )); then
        echo "-- SOFTPROMPT_ATTN_FWD=mma SOFTPROMPT_ATTN_BWD_DQ=mma SOFTPROMPT_ATTN_BWD_DKDV=mma: bench --preset $attn_spec" >> "$out/attn_mma.txt"
        # shellcheck disable=SC2086
        SOFTPROMPT_ATTN_FWD=mma SOFTPROMPT_ATTN_BWD_DQ=mma SOFTPROMPT_ATTN_BWD_DKDV=mma timeout "$attn_limit" "$bin" bench --preset $attn_spec --device "$dev" --steps 3 --warmup 1 --json 2>> "$out/bench.err" | tee -a "$out/attn_mma.txt" || status=1
    fi
    fi
    echo "== bench (softprompt vs PyTorch + PEFT, bf16, same GPU)"
    # spec | implementations (s: softprompt, t: PyTorch + PEFT with SDPA) | time limit, s
    local target="t5-xl --batch 32 --seq 512 --target-len 16 --prompt 100"
    # issue #16's GPU targets: PEFT's MetaMathQA shape (Llama-3.2-3B, bf16, batch 4, 768 tokens;
    # 200 prompt rows, the loss on the last 256 tokens), at least 2x PyTorch + PEFT's tokens/s;
    # and Llama-3.1-8B training at that shape on one H200
    local llama="llama-3.2-3b --batch 4 --seq 768 --prompt 200 --target-len 256"
    while IFS='|' read -r spec impls limit; do
        [ -n "$spec" ] || continue
        step bench && [[ "$spec|$impls|$limit" =~ $bench_filter ]] || continue
        local runs=1
        [[ $impls == *t* && $impls == *s* ]] && runs=2
        if (( SECONDS - start + runs * limit > budget )); then
            echo "skipped (the ${budget} s budget leaves $(( budget - SECONDS + start )) s): $spec" | tee -a "$out/bench.err"
            continue
        fi
        if [[ $impls == *s* ]]; then
            # shellcheck disable=SC2086
            timeout "$limit" "$bin" bench --preset $spec --device "$dev" --steps 3 --warmup 1 --json >> "$out/bench.jsonl" 2>> "$out/bench.err" || status=1
        fi
        if [[ $impls == *t* ]]; then
            # shellcheck disable=SC2086
            timeout "$limit" "$py" scripts/bench_torch.py --preset $spec --device "$tdev" --attn sdpa --steps 3 --warmup 1 --json >> "$out/bench.jsonl" 2>> "$out/bench.err" || status=1
        fi
    done < <(if [ "$dry" = 1 ]; then cat <<DRY
bert-base --batch 1 --seq 8 --prompt 2|st|120
t5-base --batch 1 --seq 8 --target-len 2 --prompt 2|st|120
t5-base --batch 1 --seq 8 --target-len 2 --prompt 2 --recompute layer|st|120
t5-base --batch 1 --seq 8 --target-len 2 --prompt 2 --precision mixed|s|120
bloom-560m --batch 1 --seq 8 --target-len 2 --prompt 2|s|180
DRY
    else cat <<SPECS
bert-base --batch 32 --seq 128|st|60
t5-base --batch 8 --seq 256 --target-len 16 --prompt 100|st|60
t5-base --batch 8 --seq 256 --target-len 16 --prompt 100 --precision mixed|s|90
$llama|st|120
$llama --recompute layer|s|90
llama-3.1-8b --batch 4 --seq 768 --prompt 200 --target-len 256 --recompute layer|s|150
$target|st|180
$target --recompute layer|st|180
t5-xxl --batch 32 --seq 512 --target-len 16 --prompt 100 --recompute layer|s|240
SPECS
    fi)
    "$py" - "$out" "$results" "$commit" <<'PY'
import json, sys, os
out, results, commit = sys.argv[1:4]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"error": str(e)}
# one JSON document per run: softprompt prints one line, bench_torch.py an indented block
bench, text, pos, dec = [], open(os.path.join(out, "bench.jsonl")).read(), 0, json.JSONDecoder()
while (start := text.find("{", pos)) >= 0:
    try:
        doc, pos = dec.raw_decode(text, start)
        bench.append(doc)
    except json.JSONDecodeError:
        pos = start + 1
doc = {"commit": commit, "gpu": open(os.path.join(out, "gpu.txt")).read().strip(),
       "kernels": load("kernels.json"), "gemm_ceiling": load("gemm_ceiling.json"), "bench": bench,
       "attn_mma": open(os.path.join(out, "attn_mma.txt")).read()[-20000:],
       "parity_log": open(os.path.join(out, "parity.log")).read()[-20000:]}
json.dump(doc, open(results, "w"), indent=1)
ceiling = doc["gemm_ceiling"].get("tflops") or float("nan")
print(f"bf16 GEMM ceiling: {ceiling:.0f} TFLOP/s")
print(f"{'impl':<17} {'preset':<8} {'B':>3} {'recompute':>9} {'step_ms':>9} {'tokens/s':>10} {'TFLOP/s':>8} {'of ceil':>7} {'peak MB':>9}")
def impl(r):
    # the mixed build (bf16 weights, float32 activations) beside the bf16 engine
    mixed = r.get("dtype") == "f32" and r.get("weights_dtype") == "bf16"
    return r.get("impl", "?") + ("-mixed" if mixed else "")
for r in bench:
    print(f"{impl(r):<17} {r.get('preset','?'):<8} {r.get('batch',0):>3} {r.get('recompute','?'):>9} "
          f"{r.get('step_ms',0):>9.2f} {r.get('tokens_per_s',0):>10.0f} {r.get('tflops',0):>8.2f} "
          f"{r.get('tflops',0) / ceiling:>7.1%} {r.get('peak_bytes',0)/1e6:>9.1f}")
# the targets of bench/README.md: softprompt over PyTorch + PEFT on the same preset and batch
def key(r, rec=None):
    return (r.get("preset"), r.get("batch"), r.get("seq"), rec or r.get("recompute"))
torch_runs = {key(r): r for r in bench if r.get("impl") == "pytorch+peft"}
print(f"\n{'softprompt / PyTorch':<30} {'throughput':>10} {'peak':>6} {'peak vs torch none':>19}")
for r in bench:
    t = torch_runs.get(key(r))
    if r.get("impl") != "softprompt" or t is None:
        continue
    none = torch_runs.get(key(r, "none"), {})
    ratio = lambda a, b: a / b if a and b else float("nan")
    print(f"{r['preset'] + ' B' + str(r['batch']) + ' ' + r['recompute'] + impl(r)[10:]:<30} "
          f"{ratio(r.get('tokens_per_s'), t.get('tokens_per_s')):>10.2f} "
          f"{ratio(r.get('peak_bytes'), t.get('peak_bytes')):>6.2f} "
          f"{ratio(r.get('peak_bytes'), none.get('peak_bytes')):>19.2f}")
print("wrote", results)
PY
    return $status
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: scripts/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
