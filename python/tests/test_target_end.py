"""target_end, the command line's --target-end: a causal prompt saved from Python with
target_end="pad" records it in task.json, reloads with it, and generates what
`softprompt generate` generates on that folder; a model without a pad token refuses it."""
import json

import pytest

import softprompt as sp
from conftest import FIXTURES


def test_pad_end_is_saved_and_generates_as_the_command_line(cli, tmp_path):
    model = sp.Model(FIXTURES / "bloom")
    pairs = [("the order was late", "complaint"), ("the order was fine", "no complaint")]
    task = model.task(pairs, prompt_len=3, task="causal", target_end="pad")
    assert task.target_end == "pad"
    assert model.task(pairs, prompt_len=3, task="causal").target_end == "eos"
    prompt = model.new_prompt(task, prompt_len=3, seed=2)
    model.save_prompt(tmp_path / "p", prompt, task)
    saved = json.loads((tmp_path / "p" / "task.json").read_text())
    assert saved["target_end"] == "pad"
    loaded = sp.Prompt.load(tmp_path / "p")
    assert model.task_for(loaded).target_end == "pad"
    assert model.task_for(loaded, target_end="none").target_end == "none"
    texts = ["the train was slow"]
    ours = model.generate(model.task_for(loaded), loaded, texts, max_new_tokens=6)
    out = cli("generate", "--prompt", tmp_path / "p", "--text", texts[0], "--max-new-tokens", 6)
    theirs = json.loads(out.stdout)
    assert ours[0]["ids"] == theirs["ids"]
    # the rank scores count the end token: pad and eos score the labels differently
    pad = model.predict(model.task_for(loaded), loaded, pairs)
    eos = model.predict(model.task_for(loaded, target_end="eos"), loaded, pairs)
    assert [p["scores"] for p in pad] != [p["scores"] for p in eos]


def test_pad_end_without_a_pad_token_is_refused():
    model = sp.Model(FIXTURES / "llama")
    with pytest.raises(sp.InvalidArgument, match='^invalid argument target_end: pad: .*tokenizer_config.json.*: use target_end="eos"'):
        model.task([("a", "x"), ("b", "y")], prompt_len=2, task="causal", target_end="pad")
    with pytest.raises(sp.InvalidArgument, match="eos, pad or none"):
        model.task([("a", "x"), ("b", "y")], prompt_len=2, task="causal", target_end="sep")


def test_eos_missing_says_a_causal_task_ends_with_nothing(tmp_path):
    """Mistral's config.json names no eos_token_id: a causal task under target_end "eos" (the
    default) ends its targets with nothing, which the command line warns of and Task.eos_missing
    tells a Python caller, for a new task and a saved prompt's alike. "none" says so on purpose,
    Llama has an eos token, and a pet task has no target end."""
    pairs = [("the order was late", "complaint"), ("the order was fine", "no complaint")]
    mistral = sp.Model(FIXTURES / "mistral")
    task = mistral.task(pairs, prompt_len=2, task="causal")
    assert task.eos_missing is True
    assert mistral.task(pairs, prompt_len=2, task="causal", target_end="none").eos_missing is False
    llama = sp.Model(FIXTURES / "llama")
    assert llama.task(pairs, prompt_len=2, task="causal").eos_missing is False
    bert = sp.Model(FIXTURES / "bert_mlm")
    pet = bert.task(pairs, prompt_len=2, verbalizer="complaint=bad,no complaint=good")
    assert pet.eos_missing is False
    mistral.save_prompt(tmp_path / "p", mistral.new_prompt(task, prompt_len=2, seed=1), task)
    loaded = sp.Prompt.load(tmp_path / "p")
    assert mistral.task_for(loaded).eos_missing is True
    assert mistral.task_for(loaded, target_end="none").eos_missing is False


def test_greedy_output_that_is_no_label_has_no_label(cli, tmp_path):
    """Greedy decoding of labels: an output that is no label's target has label None (null on
    the command line), not the output text, which a text equal to a label's name made look
    like that label; the two agree row for row."""
    model = sp.Model(FIXTURES / "bloom")
    pairs = [("the order was late", "complaint"), ("the order was fine", "no complaint")]
    task = model.task(pairs, prompt_len=3, task="causal", decode="greedy", max_target_len=16)
    prompt = model.new_prompt(task, prompt_len=3, seed=2)
    model.save_prompt(tmp_path / "p", prompt, task)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in pairs))
    ours = model.predict(task, prompt, str(data))
    out = cli("predict", "--prompt", tmp_path / "p", "--data", data).stdout
    theirs = [json.loads(line) for line in out.splitlines()]
    for o, t in zip(ours, theirs):
        assert o["output"] == t["output"] and o["label"] == t["label"], (o, t)
        if o["class"] is None:
            assert o["label"] is None
        else:
            assert o["label"] == task.labels[o["class"]]
    assert any(o["class"] is None for o in ours), ours


def test_free_targets_holding_a_stop_token_are_warned_of():
    """A free target with the model's stop token before its end can never be generated:
    evaluate scored such rows as misses without a word, where softprompt eval warns."""
    model = sp.Model(FIXTURES / "llama")
    pairs = [("the order was late", "late<|end_of_text|> again"), ("fine", "fine"),
             ("lost", "lost<|end_of_text|> twice")]
    task = model.task(pairs, prompt_len=2, task="causal", free_targets=True)
    prompt = model.new_prompt(task, seed=1)
    with pytest.warns(UserWarning, match=r"^2 row\(s\) of data \(the first at index 0\) hold a "
                                         r"target with a stop token before its end"):
        model.evaluate(task, prompt, pairs)


def test_dev_and_test_targets_holding_a_stop_token_are_warned_of(tmp_path):
    """train's dev and test splits are scored by generation too: softprompt train warns of
    their free targets holding a stop token, and Model.train said nothing (review 14)."""
    model = sp.Model(FIXTURES / "llama")
    pairs = [("the order was late", "late"), ("fine", "fine")]
    dev = [("fine", "fine"), ("lost", "lost<|end_of_text|> twice")]
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "lost", "label": "lost<|end_of_text|> twice"}\n')
    with pytest.warns(UserWarning) as heard:
        model.train(pairs, tmp_path / "run", dev=dev, test=test, task="causal",
                    free_targets=True, prompt_len=2, max_steps=1, batch_size=2, no_progress=True)
    said = [str(w.message) for w in heard if "stop token before its end" in str(w.message)]
    assert said == [
        "1 row(s) of dev (the first at index 1) hold a target with a stop token before its end: "
        "generation stops at that token, so each is scored a miss",
        f"{test}: 1 row(s) (the first at line 1) hold a target with a stop token before its "
        "end: generation stops at that token, so each is scored a miss",
    ], said
