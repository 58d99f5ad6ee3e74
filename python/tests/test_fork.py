"""fork(): a child of a process whose thread pool had started (a predict ran) waited for ever
at its first parallel op, the pool's threads gone (os.fork, and multiprocessing's default
start method on Linux before Python 3.14). The child now computes on a pool of its own, of the parent's size:
the same numbers, bit for bit; a grandchild builds its own in turn."""
import subprocess
import sys
import textwrap

from conftest import BERT_MLM, FIXTURES

SCRIPT = textwrap.dedent(
    """
    import concurrent.futures, multiprocessing, os, sys
    import softprompt as sp
    model = sp.Model(sys.argv[1], threads=2)
    task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,
                      verbalizer="positive=great,negative=bad")
    prompt = model.new_prompt(task, prompt_len=4, seed=3)
    texts = [f"the movie number {i} was great and long." for i in range(40)]
    def scores():
        return [p["scores"] for p in model.predict(task, prompt, texts, batch_size=8)]
    want = scores()

    def in_child(depth):
        # 0: the scores equal the parent's; 1: they differ; 2: a grandchild's differ
        pid = os.fork()
        if pid == 0:
            code = 0 if scores() == want else 1
            if code == 0 and depth > 1:
                code = 2 * in_child(depth - 1)
            os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def work(_):
        return scores()

    print("fork", in_child(2))
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        got = list(ex.map(work, range(2), timeout=60))
    print("pool", all(g == want for g in got))
    """
)


def test_a_forked_child_predicts_as_its_parent():
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(BERT_MLM)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["fork 0", "pool True"], p.stdout + p.stderr


FRESH = textwrap.dedent(
    """
    import os, sys, tempfile, threading
    import softprompt as sp
    # the parent only imported the package: its child is any process, whose calls (and their
    # callbacks) run on the calling thread; a child of a parent that computed runs them on a
    # pool of its own
    def heard_on_caller(model):
        threads = []
        with tempfile.TemporaryDirectory() as out:
            model.train([("a fine film", "positive"), ("a dull film", "negative")], out,
                        prompt_len=4, max_steps=1, batch_size=2, no_progress=True,
                        verbalizer="positive=great,negative=bad",
                        on_event=lambda e: threads.append(threading.get_ident()))
        if not threads:
            return None  # no event heard: neither answer
        return set(threads) == {threading.get_ident()}

    def in_child(then):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if heard_on_caller(sp.Model(sys.argv[1])) == then else 1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    print("fresh", in_child(True))
    heard_on_caller(sp.Model(sys.argv[1]))
    print("after", in_child(False))
    """
)


def test_a_child_of_a_parent_that_only_imported_runs_calls_on_its_thread():
    p = subprocess.run([sys.executable, "-c", FRESH, str(BERT_MLM)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    # (train's report lines go to the same stdout)
    said = [line for line in p.stdout.split("\n") if line.startswith(("fresh", "after"))]
    assert said == ["fresh 0", "after 0"], p.stdout + p.stderr


AFTER_PARITY = textwrap.dedent(
    """
    import os, signal, sys
    import softprompt as sp
    # parity runs the pool with no Model made: the child of such a parent waited for ever
    # (the fork handler was registered only when a Model was made)
    sp.parity(sys.argv[2], sys.argv[3])
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a hung child dies instead of outliving the test
        model = sp.Model(sys.argv[1])
        task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,
                          verbalizer="positive=great,negative=bad")
        prompt = model.new_prompt(task, seed=3)
        rows = model.predict(task, prompt, ["a fine film", "a dull film"])
        os._exit(0 if len(rows) == 2 else 1)
    print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
)


def test_a_child_of_a_parent_that_ran_only_parity_computes():
    llama = FIXTURES / "llama"
    args = [str(BERT_MLM), str(llama), str(llama / "ref_generate_random.safetensors")]
    p = subprocess.run([sys.executable, "-c", AFTER_PARITY, *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "child 0" in p.stdout.split("\n"), p.stdout + p.stderr
