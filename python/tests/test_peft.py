"""An adapter saved from Python loads in PEFT and scores identically: PEFT's scores of the
committed adapter (peft/peft_scores.json, written by peft/make_peft_scores.py with torch)
against this package's, and the adapter made again here against the committed one."""
import json

import numpy as np

import softprompt as sp
from conftest import read_safetensors
from peft_adapter import ADAPTER, DEV, SCORES, make_adapter, rows


def test_the_adapter_made_from_python_is_the_committed_one(tmp_path):
    make_adapter(tmp_path / "adapter")
    ours, _ = read_safetensors(tmp_path / "adapter" / "adapter_model.safetensors")
    committed, _ = read_safetensors(ADAPTER / "adapter_model.safetensors")
    assert ours.keys() == committed.keys() == {"prompt_embeddings"}
    # not bit for bit: the gemm crate and the SIMD row ops pick their kernels by instruction
    # set (AVX-512 or AVX2), which round float32 sums differently; three steps apart by
    # about 3e-7 (an AMD EPYC with AVX2 against the committed adapter's machine)
    np.testing.assert_allclose(
        ours["prompt_embeddings"], committed["prompt_embeddings"], rtol=1e-5, atol=1e-6
    )
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 5


def test_scores_equal_peft():
    want = json.loads(SCORES.read_text())
    model = sp.Model(sp.Prompt.load(ADAPTER).model_dir())
    prompt = sp.Prompt.load(ADAPTER)
    task = model.task_for(prompt)
    assert task.labels == want["labels"]
    texts = [r["text"] for r in rows(DEV)]
    assert texts == [r["text"] for r in want["rows"]]
    preds = model.predict(task, prompt, texts)
    worst = 0.0
    for pred, ref in zip(preds, want["rows"]):
        theirs = np.array([ref["scores"][label] for label in task.labels])
        ours = np.array(pred["scores"], dtype=np.float64)
        worst = max(worst, float((np.abs(theirs - ours) / np.maximum(np.abs(ours), 1.0)).max()))
        assert pred["label"] == task.labels[int(np.argmax(theirs))]
    # scripts/peft_interop.py's bound
    assert worst < 1e-4, worst
