#!/usr/bin/env python3
"""PyTorch + PEFT reference pipeline for softprompt.

Builds tiny, randomly initialised BERT and T5 models as ordinary Hugging Face folders
(config.json, safetensors weights, tokenizer.json, tokenizer_config.json,
special_tokens_map.json), runs PEFT prompt tuning on fixed batches in float32 on the CPU, and
writes reference files in the format of shared/docs/reference-format.md (format 1).

    /work/venv/bin/python scripts/torch_reference.py [--out tests/fixtures] [--self-check]
    /work/venv/bin/python scripts/torch_reference.py --check-only [--out tests/fixtures]
    /work/venv/bin/python scripts/torch_reference.py --random-configs N --out DIR [--seed S] [--self-check]

Everything is offline (HF_HUB_OFFLINE=1) and byte-reproducible: two runs write files with
identical sha256 sums. See tests/fixtures/README.md for what each fixture is.
"""

# The code lives in the package scripts/torch_ref/ (see its __init__.py for what is where); this
# file stays the entry point, the path the fixtures' `producer` names. Importing torch_ref first
# sets up the process (offline, CPU, one thread, deterministic algorithms).
import argparse
import hashlib
import os

from torch_ref import weights
from torch_ref.common import log
from torch_ref.fixtures import DEEP_NAMES, build_fixtures, build_random_configs
from torch_ref.selfcheck import self_check

# Re-exports for the scripts that `import torch_reference as tr` (bf16_baseline.py, bf16_sweep.py).
# WEIGHTS is deliberately not among them (a copy here would be stale): set tr.weights.WEIGHTS.
from torch_ref.bert_t5 import *  # noqa: F401,F403
from torch_ref.check import *  # noqa: F401,F403
from torch_ref.check_deep import *  # noqa: F401,F403
from torch_ref.common import *  # noqa: F401,F403
from torch_ref.decoder_only import *  # noqa: F401,F403
from torch_ref.deep import *  # noqa: F401,F403
from torch_ref.fixtures import *  # noqa: F401,F403
from torch_ref.refs import *  # noqa: F401,F403
from torch_ref.selfcheck import *  # noqa: F401,F403
from torch_ref.weights import REALISTIC, randomize_  # noqa: F401


def sha_tree(out, names):
    res = {}
    for n in names:
        p = os.path.join(out, n)
        paths = [p] if os.path.isfile(p) else [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs]
        for q in sorted(paths):
            res[os.path.relpath(q, out)] = hashlib.sha256(open(q, "rb").read()).hexdigest()
    return res


FIXTURE_NAMES = ["bert_mlm", "bert_mlm_bf16_sharded", "bert_nohead", "t5_v1_0", "t5_v1_1", "t5_flan",
                 "t5_buckets.safetensors"] + DEEP_NAMES
FD_CASES = {"bert_mlm/ref_pet_text.safetensors", "bert_nohead/ref_cls_random_mean.safetensors",
            "t5_v1_1/ref_seq2seq_random.safetensors", "t5_flan/ref_seq2seq_text.safetensors",
            "bloom/ref_causal_random.safetensors", "llama/ref_causal_random.safetensors",
            "qwen2/ref_causal_random.safetensors", "mistral/ref_causal_random.safetensors",
            "deep/bert_mlm/ref_mlm_prefix_papers.safetensors", "deep/bert_mlm/ref_pet_ptuning_lstm.safetensors",
            "deep/t5_v1_0/ref_seq2seq_prefix_peft.safetensors", "deep/t5_v1_1/ref_seq2seq_prefix_papers_proj.safetensors",
            "deep/bloom/ref_causal_prefix.safetensors", "deep/llama/ref_causal_prefix_proj.safetensors"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--self-check", action="store_true", help="recompute every reference independently, "
                    "with finite differences in float64 on a few cases")
    ap.add_argument("--check-only", action="store_true", help="only run the self-check on --out")
    ap.add_argument("--random-configs", type=int, default=0, metavar="N",
                    help="write N random BERT and N random T5 configs with references to --out")
    ap.add_argument("--seed", type=int, default=1234, help="seed for --random-configs")
    ap.add_argument("--wide", type=int, default=1, metavar="K",
                    help="--random-configs: head dims and d_model K times wider, feed-forward 2K times")
    ap.add_argument("--deep", type=int, default=1, metavar="K",
                    help="--random-configs: K times the layers (1-3 encoder and decoder layers times K)")
    ap.add_argument("--weights", choices=["harsh", "realistic"], default="harsh",
                    help="weight scale for --random-configs: harsh (the fixtures' default, gain 1.5-1.6 per "
                    "layer, for float32 parity) or realistic (variance-preserving, for bf16 parity)")
    ap.add_argument("--sha", action="store_true", help="print sha256 of every written file")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if args.check_only:
        self_check(out, FD_CASES)
        return
    if args.random_configs:
        weights.WEIGHTS = args.weights
        names = build_random_configs(out, args.random_configs, args.seed, args.wide, args.deep)
        log(f"wrote {len(names)} random models to {out}")
        if args.self_check:
            fd = {f"{n}/ref_seq2seq_random.safetensors" for n in names[:2]} | {f"{n}/ref_mlm_random.safetensors" for n in names[:2]}
            self_check(out, fd)
        return
    build_fixtures(out)
    log(f"wrote fixtures to {out}")
    if args.sha:
        for k, v in sha_tree(out, FIXTURE_NAMES).items():
            print(v, k)
    if args.self_check:
        self_check(out, FD_CASES)


if __name__ == "__main__":
    main()
