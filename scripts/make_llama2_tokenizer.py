"""Writes tests/fixtures/llama2_tok: a Llama 2 style tokenizer (SentencePiece BPE with byte
fallback, tokenizer.json's own `Prepend` + `Replace` normalizer, `<s> $A`) under a `llama`
config.json and `tokenizer_class: LlamaTokenizer`, and expected.json: AutoTokenizer's ids
(transformers 5, which rebuilds LlamaTokenizer's pipeline from add_prefix_space and legacy)
for texts under each tokenizer_config.json variant, and its pad_token_id. tests/tokenizer_config.rs checks the
engine against them (hostile pass 27, F1). Run with the reference venv (scripts/make_venv.sh):

    HF_HUB_OFFLINE=1 /work/venv/bin/python scripts/make_llama2_tokenizer.py [--out DIR]
"""
import argparse, json, os, shutil, tempfile

from tokenizers import Tokenizer, decoders, models, normalizers, processors
from transformers import AutoTokenizer

TEXTS = ["pos", " pos", "  pos", "pos pos", "pos</s> pos", "<s>pos", "ö", "", " ", "pos\tpos\n",
         "pos [SEP] pos<x>", "<pad>pos", "pos <|endoftext|>", "<image> pos"]


def added(content, special=True, **flags):
    """An added token as tokenizer_config.json's `added_tokens_decoder` writes it."""
    return {"content": content, "lstrip": False, "normalized": not special, "rstrip": False,
            "single_word": False, "special": special, **flags}


# tokenizer.json's own added tokens, as the decoder lists them
DECODER = {"0": added("<unk>"), "1": added("<s>"), "2": added("</s>")}
# tokenizer_config.json edits (None removes a key); "config_json": keys set in config.json;
# "null": keys set to null; "special_tokens_map": special_tokens_map.json's keys (none: no file);
# "json_padding": tokenizer.json's padding enabled with that pad token
VARIANTS = {
    "default": {},
    "legacy": {"legacy": True},
    "no_prefix_space": {"add_prefix_space": False},
    "class_in_config_json": {"tokenizer_class": None, "config_json": {"tokenizer_class": "LlamaTokenizer"}},
    "code_llama": {"tokenizer_class": "CodeLlamaTokenizer"},
    "code_llama_no_prefix_space": {"tokenizer_class": "CodeLlamaTokenizer", "add_prefix_space": False},
    # CodeLlama ignores `legacy` (review 21, R21-7), adds no BOS for a null bos_token, and
    # takes special_tokens_map.json's where tokenizer_config.json has no added_tokens_decoder
    # (R21-4)
    "code_llama_legacy": {"tokenizer_class": "CodeLlamaTokenizer", "legacy": True},
    "code_llama_bos_null": {"tokenizer_class": "CodeLlamaTokenizer", "null": ["bos_token"]},
    "code_llama_bos_in_map": {"tokenizer_class": "CodeLlamaTokenizer",
                              "special_tokens_map": {"bos_token": "</s>"}},
    "code_llama_bos_in_map_beside_decoder": {
        "tokenizer_class": "CodeLlamaTokenizer", "special_tokens_map": {"bos_token": "</s>"},
        "added_tokens_decoder": {}},
    # tokens tokenizer_config.json or special_tokens_map.json names that tokenizer.json lacks
    # are added by transformers at new ids (its index in the decoder unused), and a named one
    # the vocabulary has becomes an added special token there (hostile pass 27, F2)
    "decoder_adds_tokens": {"added_tokens_decoder": {
        **DECODER, "300": added("[SEP]"), "290": added("<x>", special=False)}},
    "pad_not_in_vocabulary": {"pad_token": "<pad>"},
    "pad_in_vocabulary": {"pad_token": "p"},
    "extra_special_tokens": {"additional_special_tokens": ["<|endoftext|>", "<pad>"]},
    "extra_in_map": {"special_tokens_map": {
        "additional_special_tokens": ["<|endoftext|>"],
        "pad_token": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False}}},
    "model_specific_token": {"image_token": "<image>", "added_tokens_decoder": DECODER},
    # as _from_pretrained and __init__ pass the keys on (review 25): a map of extra tokens is
    # the model's own; another *_token key in both files takes tokenizer_config.json's value
    # and the map's place; additional_special_tokens in both: the config's; extra lists merge
    # (keys here in alphabetical order: the test writes the files with sorted keys)
    "extra_map_of_tokens": {"extra_special_tokens": {"image_token": "<image>"}},
    "own_token_in_both_files": {"boi_token": "<pad>", "image_token": "<image>",
                                "special_tokens_map": {"boi_token": "<x>", "eoi_token": "[SEP]"}},
    "additional_in_both_files": {"additional_special_tokens": ["<image>"],
                                 "special_tokens_map": {"additional_special_tokens": ["<pad>"]}},
    "extra_in_both_files": {"extra_special_tokens": ["<image>"],
                            "special_tokens_map": {"extra_special_tokens": ["<pad>", "<image>"]}},
    # transformers 4's added_tokens.json, read where tokenizer_config.json has no decoder
    # (review 26): its tokens, special where a named token has the text
    "added_tokens_json": {"pad_token": "<pad>", "added_tokens_file": {"<x>": 266, "<pad>": 267}},
    # tokenizer.json's `padding` names the pad token where tokenizer_config.json has no
    # pad_token key (`kwargs.setdefault`; a null one is kept), and it is added like the others
    "json_padding": {"json_padding": "<pad>"},
    "json_padding_in_vocabulary": {"json_padding": "p"},
    "json_padding_config_null": {"json_padding": "<pad>", "null": ["pad_token"]},
    "json_padding_beside_config": {"json_padding": "<pad>", "pad_token": "</s>"},
    "json_padding_beside_map": {"json_padding": "<pad>", "special_tokens_map": {"pad_token": "<unk>"}},
}
CLASSES = {name: "CodeLlamaTokenizer" for name in VARIANTS if name.startswith("code_llama")}


def build(folder):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["\u2581", "p", "o", "s", "\u2581p", "\u2581po", "\u2581pos"]:
        vocab[piece] = len(vocab)
    merges = [("\u2581", "p"), ("\u2581p", "o"), ("\u2581po", "s")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "clean_up_tokenization_spaces": False}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f, indent=2)
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="tests/fixtures/llama2_tok")
    out = ap.parse_args().out
    cfg = build(out)
    expected = {"texts": TEXTS, "variants": {}}
    for name, edit in VARIANTS.items():
        with tempfile.TemporaryDirectory() as d:
            edit = dict(edit)
            json_pad = edit.pop("json_padding", None)
            if json_pad is None:
                shutil.copy(os.path.join(out, "tokenizer.json"), d)
            else:
                tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
                tok.enable_padding(pad_token=json_pad, pad_id=0)
                tok.save(os.path.join(d, "tokenizer.json"))
            model = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **edit.pop("config_json", {})}
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(model, f)
            nulls = edit.pop("null", [])
            stm = edit.pop("special_tokens_map", None)
            added_file = edit.pop("added_tokens_file", None)
            if added_file is not None:
                with open(os.path.join(d, "added_tokens.json"), "w") as f:
                    json.dump(added_file, f)
            tc = {k: v for k, v in {**cfg, **edit}.items() if v is not None}
            tc.update({k: None for k in nulls})
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(tc, f)
            if stm is not None:
                with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
                    json.dump(stm, f)
            at = AutoTokenizer.from_pretrained(d)
            want = CLASSES.get(name, "LlamaTokenizer")
            assert type(at).__name__ == want, (name, type(at).__name__)
            ids = [at(t)["input_ids"] for t in TEXTS]
            text = [at.decode(i, skip_special_tokens=True) for i in ids]
            expected["variants"][name] = {"edit": VARIANTS[name], "ids": ids, "decoded": text,
                                          "pad_token_id": at.pad_token_id}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
