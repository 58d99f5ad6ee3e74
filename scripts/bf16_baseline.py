#!/usr/bin/env python3
"""PyTorch's own bf16 error on every fixture: the independent implementation of
scripts/torch_reference.py run with weights and activations in bfloat16 (the prompt a float32
leaf, cast to bf16 where it enters the model, as PEFT does under bf16), compared with the
float32 reference file like `softprompt parity` compares (relative L2).

This is the yardstick for `parity --device emu|cuda` (tests/parity_emu.rs): an engine that
stores weights and activations in bf16 is held to at most twice PyTorch's own bf16 error
(flash-attention's rule), and never to less than 2e-2.

`--autocast` adds the error of mixed precision as torch.autocast runs it (float32 weights,
residual stream and norms; bf16 GEMM inputs and outputs): what an engine with a float32
residual stream could reach at best.

    /work/venv/bin/python scripts/bf16_baseline.py                  # a table of tests/fixtures
    /work/venv/bin/python scripts/bf16_baseline.py --rust           # the table in tests/parity_emu.rs
    /work/venv/bin/python scripts/bf16_baseline.py --dir D --autocast   # any folder of models
"""
import argparse
import glob
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch_reference as tr  # noqa: E402


def errors(path, autocast=False):
    """bf16 weights and activations, or (autocast) float32 model under torch.autocast."""
    folder = os.path.dirname(path)
    meta, t = tr.read_ref(path)
    prompt = t["prompt"].to(torch.float32).clone().requires_grad_(True)
    dtype = torch.float32 if autocast else torch.bfloat16
    head = None
    if meta["objective"] == "cls":
        head = (t["head_weight"].to(dtype), t["head_bias"].to(dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if meta["objective"] == "causal":  # the decoder-only models (IndDecoder)
            out = tr.ind_deep_outputs(folder, meta, t, dtype, prompt=prompt.to(dtype))
        else:
            out = tr.ind_loss(folder, meta, t, dtype, prompt=prompt.to(dtype), head=head)
    out["loss"].float().backward()
    out["prompt_grad"] = prompt.grad
    return {k: tr.rel_err(out[k].float(), t[k].float()) for k in ("loss", "logits", "prompt_grad")}


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(here, "tests", "fixtures"),
                    help="folder of model folders holding ref_*.safetensors (default: tests/fixtures)")
    ap.add_argument("--rust", action="store_true", help="print the table of tests/parity_emu.rs")
    ap.add_argument("--autocast", action="store_true", help="add the prompt_grad error under torch.autocast")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for path in sorted(glob.glob(os.path.join(args.dir, "*", "ref_*.safetensors"))):
        if tr.read_ref(path)[0]["objective"] == "generate":
            continue  # greedy tokens, not a loss: tests/parity_emu.rs has its own rule
        e = errors(path)
        if args.autocast:
            e["autocast"] = errors(path, autocast=True)["prompt_grad"]
        name = os.path.relpath(path, args.dir)[: -len(".safetensors")]
        rows.append((name, e))
    if args.rust:
        for name, e in rows:
            print(f'    ("{name}", {e["loss"]:.2e}, {e["logits"]:.2e}, {e["prompt_grad"]:.2e}),')
        return
    extra = f" {'autocast pg':>11}" if args.autocast else ""
    print(f"{'fixture':<42} {'loss':>9} {'logits':>9} {'prompt_grad':>11}{extra}")
    for name, e in rows:
        extra = f" {e['autocast']:>11.2e}" if args.autocast else ""
        print(f"{name:<42} {e['loss']:>9.2e} {e['logits']:>9.2e} {e['prompt_grad']:>11.2e}{extra}")


if __name__ == "__main__":
    main()
