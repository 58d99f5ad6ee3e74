"""Shared paths and helpers: the repository's fixtures, the command line built by cargo (the
Python runs are compared with it), and a reader of safetensors files in plain numpy."""
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
DATA = REPO / "tests" / "bad_inputs" / "data"
TRAIN = DATA / "train.jsonl"
DEV = DATA / "dev.jsonl"
BERT_MLM = FIXTURES / "bert_mlm"
BERT_NOHEAD = FIXTURES / "bert_nohead"

_DTYPES = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "F64": np.float64}


def read_safetensors(path):
    """{name: array} of a safetensors file (F32/F64/I32/I64 tensors), and its metadata."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n :]
    out = {}
    for name, t in header.items():
        start, end = t["data_offsets"]
        dtype = _DTYPES[t["dtype"]]
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(t["shape"])
    return out, meta


def rel_err(got, want):
    """||got - want|| / ||want|| (scalars: / max(|want|, 1e-6)), as softprompt parity."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if want.ndim == 0:
        return abs(float(got) - float(want)) / max(abs(float(want)), 1e-6)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="session")
def cli():
    """The softprompt binary (SOFTPROMPT_BIN, else target/release/softprompt, which
    `cargo test --release` builds): runs it and returns the CompletedProcess."""
    path = Path(os.environ.get("SOFTPROMPT_BIN", REPO / "target" / "release" / "softprompt"))
    assert path.is_file(), f"{path}: build the command line first (cargo build --release)"

    def run(*args, check=True):
        p = subprocess.run([str(path), *map(str, args)], capture_output=True, text=True)
        if check:
            assert p.returncode == 0, f"softprompt {' '.join(map(str, args))}:\n{p.stderr}"
        return p

    return run
