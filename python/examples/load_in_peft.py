"""The prompt movie_reviews.py trained, loaded into PEFT for inference: PeftModel over the
frozen all-MiniLM-L6-v2, the cls task's mean pooling and linear head (head.safetensors, which
PEFT does not know) on top. Needs torch, transformers and peft; from the repository root:
    HF_HUB_OFFLINE=1 python python/examples/load_in_peft.py [OUT]
With softprompt installed too, it prints the largest difference to softprompt's scores.
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

out = sys.argv[1] if len(sys.argv) > 1 else "runs/minilm_sentiment_en_py"
base = "assets/all-MiniLM-L6-v2"
task = json.load(open(f"{out}/task.json"))
tok = AutoTokenizer.from_pretrained(base)
model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), out).eval()
head = load_file(f"{out}/head.safetensors")  # weight (K, d), bias (K)
p = model.peft_config["default"].num_virtual_tokens
lines = open("assets/sentiment_en/test.jsonl").read().splitlines()[:8]
texts = [json.loads(line)["text"] for line in lines]
rows = [task["template"].replace("{text}", t) for t in texts]
enc = tok(rows, return_tensors="pt", padding=True, truncation=True, max_length=task["max_len"])
with torch.no_grad():
    # PEFT puts the P prompt rows first; the task pools the text's tokens after them
    hidden = model(**enc).last_hidden_state[:, p:]
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    scores = torch.log_softmax(pooled @ head["weight"].T + head["bias"], -1)
for text, s in zip(texts, scores):
    print(f"{task['labels'][int(s.argmax())]:<9} {s.tolist()}  {text[:50]}")
try:
    import softprompt as sp
except ImportError:
    sys.exit(0)
m = sp.Model(base)
prompt = sp.Prompt.load(out)
ours = torch.tensor([r["scores"] for r in m.predict(m.task_for(prompt), prompt, texts)])
print(f"max |PEFT - softprompt| over the scores: {(ours - scores).abs().max().item():.2e}")
