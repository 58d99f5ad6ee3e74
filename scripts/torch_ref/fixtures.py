"""The committed fixture set (BERT, T5, decoder-only, deep prompts) and the random configurations."""

import copy
import os
import random

import torch

from . import weights
from .bert_t5 import (
    bert_batch_mlm, bert_batch_pet, bert_encode, make_bert_bf16_sharded, make_bert_mlm, make_bert_nohead, make_t5,
    t5_batch,
)
from .common import BERT_VOCAB, PRODUCER, SENTENCES, check_and_write_tokenization, rmtree_if, write_json
from .decoder_only import (
    CAUSAL_TEXTS, CAUSAL_TEXT_INIT, CAUSAL_TEXT_INIT_SHORT, causal_batch, causal_corpus,
    check_and_write_causal_tokenization, decoder_reference, generation_reference, make_decoder,
)
from .deep import bert_papers_prefix_reference, peft_prefix_reference, ptuning_reference, t5_papers_prefix_reference
from .refs import bert_reference, t5_reference, write_buckets


# --------------------------------------------------------------------------------------------
# The committed fixture set
# --------------------------------------------------------------------------------------------

BERT_TEXT_INIT_LONG = "classify the sentiment of this movie review: positive, negative or neutral"
BERT_TEXT_INIT_SHORT = "great movie"
T5_TEXT_INIT_LONG = "Classify the sentiment of this review: positive, negative or neutral"
T5_TEXT_INIT_SHORT = "summarize:"

T5_SOURCES = [
    "review: " + SENTENCES[0],
    "review: " + SENTENCES[1],
    "review: In the end, the film is too long, too slow and far too pleased with itself, yet the music is lovely.",
    "review: " + SENTENCES[3],
]
T5_TARGETS = [
    "positive, great movie",
    "negative, boring story",
    "positive, lovely music but too slow",
    "negative",
]
T5_SOURCES_B = [
    "summarize: " + SENTENCES[5],
    "summarize: " + SENTENCES[6],
    "summarize: " + SENTENCES[11],
]
T5_TARGETS_B = [
    "a charming and funny comedy",
    "nothing happens",
    "awful dialogue, I hate it",
]


def build_fixtures(out):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(out)  # models are loaded by folder name, so PEFT records relative paths
    try:
        return _build_fixtures(out)
    finally:
        os.chdir(cwd)


def _build_fixtures(out):
    written = []

    # ---------------- bert_mlm ----------------
    mlm_rows = [
        (SENTENCES[0], SENTENCES[1]),
        SENTENCES[2],
        SENTENCES[3],
        (SENTENCES[6], SENTENCES[8]),
    ]
    pet_rows_a = [SENTENCES[4], SENTENCES[9], SENTENCES[5], SENTENCES[3]]
    bert_mlm_cfg = dict(hidden=48, heads=4, inter=80, layers=2, max_pos=64, act="gelu", eps=1e-3)
    folder = make_bert_mlm(".", "bert_mlm", 1001, BERT_VOCAB, bert_mlm_cfg,
                           lambda f: bert_batch_mlm(f, mlm_rows, 1))
    check_and_write_tokenization(folder, "bert", [BERT_TEXT_INIT_LONG, BERT_TEXT_INIT_SHORT])
    b_mlm = bert_batch_mlm(folder, mlm_rows, 11)
    b_pet = bert_batch_pet(folder, pet_rows_a, ["bad", "okay", "great"], [0, 2, 2, 0], as_pair=True)
    bert_reference(folder, "bert_mlm/ref_mlm_random.safetensors", "mlm", "RANDOM", 5, b_mlm, 21,
                   adapter_dir="bert_mlm/peft_adapter")
    bert_reference(folder, "bert_mlm/ref_mlm_text.safetensors", "mlm", "TEXT", 5, b_mlm, 22,
                   init_text=BERT_TEXT_INIT_LONG)
    bert_reference(folder, "bert_mlm/ref_pet_random.safetensors", "pet", "RANDOM", 3, b_pet, 23)
    bert_reference(folder, "bert_mlm/ref_pet_text.safetensors", "pet", "TEXT", 7, b_pet, 24,
                   init_text=BERT_TEXT_INIT_SHORT)
    written.append(folder)

    # ---------------- bert_mlm_bf16_sharded ----------------
    bf_cfg = dict(hidden=32, heads=2, inter=56, layers=3, max_pos=40, act="gelu_new", eps=1e-12)
    mlm_rows_b = [SENTENCES[7], SENTENCES[12], SENTENCES[9]]
    folder = make_bert_bf16_sharded(".", "bert_mlm_bf16_sharded", 2002, BERT_VOCAB, bf_cfg,
                                    lambda f: bert_batch_mlm(f, mlm_rows_b, 2))
    check_and_write_tokenization(folder, "bert")
    b_mlm = bert_batch_mlm(folder, mlm_rows_b, 12)
    b_pet = bert_batch_pet(folder, [SENTENCES[12], SENTENCES[4], SENTENCES[0]], ["terrible", "good"], [1, 0, 1],
                           as_pair=False)
    assert int(b_pet["token_type_ids"].abs().sum()) == 0
    d = "bert_mlm_bf16_sharded"
    bert_reference(folder, f"{d}/ref_mlm_random.safetensors", "mlm", "RANDOM", 7, b_mlm, 31)
    bert_reference(folder, f"{d}/ref_mlm_text.safetensors", "mlm", "TEXT", 3, b_mlm, 32,
                   init_text=BERT_TEXT_INIT_SHORT)
    bert_reference(folder, f"{d}/ref_pet_random.safetensors", "pet", "RANDOM", 5, b_pet, 33, use_token_types=False)
    bert_reference(folder, f"{d}/ref_pet_text.safetensors", "pet", "TEXT", 5, b_pet, 34,
                   init_text=BERT_TEXT_INIT_LONG, use_token_types=False)
    written.append(folder)

    # ---------------- bert_nohead ----------------
    nh_cfg = dict(hidden=36, heads=3, inter=64, layers=2, max_pos=48, act="gelu", eps=1e-12)
    cls_rows = [SENTENCES[2], SENTENCES[3], SENTENCES[8], SENTENCES[6]]
    folder = make_bert_nohead(".", "bert_nohead", 3003, BERT_VOCAB, nh_cfg,
                              lambda f: bert_batch_mlm(f, cls_rows, 3), baked_len=16)
    check_and_write_tokenization(folder, "bert", [BERT_TEXT_INIT_LONG])
    ids, am, tt = bert_encode(folder, cls_rows)
    assert ids.shape[1] > 16, "one row must be longer than the baked-in truncation length"
    g = torch.Generator().manual_seed(3004)
    C = 3
    head = {"weight": 0.5 * torch.randn(C, nh_cfg["hidden"], generator=g), "bias": 0.1 * torch.randn(C, generator=g)}
    b_cls = {"input_ids": ids, "attention_mask": am, "token_type_ids": tt,
             "class_labels": torch.tensor([2, 0, 1, 0], dtype=torch.int64)}
    bert_reference(folder, "bert_nohead/ref_cls_random_mean.safetensors", "cls", "RANDOM", 5, b_cls, 41,
                   head=head, pooling="mean")
    bert_reference(folder, "bert_nohead/ref_cls_text_cls.safetensors", "cls", "TEXT", 7, b_cls, 42,
                   init_text=BERT_TEXT_INIT_LONG, head=head, pooling="cls")
    written.append(folder)

    # ---------------- t5_v1_0 ----------------
    c10 = dict(d_model=32, heads=4, d_kv=8, d_ff=48, layers=2, dec_layers=2, buckets=16, max_distance=128,
               eps=1e-6, ff="relu", tied=True)
    folder = make_t5(".", "t5_v1_0", 4004, c10, "hub_v1_0", lambda f: t5_batch(f, T5_SOURCES, T5_TARGETS))
    check_and_write_tokenization(folder, "t5", T5_SOURCES + T5_TARGETS + T5_SOURCES_B + T5_TARGETS_B
                                 + [T5_TEXT_INIT_LONG, T5_TEXT_INIT_SHORT])
    bt = t5_batch(folder, T5_SOURCES, T5_TARGETS)
    t5_reference(folder, "t5_v1_0/ref_seq2seq_random.safetensors", "RANDOM", 5, bt, 51)
    t5_reference(folder, "t5_v1_0/ref_seq2seq_text.safetensors", "TEXT", 7, bt, 52, init_text=T5_TEXT_INIT_SHORT,
                 adapters=[("t5_v1_0/peft_adapter_2sub", 2), ("t5_v1_0/peft_adapter_1sub", 1)])
    written.append(folder)

    # ---------------- t5_v1_1 ----------------
    c11 = dict(d_model=40, heads=3, d_kv=12, d_ff=56, layers=2, dec_layers=3, buckets=16, max_distance=12,
               eps=1e-3, ff="gated-gelu", tied=False)
    folder = make_t5(".", "t5_v1_1", 5005, c11, "transformers5", lambda f: t5_batch(f, T5_SOURCES, T5_TARGETS))
    check_and_write_tokenization(folder, "t5", T5_SOURCES + T5_TARGETS + T5_SOURCES_B + T5_TARGETS_B
                                 + [T5_TEXT_INIT_LONG, T5_TEXT_INIT_SHORT])
    bt = t5_batch(folder, T5_SOURCES, T5_TARGETS)
    assert bt["input_ids"].shape[1] + 7 > 2 * c11["max_distance"]
    t5_reference(folder, "t5_v1_1/ref_seq2seq_random.safetensors", "RANDOM", 7, bt, 61)
    t5_reference(folder, "t5_v1_1/ref_seq2seq_text.safetensors", "TEXT", 5, bt, 62, init_text=T5_TEXT_INIT_LONG)
    written.append(folder)

    # ---------------- t5_flan ----------------
    cfl = dict(d_model=24, heads=5, d_kv=8, d_ff=40, layers=3, dec_layers=2, buckets=8, max_distance=16,
               eps=1e-6, ff="gated-gelu", tied=False)
    folder = make_t5(".", "t5_flan", 6006, cfl, "hub_flan", lambda f: t5_batch(f, T5_SOURCES_B, T5_TARGETS_B))
    check_and_write_tokenization(folder, "t5", T5_SOURCES + T5_TARGETS + T5_SOURCES_B + T5_TARGETS_B
                                 + [T5_TEXT_INIT_LONG, T5_TEXT_INIT_SHORT])
    bt = t5_batch(folder, T5_SOURCES_B, T5_TARGETS_B)
    assert bt["input_ids"].shape[1] + 3 > cfl["max_distance"]
    t5_reference(folder, "t5_flan/ref_seq2seq_random.safetensors", "RANDOM", 3, bt, 71)
    t5_reference(folder, "t5_flan/ref_seq2seq_text.safetensors", "TEXT", 5, bt, 72, init_text=T5_TEXT_INIT_LONG)
    written.append(folder)

    write_buckets("t5_buckets.safetensors")
    written += build_deep_fixtures(out)
    return written


# --------------------------------------------------------------------------------------------
# Random configurations (wider local testing, not committed)
# --------------------------------------------------------------------------------------------


def build_random_configs(out, n, seed, wide=1, deep=1):
    """wide=k: head dims and d_model k times the fixtures' tiny ones, feed-forward 2k times.
    deep=k: k times the layers (the same draws, so k = 1 writes the same files as before)."""
    ff_mult = 1 if wide == 1 else 2 * wide
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        rng = random.Random(seed)
        summary = []
        for i in range(n):
            # BERT
            heads = rng.choice([1, 3, 5])
            hd = rng.choice([8, 12, 16]) * wide
            cfg = dict(hidden=heads * hd, heads=heads, inter=rng.choice([40, 56, 72, 88]) * ff_mult,
                       layers=rng.choice([1, 2, 3]) * deep, max_pos=64, act=rng.choice(["gelu", "relu", "gelu_new"]),
                       eps=rng.choice([1e-12, 1e-5, 1e-3]))
            name = f"bert_rand_{i}"
            rows = rng.sample(SENTENCES[:10], 3)
            if rng.random() < 0.5:
                rows[0] = (rows[0], SENTENCES[12])
            maker = make_bert_bf16_sharded if rng.random() < 0.3 else make_bert_mlm
            folder = maker(".", name, seed * 1000 + i, BERT_VOCAB, cfg, lambda f: bert_batch_mlm(f, rows, i))
            b_mlm = bert_batch_mlm(folder, rows, 100 + i)
            b_pet = bert_batch_pet(folder, rows[1:] + [SENTENCES[11]], ["bad", "great"], [1, 0, 0])
            P = rng.choice([1, 3, 5, 7])
            bert_reference(folder, f"{name}/ref_mlm_random.safetensors", "mlm", "RANDOM", P, b_mlm, 7 * i + 1)
            bert_reference(folder, f"{name}/ref_pet_text.safetensors", "pet", "TEXT", P, b_pet, 7 * i + 2,
                           init_text=BERT_TEXT_INIT_LONG)
            summary.append({"name": name, **cfg, "maker": maker.__name__, "P": P})
            # T5
            heads = rng.choice([1, 3, 5])
            dkv = rng.choice([8, 12, 16]) * wide
            d_model = rng.choice([x * wide for x in [24, 32, 40, 48] if x * wide != heads * dkv])
            tied = rng.random() < 0.5
            ff = rng.choice(["relu", "gated-gelu", "gated-silu", "gelu_new", "gated-relu"])
            c = dict(d_model=d_model, heads=heads, d_kv=dkv, d_ff=rng.choice([32, 48, 64]) * ff_mult,
                     layers=rng.choice([1, 2, 3]) * deep, dec_layers=rng.choice([1, 2, 3]) * deep,
                     buckets=rng.choice([8, 16, 32]), max_distance=rng.choice([10, 16, 20, 40, 128]),
                     eps=rng.choice([1e-6, 1e-3]), ff=ff, tied=tied)
            c["max_distance"] = max(c["max_distance"], c["buckets"] // 2 + 1)
            name = f"t5_rand_{i}"
            src = rng.sample(T5_SOURCES + T5_SOURCES_B, 3)
            tgt = rng.sample(T5_TARGETS + T5_TARGETS_B, 3)
            spelling = rng.choice(["transformers5", "legacy"])
            folder = make_t5(".", name, seed * 1000 + 500 + i, c, spelling, lambda f: t5_batch(f, src, tgt))
            bt = t5_batch(folder, src, tgt)
            P = rng.choice([1, 3, 5, 7])
            t5_reference(folder, f"{name}/ref_seq2seq_random.safetensors", "RANDOM", P, bt, 7 * i + 3)
            t5_reference(folder, f"{name}/ref_seq2seq_text.safetensors", "TEXT", P, bt, 7 * i + 4,
                         init_text=T5_TEXT_INIT_LONG)
            summary.append({"name": name, **c, "P": P, "config_spelling": spelling})
        write_json("random_configs.json", {"seed": seed, "n": n, "weights": weights.WEIGHTS, "producer": PRODUCER, "configs": summary})
        return [s["name"] for s in summary]
    finally:
        os.chdir(cwd)


# --------------------------------------------------------------------------------------------
# The committed decoder-only and deep-prompt fixtures
# --------------------------------------------------------------------------------------------

DECODER_MODELS = [
    # name, arch, seed, config, tokenizer flavor
    ("bloom", "bloom", 8008, dict(hidden=48, heads=6, layers=2, eps=1e-3, emb_std=0.3, store="f16_noprefix"), "bloom"),
    ("llama", "llama", 9009, dict(hidden=48, heads=4, kv_heads=2, inter=80, layers=2, eps=1e-3, max_pos=512,
                                  rope_theta=10000.0, rope_scaling={"factor": 8.0, "high_freq_factor": 4.0,
                                                                    "low_freq_factor": 1.0,
                                                                    "original_max_position_embeddings": 256,
                                                                    "rope_type": "llama3"}, store="bf16"), "llama"),
    ("qwen2", "qwen2", 10010, dict(hidden=40, heads=5, kv_heads=1, inter=64, layers=2, eps=1e-6, max_pos=512,
                                   rope_theta=10000.0, emb_std=0.3, store="bf16"), "qwen2"),
    ("mistral", "mistral", 11011, dict(hidden=32, heads=4, kv_heads=2, head_dim=12, inter=56, layers=2, eps=1e-5,
                                       max_pos=512, rope_theta=1000.0), "bloom"),
]
CAUSAL_ROWS = [CAUSAL_TEXTS[0], CAUSAL_TEXTS[1], CAUSAL_TEXTS[2]]
CAUSAL_MODES = ["target", "all", "holes"]
CAUSAL_GEN_ROWS = [CAUSAL_TEXTS[3], CAUSAL_TEXTS[4], CAUSAL_TEXTS[1]]
DEEP_NAMES = ["bloom", "llama", "qwen2", "mistral", "deep"]


def causal_fixture_batch(folder):
    """The training batch of a decoder fixture: rows 0, 1, 2 of CAUSAL_TEXTS, or 0, 1, 4 where that gives
    an odd padded length (Llama's tokenizer adds a BOS)."""
    b = causal_batch(folder, CAUSAL_ROWS, CAUSAL_MODES)
    if b["input_ids"].shape[1] % 2 == 0:
        b = causal_batch(folder, [CAUSAL_TEXTS[0], CAUSAL_TEXTS[1], CAUSAL_TEXTS[4]], CAUSAL_MODES)
    assert b["input_ids"].shape[1] % 2 == 1, (folder, b["input_ids"].shape)
    return b


def build_deep_fixtures(out):
    """Decoder-only model folders with prompt-tuning and generation references, and every deep-prompt
    reference under deep/<model>/ (their metadata names the model folder)."""
    cwd = os.getcwd()
    os.chdir(out)
    written = []
    try:
        for name, arch, seed, c, flavor in DECODER_MODELS:
            folder = make_decoder(".", name, arch, seed, copy.deepcopy(c),
                                  lambda f: causal_batch(f, CAUSAL_ROWS, CAUSAL_MODES), flavor)
            check_and_write_causal_tokenization(folder, causal_corpus())
            b = causal_fixture_batch(folder)
            decoder_reference(folder, f"{name}/ref_causal_random.safetensors", "RANDOM", 5, b, seed + 1)
            if name != "mistral":
                decoder_reference(folder, f"{name}/ref_causal_text.safetensors", "TEXT", 7, b, seed + 2,
                                  init_text=CAUSAL_TEXT_INIT if name != "qwen2" else CAUSAL_TEXT_INIT_SHORT,
                                  hidden_states=False)
            bg = causal_batch(folder, CAUSAL_GEN_ROWS, ["target"] * 3)
            generation_reference(folder, f"{name}/ref_generate_random.safetensors", 4, bg, seed + 3)
            written.append(folder)
        rmtree_if("deep")
        for d in ["bert_mlm", "t5_v1_0", "t5_v1_1", "t5_flan", "bloom", "llama", "qwen2"]:
            os.makedirs(os.path.join("deep", d))
        # ---- BERT (bert_mlm): P-tuning, and prefix tuning under the papers' placement (P-tuning v2)
        mlm_rows = [(SENTENCES[0], SENTENCES[1]), SENTENCES[2], SENTENCES[3], (SENTENCES[6], SENTENCES[8])]
        b_mlm = bert_batch_mlm("bert_mlm", mlm_rows, 11)
        b_pet = bert_batch_pet("bert_mlm", [SENTENCES[4], SENTENCES[9], SENTENCES[5], SENTENCES[3]],
                               ["bad", "okay", "great"], [0, 2, 2, 0], as_pair=True)
        ptuning_reference("bert", "bert_mlm", "deep/bert_mlm/ref_mlm_ptuning_mlp.safetensors", "mlm", 5, b_mlm, 101,
                          "MLP", 32)
        ptuning_reference("bert", "bert_mlm", "deep/bert_mlm/ref_pet_ptuning_lstm.safetensors", "pet", 4, b_pet, 102,
                          "LSTM", 8)
        bert_papers_prefix_reference("bert_mlm", "deep/bert_mlm/ref_mlm_prefix_papers.safetensors", "mlm", 4, b_mlm,
                                     103)
        bert_papers_prefix_reference("bert_mlm", "deep/bert_mlm/ref_pet_prefix_papers_proj.safetensors", "pet", 3,
                                     b_pet, 104, projection=True, enc_hidden=20, hidden_states=False)
        bert_papers_prefix_reference("bert_mlm", "deep/bert_mlm/ref_mlm_prefix_papers_pos0.safetensors", "mlm", 4,
                                     b_mlm, 103, pos_offset="0", hidden_states=False)
        # ---- T5
        bt = t5_batch("t5_v1_0", T5_SOURCES, T5_TARGETS)
        ptuning_reference("t5", "t5_v1_0", "deep/t5_v1_0/ref_seq2seq_ptuning_mlp.safetensors", "seq2seq", 5, bt, 111,
                          "MLP", 24)
        peft_prefix_reference("t5", "t5_v1_0", "deep/t5_v1_0/ref_seq2seq_prefix_peft.safetensors", 3, bt, 112,
                              adapter_dir="deep/t5_v1_0/peft_adapter_prefix")
        peft_prefix_reference("t5", "t5_v1_0", "deep/t5_v1_0/ref_seq2seq_prefix_peft_proj.safetensors", 4, bt, 113,
                              projection=True, enc_hidden=16, hidden_states=False)
        t5_papers_prefix_reference("t5_v1_0", "deep/t5_v1_0/ref_seq2seq_prefix_papers.safetensors", 3, bt, 114)
        ptuning_reference("t5", "t5_v1_1", "deep/t5_v1_1/ref_seq2seq_ptuning_lstm.safetensors", "seq2seq", 4, bt, 121,
                          "LSTM", 8)
        peft_prefix_reference("t5", "t5_v1_1", "deep/t5_v1_1/ref_seq2seq_prefix_peft_proj.safetensors", 3, bt, 122,
                              projection=True, enc_hidden=16, extra_cfg=dict(token_dim=36, num_layers=3),
                              hidden_states=False)
        t5_papers_prefix_reference("t5_v1_1", "deep/t5_v1_1/ref_seq2seq_prefix_papers_proj.safetensors", 3, bt, 123,
                                   projection=True, enc_hidden=16, hidden_states=False)
        btf = t5_batch("t5_flan", T5_SOURCES_B, T5_TARGETS_B)
        peft_prefix_reference("t5", "t5_flan", "deep/t5_flan/ref_seq2seq_prefix_peft.safetensors", 3, btf, 131,
                              extra_cfg=dict(token_dim=40), hidden_states=False)
        # ---- decoder-only
        for name, reparam, seed in [("bloom", "MLP", 141), ("llama", "LSTM", 151), ("qwen2", "MLP", 161)]:
            b = causal_fixture_batch(name)
            ptuning_reference("decoder", name, f"deep/{name}/ref_causal_ptuning_{reparam.lower()}.safetensors",
                              "causal", 4, b, seed, reparam, 8 if reparam == "LSTM" else 16)
            peft_prefix_reference("decoder", name, f"deep/{name}/ref_causal_prefix.safetensors", 3, b, seed + 1,
                                  adapter_dir=f"deep/{name}/peft_adapter_prefix" if name == "llama" else None,
                                  hidden_states=name != "qwen2")
            if name != "qwen2":
                peft_prefix_reference("decoder", name, f"deep/{name}/ref_causal_prefix_proj.safetensors", 4, b,
                                      seed + 2, projection=True, enc_hidden=20, hidden_states=False)
        written.append("deep")
    finally:
        os.chdir(cwd)
    return written
