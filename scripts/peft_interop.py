"""Checks that PEFT loads a prompt folder written by `softprompt train` and scores rows as
`softprompt predict` does: the pet task on a BERT with a masked-LM head, or the causal task
(rank classification over the label targets) on a BLOOM or Llama-family model.

    softprompt train --model tests/fixtures/bert_mlm --train T.jsonl --out OUT --task pet \
        --verbalizer positive=great,negative=bad --prompt-len 4 --max-steps 5
    softprompt predict --prompt OUT --data D.jsonl > preds.jsonl
    HF_HUB_OFFLINE=1 python scripts/peft_interop.py tests/fixtures/bert_mlm OUT preds.jsonl

    softprompt train --model tests/fixtures/llama --train T.jsonl --out OUT --task causal \
        --template "Tweet : {text} Label : " --prompt-len 4 --max-steps 5 --max-target-len 16
    softprompt predict --prompt OUT --data D.jsonl > preds.jsonl
    HF_HUB_OFFLINE=1 python scripts/peft_interop.py tests/fixtures/llama OUT preds.jsonl

The other way: a folder PEFT saved (`get_peft_model(base, PromptTuningConfig(task_type=
CAUSAL_LM, ...)).save_pretrained(DIR)`), with a task.json copied in, scored by `softprompt
predict --model M --prompt DIR` and checked the same way (measured: 1.4e-7 on llama, 1.1e-7 on
bloom; ours to PEFT: 1.4e-7 llama, 1.1e-7 bloom, 2.7e-7 qwen2).

A P-tuning folder (`softprompt train --method p-tuning ...`, PEFT's P_TUNING layout: the
encoder's output as `prompt_embeddings`) is checked by the same commands: PEFT loads it in
inference mode, where its prompt encoder is that table (measured with peft 0.21.2: BERT pet
MLP 1.4e-6, LSTM 1.5e-6; llama causal LSTM 3.1e-7).

A prefix-tuning folder (`softprompt train --method prefix ...`, PEFT's PREFIX_TUNING layout:
the table, with `--prefix-projection` the projection's output) is checked the same way, with
the seq2seq task too (rank classification: each label target's summed log-probability):
PEFT computes the same only for `--prefix-placement peft` on T5 (and on decoder-only models,
where both placements are PEFT's). Measured with peft 0.21.2, transformers 5.24: T5 v1.0
seq2seq under `peft` 1.4e-7, with the projection 1.6e-7; llama causal 2.7e-7; a T5 `papers`
folder is refused by this check (2.3e-1: PEFT reads its blocks elsewhere), as it should be.
On BERT (`papers`, written as FEATURE_EXTRACTION, which PEFT loads on AutoModelForMaskedLM;
its SEQ_CLS and TOKEN_CLS models refuse prefix tuning): pet 1.6e-6, with the projection
1.5e-6 (review 27, F7; transformers warns that BertModel's `past_key_values` is deprecated).

Needs torch, transformers and peft (the versions of scripts/torch_reference.py).
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

model_dir, prompt_dir, preds = sys.argv[1:4]
task = json.load(open(f"{prompt_dir}/task.json"))
assert task["task"] in ("pet", "causal", "seq2seq"), "this check is for pet, causal and seq2seq prompts"
tok = AutoTokenizer.from_pretrained(model_dir)
auto = {"pet": AutoModelForMaskedLM, "causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}
base = auto[task["task"]].from_pretrained(model_dir, dtype=torch.float32)
model = PeftModel.from_pretrained(base, prompt_dir).eval()
# a prefix enters no row of the output: the logits cover the real tokens only
prefix = model.peft_config["default"].peft_type == "PREFIX_TUNING"
p = 0 if prefix else model.peft_config["default"].num_virtual_tokens
if prefix:
    # the heads the folder records are the ones PEFT lays the prefix out over (on a
    # grouped-query model its key/value heads: PEFT replaces any other value on load)
    saved = json.load(open(f"{prompt_dir}/adapter_config.json"))["num_attention_heads"]
    used = model.peft_config["default"].num_attention_heads
    assert saved == used, f"adapter_config.json: num_attention_heads {saved}, PEFT uses {used}"
labels = task["labels"]
words = dict(task["verbalizer"])


def pet_scores(text):
    vids = [tok.convert_tokens_to_ids(words[l]) for l in labels]
    enc = tok(task["template"].replace("{text}", text), return_tensors="pt")
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0].item() + p
    return torch.log_softmax(logits[0, pos, vids], -1)


def target_end():
    # the token the engine puts after each target (docs/causal.md, "What ends a target"):
    # task.json's target_end (absent: eos); a config.json without eos_token_id ends targets with
    # nothing
    mode = task.get("target_end", "eos")
    if mode == "pad":
        return [tok.pad_token_id if tok.pad_token_id is not None else base.config.pad_token_id]
    eos = base.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) and eos else eos
    return [] if mode == "none" or eos is None or eos == [] else [eos]


def causal_scores(text):
    # PEFT's causal-LM guide: input = filled template, then the target and its end token
    ids = tok(task["template"].replace("{text}", text))["input_ids"]
    out = []
    for l in labels:
        target = tok(words[l], add_special_tokens=False)["input_ids"] + end
        full = torch.tensor([ids + target])
        # PEFT's CAUSAL_LM output covers the P prompt rows too: position P + j - 1 predicts j
        logp = torch.log_softmax(model(input_ids=full).logits[0].double(), -1)
        out.append(sum(logp[p + j - 1, full[0, j]] for j in range(len(ids), full.shape[1])))
    return torch.stack(out)


def seq2seq_scores(text):
    # rank classification: each label target (its words, then </s>) scored after the row
    enc = tok(task["template"].replace("{text}", text), return_tensors="pt")
    out = []
    for l in labels:
        target = tok(words[l], return_tensors="pt")["input_ids"]
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=target).logits
        logp = torch.log_softmax(logits[0].double(), -1)
        out.append(sum(logp[j, target[0, j]] for j in range(target.shape[1])))
    return torch.stack(out)


end = target_end() if task["task"] == "causal" else []
scorer = {"pet": pet_scores, "causal": causal_scores, "seq2seq": seq2seq_scores}[task["task"]]
worst = 0.0
for line in open(preds):
    row = json.loads(line)
    with torch.no_grad():
        theirs = scorer(row["text"])
    ours = torch.tensor([row["scores"][l] for l in labels], dtype=theirs.dtype)
    worst = max(worst, ((theirs - ours).abs() / ours.abs().clamp(min=1.0)).max().item())
print(f"max |PEFT - softprompt| / max(|score|, 1) over the scores: {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
