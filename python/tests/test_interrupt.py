"""Ctrl-C stops a long evaluate or predict after the batch under way, encode after the chunk
of rows under way and generate after the token under way (they ran to the end first, the GIL
released and no signal heard, and raised only then, the result thrown away)."""
import re
import subprocess
import sys
import textwrap

from conftest import BERT_MLM, FIXTURES

ROWS = 3000

CHILD = textwrap.dedent(
    f"""
    import os, signal, sys, threading
    import softprompt as sp
    signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the parent ignores
    model = sp.Model(sys.argv[1])
    task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,
                      verbalizer="positive=great,negative=bad")
    prompt = model.new_prompt(task, prompt_len=4)
    texts = [f"the movie number {{i}} was great and long." for i in range({ROWS})]
    enc = model.encode(task, texts, labels=["positive"] * len(texts))
    for call in (model.predict, model.evaluate):
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
            call(task, prompt, enc, batch_size=4)
            print(call.__name__, "finished", flush=True)
        except KeyboardInterrupt as e:
            print(call.__name__, "interrupted:", e, flush=True)
        sys.setswitchinterval(0.005)
        th.join()
    # nothing is left half done: the next call runs to the end
    print("after:", len(model.predict(task, prompt, enc[:8])), flush=True)
    """
)


def test_ctrl_c_stops_predict_and_evaluate_between_batches():
    p = subprocess.run([sys.executable, "-c", CHILD, str(BERT_MLM)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and lines[2] == "after: 8", p.stdout
    for name, line in zip(["predict", "evaluate"], lines):
        # the engine's word, so the KeyboardInterrupt came from inside the call
        m = re.fullmatch(name + r" interrupted: interrupted after (\d+) of (\d+) rows: nothing is returned", line)
        assert m, p.stdout
        done, total = map(int, m.groups())
        # the signal came as the first batch started: it stopped long before the end
        assert total == ROWS and 4 <= done <= ROWS // 10, line


# Ctrl-C as the call's compute starts (the technique above), then `call` run in the child:
# prints "finished" or "interrupted: <the engine's message>"
LATE_CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    import softprompt as sp
    signal.signal(signal.SIGINT, signal.default_int_handler)
    model = sp.Model(sys.argv[1])
    {setup}
    go = threading.Event()
    def ctrl_c():
        go.wait()
        os.kill(os.getpid(), signal.SIGINT)
    sys.setswitchinterval(1000)
    th = threading.Thread(target=ctrl_c)
    th.start()
    go.set()
    try:
        {call}
        print("finished", flush=True)
    except KeyboardInterrupt as e:
        print("interrupted:", e, flush=True)
    sys.setswitchinterval(0.005)
    th.join()
    """
)


def run_interrupted(model_dir, setup, call):
    """(parts done, parts in all, unit) of the engine's message when Ctrl-C came as `call`
    started in a child process."""
    child = LATE_CHILD.format(setup=setup, call=call)
    p = subprocess.run([sys.executable, "-c", child, str(model_dir)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    m = re.fullmatch(r"interrupted: interrupted after (\d+) of (\d+) (\w+): nothing is returned\n",
                     p.stdout)
    assert m, p.stdout
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
