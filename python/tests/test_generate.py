"""generate from Python equals `softprompt generate` on the same saved prompt; parity on the
decoder-only generate reference passes (generated ids exactly as PyTorch's)."""
import json

import pytest

import softprompt as sp
from conftest import BERT_MLM, FIXTURES


def test_generate_equals_the_command_line(cli, tmp_path):
    model = sp.Model(FIXTURES / "llama")
    task = model.task(task="causal", free_targets=True, prompt_len=3)
    prompt = model.new_prompt(task, prompt_len=3, seed=1)
    model.save_prompt(tmp_path / "p", prompt, task)
    texts = ["hello there", "a b"]
    ours = model.generate(task, prompt, texts, max_new_tokens=5)
    out = cli("generate", "--prompt", tmp_path / "p", "--text", texts[0], "--text", texts[1],
              "--max-new-tokens", 5).stdout
    theirs = [json.loads(line) for line in out.splitlines()]
    assert [g["ids"] for g in ours] == [t["ids"] for t in theirs]
    assert [g["logprob"] for g in ours] == [t["logprob"] for t in theirs]
    assert [g["text"] for g in ours] == [t["output"] for t in theirs]
    # the command line's key too
    assert [g["output"] for g in ours] == [t["output"] for t in theirs]
    assert all(len(g["ids"]) <= 5 for g in ours)


def test_generate_on_an_encoder_is_unsupported():
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    with pytest.raises(sp.Unsupported, match="decoder-only"):
        model.generate(task, model.new_prompt(task, prompt_len=2), ["a"])


def test_parity_on_the_generate_reference():
    report = sp.parity(FIXTURES / "llama", FIXTURES / "llama" / "ref_generate_random.safetensors")
    assert report["passed"], report["table"]
    ids = [r for r in report["rows"] if r["name"] == "generated_ids"]
    assert ids and ids[0]["tol"] == 0.0


def test_greedy_predict_equals_the_command_line(cli, tmp_path):
    """Python's predict under free targets gave `label: None` and no text where
    `softprompt predict` gives the generated text as `output` and `label`."""
    model = sp.Model(FIXTURES / "llama")
    task = model.task(task="causal", free_targets=True, prompt_len=3, max_target_len=4)
    prompt = model.new_prompt(task, prompt_len=3, seed=2)
    model.save_prompt(tmp_path / "p", prompt, task)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["hello there", "a b"]))
    ours = model.predict(task, prompt, str(data))
    out = cli("predict", "--prompt", tmp_path / "p", "--data", data).stdout
    theirs = [json.loads(line) for line in out.splitlines()]
    assert len(ours) == len(theirs) == 2
    for o, t in zip(ours, theirs):
        assert o["output"] == t["output"] and o["label"] == t["label"] == t["output"]
        assert o["output"] == model.detokenize(o["ids"])
        assert o["score"] == pytest.approx(t["score"], rel=1e-5)
