"""save_prompt never replaces a saved prompt unless asked, and neither it nor train writes
into an empty path (the current folder); generate, predict and evaluate say which texts
they cut."""
import errno
import subprocess
import sys

import pytest

import softprompt as sp
from conftest import BERT_NOHEAD, FIXTURES, TRAIN


def test_save_prompt_refuses_a_saved_folder_unless_overwrite(tmp_path):
    model = sp.Model(BERT_NOHEAD)
    task = model.task(TRAIN, prompt_len=4, task="cls")
    first = model.new_prompt(task, prompt_len=4, seed=1)
    model.save_prompt(tmp_path / "p", first, task)
    before = (tmp_path / "p" / "adapter_model.safetensors").read_bytes()
    second = model.new_prompt(task, prompt_len=4, seed=2)
    with pytest.raises(sp.FolderOccupied, match="holds a saved prompt") as refused:
        model.save_prompt(tmp_path / "p", second, task)
    # an OSError as Python's own for a path that exists (hostile pass 24, F7: a ValueError)
    assert isinstance(refused.value, FileExistsError)
    assert (refused.value.errno, refused.value.filename) == (errno.EEXIST, str(tmp_path / "p"))
    # the advice names the keyword, not the Rust API's SaveOptions
    assert "pass overwrite=True to replace it" in str(refused.value), refused.value
    assert "SaveOptions" not in str(refused.value)
    assert (tmp_path / "p" / "adapter_model.safetensors").read_bytes() == before
    model.save_prompt(tmp_path / "p", second, task, overwrite=True)
    assert (sp.Prompt.load(tmp_path / "p").values == second.values).all()


def test_a_save_into_a_finished_runs_folder_by_any_name(tmp_path, monkeypatch):
    """A finished run's folder holds its lock file: a save into it as "." locked that file
    twice ("." and its parent "" are one folder) and refused itself, naming its own pid."""
    model = sp.Model(BERT_NOHEAD)
    _, kept = model.train(TRAIN, tmp_path / "run", task="cls", prompt_len=4, max_steps=1,
                          no_progress=True)
    assert (tmp_path / "run" / ".softprompt.lock").exists()
    task = model.task_for(kept)
    prompt = model.new_prompt(task, prompt_len=4, seed=5)
    monkeypatch.chdir(tmp_path / "run")
    model.save_prompt(".", prompt, task, overwrite=True)
    model.save_prompt("sub", prompt, task)
    assert (sp.Prompt.load(tmp_path / "run").values == prompt.values).all()
    assert (sp.Prompt.load(tmp_path / "run" / "sub").values == prompt.values).all()


def test_an_empty_path_is_refused(tmp_path):
    model = sp.Model(BERT_NOHEAD)
    task = model.task(TRAIN, prompt_len=4, task="cls")
    prompt = model.new_prompt(task, prompt_len=4)
    with pytest.raises(sp.InvalidArgument, match="dir: is empty"):
        model.save_prompt("", prompt, task)
    with pytest.raises(sp.InvalidArgument, match="^invalid argument out: is empty"):
        model.train(TRAIN, "", task="cls", prompt_len=4, max_steps=1)


def test_generate_says_which_texts_were_cut():
    model = sp.Model(FIXTURES / "bloom")
    task = model.task(task="causal", free_targets=True, prompt_len=4, max_len=8)
    prompt = model.new_prompt(task, prompt_len=4)
    out = model.generate(task, prompt, ["a story", "word " * 30], max_new_tokens=2)
    assert [g["truncated"] for g in out] == [False, True]


def test_predict_and_evaluate_say_which_texts_were_cut():
    """Each prediction carries `truncated`, as a served answer and generate's do."""
    model = sp.Model(BERT_NOHEAD)
    task = model.task(TRAIN, prompt_len=4, task="cls", max_len=12)
    prompt = model.new_prompt(task, prompt_len=4)
    texts = ["a fine film", "word " * 30]
    assert [p["truncated"] for p in model.predict(task, prompt, texts)] == [False, True]
    _, preds = model.evaluate(task, prompt, texts, labels=["positive", "negative"])
    assert [p["truncated"] for p in preds] == [False, True]
    enc = model.encode(task, texts)
    assert enc.truncated == 1
    assert [p["truncated"] for p in model.predict(task, prompt, enc)] == [False, True]


def test_folder_refusals_are_oserrors(tmp_path):
    """A run into a finished run's folder is a FileExistsError, and into a folder another
    process is writing (its lock held) a BlockingIOError; both were ValueErrors (BadFile)."""
    model = sp.Model(BERT_NOHEAD)
    out = tmp_path / "run"
    model.train(TRAIN, out, task="cls", prompt_len=4, max_steps=1, no_progress=True)
    with pytest.raises(sp.FolderOccupied, match="holds a finished run") as e:
        model.train(TRAIN, out, task="cls", prompt_len=4, max_steps=1, no_progress=True)
    assert isinstance(e.value, FileExistsError) and e.value.errno == errno.EEXIST
    # another process holds the run's lock, as a run does
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; f = open(sys.argv[1], 'r+'); fcntl.flock(f, fcntl.LOCK_EX); "
         "f.truncate(0); f.write(str(os.getpid())); f.flush(); print('held', flush=True); "
         "sys.stdin.read()",
         str(out / ".softprompt.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(sp.FolderInUse, match=f"pid {holder.pid}") as e:
            model.train(TRAIN, out, task="cls", prompt_len=4, max_steps=1, no_progress=True,
                        overwrite=True)
        assert isinstance(e.value, BlockingIOError) and e.value.errno == errno.EAGAIN
        assert e.value.filename == str(out)
        assert "is writing into this folder" in str(e.value)
    finally:
        holder.communicate("")
    assert (out / "checkpoint.safetensors").exists()
