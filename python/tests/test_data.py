"""Data files from Python as the command line reads them: quoting="none" (--quoting none)
for TSV files written without quoting, as GLUE's are."""
import json

import pytest

import softprompt as sp
from conftest import BERT_NOHEAD, TRAIN


def test_quoting_none_reads_a_tsv_written_without_quoting(tmp_path):
    """The first text starts with a quote it never closes: read as Python's csv reads it by
    default, the quote runs to the end of the file (an error); quoting="none" reads every row
    as written in task, train, evaluate and predict. JSON lines files beside it in train read as
    they are; alone, they take "minimal" and refuse "none"."""
    rows = [json.loads(line) for line in TRAIN.read_text().splitlines()]
    tsv = tmp_path / "train.tsv"
    lines = [("\"" if i == 0 else "") + f"{r['text']}\t{r['label']}\n" for i, r in enumerate(rows)]
    tsv.write_text("text\tlabel\n" + "".join(lines))
    model = sp.Model(BERT_NOHEAD)
    with pytest.raises(sp.DataError, match="train.tsv:2: malformed line: a quoted field is not closed"):
        model.task(tsv, prompt_len=4, task="cls")
    task = model.task(tsv, prompt_len=4, task="cls", quoting="none")
    prompt = model.new_prompt(task, prompt_len=4)
    metrics, _ = model.evaluate(task, prompt, tsv, quoting="none")
    assert metrics["examples"] == len(rows)
    assert len(model.predict(task, prompt, tsv, quoting="none")) == len(rows)
    with pytest.raises(sp.DataError, match="not closed"):
        model.predict(task, prompt, tsv)
    out = tmp_path / "out"
    summary, _ = model.train(tsv, out, task="cls", prompt_len=4, max_steps=1, no_progress=True, quoting="none")
    assert summary["steps"] == 1
    # quoting is for the TSV and CSV files of a call: JSON lines beside one read as they are
    summary, _ = model.train(tsv, tmp_path / "mixed", dev=TRAIN, test=str(TRAIN), task="cls", prompt_len=4,
                             max_steps=1, no_progress=True, quoting="none")
    assert summary["test"]["examples"] == len(rows)
    # minimal, the default, is taken by a JSON lines file alone; none sets nothing there
    assert len(model.encode(task, TRAIN, quoting="minimal")) == len(rows)
    with pytest.raises(sp.InvalidArgument, match="train.jsonl: a JSON lines file has no quoting to set"):
        model.task(TRAIN, prompt_len=4, task="cls", quoting="none")
    with pytest.raises(sp.InvalidArgument, match="train.jsonl: a JSON lines file has no quoting to set"):
        model.train(TRAIN, tmp_path / "json", dev=TRAIN, task="cls", prompt_len=4, max_steps=1,
                    no_progress=True, quoting="none")
