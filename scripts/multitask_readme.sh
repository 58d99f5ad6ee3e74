#!/usr/bin/env bash
# The multi-task run of docs/multitask.md (#17 item 2): the English and the Chinese sentiment
# prompts on all-MiniLM-L6-v2 trained together (`train --task-data en=... --task-data zh=...`)
# against two separate runs with the same flags (the main job's: cls, mean pooling, 12 rows from
# text, AdamW 0.03 linear, batch 32, seed 0). To fit a loaded 2-core machine: the full training
# files, the first $N rows of each dev and test file, --max-steps $STEPS, --max-len 64.
# usage: scripts/multitask_readme.sh   (OUT=dir, STEPS=40, N=300)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-runs/multitask_readme}"; STEPS="${STEPS:-40}"; N="${N:-300}"
rm -rf "$OUT"; mkdir -p "$OUT/data"
for l in en zh; do
  mkdir -p "$OUT/data/$l"
  cp "assets/sentiment_$l/train.jsonl" "$OUT/data/$l/"
  head -"$N" "assets/sentiment_$l/dev.jsonl" > "$OUT/data/$l/dev.jsonl"
  head -"$N" "assets/sentiment_$l/test.jsonl" > "$OUT/data/$l/test.jsonl"
done
flags=(--model assets/all-MiniLM-L6-v2 --task cls --pooling mean --max-len 64
  --prompt-len 12 --init text --init-text "Is this movie review positive or negative?"
  --optimizer adamw --lr 0.03 --schedule linear --batch-size 32 --max-steps "$STEPS"
  --eval-every $((STEPS / 2)) --seed 0 --no-progress --log-every 10)
bin=./target/release/softprompt
t0=$(date +%s)
$bin train "${flags[@]}" --task-data en="$OUT/data/en" --task-data zh="$OUT/data/zh" --out "$OUT/together"
t1=$(date +%s)
for l in en zh; do
  $bin train "${flags[@]}" --train "$OUT/data/$l/train.jsonl" --dev "$OUT/data/$l/dev.jsonl" \
    --test "$OUT/data/$l/test.jsonl" --out "$OUT/alone_$l"
  date +%s > "$OUT/t_$l"
done
t2=$(date +%s)
echo "together: $((t1 - t0)) s wall; alone: en $(( $(cat "$OUT/t_en") - t1 )) s + zh $(( $(cat "$OUT/t_zh") - $(cat "$OUT/t_en") )) s = $((t2 - t1)) s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
