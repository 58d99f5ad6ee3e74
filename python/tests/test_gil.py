"""Compute runs with the GIL released: Python threads go on while a call computes."""
import threading
import time

import softprompt as sp
from conftest import BERT_MLM


def test_other_threads_run_during_compute():
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,
                      verbalizer="positive=great,negative=bad")
    prompt = model.new_prompt(task, prompt_len=4)
    # rows enough for a call long enough to see, on a fast machine too (400 took 18 ms)
    n, alone = 400, 0.0
    while alone < 0.05 and n <= 400 * 64:
        texts = [f"the movie number {i} was great and long." * 3 for i in range(n)]
        enc = model.encode(task, texts)
        t0 = time.perf_counter()
        model.predict(task, prompt, enc)
        alone = time.perf_counter() - t0
        n *= 2
    ticks = []

    def count():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    done = threading.Event()
    th = threading.Thread(target=count)
    th.start()
    time.sleep(0.01)
    t0 = time.perf_counter()
    model.predict(task, prompt, enc)
    t1 = time.perf_counter()
    done.set()
    th.join()
    # the counting thread ticked all through the call: had the call held the GIL, it would
    # have been stopped from t0 to t1 (no tick in between)
    inside = [t for t in ticks if t0 < t < t1]
    assert alone > 0.02, alone  # long enough to see
    assert len(inside) >= 5, (len(inside), t1 - t0)
    gaps = [b - a for a, b in zip([t0] + inside, inside + [t1])]
    assert max(gaps) < (t1 - t0) / 2, (max(gaps), t1 - t0)


def test_other_threads_run_during_tokenize():
    """tokenize held the GIL: a 1 MiB text stopped every other Python thread for its 0.5 s."""
    model = sp.Model(BERT_MLM)
    text = "the movie number 7 was great and long. " * 25000
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    th = threading.Thread(target=count)
    th.start()
    time.sleep(0.01)
    t0 = time.perf_counter()
    ids = model.tokenize(text)
    t1 = time.perf_counter()
    done.set()
    th.join()
    inside = [t for t in ticks if t0 < t < t1]
    assert len(ids) > 100000 and t1 - t0 > 0.02, (len(ids), t1 - t0)
    gaps = [b - a for a, b in zip([t0] + inside, inside + [t1])]
    assert max(gaps) < (t1 - t0) / 2, (max(gaps), t1 - t0)
