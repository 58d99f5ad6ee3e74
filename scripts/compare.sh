#!/usr/bin/env bash
# Run `softprompt bench` and scripts/bench_torch.py (PyTorch + PEFT) on one preset with the same
# flags, save both JSON outputs, and print them side by side with the ratios softprompt / PyTorch.
#
# usage: scripts/compare.sh PRESET [options] [bench flags...]
#   bench flags   passed to both tools: --batch B --seq T --target-len L --prompt P --device cpu|cuda
#                 --recompute none|mlp|mlp:K|layer --objective pet|mlm --steps N --warmup N (see bench_torch.py),
#                 and the method: --method prompt|p-tuning|prefix --prefix-placement papers|peft
#                 --prefix-projection --encoder-hidden-size N --encoder-reparameterization mlp|lstm
#                 --encoder-num-layers N (PEFT's prefix tuning on T5 is --prefix-placement peft)
#   --vs-prompt   compare with softprompt's own prompt tuning of the same shape (the same flags
#                 less the method's) instead of PyTorch: PEFT's TOKEN_CLS model, which times
#                 BERT's step, refuses prefix tuning on BERT, so this is BERT prefix tuning's
#                 baseline (e.g. bert-base --method prefix --vs-prompt)
#   --out DIR     where the JSON files and logs go (default: <repo>/bench/tmp)
#   --no-eager    PyTorch with SDPA attention only (default: SDPA, then eager)
#   --attn LIST   PyTorch attention implementations to run, comma-separated (e.g. sdpa,eager)
#   --threads N   torch.set_num_threads for PyTorch (softprompt picks its own threads)
#   --rounds N    run the tools N times, interleaved (softprompt, then each PyTorch run, then
#                 again), and report each one's median step time (default 1); on a machine
#                 shared with other jobs, interleaving exposes both tools to the same load
#
# Environment:
#   SOFTPROMPT  the softprompt binary (default <repo>/target/release/softprompt)
#   PYTHON      a Python with torch, transformers and peft (default: python3 if it has them,
#               else /work/venv/bin/python)
#
# Output files, TAG = PRESET plus the flags: DIR/TAG.softprompt.json, DIR/TAG.torch-<attn>.json and
# a .log with each tool's stderr; with --rounds, each round's files carry .rN and the files
# without it hold the medians (step_ms, tokens/s and TFLOP/s; the rest from the median round)
# with every round's step_ms in step_ms_rounds. The table's header names the CPU and the load
# average before and after; its "cpu ms/step" row, each tool's process CPU time per step (all
# threads, spinning included), leaves out the time spent waiting for a core on a busy machine. Ratios are softprompt / PyTorch: below 1 means softprompt is
# faster (step_ms) or smaller (memory); tokens/s and TFLOP/s above 1 mean softprompt is faster.
# "peak - base" is peak_bytes minus rss_baseline_bytes on the CPU (the step's working memory) and
# peak_bytes minus weights_bytes on the GPU.
#
# Exit status: 0 when every run succeeded; 1 when softprompt failed (nothing else is run), or when
# a PyTorch run failed (the table is still printed, with the failure in that column); 2 on usage
# errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

die() { echo "compare.sh: $1" >&2; exit "${2:-1}"; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case $1 in -h | --help) usage; exit 0 ;; -*) die "the first argument must be the preset" 2 ;; esac
preset=$1
shift

out="$repo/bench/tmp"
attns="sdpa,eager"
rounds=1
threads=()
common=()
vs_prompt=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) [[ $# -ge 2 ]] || die "--out needs a directory" 2; out=$2; shift 2 ;;
        --no-eager) attns="sdpa"; shift ;;
        --vs-prompt) vs_prompt=1; shift ;;
        --attn) [[ $# -ge 2 ]] || die "--attn needs a list" 2; attns=$2; shift 2 ;;
        --threads) [[ $# -ge 2 ]] || die "--threads needs a number" 2; threads=(--threads "$2"); shift 2 ;;
        --rounds) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--rounds needs a positive number" 2; rounds=$2; shift 2 ;;
        --json) shift ;;  # always on
        --preset) die "give the preset as the first argument, not with --preset" 2 ;;
        -h | --help) usage; exit 0 ;;
        *) common+=("$1"); shift ;;
    esac
done

# PyTorch has no `--recompute mlp` or `mlp:K` (softprompt recomputing a gated MLP's up
# branch): its baseline is the plain run, `--recompute none`
torch_common=()
prev=
for a in ${common[@]+"${common[@]}"}; do
    if [[ $a == --recompute=mlp || $a == --recompute=mlp:* ]]; then a=--recompute=none; fi
    if [[ $prev == --recompute && ( $a == mlp || $a == mlp:* ) ]]; then a=none; fi
    torch_common+=("$a")
    prev=$a
done

# --vs-prompt: the same flags less the method's, for softprompt's prompt-tuning run
prompt_common=()
skip=0
for a in ${common[@]+"${common[@]}"}; do
    if [[ $skip -eq 1 ]]; then skip=0; continue; fi
    case $a in
        --method | --prefix-placement | --encoder-hidden-size | --encoder-reparameterization | --encoder-num-layers) skip=1 ;;
        --method=* | --prefix-placement=* | --encoder-hidden-size=* | --encoder-reparameterization=* | --encoder-num-layers=* | --prefix-projection) ;;
        *) prompt_common+=("$a") ;;
    esac
done
if [[ $vs_prompt -eq 1 ]]; then attns="prompt"; fi

softprompt=${SOFTPROMPT:-$repo/target/release/softprompt}
[[ -x $softprompt ]] || die "softprompt binary '$softprompt' is missing or not executable (cargo build --release, or set SOFTPROMPT)"

if [[ -n ${PYTHON:-} ]]; then
    python=$PYTHON
elif python3 -c 'import torch, transformers, peft' 2>/dev/null; then
    python=python3
elif [[ -x /work/venv/bin/python ]]; then
    python=/work/venv/bin/python
else
    die "no Python with torch, transformers and peft found; set PYTHON"
fi
command -v python3 >/dev/null || die "python3 (stdlib only) is needed for the table"

mkdir -p "$out"
tag=$preset
for a in ${common[@]+"${common[@]}"}; do tag+="_${a#--}"; done
tag=$(printf '%s' "$tag" | tr -c 'A-Za-z0-9._=-' '_')

# run NAME JSON LOG CMD...: run one tool, keep its stdout as JSON and stderr as LOG. Returns its status.
run() {
    local name=$1 json=$2 log=$3
    shift 3
    { printf '+'; printf ' %q' "$@"; printf ' > %s\n' "$json"; } >&2
    local rc=0
    "$@" >"$json.tmp" 2>"$log" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "compare.sh: $name failed with status $rc; last lines of $log:" >&2
        tail -n 15 "$log" | sed 's/^/    /' >&2
        mv -f "$json.tmp" "$json.failed"
        return "$rc"
    fi
    if ! python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert isinstance(d, dict)' "$json.tmp" 2>/dev/null; then
        echo "compare.sh: $name printed no JSON object on stdout (kept in $json.failed)" >&2
        mv -f "$json.tmp" "$json.failed"
        return 1
    fi
    mv -f "$json.tmp" "$json"
    rm -f "$json.failed"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
sp_json="$out/$tag.softprompt.json"
rm -f "$sp_json"
status=0
IFS=, read -r -a attn_list <<<"$attns"
suffix() { [[ $rounds -eq 1 ]] && echo "" || echo ".r$1"; }
for ((r = 1; r <= rounds; r++)); do
    s=$(suffix "$r")
    run softprompt "$out/$tag$s.softprompt.json" "$out/$tag$s.softprompt.log" \
        "$softprompt" bench --preset "$preset" ${common[@]+"${common[@]}"} --json ||
        die "softprompt bench failed; PyTorch was not run"
    for attn in "${attn_list[@]}"; do
        j="$out/$tag$s.torch-$attn.json"
        rm -f "$j"
        if [[ $vs_prompt -eq 1 ]]; then
            run "softprompt (prompt tuning)" "$j" "$out/$tag$s.torch-$attn.log" \
                "$softprompt" bench --preset "$preset" ${prompt_common[@]+"${prompt_common[@]}"} --json || status=1
            continue
        fi
        run "pytorch ($attn)" "$j" "$out/$tag$s.torch-$attn.log" \
            "$python" "$here/bench_torch.py" --preset "$preset" ${torch_common[@]+"${torch_common[@]}"} --attn "$attn" \
            ${threads[@]+"${threads[@]}"} --json || status=1
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# median NAME: DIR/TAG.NAME.json from the rounds' DIR/TAG.rN.NAME.json (nothing to do for one round)
median() {
    [[ $rounds -eq 1 ]] && return 0
    local files=()
    for ((r = 1; r <= rounds; r++)); do
        [[ -f "$out/$tag.r$r.$1.json" ]] && files+=("$out/$tag.r$r.$1.json")
    done
    rm -f "$out/$tag.$1.json"
    [[ ${#files[@]} -gt 0 ]] || return 0
    python3 - "$out/$tag.$1.json" "${files[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[2:]]
runs.sort(key=lambda d: d["step_ms"])
mid = dict(runs[len(runs) // 2])
for key in ("step_ms", "tokens_per_s", "tflops", "cpu_ms", "step_cpu_ms"):
    # rates sort the other way, so that with an even count of rounds they come from the same
    # round as step_ms (the upper median of times is the lower one of rates)
    vals = sorted((d[key] for d in runs if isinstance(d.get(key), (int, float))),
                  reverse=key in ("tokens_per_s", "tflops"))
    if vals:
        mid[key] = vals[len(vals) // 2]
mid["step_ms_rounds"] = [d["step_ms"] for d in runs]
mid["rounds"] = len(runs)
json.dump(mid, open(sys.argv[1], "w"))
PY
}
median softprompt
torch_files=()
for attn in "${attn_list[@]}"; do
    median "torch-$attn"
    torch_files+=("$attn=$out/$tag.torch-$attn.json")
done
export COMPARE_LOAD="load average ${load_before} before, ${load_after} after; ${rounds} round(s), interleaved, medians"
export COMPARE_VS_PROMPT=$vs_prompt

python3 - "$sp_json" "${torch_files[@]}" <<'EOF' || status=1
"""Print softprompt and the PyTorch runs side by side, with ratios softprompt / PyTorch."""
import json
import os
import sys

sp = json.load(open(sys.argv[1]))
vs_prompt = os.environ.get("COMPARE_VS_PROMPT") == "1"
torch_runs = []
for arg in sys.argv[2:]:
    attn, path = arg.split("=", 1)
    torch_runs.append((attn, json.load(open(path)) if os.path.exists(path) else None))
# the other column's name: a PyTorch attention implementation, or softprompt's prompt tuning
other = (lambda attn: "softprompt prompt") if vs_prompt else (lambda attn: f"pytorch {attn}")

REQUIRED = ("step_ms", "tokens_per_s", "tflops", "saved_bytes", "peak_bytes", "device")
SAME = ("preset", "batch", "seq", "target_len", "prompt", "recompute", "objective")
if not vs_prompt:  # the method and its settings too (an older bench_torch.py says none: prompt tuning)
    SAME += ("method", "method_settings")
    for _, d in torch_runs:
        if d is not None:
            d.setdefault("method", "prompt")
            d.setdefault("method_settings", None)
problems = []
for name, d in [("softprompt", sp)] + [(other(a), d) for a, d in torch_runs if d is not None]:
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        problems.append(f"{name}: missing keys {', '.join(missing)}")
for attn, d in torch_runs:
    if d is None:
        continue
    keys = [k for k in SAME if not (k == "objective" and str(sp.get("preset")).startswith("t5"))]  # T5: seq2seq
    # softprompt's `--recompute mlp` (and `mlp:K`) is measured against PyTorch's plain run
    same = lambda k: sp.get(k) == d.get(k) or (k == "recompute" and str(sp.get(k)).split(":")[0] == "mlp" and d.get(k) == "none")
    diff = [f"{k} {sp.get(k)!r} vs {d.get(k)!r}" for k in keys if k in sp and not same(k)]
    if diff:
        problems.append(f"softprompt and {other(attn)} ran different workloads: " + "; ".join(diff))
if problems:
    sys.exit("compare.sh: " + "\n  ".join(problems))


def flops(d):  # implied FLOPs per step; the two tools must count the same (bench_common.step_flops)
    return d["tflops"] * 1e12 * d["step_ms"] / 1e3


for attn, d in torch_runs:
    if vs_prompt:  # prefix and prompt tuning count different work
        break
    if d is not None and sp["tflops"] > 0 and d["tflops"] > 0 and abs(flops(sp) / flops(d) - 1) > 0.005:
        print(f"warning: the FLOPs per step differ: softprompt {flops(sp):.4g}, pytorch {attn} {flops(d):.4g} "
              "(see scripts/bench_common.py step_flops)", file=sys.stderr)


def above_base(d):
    if d.get("rss_baseline_bytes") is not None:
        return d["peak_bytes"] - d["rss_baseline_bytes"]
    if d.get("weights_bytes") is not None and str(d.get("device", "")).startswith("cuda"):
        return d["peak_bytes"] - d["weights_bytes"]
    return None


MB = 1e6
ROWS = [  # label, getter, format
    ("step_ms", lambda d: d["step_ms"], "{:.1f}"),
    ("rounds' step_ms", lambda d: "/".join(f"{x:.0f}" for x in d["step_ms_rounds"]) if "step_ms_rounds" in d else None, "{}"),
    # the process's CPU time per step, all threads: what a loaded machine's waits leave out
    ("cpu ms/step", lambda d: d.get("cpu_ms", d.get("step_cpu_ms")), "{:.0f}"),
    ("tokens/s", lambda d: d["tokens_per_s"], "{:.0f}"),
    ("TFLOP/s", lambda d: d["tflops"], "{:.3f}"),
    ("saved MB", lambda d: d["saved_bytes"] / MB, "{:.1f}"),
    ("peak MB", lambda d: d["peak_bytes"] / MB, "{:.0f}"),
    ("peak - base MB", lambda d: None if above_base(d) is None else above_base(d) / MB, "{:.0f}"),
]

header = ["", "softprompt " + sp.get("method", "prompt")]
for attn, d in torch_runs:
    header += [other(attn), "ratio"]
table = [header]
for label, get, fmt in ROWS:
    v = get(sp)
    row = [label, "-" if v is None else fmt.format(v)]
    for attn, d in torch_runs:
        if d is None:
            row += ["FAILED", "-"]
            continue
        w = get(d)
        row.append("-" if w is None else fmt.format(w))
        numeric = isinstance(v, (int, float)) and isinstance(w, (int, float))
        row.append("-" if not numeric or w == 0 else f"{v / w:.3f}")
    table.append(row)

shape = f"B={sp['batch']} T={sp['seq']} P={sp['prompt']}"
shape += f" L={sp['target_len']}" if str(sp["preset"]).startswith("t5") else f" {sp.get('objective', '')}"
settings = sp.get("method_settings") or {}
method = sp.get("method", "prompt") + "".join(
    f" {k}={v}" for k, v in settings.items() if k != "method" and v is not None)
print(f"{sp['preset']} {shape} recompute={sp.get('recompute')} method: {method}")
print(f"  cpu: {sp.get('cpu', '?')}; {os.environ.get('COMPARE_LOAD', '')}")
print(f"  softprompt: {sp['device']}, {sp.get('dtype', '?')}, cpu kernels {sp.get('cpu_kernels') or '-'}")
for attn, d in torch_runs:
    if d is not None and vs_prompt:
        print(f"  softprompt prompt: the same flags less the method's ({d['device']}, {d.get('dtype', '?')})")
    elif d is not None:
        v = d.get("versions", {})
        print(f"  pytorch {attn}: {d['device']}, {d.get('dtype', '?')}, torch {v.get('torch')}, "
              f"transformers {v.get('transformers')}, peft {v.get('peft')}")
widths = [max(len(r[i]) for r in table) for i in range(len(header))]
for r in table:
    print("  " + r[0].ljust(widths[0]) + "".join("  " + c.rjust(w) for c, w in zip(r[1:], widths[1:])))
print(f"  ratio = softprompt / {'softprompt prompt' if vs_prompt else 'pytorch'} "
      "(time, memory: lower is better; tokens/s, TFLOP/s: higher is better)")
EOF

echo "results: $out/$tag.*.json" >&2
[[ $status -eq 0 ]] || echo "compare.sh: some runs failed (see above)" >&2
exit "$status"
