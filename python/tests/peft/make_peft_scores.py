"""PEFT's scores of the committed adapter (python/tests/peft/adapter), for test_peft.py:
CI has no torch, so PEFT's numbers are committed. Run from the repository root where torch,
transformers, peft and this package are installed:

    HF_HUB_OFFLINE=1 /work/venv/bin/python python/tests/peft_adapter.py        # the adapter
    HF_HUB_OFFLINE=1 /work/venv/bin/python python/tests/peft/make_peft_scores.py

It loads the adapter with PeftModel.from_pretrained over AutoModelForMaskedLM and writes, per
dev sentence, the log-softmax over the verbalizer's words at the [MASK] position (the
prompt's P rows in front), as scripts/peft_interop.py scores a pet prompt.
"""
import json
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForMaskedLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peft_adapter import ADAPTER, DEV, MODEL, SCORES, rows  # noqa: E402

torch.manual_seed(0)
task = json.loads((ADAPTER / "task.json").read_text())
tok = AutoTokenizer.from_pretrained(MODEL)
base = AutoModelForMaskedLM.from_pretrained(MODEL, dtype=torch.float32)
model = PeftModel.from_pretrained(base, ADAPTER).eval()
p = model.peft_config["default"].num_virtual_tokens
words = dict(task["verbalizer"])
vids = [tok.convert_tokens_to_ids(words[label]) for label in task["labels"]]
out = []
with torch.no_grad():
    for r in rows(DEV):
        enc = tok(task["template"].replace("{text}", r["text"]), return_tensors="pt")
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0].item() + p
        scores = torch.log_softmax(logits[0, pos, vids].double(), -1)
        out.append({"text": r["text"], "scores": dict(zip(task["labels"], scores.tolist()))})
producer = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
SCORES.write_text(json.dumps({"producer": producer, "labels": task["labels"], "rows": out}, indent=1) + "\n")
print(f"wrote {SCORES} ({len(out)} rows; {producer})")
