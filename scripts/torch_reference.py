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
import contextlib  # noqa: E402
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
    log(f"self-check passed: {len(refs)} reference files")


def sha_tree(out, names):
    res = {}
    for n in names:
        p = os.path.join(out, n)
        paths = [p] if os.path.isfile(p) else [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs]
        for q in sorted(paths):
            res[os.path.relpath(q, out)] = hashlib.sha256(open(q, "rb").read()).hexdigest()
    return res


FIXTURE_NAMES = ["bert_mlm", "bert_mlm_bf16_sharded", "bert_nohead", "t5_v1_0", "t5_v1_1", "t5_flan",
                 "t5_buckets.safetensors"]
FD_CASES = {"bert_mlm/ref_pet_text.safetensors", "bert_nohead/ref_cls_random_mean.safetensors",
            "t5_v1_1/ref_seq2seq_random.safetensors", "t5_flan/ref_seq2seq_text.safetensors"}


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
