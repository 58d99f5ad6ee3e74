#!/usr/bin/env bash
# Rebuild the reference venvs of scripts/torch_reference.py (PyPI only, CPU use).
#
#   bash scripts/make_venv.sh          # /work/venv : torch 2.15.0, transformers 5.24.0, peft 0.21.2, ...
#   bash scripts/make_venv.sh --v4     # also /work/venv4 : transformers 4.40.2 + peft 0.10.0 + torch 2.3.1,
#                                      # for the P-tuning v2 cross-check (scripts/bert_prefix_v4.py)
#
# Checked: with /work/venv, `python scripts/torch_reference.py --out DIR --sha` rewrites every committed
# fixture with the same sha256 on the AMD EPYC machines that wrote them (the PyPI torch 2.15.0 wheel
# reports 2.15.0+cu132 and pulls CUDA 13 packages; they are unused, everything runs on the CPU).
# Python 3.11. On an Intel Xeon (2026-12-05) 38 of the 127 files differ: every one a ref_*.safetensors,
# tensors within about 6e-6 of the committed ones (torch's CPU kernels round differently per vendor);
# models, tokenizers and configs are byte-identical, and the tests' tolerances cover the difference.
set -euo pipefail
PY=${PYTHON:-python3}
VENV=${VENV:-/work/venv}
VENV4=${VENV4:-/work/venv4}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# the exact set the fixtures were written with (pip freeze of /work/venv)
"$VENV/bin/pip" install -q \
  torch==2.15.0 transformers==5.24.0 peft==0.21.2 tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6 \
  accelerate==1.16.0 huggingface_hub==2.4.0 packaging==26.4 psutil==7.2.2 PyYAML==6.0.4 regex==2026.11.19 \
  tqdm==4.70.1 filelock==4.3.1 fsspec==2026.9.0 Jinja2==3.1.6 MarkupSafe==3.0.4 networkx==3.6.1 sympy==1.14.0 \
  mpmath==1.3.0 typing_extensions==4.16.0 triton==3.9.0
"$VENV/bin/python" - <<'PY'
import numpy, peft, safetensors, tokenizers, torch, transformers
v = (torch.__version__.split("+")[0], transformers.__version__, peft.__version__, tokenizers.__version__,
     safetensors.__version__, numpy.__version__)
assert v == ("2.15.0", "5.24.0", "0.21.2", "0.23.3", "0.8.0", "2.4.6"), v
print("reference venv ok:", v)
PY

if [ "${1:-}" = "--v4" ]; then
  if [ ! -x "$VENV4/bin/python" ]; then
    "$PY" -m venv "$VENV4"
  fi
  "$VENV4/bin/pip" install -q --upgrade pip
  "$VENV4/bin/pip" install -q torch==2.3.1 transformers==4.40.2 peft==0.10.0 tokenizers==0.19.1 \
    safetensors==0.4.3 "numpy==1.26.4" accelerate==0.30.1 huggingface-hub==0.36.2
  "$VENV4/bin/python" -c "import torch, transformers, peft; print('v4 venv ok:', torch.__version__, transformers.__version__, peft.__version__)"
fi
