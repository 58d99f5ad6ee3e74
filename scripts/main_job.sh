#!/usr/bin/env bash
# The main job: fetch the assets if they are missing, build, train a 12-row prompt (with the
# cls task's linear head) on all-MiniLM-L6-v2 for the English movie-review sentences on the
# CPU, printing dev/test accuracy as it goes, then score the saved prompt on the test split
# with `softprompt eval --json`.
#
# usage: scripts/main_job.sh [extra train flags]     (OUT=dir to change the output folder)
# Rerunning continues an interrupted run from its checkpoint (--resume); a finished run is
# only re-scored. Delete the output folder to train from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-runs/minilm_sentiment_en}"
start=$(date +%s)
scripts/fetch_assets.sh
cargo build --release --quiet
built=$(date +%s)
./target/release/softprompt train \
  --model assets/all-MiniLM-L6-v2 \
  --train assets/sentiment_en/train.jsonl \
  --dev assets/sentiment_en/dev.jsonl \
  --test assets/sentiment_en/test.jsonl \
  --out "$OUT" \
  --task cls --pooling mean \
  --prompt-len 12 --init text --init-text "Is this movie review positive or negative?" \
  --optimizer adamw --lr 0.03 --schedule linear \
  --batch-size 32 --max-steps 120 --eval-every 40 --seed 0 \
  --resume "$@"
echo "== softprompt eval --json --prompt $OUT --data assets/sentiment_en/test.jsonl"
./target/release/softprompt eval --prompt "$OUT" --data assets/sentiment_en/test.jsonl --json
end=$(date +%s)
echo "main job: $((end - start)) s wall ($((built - start)) s fetch + build, $((end - built)) s train + eval)"
