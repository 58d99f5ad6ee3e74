"""Ctrl-C stops a long evaluate or predict after the batch under way (they ran every batch
first, the GIL released and no signal heard, and raised only then, the result thrown away)."""
import re
import subprocess
import sys
import textwrap

from conftest import BERT_MLM

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
