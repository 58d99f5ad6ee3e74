"""Inputs from Python that the bindings misread or crashed on (hostile 13): paths holding a
lone surrogate, tables and mappings as data, one bad row in a list, a str meant as a text,
data flags with rows in memory, a prompt_len given twice, copy/weakref/pickle, and a daemon
thread inside a call at interpreter exit."""
import copy
import os
import pickle
import subprocess
import sys
import weakref

import pytest

import softprompt as sp
from conftest import BERT_MLM, REPO, TRAIN

BAD = "x\ud800"


def _mlm(prompt_len=2):
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=prompt_len, verbalizer="x=great,y=bad")
    return model, task, model.new_prompt(task)


def test_a_lone_surrogate_in_any_path_raises_unicode_encode_error(tmp_path):
    """PyO3's PathBuf extraction panicked (PanicException, a BaseException, with a Rust
    backtrace) on every path argument; now each raises open()'s UnicodeEncodeError."""
    model, task, prompt = _mlm()
    calls = [
        lambda: sp.Model(BERT_MLM / BAD),
        lambda: sp.Prompt.load(BAD),
        lambda: model.task(BAD),
        lambda: model.task_for(prompt, BAD),
        lambda: model.encode(task, BAD),
        lambda: model.predict(task, prompt, BAD),
        lambda: model.evaluate(task, prompt, tmp_path / BAD),
        lambda: model.save_prompt(BAD, prompt, task),
        lambda: model.save_prompt(tmp_path / BAD, prompt, task),
        lambda: model.train(TRAIN, tmp_path / BAD, no_progress=True),
        lambda: model.train(BAD, tmp_path / "o", no_progress=True),
        lambda: model.train(TRAIN, tmp_path / "o", dev=BAD, no_progress=True),
        lambda: model.train(TRAIN, tmp_path / "o", test=BAD, no_progress=True),
        lambda: sp.parity(BAD, "ref.safetensors"),
        lambda: sp.parity(BERT_MLM, BAD),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
            call()
    assert not (tmp_path / "o").exists()


def test_a_surrogate_escaped_name_is_the_file_of_those_bytes(tmp_path):
    model, task, prompt = _mlm()
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/p_\xff")
    model.save_prompt(out, prompt, task)
    assert os.listdir(tmp_path) == [os.fsdecode(b"p_\xff")]
    assert sp.Prompt.load(out).rows == 2
    with pytest.raises(TypeError, match=r"^argument 'dir': got 3: expected a path"):
        sp.Prompt.load(3)


class FakeFrame:
    """What pandas' DataFrame looks like to the bindings: `columns`, `iloc`, and iteration
    over its column names."""

    columns = ["text", "label"]
    iloc = None

    def __iter__(self):
        return iter(self.columns)

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.columns[i]


TABLE_FIX = ('pass its text column (df["text"], with labels=df["label"] where the call takes '
             'labels) or (text, label) pairs (list(zip(df["text"], df["label"])))')


def test_a_table_or_a_mapping_as_data_is_refused(tmp_path):
    """A DataFrame was read as the texts "text" and "label" (its column names): predict gave
    2 predictions for a 6-row frame, without a word."""
    model, task, prompt = _mlm()
    frame = ("argument 'data': got a FakeFrame, a table (iterating it gives its column names, "
             "not its rows): " + TABLE_FIX)
    mapping = ("argument 'data': got a dict, a mapping (iterating it gives its keys, not rows): "
               + TABLE_FIX)
    for call in (lambda d: model.predict(task, prompt, d), lambda d: model.evaluate(task, prompt, d),
                 lambda d: model.encode(task, d), lambda d: model.task(d)):
        with pytest.raises(TypeError) as e:
            call(FakeFrame())
        assert str(e.value) == frame
        with pytest.raises(TypeError) as e:
            call({"text": ["a movie"], "label": ["x"]})
        assert str(e.value) == mapping
    with pytest.raises(TypeError) as e:
        model.train(FakeFrame(), tmp_path / "o", no_progress=True)
    assert str(e.value) == frame.replace("'data'", "'train'")
    with pytest.raises(TypeError) as e:
        model.evaluate(task, prompt, ["a", "b"], labels=FakeFrame())
    assert str(e.value) == ("argument 'labels': got a FakeFrame, a table (iterating it gives "
                            "its column names, not its rows): pass one column (df[\"label\"]) "
                            "or a list")


def test_int_labels_read_as_their_digits():
    """Hugging Face datasets' ClassLabel and pandas give int labels: they were refused where
    the data file of the same rows trained; they read as a file's numbers do (hostile pass
    33, F9)."""
    import numpy as np
    model = sp.Model(BERT_MLM)
    rows = [("a good film", 1), ("a bad film", 0), ("great", np.int64(1)), ("awful", None)]
    task = model.task(rows, task="cls", prompt_len=2)
    assert task.labels == ["0", "1"]
    prompt = model.new_prompt(task)
    texts = [t for t, _ in rows[:3]]
    by_int = model.evaluate(task, prompt, texts, labels=[1, 0, np.int64(1)])
    by_str = model.evaluate(task, prompt, texts, labels=["1", "0", "1"])
    assert by_int == by_str
    # the label names as ints too, and an int past int64 by its digits (verification 30)
    named = model.task(rows, task="cls", prompt_len=2, labels=[1, 0])
    assert named.labels == ["1", "0"]
    big = model.task([("a", 2**70), ("b", 0)], task="cls", prompt_len=2)
    assert big.labels == ["0", str(2**70)]


def test_a_bad_row_is_named_with_what_it_holds():
    model, task, prompt = _mlm()
    cases = [
        (["fine text"] * 999 + [None], "row 1000 is None: expected a str (a text), as row 1 is"),
        (["ok", 3], "row 2 is 3: expected a str (a text), as row 1 is"),
        (["ok", BAD], "row 2 is 'x\\ud800', which cannot be encoded as UTF-8 (it holds a lone "
                      "surrogate)"),
        ([(None, "x")], "row 1's text is None: expected a str"),
        ([("a", "x"), ("b", 2.5)], "row 2's label is 2.5: expected a str, an int or None"),
        ([("a", "x"), ("b", True)], "row 2's label is True: expected a str, an int or None"),
        ([("a", "x"), ("b", "x", "c")], "row 2 is ('b', 'x', 'c'): expected a (text, label) "
                                        "pair, as row 1 is"),
        ([("a", "x"), "b"], "row 2 is 'b': expected a (text, label) pair, as row 1 is"),
        ([3], "row 1 is 3: expected a str (a text) or a (text, label) pair"),
    ]
    for data, message in cases:
        with pytest.raises(sp.InvalidArgument) as e:
            model.predict(task, prompt, data)
        assert str(e.value) == f"invalid argument data: {message}"
    with pytest.raises(TypeError) as e:
        model.generate(task, prompt, ["a", BAD])
    assert str(e.value) == ("argument 'texts': text 2 is 'x\\ud800', which cannot be encoded "
                            "as UTF-8 (it holds a lone surrogate)")
    with pytest.raises(TypeError) as e:
        model.evaluate(task, prompt, ["a"], labels=[BAD])
    assert str(e.value) == ("argument 'labels': row 1's label is 'x\\ud800', which cannot be "
                            "encoded as UTF-8 (it holds a lone surrogate)")


def test_pairs_as_lists_read_as_tuples():
    """json.load and df.values.tolist() give [text, label] lists."""
    model, task, prompt = _mlm()
    as_tuples = model.evaluate(task, prompt, [("a movie", "x"), ("a film", "y")])
    as_lists = model.evaluate(task, prompt, [["a movie", "x"], ["a film", "y"]])
    assert as_lists == as_tuples
    with pytest.raises(sp.InvalidArgument) as e:
        model.evaluate(task, prompt, [["a movie", "x"]], labels=["y"])
    assert str(e.value) == ("invalid argument labels: is for a list of texts, and data is "
                            "(text, label) pairs, which hold their labels: leave labels out")


def test_a_str_that_names_no_file_says_how_to_pass_one_text():
    model, task, prompt = _mlm()
    with pytest.raises(sp.FileNotFound) as e:
        model.predict(task, prompt, "the movie was great.")
    assert str(e.value).startswith("the movie was great.: ")
    assert str(e.value).endswith("(data: a str is read as a file path; for one text, pass "
                                 "[text])")
    assert e.value.filename == "the movie was great."
    # with its label too: the same advice, not "leave labels out" (review 13)
    with pytest.raises(sp.FileNotFound) as e:
        model.evaluate(task, prompt, "the movie was great.", labels=["x"])
    assert str(e.value).endswith("for one text, pass [text])"), e.value
    # a name of a data file, or in a folder, is a path meant as one: the engine's word alone
    for path in ("missing.jsonl", "runs/missing"):
        with pytest.raises(sp.FileNotFound) as e:
            model.predict(task, prompt, path)
        assert str(e.value) == (f"{path}: cannot be read as a data file (JSON lines, TSV or "
                                "CSV): No such file or directory (os error 2)")


def test_data_flags_with_rows_in_memory_are_refused(tmp_path):
    """format="tsv" on a list of texts was accepted and ignored."""
    model, task, prompt = _mlm()
    for kw, flag in [({"format": "tsv"}, "format"), ({"quoting": "none"}, "quoting"),
                     ({"text_field": "t"}, "text_field"), ({"label_field": "l"}, "label_field")]:
        with pytest.raises(sp.InvalidArgument) as e:
            model.predict(task, prompt, ["a movie"], **kw)
        assert str(e.value) == (f"invalid argument {flag}: is for reading a file, and data "
                                "holds rows in memory: leave it out")
    with pytest.raises(sp.InvalidArgument) as e:
        model.train([("a", "x"), ("b", "y")], tmp_path / "o", format="csv",
                    verbalizer="x=great,y=bad", no_progress=True)
    assert str(e.value) == ("invalid argument format: is for reading a file, and every split "
                            "holds rows in memory: leave it out")
    # the default value given is no flag
    assert len(model.predict(task, prompt, ["a movie"], text_field="text")) == 1


def test_labels_and_data_flags_with_a_file_or_an_encoded_are_refused(tmp_path):
    """labels= next to a file or an Encoded was ignored (a step on relabelled rows returned
    the old labels' loss), and a data flag next to an Encoded was an 'unexpected keyword'
    TypeError (hostile 22)."""
    model, task, prompt = _mlm()
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    enc = model.encode(task, data)
    for rows, what in [(data, "a file, whose rows"), (enc, "an Encoded, whose rows")]:
        calls = [(lambda: model.encode(task, rows, labels=["y", "x"]), "data"),
                 (lambda: model.step(task, prompt, rows, labels=["y", "x"]), "batch"),
                 (lambda: model.evaluate(task, prompt, rows, labels=["y", "x"]), "data")]
        for call, name in calls:
            with pytest.raises(sp.InvalidArgument) as e:
                call()
            assert str(e.value) == (f"invalid argument labels: is for a list of texts, and "
                                    f"{name} is {what} hold their labels: leave labels out")
    for call in [lambda: model.encode(task, enc, format="tsv"),
                 lambda: model.predict(task, prompt, enc, format="tsv"),
                 lambda: model.evaluate(task, prompt, enc, format="tsv")]:
        with pytest.raises(sp.InvalidArgument) as e:
            call()
        assert str(e.value) == ("invalid argument format: is for reading a file, and data "
                                "holds rows in memory: leave it out")


def test_an_iterator_as_data_is_named():
    """zip(df.text, df.label) without list(): the error did not say what was given."""
    model, task, prompt = _mlm()
    with pytest.raises(sp.InvalidArgument) as e:
        model.evaluate(task, prompt, zip(["a movie"], ["x"]))
    assert "got <zip object at" in str(e.value) and "an iterator: pass list(...)" in str(e.value)
    with pytest.raises(sp.InvalidArgument) as e:
        model.predict(task, prompt, 3)
    assert str(e.value).endswith("pairs; got 3"), e.value


def test_missing_labels_as_pandas_holds_them_are_none():
    """A column of labels with missing values holds NaN (or pd.NA): they were refused, so the
    documented labels=df["label"] failed on any frame with a missing label (hostile 22)."""
    model, task, prompt = _mlm()

    class NAType:  # what pandas' pd.NA is, by its type's name
        pass

    texts = ["a movie", "a film", "a play"]
    for missing in [float("nan"), NAType()]:
        enc = model.encode(task, texts, labels=["x", missing, "y"])
        assert enc.labels == [0, None, 1]
        enc = model.encode(task, list(zip(texts, ["x", missing, "y"])))
        assert enc.labels == [0, None, 1]


def test_a_path_like_that_fails_and_a_nul_byte(tmp_path):
    """An os.PathLike whose __fspath__ raised gave 'expected a path', losing the user's error;
    a path holding NUL was cut or shown with a space where open() raises ValueError."""
    class Broken:
        def __fspath__(self):
            raise RuntimeError("no disk today")

    with pytest.raises(RuntimeError, match="no disk today"):
        sp.Prompt.load(Broken())
    for call in [lambda: sp.Prompt.load("run\x00x"), lambda: sp.Model(str(BERT_MLM) + "\x00x")]:
        with pytest.raises(ValueError, match="embedded null byte"):
            call()


def test_a_bool_for_a_float_is_refused(tmp_path):
    """lr=True ran at a learning rate of 1.0; a wrong type's message said TypeError twice."""
    model = sp.Model(BERT_MLM)
    with pytest.raises(TypeError) as e:
        model.train(TRAIN, tmp_path / "o", lr=True, no_progress=True)
    assert str(e.value) == "train(): lr=True: expected a number, not a bool"
    import numpy as np
    with pytest.raises(TypeError, match="expected a number, not a bool"):
        model.train(TRAIN, tmp_path / "o", lr=np.True_, no_progress=True)
    with pytest.raises(TypeError) as e:
        sp.parity(BERT_MLM, tmp_path / "none.safetensors", tol=True)
    assert str(e.value) == "parity(): tol=True: expected a number, not a bool"
    with pytest.raises(TypeError) as e:
        model.task(TRAIN, free_targets=1)
    assert str(e.value).count("TypeError") == 0, str(e.value)
    assert "free_targets=1" in str(e.value)


def test_a_missing_numpy_fails_the_import():
    """rust-numpy loads numpy's API at the first array and panicked when that failed: a
    missing numpy (or a Ctrl-C pending then) raised PanicException from Model.step. The
    import of softprompt now loads it, so a missing numpy is an ImportError there."""
    code = ("import sys; sys.modules['numpy'] = None\n"
            "try:\n    import softprompt\nexcept ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("ImportError"), out.stdout + out.stderr
    assert "panic" not in out.stderr.lower(), out.stderr


def test_new_prompt_takes_the_tasks_prompt_len():
    """new_prompt made 20 rows for a task made for 4 (its max_len sized for 4), and the first
    long text failed with advice to cut the data."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=4, verbalizer="x=great,y=bad")
    assert task.prompt_len == 4
    assert model.new_prompt(task).rows == 4
    assert model.new_prompt(task, prompt_len=4).rows == 4
    with pytest.raises(sp.InvalidArgument) as e:
        model.new_prompt(task, prompt_len=5)
    assert str(e.value) == (
        "invalid argument prompt_len: got 5, but the task was made for prompt_len=4 (its "
        "max_len leaves room for 4 rows): give the same prompt_len to Model.task and "
        "Model.new_prompt, or leave it out here")
    free = model.task([("a", "x"), ("b", "y")], verbalizer="x=great,y=bad")
    assert free.prompt_len is None
    assert model.new_prompt(free).rows == 20
    assert model.new_prompt(free, prompt_len=3).rows == 3
    with pytest.raises(sp.InvalidArgument, match="^invalid argument prompt_len: got True"):
        model.new_prompt(free, prompt_len=True)


def test_copy_weakref_and_pickle():
    model, task, prompt = _mlm()
    for c in (copy.copy(prompt), copy.deepcopy(prompt)):
        assert c is not prompt and (c.values == prompt.values).all()
        c.values[0, 0] += 1.0
        assert c.values[0, 0] != prompt.values[0, 0]
    for obj in (model, task, prompt):
        assert weakref.ref(obj)() is obj
    with pytest.raises(TypeError) as e:
        pickle.dumps(prompt)
    assert str(e.value).startswith("cannot pickle 'softprompt.Prompt' object: save it "
                                   "(Model.save_prompt)")
    with pytest.raises(TypeError, match="cannot pickle 'softprompt.Model' object"):
        pickle.dumps(model)


DAEMON = """
import sys, threading, time
import softprompt as sp
model = sp.Model(sys.argv[1])
task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
prompt = model.new_prompt(task)
texts = [f"text {i} fine" for i in range(200000)]
threading.Thread(target=lambda: model.{call}, daemon=True).start()
time.sleep(1.0)
print("main exits", flush=True)
"""


@pytest.mark.parametrize("call", ["predict(task, prompt, texts)", "encode(task, texts)"])
def test_a_daemon_thread_inside_a_call_at_exit_stops_without_a_word(call):
    """It printed a Rust panic with a backtrace ("The Python interpreter is not
    initialized")."""
    p = subprocess.run([sys.executable, "-c", DAEMON.replace("{call}", call), str(BERT_MLM)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert (p.returncode, p.stdout, p.stderr) == (0, "main exits\n", "")


def test_task_for_a_prompt_made_in_memory_says_it_records_no_task():
    """It said only "a classifier needs at least 2 labels, got []" (hostile 23, F6)."""
    import numpy as np
    model = sp.Model(BERT_MLM)
    with pytest.raises(sp.InvalidArgument) as e:
        model.task_for(sp.Prompt.from_values(np.zeros((2, 48), np.float32)))
    assert "the prompt, made in memory, records no task: give the labels" in str(e.value), e.value
