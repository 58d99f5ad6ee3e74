"""Deep prompts: P-tuning and prefix-tuning references (PEFT and the papers' placement)."""

import contextlib
import json
import os

import torch
from peft import PrefixTuningConfig, PromptEncoderConfig, TaskType, get_peft_model
from peft.tuners.prefix_tuning.model import PrefixEncoder
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DynamicCache, EncoderDecoderCache

from .bert_t5 import load_bert, load_t5
from .common import PRODUCER, jdump, log, quiet, rel_err, rmtree_if
from .decoder_only import causal_loss, decoder_meta, load_decoder
from .refs import save_ref


# ============================================================================================
# Deep prompts (issue #15): P-tuning (PEFT P_TUNING), prefix tuning (PEFT PREFIX_TUNING), and
# prefix tuning under the papers' placement (T5: hooked transformers 5; BERT: see
# scripts/bert_prefix_v4.py, run in the transformers 4.x venv)
# ============================================================================================


def peft_config_json(pm):
    """The PEFT config exactly as adapter_config.json holds it (PEFT's own to_dict)."""
    cfg = pm.peft_config["default"].to_dict()
    return json.loads(json.dumps(cfg, default=lambda o: getattr(o, "value", str(o)), sort_keys=True))


def deep_metadata(arch, objective, P, method, model_folder, peft_cfg=None, extra=None):
    meta = {"format": 1, "arch": arch, "objective": objective, "num_virtual_tokens": P, "producer": PRODUCER,
            "method": method, "model_folder": model_folder}
    if peft_cfg is not None:
        meta["peft_config"] = peft_cfg
    if extra:
        meta.update(extra)
    return {"softprompt": jdump(meta)}


def encoder_tensors(module):
    """Every trainable tensor of a PEFT prompt/prefix encoder as encoder.<name>, its gradient as grad.encoder.<name>."""
    out = {}
    for n, p in module.named_parameters():
        assert p.requires_grad, n
        out[f"encoder.{n}"] = p.detach().clone()
        out[f"grad.encoder.{n}"] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
    return out


def make_peft_deep(model, task_type, config_cls, seed, **kw):
    torch.manual_seed(seed)
    with quiet():
        pm = get_peft_model(model, config_cls(task_type=task_type, **kw))
    pm.eval()
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("prompt_encoder.default.") for n in trainable), trainable
    return pm


def capture_prompt(pm):
    """Run PEFT's get_prompt once and keep the encoder output (retain_grad) so its gradient can be stored.
    Returns a context manager that patches get_prompt to return the same tensor."""
    holder = {}
    orig = pm.get_prompt

    def patched(batch_size, task_ids=None, **kw):
        out = orig(batch_size, task_ids=task_ids, **kw)
        if isinstance(out, torch.Tensor):
            out.retain_grad()
            holder["prompts"] = out
        return out

    @contextlib.contextmanager
    def cm():
        pm.get_prompt = patched
        try:
            yield holder
        finally:
            pm.get_prompt = orig
    return cm()


def ptuning_reference(kind, folder, path, objective, P, batch, seed, reparam, enc_hidden, enc_layers=2,
                      hidden_states=False):
    """PEFT P_TUNING (prompt encoder MLP or LSTM). kind: bert | t5 | decoder."""
    mname = os.path.basename(folder)
    if kind == "bert":
        model = load_bert(folder)
        task = TaskType.TOKEN_CLS
    elif kind == "t5":
        model = load_t5(folder)
        task = TaskType.SEQ_2_SEQ_LM
    else:
        model = load_decoder(folder)
        task = TaskType.CAUSAL_LM
    pm = make_peft_deep(model, task, PromptEncoderConfig, seed, num_virtual_tokens=P,
                        encoder_reparameterization_type=reparam, encoder_hidden_size=enc_hidden,
                        encoder_num_layers=enc_layers)
    enc = pm.prompt_encoder["default"]
    n_sub = pm.peft_config["default"].num_transformer_submodules
    ids, am = batch["input_ids"], batch["attention_mask"]
    B, T = ids.shape
    we = model.get_input_embeddings()
    tensors = {"input_ids": ids, "attention_mask": am}
    with capture_prompt(pm) as held:
        if kind == "bert":
            out = pm(input_ids=ids, attention_mask=am, token_type_ids=batch["token_type_ids"],
                     output_hidden_states=hidden_states, return_dict=True)
            logits = out.logits[:, P:]
            tensors["token_type_ids"] = batch["token_type_ids"]
            if objective == "mlm":
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         batch["labels"].reshape(-1), ignore_index=-100)
                tensors["labels"] = batch["labels"]
                out_logits = logits
            else:
                out_logits = logits[torch.arange(B), batch["mask_positions"]][:, batch["verbalizer_ids"]]
                loss = torch.nn.functional.cross_entropy(out_logits, batch["class_labels"])
                tensors.update(mask_positions=batch["mask_positions"], verbalizer_ids=batch["verbalizer_ids"],
                               class_labels=batch["class_labels"])
        elif kind == "t5":
            out = pm(input_ids=ids, attention_mask=am, labels=batch["labels"], output_hidden_states=hidden_states,
                     return_dict=True, use_cache=False)
            loss, out_logits = out.loss, out.logits
            tensors["labels"] = batch["labels"]
        else:
            out = pm(input_ids=ids, attention_mask=am, labels=batch["labels"], output_hidden_states=hidden_states,
                     return_dict=True)
            loss, out_logits = out.loss, out.logits[:, P:]
            tensors["labels"] = batch["labels"]
            full = torch.cat([torch.full((B, P), -100, dtype=torch.int64), batch["labels"]], 1)
            assert rel_err(loss, causal_loss(out.logits, full)) < 1e-6
        prompts = held["prompts"]  # [B, rows, d]: one encoder run, repeated over the batch
        assert prompts.shape == (B, P * n_sub, we.weight.shape[1])
        loss.backward()
    for n, p in pm.named_parameters():
        if not n.startswith("prompt_encoder."):
            assert p.grad is None or p.grad.abs().sum() == 0, n
    prompt = prompts[0, :P].detach().clone()
    prompt_grad = prompts.grad[:, :P].sum(0).detach().clone()
    if n_sub == 2:
        assert prompts.grad[:, P:].abs().sum() == 0
    # the hand-written path: the encoder output as a plain prompt gives the same loss
    with torch.no_grad():
        x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), we(ids)], 1)
        m2 = torch.cat([torch.ones(B, P, dtype=am.dtype), am], 1)
        if kind == "bert":
            t2 = torch.cat([torch.zeros(B, P, dtype=torch.int64), batch["token_type_ids"]], 1)
            o2 = model(inputs_embeds=x, attention_mask=m2, token_type_ids=t2).logits[:, P:]
            ref_logits = out.logits[:, P:]
        elif kind == "t5":
            o2 = model(inputs_embeds=x, attention_mask=m2, labels=batch["labels"]).logits
            ref_logits = out.logits
        else:
            o2 = model(inputs_embeds=x, attention_mask=m2).logits[:, P:]
            ref_logits = out.logits[:, P:]
        assert rel_err(o2, ref_logits) < 1e-6
    tensors.update(prompt=prompt, prompt_grad=prompt_grad, loss=loss.detach(), logits=out_logits.detach())
    tensors.update(encoder_tensors(enc))
    if hidden_states:
        if kind == "t5":
            for i, h in enumerate(out.encoder_hidden_states):
                tensors[f"encoder_hidden_states.{i}"] = h.detach()
            for i, h in enumerate(out.decoder_hidden_states):
                tensors[f"decoder_hidden_states.{i}"] = h.detach()
        else:
            for i, h in enumerate(out.hidden_states):
                tensors[f"hidden_states.{i}"] = h.detach()
    arch = {"bert": "bert", "t5": "t5"}.get(kind) or decoder_meta(model.config.model_type)
    obj = {"t5": "seq2seq", "decoder": "causal"}.get(kind, objective)
    extra = {"model_type": model.config.model_type} if kind == "decoder" else None
    save_ref(path, tensors, deep_metadata(arch, obj, P, "p-tuning", mname, peft_config_json(pm), extra))
    log(f"  {path}: p-tuning {reparam} B={B} T={T} P={P} rows={P * n_sub} loss={loss.item():.4f}")
    return tensors


def prefix_tensors_from_peft(pm, P):
    """PEFT's prefix-encoder output [P, N*2*w] (before the batch view), with its gradient captured."""
    enc = pm.prompt_encoder["default"]
    holder = {}
    orig = enc.forward

    def fwd(prefix):
        out = orig(prefix)
        out.retain_grad()
        holder["out"] = out
        return out
    return enc, holder, fwd, orig


def peft_prefix_reference(kind, folder, path, P, batch, seed, projection=False, enc_hidden=None, extra_cfg=None,
                          hidden_states=True, adapter_dir=None):
    """PEFT PREFIX_TUNING under PEFT's placement. kind: t5 | decoder."""
    mname = os.path.basename(folder)
    model = load_t5(folder) if kind == "t5" else load_decoder(folder)
    task = TaskType.SEQ_2_SEQ_LM if kind == "t5" else TaskType.CAUSAL_LM
    kw = dict(num_virtual_tokens=P, prefix_projection=projection)
    if enc_hidden is not None:
        kw["encoder_hidden_size"] = enc_hidden
    kw.update(extra_cfg or {})
    pm = make_peft_deep(model, task, PrefixTuningConfig, seed, **kw)
    cfg = pm.peft_config["default"]
    N, w = cfg.num_layers, cfg.token_dim
    enc, holder, fwd, orig = prefix_tensors_from_peft(pm, P)
    ids, am, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    B, T = ids.shape
    enc.forward = fwd
    try:
        out = pm(input_ids=ids, attention_mask=am, labels=labels, output_hidden_states=hidden_states, return_dict=True)
    finally:
        enc.forward = orig
    po = holder["out"]  # [B, P, N*2*w]
    assert po.shape == (B, P, N * 2 * w), po.shape
    assert torch.equal(po[0], po[-1])
    if kind == "decoder":
        assert out.logits.shape[:2] == (B, T)
        assert rel_err(out.loss, causal_loss(out.logits, labels)) < 1e-6
    else:
        assert rel_err(out.loss, torch.nn.functional.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1), ignore_index=-100)) < 1e-6
    out.loss.backward()
    for n, p in pm.named_parameters():
        if not n.startswith("prompt_encoder."):
            assert p.grad is None or p.grad.abs().sum() == 0, n
    prefix = po[0].detach().clone()
    prefix_grad = po.grad.sum(0).detach().clone()
    # the same numbers from a hand-built cache (reference-format.md's placement)
    blocks = prefix_blocks(prefix, N, cfg.num_attention_heads)
    with torch.no_grad():
        if kind == "decoder":
            m2 = torch.cat([torch.ones(B, P, dtype=am.dtype), am], 1)
            o2 = model(input_ids=ids, attention_mask=m2, past_key_values=build_cache(blocks, range(N), B)).logits
        else:
            Ld = model.config.num_decoder_layers
            sc = build_cache(blocks, [(2 * l) % N for l in range(Ld)], B)
            o2 = model(input_ids=ids, attention_mask=am, labels=labels,
                       past_key_values=EncoderDecoderCache(sc, DynamicCache())).logits
        e = rel_err(o2, out.logits)
        assert e < 1e-6, f"{path}: PEFT's placement is not the documented one ({e:.2e})"
    unread = []
    if kind == "t5":
        read = {(2 * l) % N for l in range(model.config.num_decoder_layers)}
        unread = [n for n in range(N) if n not in read]
        g = prefix_grad.view(P, N, 2 * w)
        for n in range(N):
            assert (g[:, n].abs().sum() == 0) == (n in unread), (path, n)
    tensors = {"input_ids": ids, "attention_mask": am, "labels": labels, "prefix": prefix, "prefix_grad": prefix_grad,
               "loss": out.loss.detach(), "logits": out.logits.detach()}
    if projection:
        tensors.update(encoder_tensors(enc))
    else:
        assert torch.equal(enc.embedding.weight.grad, prefix_grad)
    if hidden_states:
        if kind == "t5":
            for i, h in enumerate(out.encoder_hidden_states):
                tensors[f"encoder_hidden_states.{i}"] = h.detach()
            for i, h in enumerate(out.decoder_hidden_states):
                tensors[f"decoder_hidden_states.{i}"] = h.detach()
        else:
            for i, h in enumerate(out.hidden_states):
                assert h.shape[:2] == (B, T)
                tensors[f"hidden_states.{i}"] = h.detach()
    arch = "t5" if kind == "t5" else decoder_meta(model.config.model_type)
    extra = {"model_type": model.config.model_type} if kind == "decoder" else {}
    if unread:
        extra["unread_blocks"] = unread
    save_ref(path, tensors, deep_metadata(arch, "seq2seq" if kind == "t5" else "causal", P, "prefix", mname,
                                         peft_config_json(pm), extra))
    log(f"  {path}: PEFT prefix{' +projection' if projection else ''} N={N} w={w} B={B} T={T} P={P} "
        f"loss={out.loss.item():.4f}" + (f" unread blocks {unread}" if unread else ""))
    if adapter_dir is not None:
        rmtree_if(adapter_dir)
        with quiet():
            pm.save_pretrained(adapter_dir)
        card = os.path.join(adapter_dir, "README.md")
        if os.path.exists(card):
            os.remove(card)
        with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
            assert list(f.keys()) == ["prompt_embeddings"]
            e = rel_err(f.get_tensor("prompt_embeddings"), prefix)  # batch 1 there, batch B here: rounding only
            assert e < 1e-6, f"adapter != prefix-encoder output ({e:.2e})"
    return tensors


def prefix_blocks(prefix, N, heads):
    """[P, N*2*w] -> list of N (k, v), each [heads, P, head_dim] (row = N blocks [k0 v0 k1 v1 ...], head-major)."""
    P, W = prefix.shape
    hd = W // (N * 2 * heads)
    x = prefix.view(P, N, 2, heads, hd)
    return [(x[:, n, 0].permute(1, 0, 2), x[:, n, 1].permute(1, 0, 2)) for n in range(N)]


def build_cache(blocks, which, B):
    """A DynamicCache whose layer l holds block which[l], expanded over the batch."""
    c = DynamicCache()
    for l, n in enumerate(which):
        k, v = blocks[n]
        c.update(k.unsqueeze(0).expand(B, -1, -1, -1).contiguous(), v.unsqueeze(0).expand(B, -1, -1, -1).contiguous(), l)
    return c


@contextlib.contextmanager
def t5_encoder_prefix_hook(model, enc_blocks):
    """Papers placement, encoder side: every encoder self-attention layer l gets block l in front of its keys and
    values. Done by handing transformers 5's own T5Attention a cache that holds the block (as its decoder does), with
    the encoder mask extended by P zero (= keep) columns. The relative bias then uses query positions P..P+T-1 and key
    positions 0..P+T-1 (T5Attention.compute_bias with past_seen_tokens = P), bidirectional buckets."""
    atts = [blk.layer[0].SelfAttention for blk in model.encoder.block]
    origs = [a.forward for a in atts]
    state = {}

    def wrap(att, orig):
        def fwd(hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kw):
            assert key_value_states is None and cache is None
            B, T = hidden_states.shape[:2]
            P = enc_blocks[0][0].shape[1]
            if att.layer_idx == 0:
                state["cache"] = build_cache(enc_blocks, range(len(atts)), B)
            if mask is None:
                mask = torch.zeros(B, 1, T, T, dtype=hidden_states.dtype)
            mask = torch.cat([torch.zeros(*mask.shape[:3], P, dtype=mask.dtype), mask], -1)
            return orig(hidden_states, mask=mask, position_bias=position_bias, cache=state["cache"], **kw)
        return fwd
    for a, o in zip(atts, origs):
        a.forward = wrap(a, o)
    try:
        yield
    finally:
        for a, o in zip(atts, origs):
            a.forward = o


def make_prefix_params(P, N, w, seed, projection, enc_hidden):
    """Papers-placement prefix parameters: PEFT's PrefixEncoder module (same init rules), built with
    token_dim = w (the attention's inner width) and num_layers = N."""
    cfg = PrefixTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=P, token_dim=w, num_layers=N,
                             num_attention_heads=1, prefix_projection=projection,
                             encoder_hidden_size=enc_hidden or w)
    torch.manual_seed(seed)
    return PrefixEncoder(cfg)


def t5_papers_prefix_reference(folder, path, P, batch, seed, projection=False, enc_hidden=None, hidden_states=True):
    """T5 prefix tuning under the papers' placement (N = L_enc + L_dec blocks of heads*d_kv each)."""
    mname = os.path.basename(folder)
    model = load_t5(folder)
    model.requires_grad_(False)
    c = model.config
    Le, Ld, H, dkv = c.num_layers, c.num_decoder_layers, c.num_heads, c.d_kv
    N, w = Le + Ld, H * dkv
    enc = make_prefix_params(P, N, w, seed, projection, enc_hidden)
    ids, am, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    B, T = ids.shape
    prefix = enc(torch.arange(P).unsqueeze(0))[0]
    prefix.retain_grad()
    blocks = prefix_blocks(prefix, N, H)
    with t5_encoder_prefix_hook(model, blocks[:Le]):
        out = model(input_ids=ids, attention_mask=am, labels=labels, output_hidden_states=True, return_dict=True,
                    past_key_values=EncoderDecoderCache(build_cache(blocks, range(Le, N), B), DynamicCache()))
    out.loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is None or p.grad.abs().sum() == 0, n
    tensors = {"input_ids": ids, "attention_mask": am, "labels": labels, "prefix": prefix.detach().clone(),
               "prefix_grad": prefix.grad.detach().clone(), "loss": out.loss.detach(), "logits": out.logits.detach()}
    g = prefix.grad.view(P, N, 2 * w)
    assert all(g[:, n].abs().sum() > 0 for n in range(N)), "every block must be read"
    if projection:
        tensors.update(encoder_tensors(enc))
    for i, h in enumerate(out.encoder_hidden_states if hidden_states else []):
        assert h.shape[:2] == (B, T)
        tensors[f"encoder_hidden_states.{i}"] = h.detach()
    for i, h in enumerate(out.decoder_hidden_states if hidden_states else []):
        tensors[f"decoder_hidden_states.{i}"] = h.detach()
    extra = {"placement": "papers", "num_layers": N, "prefix_projection": projection,
             "encoder_hidden_size": (enc_hidden or w) if projection else None}
    save_ref(path, tensors, deep_metadata("t5", "seq2seq", P, "prefix", mname, None, extra))
    log(f"  {path}: papers prefix{' +projection' if projection else ''} N={N} w={w} B={B} T={T} P={P} "
        f"loss={out.loss.item():.4f}")
    return tensors


# --------------------------------------------------------------------------------------------
# BERT prefix tuning under the papers' placement (P-tuning v2), cross-checked against
# scripts/bert_prefix_v4.py in the transformers 4.x venv
# --------------------------------------------------------------------------------------------

VENV4_PYTHON = os.environ.get("SOFTPROMPT_VENV4_PYTHON", "/work/venv4/bin/python")
BERT_V4_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "bert_prefix_v4.py")


@contextlib.contextmanager
def bert_prefix_hook(model, blocks):
    """Papers placement (P-tuning v2) in transformers 5: every BertSelfAttention layer l gets block l in front of its
    keys and values, through the module's own cache path, with the mask extended by P zero (= keep) columns."""
    atts = [layer.attention.self for layer in model.bert.encoder.layer] if hasattr(model, "bert") else \
        [layer.attention.self for layer in model.encoder.layer]
    origs = [a.forward for a in atts]
    state = {}

    def wrap(att, orig):
        def fwd(hidden_states, attention_mask=None, cache=None, **kw):
            assert cache is None
            B, T = hidden_states.shape[:2]
            P = blocks[0][0].shape[1]
            if att.layer_idx == 0:
                state["cache"] = build_cache(blocks, range(len(atts)), B)
            if attention_mask is None:
                attention_mask = torch.zeros(B, 1, T, T, dtype=hidden_states.dtype)
            attention_mask = torch.cat([torch.zeros(*attention_mask.shape[:3], P, dtype=attention_mask.dtype),
                                        attention_mask], -1)
            return orig(hidden_states, attention_mask=attention_mask, cache=state["cache"], **kw)
        return fwd
    for a, o in zip(atts, origs):
        a.forward = wrap(a, o)
    try:
        yield
    finally:
        for a, o in zip(atts, origs):
            a.forward = o


def bert_papers_prefix_reference(folder, path, objective, P, batch, seed, projection=False, enc_hidden=None,
                                 pos_offset="P", use_token_types=True, v4_results=None, hidden_states=True):
    """BERT prefix tuning with P-tuning v2's semantics (the papers' placement), computed by hooking transformers 5's
    BertSelfAttention and, where pos_offset == "P", cross-checked against transformers 4.x + PEFT 0.10 running
    P-tuning v2's call (scripts/bert_prefix_v4.py)."""
    mname = os.path.basename(folder)
    model = load_bert(folder)
    model.requires_grad_(False)
    c = model.config
    N, w, H = c.num_hidden_layers, c.hidden_size, c.num_attention_heads
    enc = make_prefix_params(P, N, w, seed, projection, enc_hidden)
    ids, am = batch["input_ids"], batch["attention_mask"]
    tt = batch["token_type_ids"] if use_token_types else torch.zeros_like(ids)
    B, T = ids.shape
    off = P if pos_offset == "P" else 0
    prefix = enc(torch.arange(P).unsqueeze(0))[0]
    prefix.retain_grad()
    blocks = prefix_blocks(prefix, N, H)
    with bert_prefix_hook(model, blocks):
        out = model(input_ids=ids, attention_mask=am, token_type_ids=tt, position_ids=(off + torch.arange(T))[None],
                    output_hidden_states=True, return_dict=True)
    logits = out.logits
    tensors = {"input_ids": ids, "attention_mask": am}
    if use_token_types:
        tensors["token_type_ids"] = tt
    if objective == "mlm":
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                                 ignore_index=-100)
        tensors["labels"] = batch["labels"]
        out_logits = logits
    else:
        out_logits = logits[torch.arange(B), batch["mask_positions"]][:, batch["verbalizer_ids"]]
        loss = torch.nn.functional.cross_entropy(out_logits, batch["class_labels"])
        tensors.update(mask_positions=batch["mask_positions"], verbalizer_ids=batch["verbalizer_ids"],
                       class_labels=batch["class_labels"])
    loss.backward()
    tensors.update(prefix=prefix.detach().clone(), prefix_grad=prefix.grad.detach().clone(), loss=loss.detach(),
                   logits=out_logits.detach())
    if projection:
        tensors.update(encoder_tensors(enc))
    for i, h in enumerate(out.hidden_states if hidden_states else []):
        assert h.shape == (B, T, w)
        tensors[f"hidden_states.{i}"] = h.detach()
    cross = "not run"
    if pos_offset == "P":
        cross = bert_v4_crosscheck(folder, objective, P, tensors, enc, projection, enc_hidden)
        if v4_results is not None:
            v4_results[path] = cross
    extra = {"placement": "papers", "num_layers": N, "real_token_position_offset": off,
             "prefix_projection": projection, "encoder_hidden_size": (enc_hidden or w) if projection else None}
    save_ref(path, tensors, deep_metadata("bert", objective, P, "prefix", mname, None, extra))
    log(f"  {path}: papers prefix{' +projection' if projection else ''} N={N} B={B} T={T} P={P} positions "
        f"{off}..{off + T - 1} loss={loss.item():.4f}; transformers 4 + PEFT 0.10: {cross}")
    return tensors


def bert_v4_crosscheck(folder, objective, P, tensors, enc, projection, enc_hidden):
    """Run scripts/bert_prefix_v4.py in the transformers 4.x venv on the same prefix and batch; compare."""
    import subprocess
    import tempfile
    if not os.path.exists(VENV4_PYTHON):
        return f"skipped ({VENV4_PYTHON} missing; scripts/make_venv.sh --v4 makes it)"
    with tempfile.TemporaryDirectory() as td:
        job = {k: v for k, v in tensors.items() if k in ("input_ids", "attention_mask", "token_type_ids", "labels",
                                                          "mask_positions", "verbalizer_ids", "class_labels")}
        for n, p in enc.named_parameters():
            job["encoder." + n] = p.detach().clone()
        meta = {"model_folder": os.path.abspath(folder), "num_virtual_tokens": P, "objective": objective,
                "prefix_projection": projection, "encoder_hidden_size": enc_hidden}
        save_file({k: v.contiguous() for k, v in job.items()}, os.path.join(td, "in.safetensors"),
                  metadata={"job": jdump(meta)})
        r = subprocess.run([VENV4_PYTHON, BERT_V4_SCRIPT, os.path.join(td, "in.safetensors"),
                            os.path.join(td, "out.safetensors")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        with safe_open(os.path.join(td, "out.safetensors"), "pt") as f:
            res = {k: f.get_tensor(k) for k in f.keys()}
            producer = f.metadata()["producer"]
    T = tensors["input_ids"].shape[1]
    assert torch.equal(res["position_ids"], P + torch.arange(T)), res["position_ids"]
    worst = 0.0
    for k, v in res.items():
        if k in tensors:
            e = rel_err(v, tensors[k])
            worst = max(worst, e)
            assert e < 1e-5, f"transformers 4 + PEFT 0.10 disagree on {k}: {e:.2e}"
    msg = f"{producer}: positions {P}..{P + T - 1}, worst rel diff {worst:.1e}"
    if "peft_forward_rel_err" in res:
        msg += f", PEFT FEATURE_EXTRACTION forward {res['peft_forward_rel_err'].item():.1e}"
    return msg
