"""Shared pieces: the producer string, the text data, small helpers and the BERT/T5 tokenizers."""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import peft
import safetensors
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer


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

# Texts on which transformers' tokenizer classes and the file's pipeline part ways when the file
# lacks a step the class builds itself (transformers 5's T5Tokenizer: WhitespaceSplit before
# Metaspace; Qwen2Tokenizer: NFC and Qwen's split regex): tabs, runs of spaces, U+3000, U+00A0,
# NFD accents, newlines. check_and_write_tokenization asserts agreement on them too.
HOSTILE_TEXTS = [
    "tab\there",
    "it's   three  spaces",
    "  leading and trailing  ",
    "a\u3000b",
    "\u3000",
    "no\u00a0break",
    "cafe\u0301 and nai\u0308ve",
    "line one\nline two",
    "crlf\r\nend\n\n",
    " \t\n mixed \u2003 gaps",
]

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


# The self-check's bounds on rel_err, by the precision of the independent recomputation.
# float32: the same function in nearly the same operations as PEFT (T5 bit-identical, BERT and the
# decoders <= 8e-6 apart), so a semantic slip in either shows here.
# float64: the distance of the float32 reference from the exact value, i.e. its own rounding,
# which grows with the model's conditioning and not with any slip. Harsh random gated-gelu T5
# configs reach 2.2e-5 on the prompt gradient (--random-configs 1 --seed 7), where PEFT
# run in float64 agrees with the float64 recomputation exactly and rounding only the weights and
# the prompt once more (relative 2^-24) already moves the exact gradient by up to 1.9e-5 (seed 4). Its
# bound is what the references are for: parity holds the float32 engine to 1e-4 against them,
# so a reference's own rounding may take at most half of that.
SELF_CHECK_TOL = {torch.float32: 2e-5, torch.float64: 5e-5}


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
    # As T5's tokenizer.json on the hub (converted from its SentencePiece model) has it, and as
    # transformers 5's T5Tokenizer rebuilds it whatever the file says: whitespace of every kind
    # (tabs, runs of spaces, U+3000) only separates words. The hub's files also carry a Precompiled
    # normalizer (SentencePiece's nmt_nfkc charsmap), which the class takes from the file; these
    # fixtures have none, so neither side normalizes.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
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
    `tokenizers` library loading tokenizer.json (what the Rust engine uses) agree, on the
    sentences and on HOSTILE_TEXTS, and write tokenization.json with the expected ids."""
    at = auto_tokenizer(folder)
    raw = raw_tokenizer(folder)
    baked = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    texts = list(SENTENCES) + list(extra_texts) + HOSTILE_TEXTS
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
