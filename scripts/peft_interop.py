"""Checks that PEFT loads a prompt folder written by `softprompt train` and scores rows as
`softprompt predict` does (pet task on a BERT with a masked-LM head).

    softprompt train --model tests/fixtures/bert_mlm --train T.jsonl --out OUT --task pet \
        --verbalizer positive=great,negative=bad --prompt-len 4 --max-steps 5
    softprompt predict --prompt OUT --data D.jsonl > preds.jsonl
    HF_HUB_OFFLINE=1 python scripts/peft_interop.py tests/fixtures/bert_mlm OUT preds.jsonl

Needs torch, transformers and peft (the versions of scripts/torch_reference.py).
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForMaskedLM, AutoTokenizer

model_dir, prompt_dir, preds = sys.argv[1:4]
task = json.load(open(f"{prompt_dir}/task.json"))
assert task["task"] == "pet", "this check is for pet prompts"
tok = AutoTokenizer.from_pretrained(model_dir)
model = PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained(model_dir), prompt_dir).eval()
p = model.peft_config["default"].num_virtual_tokens
labels = task["labels"]
words = dict(task["verbalizer"])
vids = [tok.convert_tokens_to_ids(words[l]) for l in labels]
worst = 0.0
for line in open(preds):
    row = json.loads(line)
    enc = tok(task["template"].replace("{text}", row["text"]), return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0].item() + p
    lp = torch.log_softmax(logits[0, pos, vids], -1)
    ours = torch.tensor([row["scores"][l] for l in labels])
    worst = max(worst, (lp - ours).abs().max().item())
print(f"max |PEFT - softprompt| over the scores: {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
