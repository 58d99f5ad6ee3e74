"""The fixed adapter of the PEFT check: a pet prompt on the committed test BERT, made from
Python (text init, three plain gradient steps on the sample sentences) and saved with
Model.save_prompt. test_peft.py makes it again and compares it with the committed copy;
peft/make_peft_scores.py (run where torch is installed) scores it with PEFT."""
import json
from pathlib import Path

import softprompt as sp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODEL = REPO / "tests" / "fixtures" / "bert_mlm"
TRAIN = REPO / "tests" / "bad_inputs" / "data" / "train.jsonl"
DEV = REPO / "tests" / "bad_inputs" / "data" / "dev.jsonl"
ADAPTER = HERE / "peft" / "adapter"
SCORES = HERE / "peft" / "peft_scores.json"
VERBALIZER = "positive=great,negative=bad"


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def make_adapter(out):
    """Writes the adapter into `out`; returns (model, task, prompt)."""
    model = sp.Model(MODEL)
    train = [(r["text"], r["label"]) for r in rows(TRAIN)]
    task = model.task(train, prompt_len=5, verbalizer=VERBALIZER)
    prompt = model.new_prompt(task, prompt_len=5, init="text", init_text="a movie review")
    batch = model.encode(task, train)
    for _ in range(3):
        prompt.values[...] -= 0.5 * model.step(task, prompt, batch).prompt_grad
    # regenerating the committed adapter replaces it
    model.save_prompt(out, prompt, task, overwrite=True)
    return model, task, prompt


if __name__ == "__main__":
    make_adapter(ADAPTER)
    print(f"wrote {ADAPTER}")
