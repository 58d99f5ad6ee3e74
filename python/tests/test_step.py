"""One step from Python against PyTorch + PEFT (the reference files of
scripts/torch_reference.py) and against the command line's `softprompt parity`."""
import re

import numpy as np
import pytest

import softprompt as sp
from conftest import BERT_MLM, BERT_NOHEAD, FIXTURES, read_safetensors, rel_err

# a float32 CPU run matches PyTorch at 1e-4 (tests/fixtures/README.md, reference-format.md)
TOL = 1e-4


def reference_batch(model, ref):
    """The reference's rows (padding cut off by the attention mask) as Encoded."""
    ids = [
        [int(i) for i, keep in zip(row, mask) if keep]
        for row, mask in zip(ref["input_ids"], ref["attention_mask"])
    ]
    masks = [int(m) for m in ref["mask_positions"]] if "mask_positions" in ref else None
    labels = [int(c) for c in ref["class_labels"]]
    return sp.Encoded.from_ids(ids, labels=labels, mask_positions=masks)


@pytest.mark.parametrize("name,pooling", [("ref_cls_random_mean", "mean"), ("ref_cls_text_cls", "cls")])
def test_cls_step_matches_pytorch(name, pooling):
    ref, _ = read_safetensors(BERT_NOHEAD / f"{name}.safetensors")
    model = sp.Model(BERT_NOHEAD)
    k = ref["head_bias"].shape[0]
    task = model.task(task="cls", pooling=pooling, labels=[str(i) for i in range(k)])
    p = ref["prompt"].shape[0]
    prompt = model.new_prompt(task, prompt_len=p)
    # write the reference's prompt and head through the zero-copy views
    prompt.values[...] = ref["prompt"]
    weight, bias = prompt.head
    weight[...] = ref["head_weight"]
    bias[...] = ref["head_bias"]
    out = model.step(task, prompt, reference_batch(model, ref))
    assert rel_err(out.loss, ref["loss"]) <= TOL
    assert out.prompt_grad.shape == ref["prompt_grad"].shape
    assert rel_err(out.prompt_grad, ref["prompt_grad"]) <= TOL
    wg, bg = out.head_grad
    assert rel_err(wg, ref["head_weight_grad"]) <= TOL
    assert rel_err(bg, ref["head_bias_grad"]) <= TOL


@pytest.mark.parametrize("name", ["ref_pet_random", "ref_pet_text"])
def test_pet_step_matches_pytorch(name):
    folder = FIXTURES / "bert_mlm_bf16_sharded"
    ref, _ = read_safetensors(folder / f"{name}.safetensors")
    model = sp.Model(folder)
    words = [model.detokenize([int(i)]) for i in ref["verbalizer_ids"]]
    verbalizer = [(f"c{i}", w) for i, w in enumerate(words)]
    task = model.task(task="pet", verbalizer=verbalizer)
    prompt = sp.Prompt.from_values(ref["prompt"])
    out = model.step(task, prompt, reference_batch(model, ref))
    assert rel_err(out.loss, ref["loss"]) <= TOL
    assert rel_err(out.prompt_grad, ref["prompt_grad"]) <= TOL
    assert out.head_grad is None


def test_writes_to_values_reach_the_next_step():
    model = sp.Model(BERT_MLM)
    data = [("the movie was great.", "positive"), ("the film was bad.", "negative")]
    task = model.task(data, prompt_len=4, verbalizer="negative=bad,positive=great")
    prompt = model.new_prompt(task, prompt_len=4, init="text", init_text="great movie")
    values = prompt.values
    assert values.base is not None and not values.flags.owndata  # a view, not a copy
    texts, labels = [t for t, _ in data], [l for _, l in data]
    before = model.step(task, prompt, texts, labels=labels)
    values -= 0.5 * before.prompt_grad
    after = model.step(task, prompt, texts, labels=labels)
    assert after.loss < before.loss
    # the same update applied to a copy gives the same loss: the view wrote the prompt itself
    again = sp.Prompt.from_values(np.array(prompt.values))
    again_out = model.step(task, again, texts, labels=labels)
    assert again_out.loss == after.loss
    np.testing.assert_array_equal(again_out.prompt_grad, after.prompt_grad)
    # the gradient is the engine's buffer, moved into numpy
    assert before.prompt_grad.dtype == np.float32 and not before.prompt_grad.flags.owndata


def cli_rows(text):
    """{tensor: (rel_err, status)} from `softprompt parity`'s table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+\[[^\]]*\]\s+(\S+)\s+(\S+)\s+(\S+)\s+(ok|FAIL)$", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), m.group(5))
    return rows


@pytest.mark.parametrize(
    "folder,ref",
    [("bert_mlm", "ref_pet_text"), ("bert_nohead", "ref_cls_random_mean"), ("t5_v1_1", None)],
)
def test_parity_equals_the_command_line(cli, folder, ref):
    model_dir = FIXTURES / folder
    if ref is None:
        ref = sorted(p.stem for p in model_dir.glob("ref_*.safetensors"))[0]
    file = model_dir / f"{ref}.safetensors"
    report = sp.parity(model_dir, file)
    assert report["passed"], report["table"]
    assert report["rows"][0]["name"] == "loss"
    assert all(r["tol"] == TOL for r in report["rows"])
    theirs = cli_rows(cli("parity", "--model", model_dir, "--reference", file).stdout)
    assert set(theirs) == {r["name"] for r in report["rows"]}
    for r in report["rows"]:
        # the table prints 3 digits: the same run gives the same digits
        assert f"{r['rel_err']:.3e}" == f"{theirs[r['name']][0]:.3e}", r["name"]
        assert theirs[r["name"]][1] == "ok"
