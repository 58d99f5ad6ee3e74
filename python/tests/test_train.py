"""A training run from Python equals `softprompt train` with the same settings bit for bit;
Ctrl-C leaves a checkpoint that resumes to the uninterrupted run's prompt."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softprompt as sp
from conftest import BERT_MLM, BERT_NOHEAD, DEV, TRAIN, read_safetensors

# the run's files whose bytes depend on nothing but the numbers (task.json and
# adapter_config.json record the run's paths)
EXACT = ["adapter_model.safetensors", "checkpoint.safetensors"]
# metrics.jsonl's timing fields differ from run to run
TIMING = {"steps_per_s", "tokens_per_s", "seconds", "elapsed_s"}


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def same_run(a, b, files=EXACT):
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert metrics(a) == metrics(b)


PET = dict(
    prompt_len=4,
    batch_size=8,
    max_steps=6,
    eval_every=3,
    save_every=3,
    log_every=1,
    verbalizer="positive=great,negative=bad",
    init="text",
    init_text="a movie review",
)


def flags(kw):
    """The command line's flags for the keyword arguments."""
    out = []
    for k, v in kw.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def test_pet_run_equals_the_command_line(cli, tmp_path):
    a, b = tmp_path / "cli", tmp_path / "py"
    cli("train", "--model", BERT_MLM, "--train", TRAIN, "--dev", DEV, "--out", a, "--no-progress", *flags(PET))
    events = []
    summary, prompt = sp.Model(BERT_MLM).train(
        str(TRAIN), b, dev=str(DEV), no_progress=True, on_event=events.append, **PET
    )
    same_run(a, b, EXACT + ["head.safetensors"] if (a / "head.safetensors").exists() else EXACT)
    assert summary["steps"] == 6 and summary["best_dev"]["examples"] == 8
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))
    assert [e["loss"] for e in steps] == [m["loss"] for m in metrics(b) if "loss" in m and "split" not in m][:6]
    saved, _ = read_safetensors(b / "adapter_model.safetensors")
    np.testing.assert_array_equal(prompt.values, saved["prompt_embeddings"])


def test_cls_run_with_pairs_equals_the_command_line(cli, tmp_path):
    """The cls task with its head, adafactor, data given as (text, label) pairs."""
    kw = dict(task="cls", pooling="mean", prompt_len=3, batch_size=5, max_steps=5,
              optimizer="adafactor", save_every=5, log_every=1, seed=7)
    a, b = tmp_path / "cli", tmp_path / "py"
    cli("train", "--model", BERT_NOHEAD, "--train", TRAIN, "--out", a, "--no-progress", *flags(kw))
    rows = [json.loads(line) for line in TRAIN.read_text().splitlines()]
    pairs = [(r["text"], r["label"]) for r in rows]
    sp.Model(BERT_NOHEAD).train(pairs, b, no_progress=True, **kw)
    same_run(a, b, EXACT + ["head.safetensors"])


# P-tuning and prefix tuning from Python: the keywords are the command line's flags
# (`method`, `prefix_projection`, `prefix_placement`, `encoder_*`); 2 steps each, tiny encoders
METHODS = [
    dict(method="prefix", prefix_projection=True, encoder_hidden_size=6),
    dict(method="prefix", prefix_placement="papers"),
    dict(method="p-tuning", encoder_reparameterization="lstm", encoder_hidden_size=5,
         encoder_num_layers=1),
    dict(method="p-tuning", encoder_hidden_size=7),
]


@pytest.mark.parametrize("method", METHODS, ids=[str(m) for m in METHODS])
def test_prefix_and_p_tuning_runs_equal_the_command_line(cli, tmp_path, method):
    """Model.train took no method keyword (P-tuning and prefix tuning were the command line's
    only): the same run from Python gives the command line's losses and files."""
    kw = dict(prompt_len=3, batch_size=4, max_steps=2, save_every=2, log_every=1,
              verbalizer="positive=great,negative=bad", **method)
    a, b = tmp_path / "cli", tmp_path / "py"
    bools = [f"--{k.replace('_', '-')}" for k, v in kw.items() if v is True]
    cli("train", "--model", BERT_MLM, "--train", TRAIN, "--out", a, "--no-progress", *bools,
        *flags({k: v for k, v in kw.items() if v is not True}))
    events = []
    sp.Model(BERT_MLM).train(str(TRAIN), b, no_progress=True, on_event=events.append, **kw)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 2 and losses == [m["loss"] for m in metrics(a) if "loss" in m]
    same_run(a, b)
    encoder = a / "prompt_encoder.safetensors"
    if encoder.exists():  # P-tuning's encoder, prefix tuning's projection
        assert encoder.read_bytes() == (b / "prompt_encoder.safetensors").read_bytes()
    # the method's settings as PEFT reads them (the base model's path aside)
    config = [json.loads((d / "adapter_config.json").read_text()) for d in (a, b)]
    for c in config:
        c.pop("base_model_name_or_path", None)
    assert config[0] == config[1]
    assert config[1]["peft_type"] == {"prefix": "PREFIX_TUNING", "p-tuning": "P_TUNING"}[method["method"]]


CHILD = textwrap.dedent(
    """
    import signal, sys, softprompt as sp
    # Python keeps SIGINT ignored when it starts so (a child of a shell's background job):
    # Ctrl-C's KeyboardInterrupt is what this test sends
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out, resume = sys.argv[1], sys.argv[2] == "resume"
    def hear(ev):
        if ev["event"] == "step":
            print("step", ev["step"], flush=True)
    try:
        sp.Model(sys.argv[3]).train(sys.argv[4], out, on_event=hear, resume=resume, **eval(sys.argv[5]))
        print("finished", flush=True)
    except KeyboardInterrupt as e:
        print("interrupted:", e, flush=True)
        sys.exit(130)
    """
)

LONG = dict(PET, max_steps=400, eval_every=0, save_every=1000, log_every=1, no_progress=True)


def child(out, mode):
    args = [sys.executable, "-c", CHILD, str(out), mode, str(BERT_MLM), str(TRAIN), repr(LONG)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def test_ctrl_c_leaves_a_checkpoint_that_resumes_bit_for_bit(tmp_path):
    out = tmp_path / "run"
    p = child(out, "new")
    for line in p.stdout:
        if line.startswith("step") and int(line.split()[1]) >= 5:
            p.send_signal(signal.SIGINT)
            break
    rest = p.stdout.read()
    assert p.wait(timeout=60) == 130, rest
    assert "interrupted:" in rest and "resume" in rest, rest
    # stopped early, after step 5, with the checkpoint and the prompt written
    assert (out / "checkpoint.safetensors").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    done = [r["step"] for r in metrics(out) if "loss" in r]
    assert 5 <= len(done) < 400 and done == list(range(1, len(done) + 1))
    resumed_from = len(done)
    # resumed to the end, it equals a run never interrupted
    r = child(out, "resume")
    tail = r.stdout.read()
    assert r.wait(timeout=120) == 0 and "finished" in tail, tail
    first = next(line for line in tail.splitlines() if line.startswith("step "))
    assert first == f"step {resumed_from + 1}", tail  # it went on from the checkpoint
    whole = tmp_path / "whole"
    sp.Model(BERT_MLM).train(str(TRAIN), whole, **LONG)
    for f in EXACT:
        assert (out / f).read_bytes() == (whole / f).read_bytes(), f


def test_an_error_in_on_event_stops_the_run_with_a_checkpoint(tmp_path):
    def hear(ev):
        if ev["event"] == "step" and ev["step"] == 3:
            raise ValueError("stop here")

    out = tmp_path / "run"
    try:
        sp.Model(BERT_MLM).train(str(TRAIN), out, on_event=hear, **dict(LONG, max_steps=20))
    except ValueError as e:
        assert str(e) == "stop here"
    else:
        raise AssertionError("the callback's error was swallowed")
    assert (out / "checkpoint.safetensors").is_file()
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3]


def test_a_keyboard_interrupt_from_on_event_propagates_unchanged(tmp_path):
    """A KeyboardInterrupt the callback raised was replaced by a new one with the engine's
    message: the user's own exception and traceback were lost (hostile pass 24). It comes
    out as raised, the engine's word on the checkpoint added as a note."""
    raised = []

    def hear(ev):
        if ev["event"] == "step" and ev["step"] == 2:
            raised.append(KeyboardInterrupt("mine"))
            raise raised[0]

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as caught:
        sp.Model(BERT_MLM).train(str(TRAIN), out, on_event=hear, **dict(LONG, max_steps=20))
    assert caught.value is raised[0] and str(caught.value) == "mine"
    if sys.version_info >= (3, 11):
        (note,) = caught.value.__notes__
        assert note.startswith("training stopped at step 2 of 20") and "resume" in note, note
    assert (out / "checkpoint.safetensors").is_file()


THREADS_CHILD = textwrap.dedent(
    """
    import sys, softprompt as sp
    out, model, train, kw = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
    sp.Model(model, threads=1).train(train, out, **kw)
    sp.Model(model, threads=1), sp.Model(model)  # the pool's own count, or 0: as it is
    try:
        sp.Model(model, threads=2)
    except sp.InvalidArgument as e:
        print(e)
    """
)


MKL_THREADS_CHILD = textwrap.dedent(
    """
    import os, sys, softprompt as sp
    out, model, train, kw = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
    try:
        sp.Model(model)
    except sp.InvalidArgument as e:
        if "no libmkl_rt" not in str(e):
            raise
        print("skip:", e)
        sys.exit(0)
    n = (os.cpu_count() or 1) + 1  # never the default count
    sp.Model(model, threads=n).train(train, out, **kw)
    print("threads", n)
    """
)


def test_threads_after_a_plain_model_on_mkl(tmp_path):
    """With SOFTPROMPT_GEMM=mkl, Model() loaded MKL, which asked rayon for its count to size
    MKL's threads: that built the pool at the default size, and Model(threads=N) after it was
    refused. MKL now takes the count at its first product: the run has N threads, on MKL.
    Needs MKL (pip install mkl, or SOFTPROMPT_MKL); skips where it is not found."""
    out = tmp_path / "run"
    args = [sys.executable, "-c", MKL_THREADS_CHILD, str(out), str(BERT_MLM), str(TRAIN),
            repr(dict(PET, eval_every=0, max_steps=2, no_progress=True))]
    env = dict(os.environ, SOFTPROMPT_GEMM="mkl")
    env.pop("RAYON_NUM_THREADS", None)
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    last = p.stdout.splitlines()[-1]
    if last.startswith("skip:"):
        pytest.skip(f"MKL is not installed here ({last})")
    n = int(last.split()[1])
    _, meta = read_safetensors(out / "checkpoint.safetensors")
    state = json.loads(next(v for v in meta.values() if '"threads"' in v))
    assert state["threads"] == n
    assert state["kernels"].startswith("mkl/"), state["kernels"]


def test_threads_sets_the_pool_of_a_fresh_process_as_the_command_line_does(cli, tmp_path):
    """Model(threads=N) failed in every fresh process for N other than the core count: the
    pool was asked its size (which builds it at the default) before it was sized."""
    a, b = tmp_path / "cli", tmp_path / "py"
    kw = dict(PET, eval_every=0)
    cli("train", "--model", BERT_MLM, "--train", TRAIN, "--out", a, "--no-progress", "--threads", 1,
        *flags(kw))
    args = [sys.executable, "-c", THREADS_CHILD, str(b), str(BERT_MLM), str(TRAIN),
            repr(dict(kw, no_progress=True))]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    same_run(a, b)  # the checkpoint records the count: 1
    # a process has one pool: another count is refused, saying which it runs
    assert p.stdout.splitlines()[-1] == (
        "invalid argument threads: 2: this process's thread pool already runs 1 threads (a "
        "process has one pool, sized by the first Model that gives a count, or before one "
        "by the first computation at all cores; give that count, or 0)"
    )


def test_warnings_name_the_keywords(tmp_path, capfd):
    """The run's warnings (a warm-up past its end, a patience that can never stop it early)
    name Python's keywords, not the command line's flags."""
    sp.Model(BERT_MLM).train(str(TRAIN), tmp_path / "w", dev=str(DEV), no_progress=True,
                             prompt_len=2, batch_size=8, max_steps=2, eval_every=1, patience=1,
                             warmup_steps=5, verbalizer="positive=great,negative=bad")
    warnings = [l for l in capfd.readouterr().out.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("warning: warmup_steps=5 is not below the run's 2 steps"), warnings
    assert warnings[1].startswith("warning: patience=1 never stops this run early"), warnings
    assert not any("--" in w for w in warnings), warnings


def test_files_a_killed_overwrite_hid_come_back_with_a_warning(tmp_path):
    """What a killed overwrite=True left hidden (`.NAME.removed-PID`) is put back by the next
    run into the folder, which says so (it was silent; review 26); a load before then names
    the hidden copy."""
    kw = dict(no_progress=True, prompt_len=2, batch_size=8, max_steps=2,
              verbalizer="positive=great,negative=bad")
    out = tmp_path / "run"
    sp.Model(BERT_MLM).train(str(TRAIN), out, **kw)
    for name in ["adapter_config.json", "checkpoint.safetensors"]:
        (out / name).rename(out / f".{name}.removed-4194305")
    with pytest.raises(sp.SoftpromptError, match="removed-4194305.*rename it back"):
        sp.Prompt.load(out)
    with pytest.warns(UserWarning, match="put back") as said:
        sp.Model(BERT_MLM).train(str(TRAIN), out, resume=True, **kw)
    back = sorted(str(w.message).split(",")[0] for w in said if "put back" in str(w.message))
    assert back == [f"put back {out / name}" for name in ["adapter_config.json",
                                                           "checkpoint.safetensors"]], back
    assert "a run with overwrite killed part way" in str(said[0].message)
    assert (out / "adapter_config.json").is_file()
    assert not list(out.glob(".*removed*"))


def test_patience_out_at_the_last_step_is_no_early_stop(tmp_path):
    """A rate too small to move the prompt: dev accuracy never improves after step 2, and the
    patience runs out at step 4, the last. The event says so, but the run ran every step: the
    summary said early_stopped (hostile pass 29, F11)."""
    events = []
    summary, _ = sp.Model(BERT_MLM).train(
        str(TRAIN), tmp_path / "p", dev=str(DEV), no_progress=True, prompt_len=2, batch_size=8,
        max_steps=4, eval_every=2, patience=1, lr=1e-30, weight_decay=0.0,
        verbalizer="positive=great,negative=bad", on_event=events.append)
    assert [(e["step"], e["best_step"]) for e in events if e["event"] == "early_stop"] == [(4, 2)]
    assert summary["steps"] == 4 and summary["early_stopped"] is False, summary


def test_report_lines_go_through_sys_stdout(tmp_path, capfd):
    """They were written to file descriptor 1: `redirect_stdout`, a notebook's cell and a
    service's line protocol on sys.stdout missed them (or were broken by them)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        sp.Model(BERT_MLM).train(str(TRAIN), tmp_path / "r", dev=str(DEV), no_progress=True,
                                 prompt_len=2, batch_size=8, max_steps=2, eval_every=1,
                                 verbalizer="positive=great,negative=bad")
    said = buf.getvalue().splitlines()
    assert any(line.startswith("optimizer adamw lr 0.03") for line in said), said
    assert any(line.startswith("trainable: prompt 2 x ") for line in said), said
    assert any(line.split()[:5] == ["step", "2", "|", "dev", "accuracy"] for line in said), said
    assert capfd.readouterr().out == ""


@pytest.mark.skipif(shutil.which("script") is None, reason="script(1) gives a terminal")
def test_report_lines_do_not_land_on_the_train_bar(tmp_path):
    """On a terminal the bar is drawn on stderr while the report lines go through sys.stdout:
    an evaluation's line was written over the bar, after its text (review 11, R11-2). The bar
    is hidden for them, as the command line hides it."""
    run = tmp_path / "run.py"
    run.write_text(textwrap.dedent(f"""
        import softprompt as sp
        sp.Model({str(BERT_MLM)!r}, threads=1).train(
            {str(TRAIN)!r}, {str(tmp_path / "r")!r}, dev={str(DEV)!r}, prompt_len=2,
            batch_size=8, max_steps=4, eval_every=2, verbalizer="positive=great,negative=bad")
    """))
    got = subprocess.run(["script", "-qefc", f"{sys.executable} {run}", "/dev/null"],
                         capture_output=True, timeout=600)
    said = got.stdout.decode(errors="replace")
    assert got.returncode == 0, said
    line = re.search(r"step +4 \| dev", said)
    assert line, said
    before = said[: line.start()]
    assert re.search(r" \d/4 ", before), f"no bar was drawn before it: {said!r}"
    # the bar cleared (a bar of two lines: each line cleared, the cursor moved back up)
    assert re.search(r"\x1b\[2K(\x1b\[\d*[AB]|\r)*$", before) or before.endswith("\n"), repr(said)


def test_a_sys_stdout_that_fails_does_not_fail_the_run(tmp_path, capfd, monkeypatch):
    """A closed or refusing sys.stdout is passed by: the report goes to file descriptor 1,
    as before it went through sys.stdout, and the run returns its result."""

    class Closed:
        def write(self, text):
            raise ValueError("I/O operation on closed file")

        def flush(self):
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stdout", Closed())
    summary, _ = sp.Model(BERT_MLM).train(str(TRAIN), tmp_path / "r", no_progress=True,
                                          prompt_len=2, batch_size=8, max_steps=1,
                                          verbalizer="positive=great,negative=bad")
    monkeypatch.undo()
    # without a dev split the kept prompt is the last step's (it said 0; hostile pass 33, F5)
    assert (summary["steps"], summary["best_step"]) == (1, 1), summary
    assert "optimizer adamw lr 0.03" in capfd.readouterr().out
