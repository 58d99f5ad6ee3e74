"""PEFT prompt-tuning references of the BERT and T5 models (format 1) and PEFT adapters."""

import math
import os

import torch
from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import BertForMaskedLM, BertModel
from transformers.models.t5.modeling_t5 import T5Attention

from .bert_t5 import load_bert, load_t5
from .common import PRODUCER, jdump, log, quiet, raw_tokenizer, rel_err, rmtree_if


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def ref_metadata(arch, objective, P, init, init_text, extra=None):
    meta = {"format": 1, "arch": arch, "objective": objective, "num_virtual_tokens": P, "producer": PRODUCER,
            "prompt_tuning_init": init}
    if init == "TEXT":
        meta["prompt_tuning_init_text"] = init_text
    if extra:
        meta.update(extra)
    return {"softprompt": jdump(meta)}


def save_ref(path, tensors, meta):
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if torch.is_floating_point(v):
            v = v.to(torch.float32)
        else:
            v = v.to(torch.int64)
        out[k] = v
    save_file(out, path, metadata=meta)


def make_peft(model, task_type, P, init, init_text, folder, seed, n_sub=None):
    kw = dict(task_type=task_type, num_virtual_tokens=P, prompt_tuning_init=PromptTuningInit(init))
    if init == "TEXT":
        kw.update(prompt_tuning_init_text=init_text, tokenizer_name_or_path=folder)
    if n_sub is not None:
        kw["num_transformer_submodules"] = n_sub
    torch.manual_seed(seed)  # RANDOM init = torch.nn.Embedding's default N(0, 1) from the global generator
    with quiet():
        pm = get_peft_model(model, PromptTuningConfig(**kw))
    pm.eval()
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_encoder.default.embedding.weight"], trainable
    return pm


def check_only_prompt_grad(pm):
    for n, p in pm.named_parameters():
        if n == "prompt_encoder.default.embedding.weight":
            assert p.grad is not None and p.grad.abs().sum() > 0
        else:
            assert p.grad is None or p.grad.abs().sum() == 0, n


def expected_text_init(folder, text, rows, word_embeddings):
    """PEFT's TEXT rule: ids = AutoTokenizer(text)["input_ids"] (with special tokens), cut to `rows`
    or repeated (ids * ceil(rows/len)) and cut, then rows of the word-embedding table."""
    ids = raw_tokenizer(folder).encode(text).ids  # tokenizer.json with padding/truncation off
    if len(ids) < rows:
        ids = ids * math.ceil(rows / len(ids))
    ids = ids[:rows]
    return word_embeddings.weight[torch.tensor(ids)].detach(), ids


def bert_reference(folder, path, objective, init, P, batch, seed, init_text=None, head=None, pooling=None,
                   use_token_types=True, adapter_dir=None):
    model_cls = BertModel if objective == "cls" else BertForMaskedLM
    model = load_bert(folder, cls=model_cls)
    pm = make_peft(model, TaskType.TOKEN_CLS, P, init, init_text, os.path.basename(folder), seed)
    we = model.get_input_embeddings()
    assert pm.word_embeddings is we or torch.equal(pm.word_embeddings.weight, we.weight)
    emb = pm.prompt_encoder["default"].embedding.weight
    if init == "TEXT":
        want, _ = expected_text_init(folder, init_text, P, we)
        assert torch.equal(emb.detach(), want), "PEFT TEXT init does not follow the documented rule"
    ids, am = batch["input_ids"], batch["attention_mask"]
    B, T = ids.shape
    kw = dict(input_ids=ids, attention_mask=am, output_hidden_states=True, return_dict=True)
    if use_token_types:
        kw["token_type_ids"] = batch["token_type_ids"]
    out = pm(**kw)  # PeftModelForTokenClassification.forward: the real PEFT prompt path
    hs = out.hidden_states
    # Cross-check with the hand-written prompt path of reference-format.md.
    with torch.no_grad():
        prompt = pm.get_prompt(B)
        emb_in = torch.cat([prompt, we(ids)], 1)
        m2 = torch.cat([torch.ones(B, P, dtype=am.dtype), am], 1)
        tt = batch["token_type_ids"] if use_token_types else torch.zeros_like(ids)
        t2 = torch.cat([torch.zeros(B, P, dtype=torch.int64), tt], 1)
        o2 = model(inputs_embeds=emb_in, attention_mask=m2, token_type_ids=t2,
                   position_ids=torch.arange(P + T)[None, :].expand(B, -1))
        a = out.logits if objective != "cls" else out.last_hidden_state
        b = o2.logits if objective != "cls" else o2.last_hidden_state
        assert rel_err(a, b) < 1e-6, rel_err(a, b)
    tensors = {"input_ids": ids, "attention_mask": am, "prompt": emb.detach().clone()}
    if use_token_types:
        tensors["token_type_ids"] = batch["token_type_ids"]
    extra = None
    if objective == "mlm":
        logits = out.logits[:, P:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                                 ignore_index=-100)
        tensors.update(labels=batch["labels"])
        out_logits = logits
    elif objective == "pet":
        logits = out.logits[:, P:]
        sel = logits[torch.arange(B), batch["mask_positions"]][:, batch["verbalizer_ids"]]
        loss = torch.nn.functional.cross_entropy(sel, batch["class_labels"])
        tensors.update(mask_positions=batch["mask_positions"], verbalizer_ids=batch["verbalizer_ids"],
                       class_labels=batch["class_labels"])
        out_logits = sel
    elif objective == "cls":
        hw = head["weight"].clone().requires_grad_(True)
        hb = head["bias"].clone().requires_grad_(True)
        last = out.last_hidden_state[:, P:]
        if pooling == "mean":
            mf = am.to(last.dtype).unsqueeze(-1)
            pooled = (last * mf).sum(1) / mf.sum(1)
        elif pooling == "cls":
            pooled = last[:, 0]
        else:
            raise ValueError(pooling)
        sel = pooled @ hw.T + hb
        loss = torch.nn.functional.cross_entropy(sel, batch["class_labels"])
        tensors.update(head_weight=hw.detach().clone(), head_bias=hb.detach().clone(),
                       class_labels=batch["class_labels"])
        out_logits = sel
        extra = {"pooling": pooling}
    else:
        raise ValueError(objective)
    loss.backward()
    check_only_prompt_grad(pm)
    tensors.update(loss=loss.detach(), logits=out_logits.detach(), prompt_grad=emb.grad.detach().clone())
    if objective == "cls":
        tensors.update(head_weight_grad=hw.grad.detach().clone(), head_bias_grad=hb.grad.detach().clone())
    for i, h in enumerate(hs):
        assert h.shape == (B, P + T, model.config.hidden_size)
        tensors[f"hidden_states.{i}"] = h.detach()
    save_ref(path, tensors, ref_metadata("bert", objective, P, init, init_text, extra))
    log(f"  {path}: B={B} T={T} P={P} loss={loss.item():.4f}")
    if adapter_dir is not None:
        save_adapter(pm, adapter_dir, emb.detach())
    return tensors


def t5_reference(folder, path, init, P, batch, seed, init_text=None, adapters=()):
    model = load_t5(folder)
    pm = make_peft(model, TaskType.SEQ_2_SEQ_LM, P, init, init_text, os.path.basename(folder), seed)
    assert pm.peft_config["default"].num_transformer_submodules == 2
    emb = pm.prompt_encoder["default"].embedding.weight
    assert emb.shape[0] == 2 * P
    if init == "TEXT":
        want, _ = expected_text_init(folder, init_text, 2 * P, model.get_input_embeddings())
        assert torch.equal(emb.detach(), want), "PEFT TEXT init does not follow the documented rule"
    ids, am, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    out = pm(input_ids=ids, attention_mask=am, labels=labels, output_hidden_states=True, return_dict=True,
             use_cache=False)
    logits = out.logits
    loss_manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                    ignore_index=-100)
    assert rel_err(out.loss, loss_manual) < 1e-6
    out.loss.backward()
    check_only_prompt_grad(pm)
    grad = emb.grad.detach()
    assert grad[P:].abs().sum() == 0, "rows P..2P-1 of the PEFT table must not receive a gradient"
    tensors = {"input_ids": ids, "attention_mask": am, "labels": labels, "prompt": emb[:P].detach().clone(),
               "loss": out.loss.detach(), "logits": logits.detach(), "prompt_grad": grad[:P].clone()}
    B, T = ids.shape
    for i, h in enumerate(out.encoder_hidden_states):
        assert h.shape == (B, P + T, model.config.d_model)
        tensors[f"encoder_hidden_states.{i}"] = h.detach()
    for i, h in enumerate(out.decoder_hidden_states):
        tensors[f"decoder_hidden_states.{i}"] = h.detach()
    save_ref(path, tensors, ref_metadata("t5", "seq2seq", P, init, init_text, {"num_transformer_submodules": 2}))
    log(f"  {path}: B={B} T={T} L={labels.shape[1]} P={P} loss={out.loss.item():.4f}")
    for adir, n_sub in adapters:
        if n_sub == 2:
            save_adapter(pm, adir, emb.detach())
        else:  # same init with PEFT's num_transformer_submodules=1: a [P, d] table
            m1 = load_t5(folder)
            pm1 = make_peft(m1, TaskType.SEQ_2_SEQ_LM, P, init, init_text, os.path.basename(folder), seed, n_sub=1)
            e1 = pm1.prompt_encoder["default"].embedding.weight.detach()
            assert e1.shape[0] == P and torch.equal(e1, emb[:P].detach())
            save_adapter(pm1, adir, e1)
    return tensors


def save_adapter(pm, adir, table):
    rmtree_if(adir)
    with quiet():
        pm.save_pretrained(adir)
    card = os.path.join(adir, "README.md")
    if os.path.exists(card):
        os.remove(card)  # PEFT's boilerplate model card: not needed
    with safe_open(os.path.join(adir, "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert keys == ["prompt_embeddings"], keys
        assert torch.equal(f.get_tensor("prompt_embeddings"), table)


def write_buckets(path):
    rp = torch.arange(-300, 301, dtype=torch.int64)
    tensors = {"relative_position": rp}
    degenerate = []
    for bid in (True, False):
        for nb in (8, 32, 13):
            for md in (20, 128, 7):
                b = T5Attention._relative_position_bucket(rp, bidirectional=bid, num_buckets=nb, max_distance=md)
                name = f"buckets.{'bidir' if bid else 'unidir'}.{nb}.{md}"
                tensors[name] = b.to(torch.int64)
                n = nb // 2 if bid else nb
                if b.min() < 0 or b.max() >= nb or md <= n // 2:
                    degenerate.append(name)
    meta = {"format": 1, "producer": PRODUCER, "what": "T5Attention._relative_position_bucket(relative_position, "
            "bidirectional, num_buckets, max_distance) for relative_position = -300..300",
            "degenerate": degenerate}
    save_file(tensors, path, metadata={"softprompt": jdump(meta)})
    return degenerate
