"""The self-check over a fixture folder (every reference file, the buckets and the adapters)."""

import json
import os

from safetensors import safe_open

from .check import check_adapters, check_buckets, check_ref, read_ref
from .check_deep import check_ref_deep
from .common import log, rel_err


def self_check(out, fd_cases):
    refs = []
    for root, _, files in os.walk(out):
        for fn in files:
            if fn.startswith("ref_") and fn.endswith(".safetensors"):
                refs.append(os.path.join(root, fn))
    refs.sort()
    for r in refs:
        fd = os.path.relpath(r, out) in fd_cases
        meta, _ = read_ref(r)
        if "method" in meta or meta["arch"] not in ("bert", "t5"):  # decoder-only and deep-prompt references
            worst, rep = check_ref_deep(r, out, fd=fd)
        else:
            worst, rep = check_ref(r, fd=fd)
        msg = f"  ok {os.path.relpath(r, out)}: worst rel err vs independent impl {worst:.1e}"
        if rep:
            msg += f"; finite differences (f64) worst {rep['fd_worst_rel']:.1e}, f32 grad vs f64 {rep['f32_grad_vs_f64_rel']:.1e}"
        log(msg)
    b = os.path.join(out, "t5_buckets.safetensors")
    if os.path.exists(b):
        check_buckets(b)
        log("  ok t5_buckets.safetensors")
    check_adapters(out)
    check_prefix_adapters(out)
    log(f"self-check passed: {len(refs)} reference files")


def check_prefix_adapters(out):
    """PEFT's saved prefix adapters hold the prefix-encoder output (`prompt_embeddings` [P, N*2*w])."""
    for adir, ref in [("deep/t5_v1_0/peft_adapter_prefix", "deep/t5_v1_0/ref_seq2seq_prefix_peft.safetensors"),
                      ("deep/llama/peft_adapter_prefix", "deep/llama/ref_causal_prefix.safetensors")]:
        a = os.path.join(out, adir)
        if not os.path.isdir(a):
            continue
        cfg = json.load(open(os.path.join(a, "adapter_config.json")))
        meta, t = read_ref(os.path.join(out, ref))
        with safe_open(os.path.join(a, "adapter_model.safetensors"), "pt") as f:
            pe = f.get_tensor("prompt_embeddings")
        assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["num_virtual_tokens"] == t["prefix"].shape[0]
        assert rel_err(pe, t["prefix"]) < 1e-6, adir
