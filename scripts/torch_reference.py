#!/usr/bin/env python3
"""PyTorch + PEFT reference pipeline for softprompt.

Builds tiny, randomly initialised BERT and T5 models as ordinary Hugging Face folders
(config.json, safetensors weights, tokenizer.json, tokenizer_config.json,
special_tokens_map.json), runs PEFT prompt tuning on fixed batches in float32 on the CPU, and
writes reference files in the format of shared/docs/reference-format.md (format 1).

    /work/venv/bin/python scripts/torch_reference.py [--out tests/fixtures] [--self-check]
    /work/venv/bin/python scripts/torch_reference.py --check-only [--out tests/fixtures]
    /work/venv/bin/python scripts/torch_reference.py --random-configs N --out DIR [--seed S] [--self-check]

Everything is offline (HF_HUB_OFFLINE=1) and byte-reproducible: two runs write files with
identical sha256 sums. See tests/fixtures/README.md for what each fixture is.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import peft  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore")

PRODUCER = (
    f"scripts/torch_reference.py (torch {torch.__version__}, transformers {transformers.__version__}, "
    f"peft {peft.__version__}, tokenizers {tokenizers.__version__}, safetensors {safetensors.__version__}, "
    f"numpy {np.__version__}; CPU float32, eager attention)"
)

# --------------------------------------------------------------------------------------------
# Text data
# --------------------------------------------------------------------------------------------

SENTENCES = [
    "The movie was great.",
    "I loved the acting, but the story was boring.",
    "A truly wonderful film with brilliant performances and a moving score.",
    "Terrible plot.",
    "The actors seemed tired and the jokes fell flat.",
    "It is a charming, funny and surprisingly touching comedy.",
    "Nothing happens for two hours.",
    "The director keeps the tension high until the very last scene.",
    "Not bad, not good, just okay.",
    "An unforgettable masterpiece!",
    "In the end, the film is too long, too slow and far too pleased with itself, "
    "yet the music and the photography are lovely.",
    "I hate this movie, the dialogue is awful.",
    "Quite a pleasant surprise.",
]

BERT_VOCAB = (
    ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + [".", ",", "!", "?", "'", "-", ":", ";", "(", ")"]
    + """the a an and but or of to in for with it is was are be this that i you he she they
    movie film story plot score scene comedy music cast script ending review sentiment
    great good bad okay terrible awful fine best worst boring fun dull funny
    love hate like act perform seem joke happen hour keep master charm touch please pleas
    wonder surpris bor aw un
    truly brilliant moving tired fell flat nothing two director tension high until very last
    not just quite end too long slow far itself yet lovely really so one ever what did think
    classify positive negative neutral opinion""".split()
    + ["##s", "##ed", "##d", "##ing", "##ly", "##or", "##ance", "##ful", "##e", "##ant",
       "##forget", "##table", "##piece", "##er", "##y", "##ness"]
)

# T5 (Unigram) pieces: whole words with a leading "▁", subword pieces, single characters.
T5_WORDS = """the a an and but or of to in for with it is was are be this that I you
The A An It In Not Nothing Terrible Quite Classify review sentiment
movie film story plot score scene comedy music cast ending
great good bad okay terrible awful boring funny love hate truly brilliant moving tired
fell flat nothing two director tension high until very last not just quite end too long slow far
itself yet lovely positive negative neutral summary summarize classify what""".split()
T5_SUBWORDS_START = ["act", "perform", "seem", "joke", "happen", "hour", "keep", "un", "master",
                     "charm", "touch", "please", "pleas", "wonder", "surpris", "bor", "aw", "dialog"]
T5_SUBWORDS_CONT = ["ing", "or", "s", "ed", "ly", "ance", "ful", "ant", "forget", "table", "piece",
                    "d", "e", "ue", "er"]
T5_PUNCT = [".", ",", "!", ":", "?", "'"]


def t5_pieces():
    """Deterministic (piece, score) list after <pad> </s> <unk>."""
    pieces = [("▁", -6.0)]
    seen = {"▁"}

    def add(p, s):
        if p not in seen:
            seen.add(p)
            pieces.append((p, s))

    for p in T5_PUNCT:
        add(p, -5.0)
    for i, w in enumerate(T5_WORDS):
        add("▁" + w, round(-8.0 - 0.01 * i, 4))
    for i, w in enumerate(T5_SUBWORDS_START):
        add("▁" + w, round(-9.0 - 0.01 * i, 4))
    for i, w in enumerate(T5_SUBWORDS_CONT):
        add(w, round(-9.0 - 0.01 * i, 4))
    for c in "abcdefghijklmnopqrstuvwxyz":
        add(c, -12.0)
    for c in "TAIN":
        add(c, -12.5)
    return pieces


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def jdump(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def rmtree_if(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


@contextlib.contextmanager
def quiet():
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        yield


def rel_err(a, b):
    a = a.detach().double()
    b = b.detach().double()
    if a.dim() == 0:
        return (a - b).abs().item() / max(b.abs().item(), 1e-6)
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def write_bert_tokenizer(folder, vocab, model_max_length, baked_len=None):
    """WordPiece tokenizer from an explicit vocabulary, as BERT's tokenizer.json.

    baked_len: when set, padding (Fixed) and truncation are switched on in tokenizer.json,
    as sentence-transformers/all-MiniLM-L6-v2 ships it.
    """
    v = {t: i for i, t in enumerate(vocab)}
    assert len(v) == len(vocab), "duplicate BERT vocab entry"
    tok = Tokenizer(models.WordPiece(v, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", v["[CLS]"]), ("[SEP]", v["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    if baked_len is not None:
        tok.enable_truncation(max_length=baked_len, stride=0, strategy="longest_first", direction="right")
        tok.enable_padding(direction="right", pad_id=v["[PAD]"], pad_type_id=0, pad_token="[PAD]",
                           length=baked_len, pad_to_multiple_of=None)
    tok.save(os.path.join(folder, "tokenizer.json"), pretty=True)
    special = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
               "unk_token": "[UNK]"}
    cfg = dict(special)
    cfg.update({"clean_up_tokenization_spaces": True, "do_basic_tokenize": True, "do_lower_case": True,
                "model_max_length": model_max_length, "never_split": None, "strip_accents": None,
                "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer"})
    write_json(os.path.join(folder, "tokenizer_config.json"), cfg)
    write_json(os.path.join(folder, "special_tokens_map.json"), special)


def write_t5_tokenizer(folder, n_extra=10, model_max_length=512):
    """Unigram tokenizer from an explicit (piece, score) list, laid out like T5's tokenizer.json:
    <pad>=0 </s>=1 <unk>=2, pieces, then <extra_id_{n-1}> ... <extra_id_0> at the end."""
    extra = [f"<extra_id_{i}>" for i in range(n_extra)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + t5_pieces() + [(e, 0.0) for e in reversed(extra)]
    assert len({p for p, _ in vocab}) == len(vocab)
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"] + extra)
    tok.save(os.path.join(folder, "tokenizer.json"), pretty=True)
    special = {"additional_special_tokens": extra, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    cfg = dict(special)
    cfg.update({"clean_up_tokenization_spaces": True, "extra_ids": n_extra, "model_max_length": model_max_length,
                "tokenizer_class": "T5Tokenizer"})
    write_json(os.path.join(folder, "tokenizer_config.json"), cfg)
    write_json(os.path.join(folder, "special_tokens_map.json"), special)
    return len(vocab)


def raw_tokenizer(folder):
    t = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    t.no_padding()
    t.no_truncation()
    return t


def auto_tokenizer(folder):
    with quiet():
        return AutoTokenizer.from_pretrained(folder)


def check_and_write_tokenization(folder, arch, extra_texts=()):
    """Assert that transformers' AutoTokenizer (what PEFT's TEXT init uses) and the plain
    `tokenizers` library loading tokenizer.json (what the Rust engine uses) agree, and write
    tokenization.json with the expected ids."""
    at = auto_tokenizer(folder)
    raw = raw_tokenizer(folder)
    baked = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    texts = list(SENTENCES) + list(extra_texts)
    out = {"tokenizer_class": type(at).__name__, "single": [], "pair": []}
    for t in texts:
        a = at(t)
        r = raw.encode(t)
        assert a["input_ids"] == r.ids, (folder, t, a["input_ids"], r.ids)
        entry = {"text": t, "ids": r.ids, "tokens": r.tokens}
        if baked.padding is not None or baked.truncation is not None:
            entry["ids_with_baked_padding_truncation"] = baked.encode(t).ids
        out["single"].append(entry)
    if arch == "bert":
        for ta, tb in [(SENTENCES[0], SENTENCES[1]), (SENTENCES[3], "It was [MASK].")]:
            a = at(ta, tb)
            r = raw.encode(ta, tb)
            assert a["input_ids"] == r.ids, (folder, ta, tb)
            if "token_type_ids" in a:
                assert a["token_type_ids"] == r.type_ids
            out["pair"].append({"text_a": ta, "text_b": tb, "ids": r.ids, "type_ids": r.type_ids})
    out["len_auto_tokenizer"] = len(at)
    out["vocab_size_with_added"] = raw.get_vocab_size(with_added_tokens=True)
    write_json(os.path.join(folder, "tokenization.json"), out)
    return at


# --------------------------------------------------------------------------------------------
# Random weights
# --------------------------------------------------------------------------------------------


# --weights realistic (random configs only): variance-preserving layers and small biases, the
# scale of trained checkpoints, where a bf16 engine is expected to hold 2e-2. The default
# ("harsh") amplifies every layer by its gain so that float32 parity at 1e-4 catches small
# semantic slips; it also makes prompt gradients too sensitive for bf16 weights.
REALISTIC = {"bert": dict(emb_std=0.05, lin_gain=1.0, norm_std=0.05, bias_std=0.02),
             "t5": dict(emb_std=1.0, lin_gain=1.0, qk_gain=1.0, rel_std=0.5, lm_head_std=0.2, norm_std=0.05)}
WEIGHTS = "harsh"


def randomize_(model, seed, arch, emb_std=0.3, lin_gain=1.6, qk_gain=None, rel_std=0.8, lm_head_std=0.25,
               norm_std=0.2, bias_std=0.1):
    """Overwrite every parameter with seeded random values. Norm scales = 1 + norm_std N(0,1);
    every bias (linear, LayerNorm, MLM head) = bias_std N(0,1); linear weights N(0, gain/sqrt(fan_in))."""
    if WEIGHTS == "realistic":
        kw = dict(emb_std=emb_std, lin_gain=lin_gain, qk_gain=qk_gain, rel_std=rel_std, lm_head_std=lm_head_std,
                  norm_std=norm_std, bias_std=bias_std)
        kw.update(REALISTIC[arch])
        emb_std, lin_gain, qk_gain, rel_std, lm_head_std, norm_std, bias_std = kw.values()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
                val = 1.0 + norm_std * torch.randn(shape, generator=g)
            elif name.endswith(".bias") or name.endswith("predictions.bias"):
                val = bias_std * torch.randn(shape, generator=g)
            elif "relative_attention_bias" in name:
                val = rel_std * torch.randn(shape, generator=g)
            elif name == "lm_head.weight":
                val = lm_head_std * torch.randn(shape, generator=g)
            elif "embeddings" in name or name.endswith("shared.weight") or "embed_tokens" in name:
                val = emb_std * torch.randn(shape, generator=g)
            elif p.dim() == 2:
                gain = lin_gain
                if qk_gain is not None and (name.endswith(".q.weight") or name.endswith(".k.weight")):
                    gain = qk_gain
                if WEIGHTS == "realistic" and name.endswith(".q.weight"):
                    gain /= math.sqrt(model.config.d_kv)  # T5 folds attention's 1/sqrt(d_kv) into q
                val = gain / math.sqrt(shape[1]) * torch.randn(shape, generator=g)
            else:
                raise ValueError(f"unhandled parameter {name} {tuple(shape)}")
            if WEIGHTS == "realistic":  # bf16 values, as bf16 checkpoints (flan-t5, t5 v1.1) hold them
                val = val.to(torch.bfloat16).to(torch.float32)
            p.copy_(val)


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
        write_json("random_configs.json", {"seed": seed, "n": n, "weights": WEIGHTS, "producer": PRODUCER, "configs": summary})
        return [s["name"] for s in summary]
    finally:
        os.chdir(cwd)


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


def check_ref(path, fd=False):
    """Recompute a reference with the independent implementation (float32 and float64) and,
    optionally, finite differences in float64. Returns the worst relative error."""
    folder = os.path.dirname(path)
    meta, t = read_ref(path)
    assert meta["format"] == 1 and meta["num_virtual_tokens"] == t["prompt"].shape[0]
    worst = 0.0
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 2e-5)):
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
                assert e < tol, f"{path}: {k} rel err {e:.2e} ({dtype})"
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
        assert rel_err(o.logits, t["logits"]) < 2e-5
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
    assert e32 < 1e-4, e32
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


def self_check(out, fd_cases):
    refs = []
    for root, _, files in os.walk(out):
        for fn in files:
            if fn.startswith("ref_") and fn.endswith(".safetensors"):
                refs.append(os.path.join(root, fn))
    refs.sort()
    for r in refs:
        fd = os.path.relpath(r, out) in fd_cases
        meta, _ = read_ref(r)
        if "method" in meta or meta["arch"] not in ("bert", "t5"):  # decoder-only and deep-prompt references
            worst, rep = check_ref_deep(r, out, fd=fd)
        else:
            worst, rep = check_ref(r, fd=fd)
        msg = f"  ok {os.path.relpath(r, out)}: worst rel err vs independent impl {worst:.1e}"
        if rep:
            msg += f"; finite differences (f64) worst {rep['fd_worst_rel']:.1e}, f32 grad vs f64 {rep['f32_grad_vs_f64_rel']:.1e}"
        log(msg)
    b = os.path.join(out, "t5_buckets.safetensors")
    if os.path.exists(b):
        check_buckets(b)
        log("  ok t5_buckets.safetensors")
    check_adapters(out)
    check_prefix_adapters(out)
    log(f"self-check passed: {len(refs)} reference files")


# ============================================================================================
# Decoder-only language models (issue #16): BLOOM, Llama (llama3 rope scaling, GQA), Qwen2,
# Mistral; objective `causal`; greedy generation references
# ============================================================================================

from transformers import (  # noqa: E402
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from tokenizers import Regex  # noqa: E402

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

BYTELEVEL_FLAVORS = {
    # specials (in id order, first ids), bos added by the post-processor, tokenizer_config extras
    "bloom": dict(specials=["<unk>", "<s>", "</s>", "<pad>"], bos=None, cls="BloomTokenizerFast",
                  cfg={"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                       "padding_side": "left"}, n_merges=40, split=False),
    "llama": dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], bos="<|begin_of_text|>",
                  cls="PreTrainedTokenizerFast", cfg={"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
                  n_merges=40, split=True),
    "qwen2": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, cls="Qwen2Tokenizer",
                  cfg={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": None,
                       "errors": "replace", "split_special_tokens": False}, n_merges=40, split=False),
}


def causal_corpus():
    rows = [f"Tweet : {t} Label : {y}" for t, y in CAUSAL_TEXTS]
    return rows + [CAUSAL_TEXT_INIT, CAUSAL_TEXT_INIT_SHORT] + SENTENCES[:6]


def write_bytelevel_tokenizer(folder, flavor, model_max_length=2048):
    """A byte-level BPE tokenizer.json (GPT-2 alphabet, as BLOOM, Llama 3 and Qwen2 use) with a tiny
    learned merge list: specials first, then the 256 byte symbols in byte order, then the merges."""
    f = BYTELEVEL_FLAVORS[flavor]
    if f["split"]:  # Llama 3 style: a Split regex, then ByteLevel without its own regex
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
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
    at = auto_tokenizer(folder)
    raw = raw_tokenizer(folder)
    out = {"tokenizer_class": type(at).__name__, "single": []}
    for t in texts:
        a = at(t)
        r = raw.encode(t)
        assert a["input_ids"] == r.ids, (folder, t, a["input_ids"], r.ids)
        assert raw.decode(r.ids, skip_special_tokens=True) == t, (folder, t)
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


# ============================================================================================
# Deep prompts (issue #15): P-tuning (PEFT P_TUNING), prefix tuning (PEFT PREFIX_TUNING), and
# prefix tuning under the papers' placement (T5: hooked transformers 5; BERT: see
# scripts/bert_prefix_v4.py, run in the transformers 4.x venv)
# ============================================================================================

from peft import PrefixTuningConfig, PromptEncoderConfig  # noqa: E402
from peft.tuners.prefix_tuning.model import PrefixEncoder  # noqa: E402
from transformers import DynamicCache, EncoderDecoderCache  # noqa: E402


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
        assert e < tol, f"{path}: {name} rel err {e:.2e}"

    if meta["objective"] == "generate":
        gen, lg = ind_greedy(folder, t["prompt"], t["input_ids"], t["attention_mask"], meta["max_new_tokens"])
        assert torch.equal(gen, t["generated_ids"]), (path, gen, t["generated_ids"])
        cmp("generated_logits", lg, 2e-5)
        return worst, None
    for dtype in (torch.float32, torch.float64):
        enc_run, enc_params = (None, None)
        if any(k.startswith("encoder.") for k in t):
            enc_run, enc_params = ind_prompt_encoder(meta, t, dtype)
            rows = enc_run()
            key = "prefix" if method == "prefix" else "prompt"
            P = t[key].shape[0]
            cmp(key, rows[:P], 2e-5)
            grads = torch.autograd.grad(rows[:P], list(enc_params.values()), t[key + "_grad"].to(dtype),
                                        allow_unused=True)
            for (n, prm), g in zip(enc_params.items(), grads):
                cmp("grad.encoder." + n, g if g is not None else torch.zeros_like(prm), 2e-5)
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
                cmp(k, out[k], 2e-5)
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


VENV4_PYTHON = os.environ.get("SOFTPROMPT_VENV4_PYTHON", "/work/venv4/bin/python")
BERT_V4_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bert_prefix_v4.py")


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


def sha_tree(out, names):
    res = {}
    for n in names:
        p = os.path.join(out, n)
        paths = [p] if os.path.isfile(p) else [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs]
        for q in sorted(paths):
            res[os.path.relpath(q, out)] = hashlib.sha256(open(q, "rb").read()).hexdigest()
    return res


FIXTURE_NAMES = ["bert_mlm", "bert_mlm_bf16_sharded", "bert_nohead", "t5_v1_0", "t5_v1_1", "t5_flan",
                 "t5_buckets.safetensors"] + DEEP_NAMES
FD_CASES = {"bert_mlm/ref_pet_text.safetensors", "bert_nohead/ref_cls_random_mean.safetensors",
            "t5_v1_1/ref_seq2seq_random.safetensors", "t5_flan/ref_seq2seq_text.safetensors",
            "bloom/ref_causal_random.safetensors", "llama/ref_causal_random.safetensors",
            "qwen2/ref_causal_random.safetensors", "mistral/ref_causal_random.safetensors",
            "deep/bert_mlm/ref_mlm_prefix_papers.safetensors", "deep/bert_mlm/ref_pet_ptuning_lstm.safetensors",
            "deep/t5_v1_0/ref_seq2seq_prefix_peft.safetensors", "deep/t5_v1_1/ref_seq2seq_prefix_papers_proj.safetensors",
            "deep/bloom/ref_causal_prefix.safetensors", "deep/llama/ref_causal_prefix_proj.safetensors"}


def check_prefix_adapters(out):
    """PEFT's saved prefix adapters hold the prefix-encoder output (`prompt_embeddings` [P, N*2*w])."""
    for adir, ref in [("deep/t5_v1_0/peft_adapter_prefix", "deep/t5_v1_0/ref_seq2seq_prefix_peft.safetensors"),
                      ("deep/llama/peft_adapter_prefix", "deep/llama/ref_causal_prefix.safetensors")]:
        a = os.path.join(out, adir)
        if not os.path.isdir(a):
            continue
        cfg = json.load(open(os.path.join(a, "adapter_config.json")))
        meta, t = read_ref(os.path.join(out, ref))
        with safe_open(os.path.join(a, "adapter_model.safetensors"), "pt") as f:
            pe = f.get_tensor("prompt_embeddings")
        assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["num_virtual_tokens"] == t["prefix"].shape[0]
        assert rel_err(pe, t["prefix"]) < 1e-6, adir


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--self-check", action="store_true", help="recompute every reference independently, "
                    "with finite differences in float64 on a few cases")
    ap.add_argument("--check-only", action="store_true", help="only run the self-check on --out")
    ap.add_argument("--random-configs", type=int, default=0, metavar="N",
                    help="write N random BERT and N random T5 configs with references to --out")
    ap.add_argument("--seed", type=int, default=1234, help="seed for --random-configs")
    ap.add_argument("--wide", type=int, default=1, metavar="K",
                    help="--random-configs: head dims and d_model K times wider, feed-forward 2K times")
    ap.add_argument("--deep", type=int, default=1, metavar="K",
                    help="--random-configs: K times the layers (1-3 encoder and decoder layers times K)")
    ap.add_argument("--weights", choices=["harsh", "realistic"], default="harsh",
                    help="weight scale for --random-configs: harsh (the fixtures' default, gain 1.5-1.6 per "
                    "layer, for float32 parity) or realistic (variance-preserving, for bf16 parity)")
    ap.add_argument("--sha", action="store_true", help="print sha256 of every written file")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if args.check_only:
        self_check(out, FD_CASES)
        return
    if args.random_configs:
        global WEIGHTS
        WEIGHTS = args.weights
        names = build_random_configs(out, args.random_configs, args.seed, args.wide, args.deep)
        log(f"wrote {len(names)} random models to {out}")
        if args.self_check:
            fd = {f"{n}/ref_seq2seq_random.safetensors" for n in names[:2]} | {f"{n}/ref_mlm_random.safetensors" for n in names[:2]}
            self_check(out, fd)
        return
    build_fixtures(out)
    log(f"wrote fixtures to {out}")
    if args.sha:
        for k, v in sha_tree(out, FIXTURE_NAMES).items():
            print(v, k)
    if args.self_check:
        self_check(out, FD_CASES)


if __name__ == "__main__":
    main()
