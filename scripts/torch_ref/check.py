"""Self-check of the BERT and T5 references: an independent implementation from the documented rules."""

import json
import math
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .bert_t5 import load_t5
from .common import SELF_CHECK_TOL, rel_err


# --------------------------------------------------------------------------------------------
# Self-check: an independent implementation that follows the documented rules
# --------------------------------------------------------------------------------------------


def load_checkpoint(folder):
    """All float tensors of the folder's checkpoint (single file or sharded index), as float32;
    non-float tensors are skipped, as the engine must."""
    idx = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    W = {}
    for f in files:
        for k, v in load_file(os.path.join(folder, f)).items():
            if torch.is_floating_point(v):
                W[k] = v.to(torch.float32)
    return W


def act_fn(name):
    if name == "gelu":
        return lambda x: torch.nn.functional.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "relu":
        return torch.relu
    if name in ("silu", "swish"):
        return torch.nn.functional.silu
    raise ValueError(name)


class IndBert:
    def __init__(self, folder, dtype=torch.float32):
        cfg = json.load(open(os.path.join(folder, "config.json")))
        W = load_checkpoint(folder)
        self.W = {(k[5:] if k.startswith("bert.") else k): v.to(dtype) for k, v in W.items()}
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.act = act_fn(cfg.get("hidden_act", "gelu"))

    def ln(self, x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.W[name + ".weight"], self.W[name + ".bias"],
                                              self.eps)

    def lin(self, x, name):
        return x @ self.W[name + ".weight"].T + self.W[name + ".bias"]

    def forward(self, prompt, ids, am, tt):
        W = self.W
        B, T = ids.shape
        P = prompt.shape[0]
        S = P + T
        x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), W["embeddings.word_embeddings.weight"][ids]], 1)
        ttf = torch.cat([torch.zeros(B, P, dtype=torch.int64), tt], 1)
        x = x + W["embeddings.position_embeddings.weight"][:S].unsqueeze(0) + W["embeddings.token_type_embeddings.weight"][ttf]
        x = self.ln(x, "embeddings.LayerNorm")
        hs = [x]
        keep = torch.cat([torch.ones(B, P, dtype=torch.bool), am.bool()], 1)
        for l in range(self.L):
            p = f"encoder.layer.{l}."
            d = x.shape[-1]
            hd = d // self.H

            def split(t):
                return t.view(B, S, self.H, hd).transpose(1, 2)
            q, k, v = (split(self.lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            sc = q @ k.transpose(-1, -2) / math.sqrt(hd)
            sc = sc.masked_fill(~keep[:, None, None, :], float("-inf"))
            ctx = (sc.softmax(-1) @ v).transpose(1, 2).reshape(B, S, d)
            x = self.ln(self.lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self.lin(self.act(self.lin(x, p + "intermediate.dense")), p + "output.dense")
            x = self.ln(h + x, p + "output.LayerNorm")
            hs.append(x)
        return x, hs

    def mlm_logits(self, x):
        t = self.act(self.lin(x, "cls.predictions.transform.dense"))
        t = self.ln(t, "cls.predictions.transform.LayerNorm")
        Wd = self.W.get("cls.predictions.decoder.weight", self.W["embeddings.word_embeddings.weight"])
        return t @ Wd.T + self.W["cls.predictions.bias"]


def ind_bucket(rel, bidirectional, num_buckets, max_distance):
    """Reimplementation of T5's bucket rule (float32 log, truncation toward zero)."""
    nb = num_buckets
    ret = torch.zeros_like(rel)
    if bidirectional:
        nb //= 2
        ret = ret + (rel > 0).long() * nb
        n = rel.abs()
    else:
        n = (-rel).clamp_min(0)
    me = nb // 2
    f = n.to(torch.float32)
    large = me + (torch.log(f / me) / math.log(max_distance / me) * (nb - me)).long()
    large = large.clamp_max(nb - 1)
    return ret + torch.where(n < me, n, large)


class IndT5:
    def __init__(self, folder, dtype=torch.float32):
        cfg = json.load(open(os.path.join(folder, "config.json")))
        self.W = {k: v.to(dtype) for k, v in load_checkpoint(folder).items()}
        self.d = cfg["d_model"]
        self.H = cfg["num_heads"]
        self.dkv = cfg["d_kv"]
        self.Le = cfg["num_layers"]
        self.Ld = cfg.get("num_decoder_layers") or self.Le
        self.eps = cfg.get("layer_norm_epsilon", 1e-6)
        self.nb = cfg.get("relative_attention_num_buckets", 32)
        self.md = cfg.get("relative_attention_max_distance", 128)
        ffp = cfg.get("feed_forward_proj", "relu")
        self.gated = ffp.split("-")[0] == "gated"
        a = ffp.split("-")[-1]
        if ffp == "gated-gelu":
            a = "gelu_new"
        a = cfg.get("dense_act_fn", a)
        self.act = act_fn(a)
        self.scale = cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings", True))
        self.lm = self.W.get("lm_head.weight", self.W["shared.weight"])
        self.start = cfg.get("decoder_start_token_id", 0)
        self.pad = cfg.get("pad_token_id", 0)

    def rms(self, x, name):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.W[name] * (x * torch.rsqrt(var + self.eps))

    def attn(self, x, kv, p, bias, keep):
        B, S, _ = x.shape
        Skv = kv.shape[1]

        def split(t, n):
            return t.view(B, n, self.H, self.dkv).transpose(1, 2)
        q = split(x @ self.W[p + ".q.weight"].T, S)
        k = split(kv @ self.W[p + ".k.weight"].T, Skv)
        v = split(kv @ self.W[p + ".v.weight"].T, Skv)
        sc = q @ k.transpose(-1, -2)  # no 1/sqrt(d_kv)
        if bias is not None:
            sc = sc + bias
        sc = sc.masked_fill(~keep, float("-inf"))
        ctx = (sc.softmax(-1) @ v).transpose(1, 2).reshape(B, S, self.H * self.dkv)
        return ctx @ self.W[p + ".o.weight"].T

    def ff(self, x, p):
        if self.gated:
            h = self.act(x @ self.W[p + ".wi_0.weight"].T) * (x @ self.W[p + ".wi_1.weight"].T)
        else:
            h = self.act(x @ self.W[p + ".wi.weight"].T)
        return h @ self.W[p + ".wo.weight"].T

    def rel_bias(self, table, q, k, bidirectional):
        rel = torch.arange(k)[None, :] - torch.arange(q)[:, None]
        bk = ind_bucket(rel, bidirectional, self.nb, self.md)
        return table[bk].permute(2, 0, 1).unsqueeze(0)

    def forward(self, prompt, ids, am, labels):
        W = self.W
        B, T = ids.shape
        P = prompt.shape[0]
        S = P + T
        x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), W["shared.weight"][ids]], 1)
        keep_enc = torch.cat([torch.ones(B, P, dtype=torch.bool), am.bool()], 1)[:, None, None, :]
        bias = self.rel_bias(W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], S, S, True)
        ehs = [x]
        for l in range(self.Le):
            p = f"encoder.block.{l}.layer."
            h = self.rms(x, p + "0.layer_norm.weight")
            x = x + self.attn(h, h, p + "0.SelfAttention", bias, keep_enc)
            x = x + self.ff(self.rms(x, p + "1.layer_norm.weight"), p + "1.DenseReluDense")
            ehs.append(x)
        x = self.rms(x, "encoder.final_layer_norm.weight")
        ehs[-1] = x
        L = labels.shape[1]
        dec_in = torch.cat([torch.full((B, 1), self.start, dtype=torch.int64), labels[:, :-1]], 1)
        dec_in = dec_in.masked_fill(dec_in == -100, self.pad)
        y = W["shared.weight"][dec_in]
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool))[None, None]
        dbias = self.rel_bias(W["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], L, L, False)
        dhs = [y]
        for l in range(self.Ld):
            p = f"decoder.block.{l}.layer."
            h = self.rms(y, p + "0.layer_norm.weight")
            y = y + self.attn(h, h, p + "0.SelfAttention", dbias, causal)
            h = self.rms(y, p + "1.layer_norm.weight")
            y = y + self.attn(h, x, p + "1.EncDecAttention", None, keep_enc)
            y = y + self.ff(self.rms(y, p + "2.layer_norm.weight"), p + "2.DenseReluDense")
            dhs.append(y)
        y = self.rms(y, "decoder.final_layer_norm.weight")
        dhs[-1] = y
        if self.scale:
            y = y * (self.d ** -0.5)
        logits = y @ self.lm.T
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        return loss, logits, ehs, dhs


def read_ref(path):
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["softprompt"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def ind_loss(folder, meta, t, dtype=torch.float32, prompt=None, head=None):
    """Loss and outputs of the independent implementation for the reference file's batch."""
    if prompt is None:
        prompt = t["prompt"].to(dtype)
    if meta["arch"] == "bert":
        m = IndBert(folder, dtype)
        tt = t.get("token_type_ids", torch.zeros_like(t["input_ids"]))
        x, hs = m.forward(prompt, t["input_ids"], t["attention_mask"], tt)
        P = prompt.shape[0]
        B = x.shape[0]
        out = {f"hidden_states.{i}": h for i, h in enumerate(hs)}
        if meta["objective"] == "mlm":
            logits = m.mlm_logits(x[:, P:])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t["labels"].reshape(-1),
                                                     ignore_index=-100)
        elif meta["objective"] == "pet":
            xm = x[:, P:][torch.arange(B), t["mask_positions"]]
            logits = m.mlm_logits(xm)[:, t["verbalizer_ids"]]
            loss = torch.nn.functional.cross_entropy(logits, t["class_labels"])
        elif meta["objective"] == "cls":
            hw, hb = head if head is not None else (t["head_weight"].to(dtype), t["head_bias"].to(dtype))
            last = x[:, P:]
            if meta["pooling"] == "mean":
                mf = t["attention_mask"].to(dtype).unsqueeze(-1)
                pooled = (last * mf).sum(1) / mf.sum(1)
            else:
                pooled = last[:, 0]
            logits = pooled @ hw.T + hb
            loss = torch.nn.functional.cross_entropy(logits, t["class_labels"])
        out.update(loss=loss, logits=logits)
        return out
    m = IndT5(folder, dtype)
    loss, logits, ehs, dhs = m.forward(prompt, t["input_ids"], t["attention_mask"], t["labels"])
    out = {"loss": loss, "logits": logits}
    out.update({f"encoder_hidden_states.{i}": h for i, h in enumerate(ehs)})
    out.update({f"decoder_hidden_states.{i}": h for i, h in enumerate(dhs)})
    return out


def rounding_hint(e64, errs32, k):
    """Why a float64 comparison failed: with the float32 recomputation much closer to the reference than the
    reference is to the float64 value, the gap is the reference's own float32 rounding (an ill-conditioned model)."""
    if k not in errs32 or errs32[k] >= e64 / 4:
        return ""
    return (f"; the float32 recomputation is {errs32[k]:.2e} from it, so this is the reference's float32 rounding: "
            "the model is too ill-conditioned for float32 parity")


def check_ref(path, fd=False):
    """Recompute a reference with the independent implementation (float32 and float64) and,
    optionally, finite differences in float64. Returns the worst relative error."""
    folder = os.path.dirname(path)
    meta, t = read_ref(path)
    assert meta["format"] == 1 and meta["num_virtual_tokens"] == t["prompt"].shape[0]
    worst = 0.0
    errs32 = {}
    for dtype in (torch.float32, torch.float64):
        tol = SELF_CHECK_TOL[dtype]
        prompt = t["prompt"].to(dtype).clone().requires_grad_(True)
        head = None
        if meta["objective"] == "cls":
            head = (t["head_weight"].to(dtype).clone().requires_grad_(True),
                    t["head_bias"].to(dtype).clone().requires_grad_(True))
        out = ind_loss(folder, meta, t, dtype, prompt=prompt, head=head)
        out["loss"].backward()
        out["prompt_grad"] = prompt.grad
        if head is not None:
            out["head_weight_grad"], out["head_bias_grad"] = head[0].grad, head[1].grad
        for k, v in t.items():
            if k in out:
                e = rel_err(out[k], v)
                worst = max(worst, e)
                if dtype == torch.float32:
                    errs32[k] = e
                assert e < tol, f"{path}: {k} rel err {e:.2e} ({dtype}, bound {tol:.0e})" + rounding_hint(e, errs32, k)
        expected_out = {k for k in t if k.startswith(("hidden_states.", "encoder_hidden_states.",
                                                      "decoder_hidden_states."))}
        missing = expected_out - set(out)
        assert not missing, (path, missing)
    # transformers with SDPA attention instead of eager gives the same numbers
    if meta["arch"] == "t5":
        m = load_t5(folder, attn="sdpa")
        P = t["prompt"].shape[0]
        emb = torch.cat([t["prompt"].unsqueeze(0).expand(t["input_ids"].shape[0], -1, -1),
                         m.get_input_embeddings()(t["input_ids"])], 1)
        am = torch.cat([torch.ones(emb.shape[0], P, dtype=torch.int64), t["attention_mask"]], 1)
        with torch.no_grad():
            o = m(inputs_embeds=emb, attention_mask=am, labels=t["labels"])
        assert rel_err(o.logits, t["logits"]) < SELF_CHECK_TOL[torch.float32]
    fd_report = None
    if fd:
        fd_report = finite_difference(folder, meta, t)
    return worst, fd_report


def finite_difference(folder, meta, t, n_dirs=4, h=1e-5):
    """Central differences of the float64 loss along random directions and single coordinates,
    against the float64 autograd gradient; and the stored float32 gradient against float64."""
    g = torch.Generator().manual_seed(12345)
    p0 = t["prompt"].to(torch.float64)
    pr = p0.clone().requires_grad_(True)
    head = None
    if meta["objective"] == "cls":
        head = (t["head_weight"].double(), t["head_bias"].double())
    loss = ind_loss(folder, meta, t, torch.float64, prompt=pr, head=head)["loss"]
    loss.backward()
    grad64 = pr.grad.detach()

    def f(p):
        with torch.no_grad():
            return ind_loss(folder, meta, t, torch.float64, prompt=p, head=head)["loss"].item()
    worst = 0.0
    dirs = [torch.randn(p0.shape, generator=g, dtype=torch.float64) for _ in range(n_dirs)]
    for idx in [(0, 0), (p0.shape[0] - 1, p0.shape[1] - 1), (p0.shape[0] // 2, 3)]:
        e = torch.zeros_like(p0)
        e[idx] = 1.0
        dirs.append(e)
    for dvec in dirs:
        fd_val = (f(p0 + h * dvec) - f(p0 - h * dvec)) / (2 * h)
        an = (grad64 * dvec).sum().item()
        err = abs(fd_val - an) / max(abs(an), 1e-8)
        worst = max(worst, err)
        assert err < 1e-5, f"finite difference mismatch: fd {fd_val} autograd {an}"
    e32 = rel_err(t["prompt_grad"], grad64)
    assert e32 < SELF_CHECK_TOL[torch.float64], e32
    return {"fd_worst_rel": worst, "f32_grad_vs_f64_rel": e32}


def check_buckets(path):
    with safe_open(path, "pt") as f:
        rp = f.get_tensor("relative_position")
        for k in f.keys():
            if k.startswith("buckets."):
                _, kind, nb, md = k.split(".")
                want = ind_bucket(rp, kind == "bidir", int(nb), int(md))
                assert torch.equal(f.get_tensor(k), want), k


def check_adapters(out):
    for adir, ref, rows in [("bert_mlm/peft_adapter", "bert_mlm/ref_mlm_random.safetensors", 1),
                            ("t5_v1_0/peft_adapter_2sub", "t5_v1_0/ref_seq2seq_text.safetensors", 2),
                            ("t5_v1_0/peft_adapter_1sub", "t5_v1_0/ref_seq2seq_text.safetensors", 1)]:
        a = os.path.join(out, adir)
        if not os.path.isdir(a):
            continue
        cfg = json.load(open(os.path.join(a, "adapter_config.json")))
        _, t = read_ref(os.path.join(out, ref))
        P = t["prompt"].shape[0]
        with safe_open(os.path.join(a, "adapter_model.safetensors"), "pt") as f:
            pe = f.get_tensor("prompt_embeddings")
        assert cfg["num_virtual_tokens"] == P and cfg["num_transformer_submodules"] == rows
        assert pe.shape == (rows * P, t["prompt"].shape[1]) and torch.equal(pe[:P], t["prompt"]), adir
