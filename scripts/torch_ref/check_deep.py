"""Self-check of the decoder-only and deep-prompt references (independent plain-torch models)."""

import json
import math
import os
import warnings

import torch

from .check import IndBert, IndT5, act_fn, ind_bucket, load_checkpoint, read_ref
from .common import SELF_CHECK_TOL, rel_err
from .decoder_only import causal_loss
from .deep import prefix_blocks


# --------------------------------------------------------------------------------------------
# Self-check of the decoder-only and deep-prompt references: independent implementations
# (plain torch, from config.json and the safetensors files, written from reference-format.md)
# --------------------------------------------------------------------------------------------


def _strip(W, prefixes):
    out = {}
    for k, v in W.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def ind_alibi_slopes(H):
    """ALiBi slopes (Press et al.; BLOOM's rule for a head count that is not a power of two)."""
    def pow2(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]
    c = 2 ** math.floor(math.log2(H))
    s = pow2(c)
    if c != H:
        s += pow2(2 * c)[0::2][: H - c]
    return torch.tensor(s, dtype=torch.float64)


def ind_inv_freq(cfg, hd):
    params = cfg.get("rope_parameters")
    if params is None:
        params = dict(cfg.get("rope_scaling") or {})
        params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    params = dict(params)
    if "rope_theta" not in params:
        params["rope_theta"] = cfg.get("rope_theta", 10000.0)
    kind = params.get("rope_type", params.get("type", "default"))
    inv = 1.0 / (params["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    if kind == "default":
        return inv
    assert kind == "llama3", kind
    f, lo, hi, old = (params["factor"], params["low_freq_factor"], params["high_freq_factor"],
                      params["original_max_position_embeddings"])
    out = []
    for x in inv.tolist():
        wl = 2 * math.pi / x
        if wl < old / hi:
            out.append(x)
        elif wl > old / lo:
            out.append(x / f)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * x / f + s * x)
    return torch.tensor(out, dtype=torch.float64)


class IndDecoder:
    """BLOOM and the Llama family (Llama, Mistral, Qwen2) in plain torch."""

    def __init__(self, folder, dtype=torch.float32):
        cfg = json.load(open(os.path.join(folder, "config.json")))
        self.cfg = cfg
        self.dtype = dtype
        self.kind = "bloom" if cfg["model_type"] == "bloom" else "llama"
        W = load_checkpoint(folder)
        self.W = {k: v.to(dtype) for k, v in _strip(W, ["transformer.", "model."]).items()}
        if self.kind == "bloom":
            self.d = cfg.get("n_embed", cfg.get("hidden_size"))
            self.L = cfg.get("n_layer", cfg.get("num_hidden_layers"))
            self.H = cfg.get("num_attention_heads", cfg.get("n_head"))
            self.KV = self.H
            self.hd = self.d // self.H
            self.eps = cfg.get("layer_norm_epsilon", 1e-5)
            self.emb = self.W["word_embeddings.weight"]
            self.lm = self.W.get("lm_head.weight", self.emb)
            self.slopes = ind_alibi_slopes(self.H).to(dtype)
        else:
            self.d = cfg["hidden_size"]
            self.L = cfg["num_hidden_layers"]
            self.H = cfg["num_attention_heads"]
            self.KV = cfg.get("num_key_value_heads") or self.H
            self.hd = cfg.get("head_dim") or self.d // self.H
            self.eps = cfg.get("rms_norm_eps", 1e-6)
            self.emb = self.W["embed_tokens.weight"]
            tied = cfg.get("tie_word_embeddings", False)
            self.lm = self.emb if tied or "lm_head.weight" not in self.W else self.W["lm_head.weight"]
            self.inv_freq = ind_inv_freq(cfg, self.hd)

    def lin(self, x, name):
        y = x @ self.W[name + ".weight"].T
        b = self.W.get(name + ".bias")
        return y if b is None else y + b

    def ln(self, x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.W[name + ".weight"], self.W[name + ".bias"],
                                              self.eps)

    def rms(self, x, name):
        return self.W[name + ".weight"] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, pos):
        ang = pos.to(torch.float64)[:, None] * self.inv_freq[None, :]  # [S, hd/2]
        cos = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype)
        sin = torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, x, am, prefix=None):
        """x [B, S, d] input embeddings (prompt rows included), am [B, S] (1 = real); prefix: None or a list of L
        (k, v) [KV, Pk, hd] (PEFT placement: unrotated keys at positions 0..Pk-1; tokens at Pk..Pk+S-1)."""
        B, S, _ = x.shape
        Pk = 0 if prefix is None else prefix[0][0].shape[1]
        keep = torch.cat([torch.ones(B, Pk, dtype=torch.bool), am.bool()], 1)  # [B, Pk+S]
        qpos = Pk + torch.arange(S)
        kpos = torch.arange(Pk + S)
        allowed = (kpos[None, :] <= qpos[:, None])[None, None] & keep[:, None, None, :]
        hs = []
        if self.kind == "bloom":
            h = self.ln(x, "word_embeddings_layernorm")
            # BLOOM's ALiBi: key position = (cumsum(mask) - 1) * mask over the whole key mask
            kp = ((keep.long().cumsum(-1) - 1) * keep.long()).to(self.dtype)  # [B, Pk+S]
            bias = self.slopes[None, :, None, None] * kp[:, None, None, :]
        else:
            h = x
            bias = None
        hs.append(h)
        G = self.H // self.KV
        for l in range(self.L):
            if self.kind == "bloom":
                p = f"h.{l}."
                a_in = self.ln(h, p + "input_layernorm")
                qkv = self.lin(a_in, p + "self_attention.query_key_value").view(B, S, self.H, 3, self.hd)
                q, k, v = (qkv[..., i, :].transpose(1, 2) for i in range(3))
            else:
                p = f"layers.{l}."
                a_in = self.rms(h, p + "input_layernorm")
                q = self.lin(a_in, p + "self_attn.q_proj").view(B, S, self.H, self.hd).transpose(1, 2)
                k = self.lin(a_in, p + "self_attn.k_proj").view(B, S, self.KV, self.hd).transpose(1, 2)
                v = self.lin(a_in, p + "self_attn.v_proj").view(B, S, self.KV, self.hd).transpose(1, 2)
                q, k = self.rope(q, qpos), self.rope(k, qpos)
            if prefix is not None:
                pk, pv = prefix[l]
                k = torch.cat([pk.unsqueeze(0).expand(B, -1, -1, -1), k], 2)
                v = torch.cat([pv.unsqueeze(0).expand(B, -1, -1, -1), v], 2)
            k = k.repeat_interleave(G, 1)
            v = v.repeat_interleave(G, 1)
            sc = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
            if bias is not None:
                sc = sc + bias
            sc = sc.masked_fill(~allowed, float("-inf"))
            ctx = (sc.softmax(-1) @ v).transpose(1, 2).reshape(B, S, self.H * self.hd)
            if self.kind == "bloom":
                h = h + self.lin(ctx, p + "self_attention.dense")
                m_in = self.ln(h, p + "post_attention_layernorm")
                h = h + self.lin(act_fn("gelu_new")(self.lin(m_in, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
            else:
                h = h + self.lin(ctx, p + "self_attn.o_proj")
                m_in = self.rms(h, p + "post_attention_layernorm")
                g = torch.nn.functional.silu(self.lin(m_in, p + "mlp.gate_proj")) * self.lin(m_in, p + "mlp.up_proj")
                h = h + self.lin(g, p + "mlp.down_proj")
            hs.append(h)
        h = self.ln(h, "ln_f") if self.kind == "bloom" else self.rms(h, "norm")
        if self.kind == "bloom":
            hs = hs[:-1] + [h]  # transformers' BLOOM: inputs of every block, then ln_f's output
        else:
            hs[-1] = h
        return h @ self.lm.T, hs


class IndT5Prefix(IndT5):
    """IndT5 with prefix keys/values: enc_prefix / dec_prefix = list per layer of (k, v) [H, Pk, d_kv] or None.
    Prefix keys sit at positions 0..Pk-1, tokens at Pk..Pk+S-1 (relative bias from key - query position)."""

    def attn_p(self, x, kv, p, table, bidir, keep, pref):
        B, S, _ = x.shape
        Skv = kv.shape[1]

        def split(t, n):
            return t.view(B, n, self.H, self.dkv).transpose(1, 2)
        q = split(x @ self.W[p + ".q.weight"].T, S)
        k = split(kv @ self.W[p + ".k.weight"].T, Skv)
        v = split(kv @ self.W[p + ".v.weight"].T, Skv)
        Pk = 0
        if pref is not None:
            Pk = pref[0].shape[1]
            k = torch.cat([pref[0].unsqueeze(0).expand(B, -1, -1, -1), k], 2)
            v = torch.cat([pref[1].unsqueeze(0).expand(B, -1, -1, -1), v], 2)
        sc = q @ k.transpose(-1, -2)
        if table is not None:
            rel = torch.arange(Pk + Skv)[None, :] - (Pk + torch.arange(S))[:, None]
            sc = sc + table[ind_bucket(rel, bidir, self.nb, self.md)].permute(2, 0, 1).unsqueeze(0)
        sc = sc.masked_fill(~keep, float("-inf"))
        ctx = (sc.softmax(-1) @ v).transpose(1, 2).reshape(B, S, self.H * self.dkv)
        return ctx @ self.W[p + ".o.weight"].T

    def forward_prefix(self, ids, am, labels, enc_prefix, dec_prefix, prompt=None):
        W = self.W
        B, T = ids.shape
        x = W["shared.weight"][ids]
        P = 0
        if prompt is not None:
            P = prompt.shape[0]
            x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), x], 1)
        S = P + T
        am_full = torch.cat([torch.ones(B, P, dtype=torch.bool), am.bool()], 1)
        etab = W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        ehs = [x]
        for l in range(self.Le):
            p = f"encoder.block.{l}.layer."
            pref = enc_prefix[l] if enc_prefix else None
            Pk = 0 if pref is None else pref[0].shape[1]
            keep = torch.cat([torch.ones(B, Pk, dtype=torch.bool), am_full], 1)[:, None, None, :]
            h = self.rms(x, p + "0.layer_norm.weight")
            x = x + self.attn_p(h, h, p + "0.SelfAttention", etab, True, keep, pref)
            x = x + self.ff(self.rms(x, p + "1.layer_norm.weight"), p + "1.DenseReluDense")
            ehs.append(x)
        x = self.rms(x, "encoder.final_layer_norm.weight")
        ehs[-1] = x
        L = labels.shape[1]
        dec_in = torch.cat([torch.full((B, 1), self.start, dtype=torch.int64), labels[:, :-1]], 1)
        dec_in = dec_in.masked_fill(dec_in == -100, self.pad)
        y = W["shared.weight"][dec_in]
        dtab = W["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        dhs = [y]
        for l in range(self.Ld):
            p = f"decoder.block.{l}.layer."
            pref = dec_prefix[l] if dec_prefix else None
            Pk = 0 if pref is None else pref[0].shape[1]
            causal = (torch.arange(Pk + L)[None, :] <= (Pk + torch.arange(L))[:, None])[None, None]
            h = self.rms(y, p + "0.layer_norm.weight")
            y = y + self.attn_p(h, h, p + "0.SelfAttention", dtab, False, causal, pref)
            h = self.rms(y, p + "1.layer_norm.weight")
            y = y + self.attn_p(h, x, p + "1.EncDecAttention", None, False, am_full[:, None, None, :], None)
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


class IndBertPrefix(IndBert):
    """IndBert with per-layer prefix keys/values (P-tuning v2) and a position offset for the real tokens."""

    def forward_prefix(self, ids, am, tt, prefix, pos_offset):
        W = self.W
        B, T = ids.shape
        Pk = prefix[0][0].shape[1]
        pos = pos_offset + torch.arange(T)
        x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][pos].unsqueeze(0)
        x = self.ln(x + W["embeddings.token_type_embeddings.weight"][tt], "embeddings.LayerNorm")
        hs = [x]
        keep = torch.cat([torch.ones(B, Pk, dtype=torch.bool), am.bool()], 1)
        d = x.shape[-1]
        hd = d // self.H
        for l in range(self.L):
            p = f"encoder.layer.{l}."

            def split(t):
                return t.view(B, T, self.H, hd).transpose(1, 2)
            q, k, v = (split(self.lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            k = torch.cat([prefix[l][0].unsqueeze(0).expand(B, -1, -1, -1), k], 2)
            v = torch.cat([prefix[l][1].unsqueeze(0).expand(B, -1, -1, -1), v], 2)
            sc = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~keep[:, None, None, :], float("-inf"))
            ctx = (sc.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
            x = self.ln(self.lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self.lin(self.act(self.lin(x, p + "intermediate.dense")), p + "output.dense")
            x = self.ln(h + x, p + "output.LayerNorm")
            hs.append(x)
        return x, hs


def ind_prompt_encoder(meta, t, dtype):
    """Rebuild the p-tuning prompt encoder or the prefix projection from the encoder.* tensors.
    Returns (function of the parameters -> output rows, list of (name, parameter))."""
    names = sorted(k[len("encoder."):] for k in t if k.startswith("encoder."))
    params = {n: t["encoder." + n].to(dtype).clone().requires_grad_(True) for n in names}
    pc = meta.get("peft_config") or {}
    if meta["method"] == "p-tuning":
        reparam = pc["encoder_reparameterization_type"]

        def run():
            x = params["embedding.weight"]
            if reparam == "LSTM":
                nl = pc["encoder_num_layers"]
                hsz = params["lstm_head.weight_hh_l0"].shape[1]
                lstm = torch.nn.LSTM(x.shape[1], hsz, num_layers=nl, bidirectional=True, batch_first=True).to(dtype)
                for n in list(dict(lstm.named_parameters())):
                    delattr(lstm, n)
                    setattr(lstm, n, params["lstm_head." + n])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    x = lstm(x.unsqueeze(0))[0][0]
                x = torch.relu(x @ params["mlp_head.0.weight"].T + params["mlp_head.0.bias"])
                return x @ params["mlp_head.2.weight"].T + params["mlp_head.2.bias"]
            x = torch.relu(x @ params["mlp_head.0.weight"].T + params["mlp_head.0.bias"])
            x = torch.relu(x @ params["mlp_head.2.weight"].T + params["mlp_head.2.bias"])
            return x @ params["mlp_head.4.weight"].T + params["mlp_head.4.bias"]
    else:  # prefix projection: embedding -> Linear -> tanh -> Linear
        def run():
            x = torch.tanh(params["embedding.weight"] @ params["transform.0.weight"].T + params["transform.0.bias"])
            return x @ params["transform.2.weight"].T + params["transform.2.bias"]
    return run, params


def ind_deep_outputs(folder, meta, t, dtype, prompt=None, prefix=None):
    """Loss, logits and hidden states of a decoder-only or deep-prompt reference, independently."""
    arch, method = meta["arch"], meta.get("method", "prompt")
    ids, am = t["input_ids"], t["attention_mask"]
    B, T = ids.shape
    out = {}
    if arch in ("bloom", "llama"):
        m = IndDecoder(folder, dtype)
        x = m.emb[ids]
        blocks = None
        if method == "prefix":
            pc = meta["peft_config"]
            N, heads = pc["num_layers"], pc["num_attention_heads"]
            blocks = prefix_blocks(prefix, N, heads)
        elif prompt is not None:
            x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), x], 1)
            am = torch.cat([torch.ones(B, prompt.shape[0], dtype=am.dtype), am], 1)
        logits, hs = m.forward(x, am, blocks)
        P = logits.shape[1] - T
        labels = t["labels"]
        if P:
            labels = torch.cat([torch.full((B, P), -100, dtype=torch.int64), labels], 1)
        out["loss"] = causal_loss(logits, labels)
        out["logits"] = logits[:, P:]
        out.update({f"hidden_states.{i}": h for i, h in enumerate(hs)})
        return out
    if arch == "t5":
        m = IndT5Prefix(folder, dtype)
        enc_p = dec_p = None
        if method == "prefix":
            if meta.get("placement") == "papers":
                N = meta["num_layers"]
                blocks = prefix_blocks(prefix, N, m.H)
                enc_p, dec_p = blocks[: m.Le], blocks[m.Le:]
            else:
                pc = meta["peft_config"]
                N = pc["num_layers"]
                blocks = prefix_blocks(prefix, N, pc["num_attention_heads"])
                dec_p = [blocks[(2 * l) % N] for l in range(m.Ld)]
        loss, logits, ehs, dhs = m.forward_prefix(ids, am, t["labels"], enc_p, dec_p, prompt=prompt)
        out.update(loss=loss, logits=logits)
        out.update({f"encoder_hidden_states.{i}": h for i, h in enumerate(ehs)})
        out.update({f"decoder_hidden_states.{i}": h for i, h in enumerate(dhs)})
        return out
    assert arch == "bert"
    if method == "prefix":
        m = IndBertPrefix(folder, dtype)
        blocks = prefix_blocks(prefix, meta["num_layers"], m.H)
        tt = t.get("token_type_ids", torch.zeros_like(ids))
        x, hs = m.forward_prefix(ids, am, tt, blocks, meta["real_token_position_offset"])
        P = 0
    else:
        m = IndBert(folder, dtype)
        tt = t.get("token_type_ids", torch.zeros_like(ids))
        x, hs = m.forward(prompt, ids, am, tt)
        P = prompt.shape[0]
    out.update({f"hidden_states.{i}": h for i, h in enumerate(hs)})
    if meta["objective"] == "mlm":
        logits = m.mlm_logits(x[:, P:])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t["labels"].reshape(-1),
                                                 ignore_index=-100)
    else:
        xm = x[:, P:][torch.arange(B), t["mask_positions"]]
        logits = m.mlm_logits(xm)[:, t["verbalizer_ids"]]
        loss = torch.nn.functional.cross_entropy(logits, t["class_labels"])
    out.update(loss=loss, logits=logits)
    return out


def ind_greedy(folder, prompt, ids, am, n_new, dtype=torch.float32):
    m = IndDecoder(folder, dtype)
    gen, logits = [], []
    for b in range(ids.shape[0]):
        n = int(am[b].sum())
        x = torch.cat([prompt.to(dtype), m.emb[ids[b, :n]]], 0).unsqueeze(0)
        toks, lgs = [], []
        for _ in range(n_new):
            lg = m.forward(x, torch.ones(1, x.shape[1], dtype=torch.int64))[0][0, -1]
            tk = int(lg.argmax())
            toks.append(tk)
            lgs.append(lg)
            x = torch.cat([x, m.emb[tk].view(1, 1, -1)], 1)
        gen.append(toks)
        logits.append(torch.stack(lgs))
    return torch.tensor(gen), torch.stack(logits)


def check_ref_deep(path, out_root, fd=False):
    """Recompute a decoder-only or deep-prompt reference independently, in float32 and float64."""
    meta, t = read_ref(path)
    folder = os.path.join(out_root, meta["model_folder"]) if "model_folder" in meta else os.path.dirname(path)
    method = meta.get("method", "prompt")
    worst = 0.0

    def cmp(name, got, tol):
        nonlocal worst
        e = rel_err(got, t[name])
        worst = max(worst, e)
        assert e < tol, f"{path}: {name} rel err {e:.2e} (bound {tol:.0e})"

    if meta["objective"] == "generate":
        gen, lg = ind_greedy(folder, t["prompt"], t["input_ids"], t["attention_mask"], meta["max_new_tokens"])
        assert torch.equal(gen, t["generated_ids"]), (path, gen, t["generated_ids"])
        cmp("generated_logits", lg, SELF_CHECK_TOL[torch.float32])
        return worst, None
    for dtype in (torch.float32, torch.float64):
        enc_run, enc_params = (None, None)
        if any(k.startswith("encoder.") for k in t):
            enc_run, enc_params = ind_prompt_encoder(meta, t, dtype)
            rows = enc_run()
            key = "prefix" if method == "prefix" else "prompt"
            P = t[key].shape[0]
            cmp(key, rows[:P], SELF_CHECK_TOL[dtype])
            grads = torch.autograd.grad(rows[:P], list(enc_params.values()), t[key + "_grad"].to(dtype),
                                        allow_unused=True)
            for (n, prm), g in zip(enc_params.items(), grads):
                cmp("grad.encoder." + n, g if g is not None else torch.zeros_like(prm), SELF_CHECK_TOL[dtype])
        if method == "prefix":
            var = t["prefix"].to(dtype).clone().requires_grad_(True)
            out = ind_deep_outputs(folder, meta, t, dtype, prefix=var)
        else:
            var = t["prompt"].to(dtype).clone().requires_grad_(True)
            out = ind_deep_outputs(folder, meta, t, dtype, prompt=var)
        out["loss"].backward()
        out["prefix_grad" if method == "prefix" else "prompt_grad"] = var.grad
        for k in t:
            if k in out:
                cmp(k, out[k], SELF_CHECK_TOL[dtype])
        hidden = {k for k in t if "hidden_states." in k}
        assert not (hidden - set(out)), (path, hidden - set(out))
        if method == "prefix" and "unread_blocks" in meta:
            pc = meta["peft_config"]
            g = var.grad.view(var.shape[0], pc["num_layers"], -1)
            for n in meta["unread_blocks"]:
                assert g[:, n].abs().sum() == 0
    fd_report = None
    if fd:
        key = "prefix" if method == "prefix" else "prompt"
        p0 = t[key].to(torch.float64)
        var = p0.clone().requires_grad_(True)
        kw = {key: var}
        ind_deep_outputs(folder, meta, t, torch.float64, **kw)["loss"].backward()
        g64 = var.grad.detach()
        gen = torch.Generator().manual_seed(12345)
        fd_worst = 0.0
        for _ in range(4):
            dvec = torch.randn(p0.shape, generator=gen, dtype=torch.float64)
            with torch.no_grad():
                fp = ind_deep_outputs(folder, meta, t, torch.float64, **{key: p0 + 1e-5 * dvec})["loss"].item()
                fm = ind_deep_outputs(folder, meta, t, torch.float64, **{key: p0 - 1e-5 * dvec})["loss"].item()
            an = (g64 * dvec).sum().item()
            fd_worst = max(fd_worst, abs((fp - fm) / 2e-5 - an) / max(abs(an), 1e-8))
        assert fd_worst < 1e-5, (path, fd_worst)
        fd_report = {"fd_worst_rel": fd_worst, "f32_grad_vs_f64_rel": rel_err(t[key + "_grad"], g64)}
    return worst, fd_report
