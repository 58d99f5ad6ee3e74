"""BERT and T5 model folders (build, save, reload and compare) and their batches."""

import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertModel, T5Config, T5ForConditionalGeneration

from .common import quiet, raw_tokenizer, rel_err, rmtree_if, write_bert_tokenizer, write_json, write_t5_tokenizer
from .weights import randomize_


# --------------------------------------------------------------------------------------------
# Model folders
# --------------------------------------------------------------------------------------------


def bert_config(vocab_size, hidden, heads, inter, layers, max_pos, act, eps, type_vocab=2):
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=inter, hidden_act=act,
                      max_position_embeddings=max_pos, type_vocab_size=type_vocab, layer_norm_eps=eps,
                      pad_token_id=0, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def load_bert(folder, cls=BertForMaskedLM, attn="eager"):
    with quiet():
        m = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn)
    return m.eval()


def load_t5(folder, attn="eager"):
    with quiet():
        m = T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn)
    return m.eval()


def assert_same_weights(loaded, intended, what):
    sl = loaded.state_dict()
    for k, v in intended.state_dict().items():
        if not torch.is_floating_point(v):
            continue
        assert k in sl, f"{what}: {k} missing after reload"
        assert torch.equal(sl[k], v), f"{what}: {k} differs after reload"


def compare_models(loaded, intended, arch, batch, what):
    """Same logits from the folder as from the in-memory model (same attention implementation)."""
    impl = intended.config._attn_implementation
    if loaded.config._attn_implementation != impl:
        loaded = load_t5(loaded.name_or_path, attn=impl) if arch == "t5" else load_bert(
            loaded.name_or_path, cls=type(loaded), attn=impl)
    with torch.no_grad():
        if arch == "bert":
            kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            a = loaded(**kw)
            b = intended(**kw)
            la, lb = (a.logits, b.logits) if hasattr(a, "logits") else (a.last_hidden_state, b.last_hidden_state)
        else:
            kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            la, lb = loaded(**kw).logits, intended(**kw).logits
    e = rel_err(la, lb)
    assert e < 1e-6, f"{what}: reloaded model differs from the in-memory model (rel {e:.2e})"
    return e


def make_bert_mlm(out, name, seed, vocab, cfg_kw, sample_batch):
    folder = os.path.normpath(os.path.join(out, name))
    rmtree_if(folder)
    os.makedirs(folder)
    cfg = bert_config(len(vocab), **cfg_kw)
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg).eval()
    randomize_(model, seed, "bert")
    p = model.cls.predictions
    assert p.decoder.weight is model.bert.embeddings.word_embeddings.weight and p.decoder.bias is p.bias
    with quiet():
        model.save_pretrained(folder)
    write_bert_tokenizer(folder, vocab, cfg_kw["max_pos"])
    loaded = load_bert(folder)
    assert_same_weights(loaded, model, name)
    compare_models(loaded, model, "bert", sample_batch(folder), name)
    return folder


def make_bert_bf16_sharded(out, name, seed, vocab, cfg_kw, sample_batch):
    """BertForMaskedLM stored as bf16, no `bert.` prefix, 2 shards + index, with extra tensors
    (embeddings.position_ids I64, cls.seq_relationship.*) that the engine must skip."""
    folder = os.path.normpath(os.path.join(out, name))
    rmtree_if(folder)
    os.makedirs(folder)
    cfg = bert_config(len(vocab), **cfg_kw)
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg).eval()
    randomize_(model, seed, "bert")
    with torch.no_grad():  # round to bf16, then upcast: the f32 model the reference uses
        for _, prm in model.named_parameters():
            prm.copy_(prm.to(torch.bfloat16).to(torch.float32))
    sd = {}
    for k, v in model.state_dict().items():
        if k == "cls.predictions.decoder.weight" or k == "cls.predictions.decoder.bias":
            continue  # tied; transformers 5 does not write them either
        nk = k[len("bert."):] if k.startswith("bert.") else k
        sd[nk] = v.detach().to(torch.bfloat16).contiguous()
    g = torch.Generator().manual_seed(seed + 1)
    sd["embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings, dtype=torch.int64)[None, :].contiguous()
    sd["cls.seq_relationship.weight"] = (0.3 * torch.randn(2, cfg.hidden_size, generator=g)).to(torch.bfloat16)
    sd["cls.seq_relationship.bias"] = (0.1 * torch.randn(2, generator=g)).to(torch.bfloat16)
    keys = sorted(sd)
    nbytes = {k: sd[k].numel() * sd[k].element_size() for k in keys}
    total = sum(nbytes.values())
    shard1, acc = [], 0
    for k in keys:  # first shard: keys in sorted order up to half of the bytes
        if acc + nbytes[k] > total // 2 and shard1:
            break
        shard1.append(k)
        acc += nbytes[k]
    shard2 = [k for k in keys if k not in set(shard1)]
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for fname, ks in zip(files, [shard1, shard2]):
        save_file({k: sd[k] for k in ks}, os.path.join(folder, fname), metadata={"format": "pt"})
        for k in ks:
            weight_map[k] = fname
    n_params = sum(sd[k].numel() for k in keys if torch.is_floating_point(sd[k]))
    write_json(os.path.join(folder, "model.safetensors.index.json"),
               {"metadata": {"total_parameters": n_params, "total_size": total}, "weight_map": weight_map})
    cfg.architectures = ["BertForMaskedLM"]
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(folder)
    write_bert_tokenizer(folder, vocab, cfg_kw["max_pos"])
    loaded = load_bert(folder)
    assert_same_weights(loaded, model, name)
    compare_models(loaded, model, "bert", sample_batch(folder), name)
    return folder


def make_bert_nohead(out, name, seed, vocab, cfg_kw, sample_batch, baked_len):
    folder = os.path.normpath(os.path.join(out, name))
    rmtree_if(folder)
    os.makedirs(folder)
    cfg = bert_config(len(vocab), **cfg_kw)
    torch.manual_seed(seed)
    model = BertModel(cfg, add_pooling_layer=True).eval()
    randomize_(model, seed, "bert")
    with quiet():
        model.save_pretrained(folder)
    write_bert_tokenizer(folder, vocab, cfg_kw["max_pos"], baked_len=baked_len)
    loaded = load_bert(folder, cls=BertModel)
    assert_same_weights(loaded, model, name)
    compare_models(loaded, model, "bert", sample_batch(folder), name)
    return folder


T5_V1_0_HUB_TASK_PARAMS = {
    "summarization": {"early_stopping": True, "length_penalty": 2.0, "max_length": 200, "min_length": 30,
                      "no_repeat_ngram_size": 3, "num_beams": 4, "prefix": "summarize: "},
    "translation_en_to_de": {"early_stopping": True, "max_length": 300, "num_beams": 4,
                             "prefix": "translate English to German: "},
}


def t5_hub_v1_0_config(c):
    """config.json spelled like the original Hub t5-small (no feed_forward_proj, no
    num_decoder_layers, no relative_attention_max_distance, no tie_word_embeddings)."""
    return {
        "architectures": ["T5WithLMHeadModel"], "d_ff": c["d_ff"], "d_kv": c["d_kv"], "d_model": c["d_model"],
        "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1, "initializer_factor": 1.0,
        "is_encoder_decoder": True, "layer_norm_epsilon": c["eps"], "model_type": "t5", "n_positions": 512,
        "num_heads": c["heads"], "num_layers": c["layers"], "output_past": True, "pad_token_id": 0,
        "relative_attention_num_buckets": c["buckets"], "task_specific_params": T5_V1_0_HUB_TASK_PARAMS,
        "vocab_size": c["vocab_size"],
    }


def t5_hub_flan_config(c):
    """config.json spelled like the Hub google/flan-t5-small."""
    return {
        "architectures": ["T5ForConditionalGeneration"], "d_ff": c["d_ff"], "d_kv": c["d_kv"],
        "d_model": c["d_model"], "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1,
        "eos_token_id": 1, "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
        "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": c["eps"], "model_type": "t5",
        "n_positions": 512, "num_decoder_layers": c["dec_layers"], "num_heads": c["heads"],
        "num_layers": c["layers"], "output_past": True, "pad_token_id": 0,
        "relative_attention_max_distance": c["max_distance"], "relative_attention_num_buckets": c["buckets"],
        "task_specific_params": T5_V1_0_HUB_TASK_PARAMS, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.23.1", "use_cache": True, "vocab_size": c["vocab_size"],
    }


def make_t5(out, name, seed, c, spelling, sample_batch, n_extra=10):
    """spelling: 'hub_v1_0' | 'transformers5' | 'hub_flan'. c['tied'] False -> separate lm_head."""
    folder = os.path.normpath(os.path.join(out, name))
    rmtree_if(folder)
    os.makedirs(folder)
    n_tok = write_t5_tokenizer(folder, n_extra=n_extra)
    c = dict(c)
    c["vocab_size"] = ((n_tok + 15) // 16) * 16  # like t5: the embedding is larger than the tokenizer
    cfg = T5Config(vocab_size=c["vocab_size"], d_model=c["d_model"], d_kv=c["d_kv"], d_ff=c["d_ff"],
                   num_layers=c["layers"], num_decoder_layers=c["dec_layers"], num_heads=c["heads"],
                   relative_attention_num_buckets=c["buckets"], relative_attention_max_distance=c["max_distance"],
                   layer_norm_epsilon=c["eps"], feed_forward_proj=c["ff"], tie_word_embeddings=c["tied"],
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.1)
    assert cfg.scale_decoder_outputs == c["tied"]
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(cfg).eval()
    if not c["tied"]:
        model.lm_head.weight = torch.nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
    randomize_(model, seed, "t5", emb_std=c.get("emb_std", 1.0), lin_gain=c.get("lin_gain", 1.5),
               qk_gain=c.get("qk_gain", 0.9), rel_std=c.get("rel_std", 1.0), lm_head_std=0.2)
    if c["tied"]:
        assert model.lm_head.weight is model.shared.weight
    else:
        assert not torch.equal(model.lm_head.weight, model.shared.weight)
    with quiet():
        model.save_pretrained(folder)
    if spelling == "hub_v1_0":
        assert c["tied"] and c["ff"] == "relu" and c["max_distance"] == 128 and c["dec_layers"] == c["layers"]
        write_json(os.path.join(folder, "config.json"), t5_hub_v1_0_config(c))
        # The original t5-small checkpoint also holds a (never used) relative-position table in the
        # first cross-attention layer; transformers ignores it on load, and so must the engine.
        wpath = os.path.join(folder, "model.safetensors")
        sd = load_file(wpath)
        g = torch.Generator().manual_seed(seed + 7)
        sd["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = 5.0 * torch.randn(
            c["buckets"], c["heads"], generator=g)
        save_file(sd, wpath, metadata={"format": "pt"})
    elif spelling == "hub_flan":
        assert (not c["tied"]) and c["ff"] == "gated-gelu"
        write_json(os.path.join(folder, "config.json"), t5_hub_flan_config(c))
    elif spelling == "legacy":  # older/hand-written spelling: no scale_decoder_outputs, no derived keys
        cj = json.load(open(os.path.join(folder, "config.json")))
        for k in ("scale_decoder_outputs", "dense_act_fn", "is_gated_act", "tie_word_embeddings"):
            cj.pop(k, None)
        if not c["tied"]:
            cj["tie_word_embeddings"] = False
        write_json(os.path.join(folder, "config.json"), cj)
    else:
        assert spelling == "transformers5"
    loaded = load_t5(folder)
    assert loaded.config.scale_decoder_outputs == c["tied"], (name, loaded.config.scale_decoder_outputs)
    if not c["tied"]:
        assert not torch.equal(loaded.lm_head.weight, loaded.shared.weight), f"{name}: lm_head re-tied on load"
    assert_same_weights(loaded, model, name)
    compare_models(loaded, model, "t5", sample_batch(folder), name)
    return folder


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def pad_right(seqs, pad):
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.int64)
    mask = torch.zeros((len(seqs), T), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[i, : len(s)] = 1
    return ids, mask


def bert_encode(folder, rows):
    """rows: list of str or (str, str). Right padding with [PAD]."""
    raw = raw_tokenizer(folder)
    encs = [raw.encode(r) if isinstance(r, str) else raw.encode(r[0], r[1]) for r in rows]
    pad = raw.token_to_id("[PAD]")
    ids, mask = pad_right([e.ids for e in encs], pad)
    tt, _ = pad_right([e.type_ids for e in encs], 0)
    return ids, mask, tt


def bert_batch_mlm(folder, rows, seed, rate=0.2):
    ids, mask, tt = bert_encode(folder, rows)
    raw = raw_tokenizer(folder)
    special = {raw.token_to_id(t) for t in ["[CLS]", "[SEP]", "[PAD]"]}
    mask_id = raw.token_to_id("[MASK]")
    V = raw.get_vocab_size()
    g = torch.Generator().manual_seed(seed)
    labels = torch.full_like(ids, -100)
    inp = ids.clone()
    for b in range(ids.shape[0]):
        cand = [t for t in range(ids.shape[1]) if mask[b, t] == 1 and ids[b, t].item() not in special]
        k = max(1, int(round(rate * len(cand))))
        perm = torch.randperm(len(cand), generator=g)[:k].tolist()
        for j, pi in enumerate(sorted(perm)):
            t = cand[pi]
            labels[b, t] = ids[b, t]
            r = (j + b) % 3  # BERT-style: mostly [MASK], sometimes a random token, sometimes unchanged
            if r == 0 or r == 1:
                inp[b, t] = mask_id
            else:
                inp[b, t] = int(torch.randint(7, V, (1,), generator=g).item())
    return {"input_ids": inp, "attention_mask": mask, "token_type_ids": tt, "labels": labels}


def bert_batch_pet(folder, rows, verbalizers, class_labels, pattern="It was [MASK].", as_pair=True):
    raw = raw_tokenizer(folder)
    if as_pair:
        enc_rows = [(r, pattern) for r in rows]
    else:
        enc_rows = [f"{r} {pattern}" for r in rows]
    ids, mask, tt = bert_encode(folder, enc_rows)
    mask_id = raw.token_to_id("[MASK]")
    pos = []
    for b in range(ids.shape[0]):
        w = (ids[b] == mask_id).nonzero().flatten().tolist()
        assert len(w) == 1
        pos.append(w[0])
    vids = []
    for w in verbalizers:
        e = raw.encode(w, add_special_tokens=False).ids
        assert len(e) == 1, (w, e)
        vids.append(e[0])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt,
            "mask_positions": torch.tensor(pos, dtype=torch.int64),
            "verbalizer_ids": torch.tensor(vids, dtype=torch.int64),
            "class_labels": torch.tensor(class_labels, dtype=torch.int64)}


def t5_batch(folder, sources, targets):
    raw = raw_tokenizer(folder)
    src = [raw.encode(s).ids for s in sources]
    tgt = [raw.encode(t).ids for t in targets]
    ids, mask = pad_right(src, 0)
    lab, lmask = pad_right(tgt, 0)
    lab[lmask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}
