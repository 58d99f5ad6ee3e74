#!/usr/bin/env bash
# The serve load benchmark (bench/serve.md): 8 prompts on MiniLM (assets/all-MiniLM-L6-v2),
# the same server and offered load twice, with batches that mix prompts and with batches of
# one prompt at a time (--mix-prompts false), the same window. Client and server share the
# machine's cores. Not part of .ci/run.
#
#   bench/serve.sh                       # closed loop, 16 clients, 20 s per mode
#   CONCURRENCY=32 SECONDS_=30 bench/serve.sh
#   RATE=40 bench/serve.sh               # open loop: 40 requests/s offered to both
#   SERVE_ARGS="--threads 1" bench/serve.sh   # more server flags
#   BIN=../main/target/release/softprompt COMMIT=f29c278 bench/serve.sh   # another build's server
#
# After the mixed run, the same server gets the same load with every request on one prompt:
# each batch is then one engine call, the ceiling that the engine's mixed batching (#17 item 1)
# approaches (one pass a batch since prompts of different lengths share it; before e874e16,
# one pass per prompt length: here two). Since BERT prediction skips padded positions
# (bench/serve.md, 2026-12-05) a mixed batch can beat it: its rows average 15 prompt rows, p1's 20.
# Prints each run's line and appends them to bench/results/serve-DATE-COMMIT.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-16}
SECONDS_=${SECONDS_:-20}
WARMUP=${WARMUP:-3}
RATE=${RATE:-}
MAX_BATCH=${MAX_BATCH:-32}
WINDOW_MS=${WINDOW_MS:-5}
TEXTS=${TEXTS:-1}
PORT=${PORT:-8377}
DEVICE=${DEVICE:-cpu}   # the server's --device (cuda: a GPU, the client still on the CPU)
SERVE_ARGS=${SERVE_ARGS:-}  # more server flags, e.g. "--threads 1"
# another build's server (e.g. main's, for a before/after pair), recorded under COMMIT
BIN=${BIN:-target/release/softprompt}
MODEL=assets/all-MiniLM-L6-v2
WORK=${WORK:-target/bench-serve}

cargo build --release --locked --bin softprompt --example serve_load
bin=$BIN
load=target/release/examples/serve_load

# 8 prompts from 2-step training runs on 256 training rows (their accuracy is beside the
# point: only their number and shapes matter); prompt lengths 10 and 20 alternate
mkdir -p "$WORK/prompts"
head -n 256 assets/sentiment_en/train.jsonl > "$WORK/train.jsonl"
for i in 0 1 2 3 4 5 6 7; do
  out="$WORK/prompts/p$i"
  [ -f "$out/adapter_config.json" ] && continue
  "$bin" train --model "$MODEL" --train "$WORK/train.jsonl" --out "$out" --overwrite \
    --prompt-len $((10 + 10 * (i % 2))) --max-steps 2 --batch-size 8 --seed "$i" \
    --no-progress > "$WORK/train_p$i.log" 2>&1
done

commit=${COMMIT:-$(git rev-parse --short HEAD)}
results="bench/results/serve-$(date -u +%F)-$commit.jsonl"
mkdir -p bench/results
load_args=(--url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --seconds "$SECONDS_"
  --warmup "$WARMUP" --texts-per-request "$TEXTS" --data assets/sentiment_en/test.jsonl)
[ -n "$RATE" ] && load_args+=(--rate "$RATE")
# the load client's JSON line, with the settings and the machine's load average (other work
# on the machine shows there) added, into $results
record() {
  tail -n 1 "$1" | sed "s/}\$/,\"commit\":\"$commit\",\"max_batch\":$MAX_BATCH,\"window_ms\":$WINDOW_MS,\"cores\":$(nproc),\"device\":\"$DEVICE\",\"serve_args\":\"$SERVE_ARGS\",\"loadavg_1m\":$(cut -d' ' -f1 /proc/loadavg)}/" >> "$results"
}

# a process's user + system CPU seconds so far
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# a failed run (set -e) leaves no server behind
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; true' EXIT
for mix in true false; do
  tag=$([ "$mix" = true ] && echo mixed || echo one-prompt)
  # the last run's "listening on" must not be read before the new server truncates the file
  rm -f "$WORK/serve_$tag.out"
  "$bin" serve --model "$MODEL" --prompts "$WORK/prompts" --port "$PORT" \
    --max-batch "$MAX_BATCH" --batch-window-ms "$WINDOW_MS" --mix-prompts "$mix" --device "$DEVICE" $SERVE_ARGS \
    > "$WORK/serve_$tag.out" 2> "$WORK/serve_$tag.err" &
  server=$!
  for _ in $(seq 100); do
    grep -q "^listening on" "$WORK/serve_$tag.out" 2>/dev/null && break
    sleep 0.2
  done
  grep -q "^listening on" "$WORK/serve_$tag.out" || { cat "$WORK/serve_$tag.err"; exit 1; }
  echo "== $tag (--mix-prompts $mix, --max-batch $MAX_BATCH, --batch-window-ms $WINDOW_MS)"
  cpu0=$(cpu_seconds "$server")
  /usr/bin/time -f "  load client CPU %U + %S s" "$load" "${load_args[@]}" --tag "$tag" \
    2> "$WORK/load_$tag.time" | tee "$WORK/load_$tag.txt"
  # the CPU the pair used: the server's (engine, HTTP) and the client's, of the 2 cores
  echo "  server CPU $(echo "$(cpu_seconds "$server") - $cpu0" | bc) s; $(tail -n 1 "$WORK/load_$tag.time")"
  # the server's own view: rows per batch, and the engine's busy seconds (against the
  # warm-up + measured span: how much of it the engine thread worked)
  curl -s "http://127.0.0.1:$PORT/metrics" \
    | grep -E "^softprompt_(batch_rows_(sum|count)|tokens_per_second|engine_seconds_total|tokens_total)" | sed 's/^/  /' || true
  record "$WORK/load_$tag.txt"
  if [ "$mix" = true ]; then
    # the "ceiling" (see the header): every request on one prompt (p1, 20 rows, the longer
    # length), so each batch is one engine call
    echo "== ceiling: the same load, every request on prompt p1"
    "$load" "${load_args[@]}" --prompts p1 --tag one-prompt-load | tee "$WORK/load_ceiling.txt"
    record "$WORK/load_ceiling.txt"
  fi
  kill -TERM "$server"
  wait "$server"
done
echo "appended to $results"
