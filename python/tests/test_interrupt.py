"""Ctrl-C stops a long evaluate or predict after the batch under way, encode after the chunk
of rows under way and generate after the token under way (they ran to the end first, the GIL
released and no signal heard, and raised only then, the result thrown away)."""
import re
import subprocess
import sys
import textwrap

from conftest import BERT_MLM, FIXTURES

ROWS = 3000

# The child's start: the model, and `ctrl_c_during(call)`, which runs `call()` with Ctrl-C
# as its compute starts and says "finished" or "interrupted: <the engine's message>"
PRELUDE = textwrap.dedent(
    """
    import os, signal, sys, threading
    import softprompt as sp
    signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the parent ignores
    model = sp.Model(sys.argv[1])
    def ctrl_c_during(call):
        # Ctrl-C from a thread that gets the GIL only once the main thread gives it up: with
        # this switch interval, first when the call's compute starts
        go = threading.Event()
        def ctrl_c():
            go.wait()
            os.kill(os.getpid(), signal.SIGINT)
        sys.setswitchinterval(1000)
        th = threading.Thread(target=ctrl_c)
        th.start()
        go.set()
        try:
            call()
            return "finished"
        except KeyboardInterrupt as e:
            return f"interrupted: {e}"
        finally:
            sys.setswitchinterval(0.005)
            th.join()
    """
)


def run_child(model_dir, body):
    """The child's stdout: PRELUDE, then `body`, run on `model_dir`."""
    p = subprocess.run([sys.executable, "-c", PRELUDE + body, str(model_dir)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_ctrl_c_stops_predict_and_evaluate_between_batches():
    body = textwrap.dedent(
        f"""
        task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,
                          verbalizer="positive=great,negative=bad")
        prompt = model.new_prompt(task, prompt_len=4)
        texts = [f"the movie number {{i}} was great and long." for i in range({ROWS})]
        enc = model.encode(task, texts, labels=["positive"] * len(texts))
        for call in (model.predict, model.evaluate):
            said = ctrl_c_during(lambda: call(task, prompt, enc, batch_size=4))
            print(call.__name__, said, flush=True)
        # nothing is left half done: the next call runs to the end
        print("after:", len(model.predict(task, prompt, enc[:8])), flush=True)
        """
    )
    out = run_child(BERT_MLM, body)
    lines = out.splitlines()
    assert len(lines) == 3 and lines[2] == "after: 8", out
    for name, line in zip(["predict", "evaluate"], lines):
        # the engine's word, so the KeyboardInterrupt came from inside the call
        m = re.fullmatch(name + r" interrupted: interrupted after (\d+) of (\d+) rows: nothing is returned", line)
        assert m, out
        done, total = map(int, m.groups())
        # the signal came as the first batch started: it stopped long before the end
        assert total == ROWS and 4 <= done <= ROWS // 10, line


def run_interrupted(model_dir, setup, call):
    """(parts done, parts in all, unit) of the engine's message when Ctrl-C came as `call`
    started in a child process, after `setup`."""
    out = run_child(model_dir, f"{setup}\nprint(ctrl_c_during(lambda: {call}), flush=True)\n")
    m = re.fullmatch(r"interrupted: interrupted after (\d+) of (\d+) (\w+): nothing is returned\n",
                     out)
    assert m, out
    return int(m[1]), int(m[2]), m[3]


def test_ctrl_c_stops_encode_between_chunks_of_rows():
    """Encoding a long list of texts heard Ctrl-C only once every row was encoded."""
    setup = "\n".join([
        'task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,'
        ' verbalizer="positive=great,negative=bad")',
        'texts = [f"the movie number {i} was great and long." for i in range(50000)]',
    ])
    done, total, unit = run_interrupted(BERT_MLM, setup, "model.encode(task, texts)")
    assert (unit, total) == ("rows", 50000)
    assert done % 256 == 0 and 256 <= done <= total // 10, (done, total)


def test_ctrl_c_stops_generate_between_tokens():
    """Generation heard Ctrl-C only once every token was generated."""
    setup = "\n".join([
        'task = model.task(task="causal", free_targets=True, prompt_len=3)',
        "prompt = model.new_prompt(task, prompt_len=3, seed=1)",
        'texts = ["hello there", "a b", "once upon a time"]',
    ])
    call = "model.generate(task, prompt, texts, max_new_tokens=3000)"
    done, total, unit = run_interrupted(FIXTURES / "bloom", setup, call)
    assert (unit, total) == ("tokens", 3000)
    assert 1 <= done <= total // 10, (done, total)
