#!/usr/bin/env python3
"""BERT prefix tuning as P-tuning v2 ran it: transformers 4.x BertModel with `past_key_values`.

Runs in the transformers 4.x venv (scripts/make_venv.sh --v4: transformers 4.40.2 + peft 0.10.0 +
torch 2.3.1), called by scripts/torch_reference.py, which cross-checks its numbers against the
same math hooked into transformers 5's BertSelfAttention.

    /work/venv4/bin/python scripts/bert_prefix_v4.py IN.safetensors OUT.safetensors

IN holds the model folder name (metadata), the batch and the prefix-encoder tensors (PEFT's
PrefixEncoder state dict, `encoder.<name>`), written by torch_reference.py. The prefix is made
by PEFT 0.10's own PrefixEncoder and `get_prompt` (past_key_values layout, one (k, v) per layer),
and fed like P-tuning v2's BertPrefixForTokenClassification / BertPrefixForSequenceClassification
(THUDM/P-tuning-v2, model/*.py): `self.bert(input_ids, attention_mask=cat(ones(B, P), mask),
token_type_ids=..., past_key_values=past_key_values)`, position_ids left to BertModel. The MLM
head is applied to the sequence output. OUT gets loss, logits, hidden states, the prefix and its
gradient, and the position ids BertEmbeddings used.
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import PrefixTuningConfig, TaskType, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import BertForMaskedLM  # noqa: E402

transformers.logging.set_verbosity_error()


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with safe_open(src, "pt") as f:
        meta = json.loads(f.metadata()["job"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    folder = meta["model_folder"]
    model = BertForMaskedLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager").eval()
    P = meta["num_virtual_tokens"]
    proj = meta["prefix_projection"]
    cfg = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P, prefix_projection=proj,
                             encoder_hidden_size=meta["encoder_hidden_size"])
    model.cls.requires_grad_(False)  # the MLM head stays frozen too
    pm = get_peft_model(model.bert, cfg)  # PEFT 0.10 builds the prefix encoder for BertModel
    pm.eval()
    enc = pm.prompt_encoder["default"]
    assert not pm.peft_config["default"].inference_mode
    enc.requires_grad_(True)  # PEFT 0.10 leaves it frozen when wrapping a bare BertModel
    with torch.no_grad():
        for n, p in enc.named_parameters():
            p.copy_(t["encoder." + n])
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert all(n.startswith("prompt_encoder.") for n in trainable), trainable
    ids, am = t["input_ids"], t["attention_mask"]
    tt = t.get("token_type_ids", torch.zeros_like(ids))
    B, T = ids.shape
    seen = {}
    emb = model.bert.embeddings
    orig_emb_fwd = emb.forward

    def emb_fwd(*a, **kw):  # record the position ids BertEmbeddings uses
        plen = kw.get("past_key_values_length", 0)
        seen["position_ids"] = emb.position_ids[:, plen: T + plen].clone()
        return orig_emb_fwd(*a, **kw)
    emb.forward = emb_fwd
    holder = {}
    orig_enc_fwd = enc.forward

    def enc_fwd(x):
        out = orig_enc_fwd(x)
        if out.requires_grad and "out" not in holder:
            out.retain_grad()
            holder["out"] = out
        return out
    enc.forward = enc_fwd
    pkv = pm.get_prompt(B)  # PEFT 0.10: tuple of L tensors [2, B, H, P, head_dim]
    mask = torch.cat([torch.ones(B, P, dtype=am.dtype), am], 1)
    out = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=tt, past_key_values=pkv,
                     output_hidden_states=True, return_dict=True)
    logits = model.cls(out.last_hidden_state)
    if meta["objective"] == "mlm":
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t["labels"].reshape(-1),
                                                 ignore_index=-100)
        out_logits = logits
    else:
        out_logits = logits[torch.arange(B), t["mask_positions"]][:, t["verbalizer_ids"]]
        loss = torch.nn.functional.cross_entropy(out_logits, t["class_labels"])
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is None or p.grad.abs().sum() == 0, n
    po = holder["out"]
    res = {"loss": loss.detach(), "logits": out_logits.detach().contiguous(), "prefix": po[0].detach().clone(),
           "prefix_grad": po.grad.sum(0).detach().clone(), "position_ids": seen["position_ids"][0].clone()}
    for i, h in enumerate(out.hidden_states):
        res[f"hidden_states.{i}"] = h.detach().contiguous()
    # PEFT's own FEATURE_EXTRACTION forward (which drops token_type_ids) agrees when there are none
    if int(tt.abs().sum()) == 0:
        with torch.no_grad():
            o2 = pm(input_ids=ids, attention_mask=am)
        res["peft_forward_rel_err"] = ((o2.last_hidden_state - out.last_hidden_state).norm()
                                       / out.last_hidden_state.norm()).reshape(1)
    producer = f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}"
    save_file(res, dst, metadata={"producer": producer})


if __name__ == "__main__":
    main()
