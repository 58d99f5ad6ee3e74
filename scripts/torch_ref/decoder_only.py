"""Decoder-only models (BLOOM, Llama, Qwen2, Mistral): tokenizers, model folders, causal and
generation references."""

import collections
import copy
import json
import math
import os

import torch
from peft import TaskType
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from .bert_t5 import assert_same_weights, pad_right
from .common import (
    HOSTILE_TEXTS, SENTENCES, auto_tokenizer, log, quiet, raw_tokenizer, rel_err, rmtree_if, write_json,
)
from .refs import check_only_prompt_grad, expected_text_init, make_peft, ref_metadata, save_adapter, save_ref


# ============================================================================================
# Decoder-only language models (issue #16): BLOOM, Llama (llama3 rope scaling, GQA), Qwen2,
# Mistral; objective `causal`; greedy generation references
# ============================================================================================


DECODER_CLASSES = {"bloom": BloomForCausalLM, "llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM,
                   "mistral": MistralForCausalLM}

# Short texts for the decoder-only batches (PEFT's causal-LM guide: "Tweet text : ... Label : ...").
CAUSAL_TEXTS = [
    ("Great movie.", "positive"),
    ("Terrible plot.", "negative"),
    ("Not bad, just okay.", "neutral"),
    ("I hate it.", "negative"),
    ("A truly wonderful film!", "positive"),
]
CAUSAL_TEXT_INIT = "Classify the sentiment of the review as positive or negative"
CAUSAL_TEXT_INIT_SHORT = "Label :"


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (the ByteLevel alphabet), in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_bpe_merges(corpus, n_merges, pre_tok):
    """A tiny deterministic byte-level BPE learner: the most frequent adjacent pair wins, ties broken
    by the lexicographically smallest pair. Returns the merges in order."""
    words = collections.Counter()
    for text in corpus:
        for w, _ in pre_tok.pre_tokenize_str(text):
            words[w] += 1
    segs = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            s = segs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for w in words:
            s = segs[w]
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[w] = out
    return merges


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2's: digits one by one (Llama 3's take up to three). Qwen2's tokenizer.json pairs it with an NFC
# normalizer, and transformers 5's Qwen2Tokenizer rebuilds both whatever the file says.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

BYTELEVEL_FLAVORS = {
    # specials (in id order, first ids), bos added by the post-processor, tokenizer_config extras
    "bloom": dict(specials=["<unk>", "<s>", "</s>", "<pad>"], bos=None, cls="BloomTokenizerFast",
                  cfg={"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                       "padding_side": "left"}, n_merges=40, split=None, nfc=False),
    "llama": dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], bos="<|begin_of_text|>",
                  cls="PreTrainedTokenizerFast", cfg={"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
                  n_merges=40, split=LLAMA3_SPLIT, nfc=False),
    "qwen2": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, cls="Qwen2Tokenizer",
                  cfg={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": None,
                       "errors": "replace", "split_special_tokens": False}, n_merges=40, split=QWEN2_SPLIT,
                  nfc=True),
}


def causal_corpus():
    rows = [f"Tweet : {t} Label : {y}" for t, y in CAUSAL_TEXTS]
    return rows + [CAUSAL_TEXT_INIT, CAUSAL_TEXT_INIT_SHORT] + SENTENCES[:6]


def write_bytelevel_tokenizer(folder, flavor, model_max_length=2048):
    """A byte-level BPE tokenizer.json (GPT-2 alphabet, as BLOOM, Llama 3 and Qwen2 use) with a tiny
    learned merge list: specials first, then the 256 byte symbols in byte order, then the merges."""
    f = BYTELEVEL_FLAVORS[flavor]
    if f["split"]:  # Llama 3 and Qwen2 style: a Split regex, then ByteLevel without its own regex
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(f["split"]), behavior="isolated", invert=False),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                                use_regex=False)])
    else:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    merges = learn_bpe_merges(causal_corpus(), f["n_merges"], pre)
    vocab = {}
    for s in f["specials"]:
        vocab[s] = len(vocab)
    for b, ch in sorted(bytes_to_unicode().items()):
        vocab[ch] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    if f["nfc"]:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    if f["bos"] is not None:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{f['bos']}:0 $A:0", pair=f"{f['bos']}:0 $A:0 {f['bos']}:1 $B:1",
                                          special_tokens=[(f["bos"], vocab[f["bos"]])])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(f["specials"])
    tok.save(os.path.join(folder, "tokenizer.json"), pretty=True)
    cfg = {k: v for k, v in f["cfg"].items()}
    cfg.update({"clean_up_tokenization_spaces": False, "model_max_length": model_max_length,
                "tokenizer_class": f["cls"]})
    if flavor == "llama":
        cfg["model_input_names"] = ["input_ids", "attention_mask"]
    write_json(os.path.join(folder, "tokenizer_config.json"), cfg)
    write_json(os.path.join(folder, "special_tokens_map.json"), {k: v for k, v in f["cfg"].items()
                                                                 if k.endswith("_token") and v is not None})
    return len(vocab), vocab


def check_and_write_causal_tokenization(folder, texts):
    """As check_and_write_tokenization: AutoTokenizer and tokenizer.json agree on `texts` and on
    HOSTILE_TEXTS; `texts` also decode back to themselves (NFC does not give NFD text back)."""
    at = auto_tokenizer(folder)
    raw = raw_tokenizer(folder)
    out = {"tokenizer_class": type(at).__name__, "single": []}
    for t in list(texts) + HOSTILE_TEXTS:
        a = at(t)
        r = raw.encode(t)
        assert a["input_ids"] == r.ids, (folder, t, a["input_ids"], r.ids)
        assert t in HOSTILE_TEXTS or raw.decode(r.ids, skip_special_tokens=True) == t, (folder, t)
        out["single"].append({"text": t, "ids": r.ids, "tokens": r.tokens})
    out["len_auto_tokenizer"] = len(at)
    out["vocab_size_with_added"] = raw.get_vocab_size(with_added_tokens=True)
    write_json(os.path.join(folder, "tokenization.json"), out)
    return at


def randomize_decoder_(model, seed, emb_std=1.0, lin_gain=1.6, norm_std=0.2, bias_std=0.1, lm_head_std=0.2,
                       qk_gain=None):
    """Like randomize_ (harsh scale) for decoder-only parameter names: norm scales 1 + norm_std N(0,1), biases
    (linear, LayerNorm) bias_std N(0,1), linear weights N(0, gain/sqrt(fan_in)), embeddings emb_std N(0,1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("layernorm.weight") or name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                val = 1.0 + norm_std * torch.randn(shape, generator=g)
            elif name.endswith(".bias"):
                val = bias_std * torch.randn(shape, generator=g)
            elif name == "lm_head.weight":
                val = lm_head_std * torch.randn(shape, generator=g)
            elif "word_embeddings" in name or "embed_tokens" in name:
                val = emb_std * torch.randn(shape, generator=g)
            elif p.dim() == 2:
                gain = lin_gain
                if qk_gain is not None and (name.endswith("q_proj.weight") or name.endswith("k_proj.weight")):
                    gain = qk_gain
                val = gain / math.sqrt(shape[1]) * torch.randn(shape, generator=g)
            else:
                raise ValueError(f"unhandled parameter {name} {tuple(shape)}")
            p.copy_(val)


def bloom_hub_config(c):
    """config.json spelled like the Hub bigscience/bloom-560m (n_embed, n_layer, num_attention_heads)."""
    return {
        "apply_residual_connection_post_layernorm": False, "architectures": ["BloomForCausalLM"],
        "attention_dropout": 0.0, "attention_softmax_in_fp32": True, "bias_dropout_fusion": True,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_dropout": 0.0, "initializer_range": 0.02,
        "layer_norm_epsilon": c["eps"], "masked_softmax_fusion": True, "model_type": "bloom", "n_embed": c["hidden"],
        "n_inner": None, "n_layer": c["layers"], "num_attention_heads": c["heads"], "offset_alibi": 100,
        "pad_token_id": 3, "pretraining_tp": 1, "skip_bias_add": True, "skip_bias_add_qkv": False,
        "slow_but_exact": False, "torch_dtype": "float16", "transformers_version": "4.21.0.dev0", "unk_token_id": 0,
        "use_cache": True, "vocab_size": c["vocab_size"],
    }


def llama_hub_config(c):
    """config.json spelled like the Hub meta-llama/Llama-3.2-1B (rope_scaling + rope_theta, transformers 4.45)."""
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": c["bos"], "eos_token_id": c["eos"], "head_dim": c["hidden"] // c["heads"],
        "hidden_act": "silu", "hidden_size": c["hidden"], "initializer_range": 0.02,
        "intermediate_size": c["inter"], "max_position_embeddings": c["max_pos"], "mlp_bias": False,
        "model_type": "llama", "num_attention_heads": c["heads"], "num_hidden_layers": c["layers"],
        "num_key_value_heads": c["kv_heads"], "pretraining_tp": 1, "rms_norm_eps": c["eps"],
        "rope_scaling": c["rope_scaling"], "rope_theta": c["rope_theta"], "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0", "use_cache": True,
        "vocab_size": c["vocab_size"],
    }


def make_decoder(out, name, arch, seed, c, sample_batch, flavor):
    """A decoder-only model folder. c: config dict; arch: bloom | llama | qwen2 | mistral."""
    folder = os.path.normpath(os.path.join(out, name))
    rmtree_if(folder)
    os.makedirs(folder)
    n_tok, vocab = write_bytelevel_tokenizer(folder, flavor)
    c = dict(c)
    c["vocab_size"] = ((n_tok + 15) // 16) * 16  # embedding rows beyond the tokenizer, as in real checkpoints
    tid = lambda s: vocab[s]  # noqa: E731
    if arch == "bloom":
        cfg = BloomConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden"], n_layer=c["layers"], n_head=c["heads"],
                          layer_norm_epsilon=c["eps"], bos_token_id=1, eos_token_id=2, pad_token_id=3,
                          hidden_dropout=0.0, attention_dropout=0.0)
        model = BloomForCausalLM(cfg)
    elif arch == "llama":
        c.update(bos=tid("<|begin_of_text|>"), eos=tid("<|end_of_text|>"))
        cfg = LlamaConfig(**{k: copy.deepcopy(v) for k, v in llama_hub_config(c).items()
                             if k not in ("architectures", "model_type", "torch_dtype", "transformers_version")})
        model = LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        eos = tid("<|endoftext|>")
        cfg = Qwen2Config(vocab_size=c["vocab_size"], hidden_size=c["hidden"], intermediate_size=c["inter"],
                          num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                          num_key_value_heads=c["kv_heads"], rms_norm_eps=c["eps"], tie_word_embeddings=True,
                          rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"]},
                          max_position_embeddings=c["max_pos"], bos_token_id=eos, eos_token_id=eos,
                          use_sliding_window=False, attention_dropout=0.0)
        model = Qwen2ForCausalLM(cfg)
    elif arch == "mistral":
        cfg = MistralConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden"], intermediate_size=c["inter"],
                            num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                            num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"], rms_norm_eps=c["eps"],
                            tie_word_embeddings=False, sliding_window=None,
                            rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"]},
                            max_position_embeddings=c["max_pos"], bos_token_id=None, eos_token_id=None)
        model = MistralForCausalLM(cfg)
    else:
        raise ValueError(arch)
    model.eval()
    randomize_decoder_(model, seed, emb_std=c.get("emb_std", 1.0), lin_gain=c.get("lin_gain", 1.6),
                       qk_gain=c.get("qk_gain"))
    tied = cfg.tie_word_embeddings
    if tied:
        assert model.lm_head.weight is model.get_input_embeddings().weight
    else:
        assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)
    if c.get("store") == "f16_noprefix":  # the Hub bloom-560m layout: f16, keys without `transformer.`
        with torch.no_grad():
            for _, prm in model.named_parameters():
                prm.copy_(prm.to(torch.float16).to(torch.float32))
        sd = {}
        for k, v in model.state_dict().items():
            if k == "lm_head.weight":
                continue
            assert k.startswith("transformer."), k
            sd[k[len("transformer."):]] = v.detach().to(torch.float16).contiguous()
        save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    elif c.get("store") == "bf16":  # Llama 3.2 / Qwen2.5 ship bf16 checkpoints
        with torch.no_grad():
            for _, prm in model.named_parameters():
                prm.copy_(prm.to(torch.bfloat16).to(torch.float32))
        with quiet():  # a copy: casting the model itself would also round its RoPE buffers
            copy.deepcopy(model).to(torch.bfloat16).save_pretrained(folder)
    else:
        with quiet():
            model.save_pretrained(folder)
    if arch == "bloom":
        write_json(os.path.join(folder, "config.json"), bloom_hub_config(c))
    elif arch == "llama":
        write_json(os.path.join(folder, "config.json"), llama_hub_config(c))
    loaded = load_decoder(folder)
    assert type(loaded) is type(model)
    assert_same_weights(loaded, model, name)
    if not tied:
        assert not torch.equal(loaded.lm_head.weight, loaded.get_input_embeddings().weight)
    b = sample_batch(folder)
    with torch.no_grad():
        la = loaded(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        lb = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    e = rel_err(la, lb)
    assert e < 1e-6, f"{name}: reloaded model differs (rel {e:.2e})"
    return folder


def load_decoder(folder, attn="eager"):
    arch = json.load(open(os.path.join(folder, "config.json")))["model_type"]
    with quiet():
        m = DECODER_CLASSES[arch].from_pretrained(folder, dtype=torch.float32, attn_implementation=attn)
    return m.eval()


def causal_batch(folder, rows, label_mode):
    """rows: list of (text, target). Right padding with the tokenizer's pad (or eos) id.
    label_mode per row: 'target' (labels on the target tokens only), 'all' (every real token labelled,
    token 0 included), 'holes' (every real token but a few in the middle)."""
    raw = raw_tokenizer(folder)
    tc = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    pad_tok = tc.get("pad_token") or tc.get("eos_token")
    pad = raw.token_to_id(pad_tok)
    seqs, labs = [], []
    for (text, target), mode in zip(rows, label_mode):
        prefix = f"Tweet : {text} Label :"
        full = raw.encode(f"{prefix} {target}").ids
        n_prefix = len(raw.encode(prefix).ids)
        assert raw.encode(prefix).ids == full[:n_prefix], (prefix, target)
        lab = list(full)
        if mode == "target":
            lab = [-100] * n_prefix + full[n_prefix:]
        elif mode == "holes":
            for i in range(3, min(8, len(lab) - 2)):
                lab[i] = -100
        else:
            assert mode == "all"
        seqs.append(full)
        labs.append(lab)
    ids, mask = pad_right(seqs, pad)
    labels, _ = pad_right(labs, -100)
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def causal_loss(logits, labels):
    """transformers' causal-LM loss: position i predicts label i+1, mean over labels != -100."""
    lab = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                             ignore_index=-100)


def attention_sharpness(model, inputs_embeds, mask):
    """Mean over heads and queries (real ones) of the largest attention probability, per layer."""
    with torch.no_grad():
        o = model(inputs_embeds=inputs_embeds, attention_mask=mask, output_attentions=True)
    res = []
    for a in o.attentions:
        mx = a.max(-1).values  # [B, H, S]
        w = mask[:, None, :].to(mx.dtype).expand_as(mx)
        res.append(round(((mx * w).sum() / w.sum()).item(), 3))
    return res


def decoder_meta(arch):
    return "bloom" if arch == "bloom" else "llama"


def decoder_reference(folder, path, init, P, batch, seed, init_text=None, adapter_dir=None, hidden_states=True):
    """PEFT prompt tuning, task CAUSAL_LM: prompt rows before the first token, P labels of -100 prepended."""
    model = load_decoder(folder)
    arch = model.config.model_type
    pm = make_peft(model, TaskType.CAUSAL_LM, P, init, init_text, os.path.basename(folder), seed)
    we = model.get_input_embeddings()
    emb = pm.prompt_encoder["default"].embedding.weight
    if init == "TEXT":
        want, _ = expected_text_init(folder, init_text, P, we)
        assert torch.equal(emb.detach(), want), "PEFT TEXT init does not follow the documented rule"
    ids, am, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    B, T = ids.shape
    out = pm(input_ids=ids, attention_mask=am, labels=labels, output_hidden_states=True, return_dict=True)
    logits_all = out.logits
    assert logits_all.shape[:2] == (B, P + T)
    full_labels = torch.cat([torch.full((B, P), -100, dtype=torch.int64), labels], 1)
    e = rel_err(out.loss, causal_loss(logits_all, full_labels))
    assert e < 1e-6, e
    with torch.no_grad():  # the hand-written path of reference-format.md
        x = torch.cat([emb.detach().unsqueeze(0).expand(B, -1, -1), we(ids)], 1)
        m2 = torch.cat([torch.ones(B, P, dtype=am.dtype), am], 1)
        o2 = model(inputs_embeds=x, attention_mask=m2)
        assert rel_err(o2.logits, logits_all) < 1e-6
        sharp = attention_sharpness(model, x, m2)
    out.loss.backward()
    check_only_prompt_grad(pm)
    tensors = {"input_ids": ids, "attention_mask": am, "labels": labels, "prompt": emb.detach().clone(),
               "loss": out.loss.detach(), "logits": logits_all[:, P:].detach(), "prompt_grad": emb.grad.detach().clone()}
    for i, h in enumerate(out.hidden_states):
        assert h.shape == (B, P + T, model.config.hidden_size)
        if hidden_states:
            tensors[f"hidden_states.{i}"] = h.detach()
    save_ref(path, tensors, ref_metadata(decoder_meta(arch), "causal", P, init, init_text, {"model_type": arch}))
    log(f"  {path}: B={B} T={T} P={P} loss={out.loss.item():.4f} max-attention per layer {sharp}")
    if adapter_dir is not None:
        save_adapter(pm, adapter_dir, emb.detach())
    return tensors


def greedy_loop(model, x, n_new):
    """Greedy decoding by full recomputation (no cache): x [1, S, d] input embeddings."""
    we = model.get_input_embeddings()
    toks, step_logits = [], []
    with torch.no_grad():
        for _ in range(n_new):
            lg = model(inputs_embeds=x, attention_mask=torch.ones(1, x.shape[1], dtype=torch.int64)).logits[0, -1]
            t = int(lg.argmax())
            toks.append(t)
            step_logits.append(lg)
            x = torch.cat([x, we(torch.tensor([[t]]))], 1)
    return toks, torch.stack(step_logits)


def generation_reference(folder, path, P, batch, seed, n_new=8):
    """Greedy generation of n_new tokens per row, each row alone (its real tokens, no padding), with
    transformers' generate on inputs_embeds = cat(prompt, embed(ids)), use_cache=False, EOS disabled."""
    model = load_decoder(folder)
    arch = model.config.model_type
    pm = make_peft(model, TaskType.CAUSAL_LM, P, "RANDOM", None, os.path.basename(folder), seed)
    prompt = pm.prompt_encoder["default"].embedding.weight.detach().clone()
    we = model.get_input_embeddings()
    ids, am = batch["input_ids"], batch["attention_mask"]
    B, T = ids.shape
    gen = torch.full((B, n_new), -1, dtype=torch.int64)
    step_logits = torch.zeros(B, n_new, model.config.vocab_size)
    min_gap = float("inf")
    peft_agrees = {"use_cache=False": True, "use_cache=True": True}
    for b in range(B):
        n = int(am[b].sum())
        row = ids[b:b + 1, :n]
        x = torch.cat([prompt.unsqueeze(0), we(row)], 1).detach()
        with torch.no_grad():
            g = model.generate(inputs_embeds=x, attention_mask=torch.ones(1, P + n, dtype=torch.int64),
                               max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=False,
                               eos_token_id=None, pad_token_id=0, num_beams=1)
        g = g[0, -n_new:] if g.shape[1] > n_new else g[0]
        toks, lg = greedy_loop(model, x, n_new)
        assert g.tolist() == toks, (path, b, g.tolist(), toks)
        top2 = lg.topk(2, -1).values
        min_gap = min(min_gap, (top2[:, 0] - top2[:, 1]).min().item())
        gen[b] = torch.tensor(toks)
        step_logits[b] = lg
        for uc in (False, True):  # what PEFT's own generate gives for the same row (issue: PEFT #2123)
            with torch.no_grad():
                pg = pm.generate(input_ids=row, attention_mask=torch.ones_like(row), max_new_tokens=n_new,
                                 min_new_tokens=n_new, do_sample=False, use_cache=uc, eos_token_id=None,
                                 pad_token_id=0)
            if pg[0, -n_new:].tolist() != toks:
                peft_agrees[f"use_cache={uc}"] = False
    assert min_gap > 1e-3, f"{path}: greedy choice too close to a tie ({min_gap:.2e})"
    tensors = {"input_ids": ids, "attention_mask": am, "prompt": prompt, "generated_ids": gen,
               "generated_logits": step_logits}
    extra = {"model_type": arch, "max_new_tokens": n_new, "eos_token_id": None, "use_cache": False}
    meta = ref_metadata(decoder_meta(arch), "generate", P, "RANDOM", None, extra)
    save_ref(path, tensors, meta)
    log(f"  {path}: B={B} N={n_new} P={P} min top-1/top-2 logit gap {min_gap:.3f}; PEFT generate agrees {peft_agrees}")
    return tensors, peft_agrees
