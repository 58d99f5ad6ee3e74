"""Bad inputs raise the exception of their kind with the engine's message: the very line the
command line prints after `error: `."""
import json
import re

import pytest

import softprompt as sp
from conftest import BERT_MLM, BERT_NOHEAD, DATA, FIXTURES, TRAIN

# (keyword arguments of Model.train, the exception class); the model and the train file are
# given separately so that each can be the bad input
CASES = [
    ({"lr": float("nan")}, sp.InvalidArgument),
    ({"prompt_len": 100}, sp.InvalidArgument),
    ({"optimizer": "sgd"}, sp.InvalidArgument),
    ({"task": "bogus"}, sp.InvalidArgument),
    ({"init": "text"}, sp.InvalidArgument),
    ({"init_text": "great movie"}, sp.InvalidArgument),
    ({"schedule": "cosine"}, sp.InvalidArgument),
    ({"template": "no slot [MASK]"}, sp.InvalidArgument),
    ({"verbalizer": "positive=great"}, sp.InvalidArgument),
    ({"batch_size": 0}, sp.InvalidArgument),
    ({"train": DATA / "invalid_utf8.jsonl"}, sp.DataError),
    ({"train": DATA / "missing.jsonl"}, sp.FileNotFound),
    ({"model": DATA / "no_model"}, sp.FileNotFound),
    ({"model": DATA}, sp.FileNotFound),  # no config.json
    ({"task": "cls", "pooling": "max", "model": BERT_NOHEAD}, sp.InvalidArgument),
    # keywords the run would not read are refused, not ignored
    ({"pooling": "mean"}, sp.InvalidArgument),
    ({"decay_rate": 0.5}, sp.InvalidArgument),
    ({"optimizer": "adafactor", "decay_rate": 1.5}, sp.InvalidArgument),
    ({"init_vocab_first": 10}, sp.InvalidArgument),
    ({"init": "text", "init_text": "a movie", "init_std": 0.5}, sp.InvalidArgument),
    # the method's keywords (Model.train had none): refused as the command line refuses them
    ({"method": "lora"}, sp.InvalidArgument),
    ({"encoder_hidden_size": 4}, sp.InvalidArgument),
    ({"method": "prefix", "encoder_num_layers": 2}, sp.InvalidArgument),
    ({"method": "p-tuning", "encoder_reparameterization": "gru"}, sp.InvalidArgument),
    ({"method": "p-tuning", "encoder_num_layers": 2}, sp.InvalidArgument),
    ({"method": "prefix", "prefix_placement": "middle"}, sp.InvalidArgument),
    ({"method": "p-tuning", "init": "text", "init_text": "a movie"}, sp.InvalidArgument),
]


# the words a flag of a choice takes: in Python `task="cls"` where the command line says
# `--task cls`
CHOICES = ("pet cls seq2seq causal mlm mean first last eos pad none minimal all tsv csv jsonl "
           "adamw adafactor constant linear cosine random text vocab layer mlp lstm papers peft "
           "tokens cpu cuda emu bf16 f32 mixed prompt p-tuning prefix greedy rank").split()
# the command line's flags that are no keyword of the package
NOT_KEYWORDS = {"model", "task-data", "task-field", "task-config", "gemm", "verbose"}


def in_python(msg):
    """The command line's message as Python words it: each flag the keyword of its name
    (`--max-len 12` is `max_len=12`, `--task cls` is `task="cls"`, `--template "{text}"` is
    `template="{text}"`, `--lr` is `lr`)."""
    def keyword(m):
        if m.group(1) in NOT_KEYWORDS:
            return m.group(0)
        k, value = m.group(1).replace("-", "_"), m.group(2)
        if value is None:
            return k
        if value[0].isdigit() or value[0] == '"':
            return f"{k}={value}"
        return f'{k}="{value}"' if value in CHOICES else f"{k} {value}"
    flag = r'(?<![\w-])--([a-z][a-z0-9-]*)(?: ("[^"]*"|[\w+-]+(?:\.\d+)?))?'
    return re.sub(flag, keyword, msg)


def cli_message(cli, kw, out):
    args = ["train", "--out", out, "--no-progress"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, float) else str(v)]
    p = cli(*args, check=False)
    assert p.returncode == 2, p.stderr
    return p.stderr.strip().splitlines()[-1].removeprefix("error: ")


@pytest.mark.parametrize("kw,cls", CASES, ids=[str(c[0]) for c in CASES])
def test_bad_input_raises_the_engine_message(cli, tmp_path, kw, cls):
    kw = dict(kw)
    model = kw.pop("model", BERT_MLM)
    train = kw.pop("train", TRAIN)
    want = cli_message(cli, {"model": model, "train": train, **kw}, tmp_path / "cli")
    with pytest.raises(cls) as e:
        sp.Model(model).train(str(train), tmp_path / "py", no_progress=True, **kw)
    assert str(e.value) == in_python(want)
    assert "--" not in str(e.value), str(e.value)
    if "batch_size" in kw:
        assert str(e.value).startswith("invalid argument batch_size: is 0"), str(e.value)
    assert isinstance(e.value, sp.SoftpromptError)
    assert not (tmp_path / "py" / "checkpoint.safetensors").exists()


def test_exception_bases():
    assert issubclass(sp.InvalidArgument, ValueError)
    assert issubclass(sp.FileNotFound, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        sp.Prompt.load(DATA / "no_prompt_here")
    # a one-part relative name too (it became a BadFile: review 6)
    with pytest.raises(FileNotFoundError, match="no such folder: expected a prompt folder"):
        sp.Prompt.load("no_prompt_here_either")


def test_weights_past_the_memory_are_a_memory_error(tmp_path):
    """A model too large for what the process may allocate was a BadFile (a ValueError):
    the file is sound, the memory short (verification 31)."""
    import shutil

    model = tmp_path / "huge"
    shutil.copytree(BERT_MLM, model)
    # sparse: 4 TB long, no disk spent
    with open(model / "model.safetensors", "r+b") as f:
        f.truncate(4_000_000_000_000)
    with pytest.raises(MemoryError) as e:
        sp.Model(model)
    assert type(e.value) is sp.OutOfMemory, type(e.value)
    assert str(e.value).startswith(f"{model}: its weight files take about 4000.0 GB, but "), str(e.value)


def test_a_missing_file_carries_its_path_as_open_does():
    """`e.filename` and `e.errno` were None: code reads the path from `filename`."""
    import errno
    import pickle

    for call, path in [
        (lambda: sp.Prompt.load(DATA / "no_prompt_here"), DATA / "no_prompt_here"),
        (lambda: sp.Model(DATA / "no_model"), DATA / "no_model"),
        (lambda: sp.Model(BERT_MLM).task(DATA / "missing.jsonl"), DATA / "missing.jsonl"),
    ]:
        with pytest.raises(sp.FileNotFound) as e:
            call()
        assert (e.value.filename, e.value.errno) == (str(path), errno.ENOENT), str(e.value)
        # str() is the engine's message, not "[Errno 2] ...: 'path'"
        assert str(e.value).startswith(str(path)) and "[Errno" not in str(e.value), str(e.value)
        again = pickle.loads(pickle.dumps(e.value))
        assert (type(again), str(again), again.filename) == (sp.FileNotFound, str(e.value), str(path))


def test_an_out_that_cannot_be_made_carries_the_os_errno(tmp_path):
    """train's `out` under a file was FileNotFound with errno ENOENT (an existing unwritable
    one BadFile, no OSError at all), where the OS said ENOTDIR and save_prompt raises
    FileError with it (hostile pass 24)."""
    import errno

    mine = tmp_path / "file"
    mine.write_text("mine")
    out = mine / "run"
    with pytest.raises(sp.FileError) as e:
        sp.Model(BERT_MLM).train(str(TRAIN), out, prompt_len=2, max_steps=1, no_progress=True)
    assert type(e.value) is sp.FileError, type(e.value)
    assert (e.value.filename, e.value.errno) == (str(out), errno.ENOTDIR), str(e.value)
    assert "cannot be written into" in str(e.value) and "Not a directory" in str(e.value)
    assert mine.read_text() == "mine"


def test_unknown_keyword_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="'prompt_length'"):
        sp.Model(BERT_MLM).train(str(TRAIN), tmp_path, prompt_length=4)


def test_mismatched_inputs():
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], verbalizer="x=great,y=bad", prompt_len=2)
    wide = sp.Prompt.from_values(__import__("numpy").zeros((2, 7), "float32"))
    # made in memory: an argument's fault, not a file's (it was BadFile "the prompt: ...")
    with pytest.raises(sp.InvalidArgument, match="^invalid argument prompt: the prompt is 7 wide"):
        model.step(task, wide, ["a"], labels=["x"])
    with pytest.raises(sp.InvalidArgument, match="labels"):
        sp.Encoded.from_ids([[4, 5]], labels=[0, 1])
    with pytest.raises(sp.InvalidArgument):
        model.step(task, model.new_prompt(task, prompt_len=2), ["a", "b"], labels=["x"])
    prompt = model.new_prompt(task, prompt_len=2)
    with pytest.raises(sp.InvalidArgument, match="values"):
        prompt.values = __import__("numpy").zeros((3, 48), "float32")


HOSTILE_ROWS = [
    (dict(ids=[[4, 100000, 5]], labels=[0], mask_positions=[1]), "id 100000 at index 1, outside"),
    (dict(ids=[[4, -3, 5]], labels=[0], mask_positions=[1]), "id -3 at index 1, outside"),
    (dict(ids=[[4, 6, 5]], labels=[0], mask_positions=[9]), "mask_positions"),
    (dict(ids=[[4, 6, 5]], labels=[7], mask_positions=[1]), "label 7"),
    (dict(ids=[[4] * 500], labels=[0], mask_positions=[1]), "500 token ids, more than the task's max_len"),
]


@pytest.mark.parametrize("rows,message", HOSTILE_ROWS)
def test_hostile_token_ids_raise_not_panic(rows, message):
    """Token ids, positions and labels straight from Python reach the engine unchecked by the
    tokenizer: each is refused with a SoftpromptError (no PanicException, no crash)."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = model.new_prompt(task, prompt_len=2)
    for call in (model.step, model.evaluate, model.predict):
        if call.__name__ == "predict" and "label" in message:
            continue  # prediction reads no label (evaluate refuses one outside the task's)
        with pytest.raises(sp.SoftpromptError, match=message):
            call(task, prompt, sp.Encoded.from_ids(**rows))


# ints out of their type's range raised a bare OverflowError naming neither the argument nor
# the range; ints of another type stay a TypeError naming the argument
OUT_OF_RANGE = [
    (dict(ids=[[4, 2**40, 5]]), "ids: row 1, index 1 holds 1099511627776: expected an int from -2^31 to 2^31-1"),
    (dict(ids=[[4, 5], [4, -(2**31) - 1]]), "ids: row 2, index 1"),
    (dict(ids=[[4, 5]], targets=[[2**33]]), "targets: row 1, index 0"),
    (dict(ids=[[4, 5]], labels=[-1]), "labels: row 1 holds -1: expected a non-negative int below 2^64"),
    (dict(ids=[[4, 5]], mask_positions=[2**70]), "mask_positions: row 1 holds"),
    # a bool is an int to Python: True was taken as 1
    (dict(ids=[[4, True]]), "ids: row 1, index 1 holds True: expected an int from -2^31 to 2^31-1 (not a bool)"),
    (dict(ids=[[4]], labels=[False]), "labels: row 1 holds False: expected a non-negative int below 2^64 (not a bool)"),
]


@pytest.mark.parametrize("rows,message", OUT_OF_RANGE)
def test_ints_out_of_range_name_the_argument(rows, message):
    with pytest.raises(sp.InvalidArgument, match=re.escape(message)):
        sp.Encoded.from_ids(**rows)


def test_ints_of_the_wrong_type_name_the_argument():
    for rows, name in [
        (dict(ids=[[4, 1.5]]), "ids: row 1, index 1 holds 1.5: expected an int"),
        (dict(ids=[[4]], mask_positions=[None]), "mask_positions: row 1 holds None"),
    ]:
        with pytest.raises(sp.InvalidArgument, match=name):
            sp.Encoded.from_ids(**rows)
    with pytest.raises(TypeError, match="'ids'"):
        sp.Encoded.from_ids("abc")
    enc = sp.Encoded.from_ids([[4, 5]], labels=[None])
    assert enc.labels == [None]
    with pytest.raises(IndexError, match="row index"):
        enc[2**70]


# every unsigned int argument of the package, as (name, a call giving it `v`): each raised a
# bare OverflowError (-1, 2**70) or TypeError (1.5) naming neither the argument nor the range
def _int_args():
    pairs = [("a", "x"), ("b", "y")]
    verb = "x=great,y=bad"

    def model():
        return sp.Model(BERT_MLM)

    def task(m):
        return m.task(pairs, prompt_len=2, verbalizer=verb)

    def prompt(m):
        return m.new_prompt(task(m), prompt_len=2)

    def train(name):
        return lambda v, tmp: model().train(TRAIN, tmp / "out", no_progress=True, **{name: v})

    calls = {
        "threads": lambda v, tmp: sp.Model(BERT_MLM, threads=v),
        "task.prompt_len": lambda v, tmp: model().task(pairs, prompt_len=v, verbalizer=verb),
        "task.max_len": lambda v, tmp: model().task(pairs, max_len=v, verbalizer=verb),
        "task.max_target_len": lambda v, tmp: model().task(pairs, max_target_len=v),
        "task_for.max_len": lambda v, tmp: (lambda m: m.task_for(prompt(m), max_len=v))(model()),
        "new_prompt.prompt_len": lambda v, tmp: (lambda m: m.new_prompt(task(m), prompt_len=v))(model()),
        "new_prompt.seed": lambda v, tmp: (lambda m: m.new_prompt(task(m), prompt_len=2, seed=v))(model()),
        "new_prompt.init_vocab_first": lambda v, tmp: (
            lambda m: m.new_prompt(task(m), prompt_len=2, init="sample-vocab", init_vocab_first=v)
        )(model()),
        "evaluate.batch_size": lambda v, tmp: (
            lambda m: m.evaluate(task(m), prompt(m), ["a"], labels=["x"], batch_size=v)
        )(model()),
        "predict.batch_size": lambda v, tmp: (lambda m: m.predict(task(m), prompt(m), ["a"], batch_size=v))(model()),
        "generate.max_new_tokens": lambda v, tmp: (
            lambda m: m.generate(task(m), prompt(m), ["a"], max_new_tokens=v)
        )(model()),
    }
    for name in ["prompt_len", "batch_size", "eval_batch_size", "epochs", "max_steps", "eval_every",
                 "patience", "save_every", "log_every", "seed", "bucket_pool", "warmup_steps",
                 "max_len", "max_target_len", "init_vocab_first"]:
        calls[f"train.{name}"] = train(name)
    return calls


INT_ARGS = _int_args()


@pytest.mark.parametrize("value", [-1, 2**70, 1.5, True], ids=["-1", "2**70", "1.5", "True"])
@pytest.mark.parametrize("where", list(INT_ARGS))
def test_int_arguments_out_of_range_name_the_argument(tmp_path, where, value):
    name = where.split(".")[-1]
    with pytest.raises(sp.InvalidArgument) as e:
        INT_ARGS[where](value, tmp_path)
    assert str(e.value).startswith(f"invalid argument {name}: got {value!r}: expected a non-negative int below 2^"), e.value
    assert str(e.value).endswith(" (not a bool)") == (value is True), e.value
    assert not (tmp_path / "out").exists()


# task keywords of the wrong type raised PyO3's TypeError ("'int' object cannot be cast as
# 'Sequence'") naming neither the keyword nor what it takes
BAD_TASK_KEYWORDS = [
    (dict(labels=123), "labels: got 123: expected a list of label names, or one string of them"),
    (dict(labels=["a", 1.5]), "labels: item 1 holds 1.5: expected a str or an int"),
    (dict(verbalizer={"a": 1}), "verbalizer: the word of 'a' holds 1: expected a str"),
    (dict(verbalizer={2.5: "b"}), "verbalizer: a label holds 2.5: expected a str or an int"),
    (dict(verbalizer=[("a",)]), r"verbalizer: item 0 holds \('a',\): expected a \(label, word\) pair"),
    (dict(verbalizer=[["a", "x", "y"]]), r"verbalizer: item 0 holds \['a', 'x', 'y'\]: expected a \(label, word\) pair"),
    (dict(verbalizer=["ax"]), r"verbalizer: item 0 holds 'ax': expected a \(label, word\) pair"),
    (dict(verbalizer=5), r"verbalizer: got 5: expected a dict \{label: word\}, a list of"),
]


@pytest.mark.parametrize("kw,message", BAD_TASK_KEYWORDS, ids=[str(c[0]) for c in BAD_TASK_KEYWORDS])
def test_task_keywords_of_the_wrong_type_name_the_keyword(kw, message):
    with pytest.raises(sp.InvalidArgument, match="^invalid argument " + message):
        sp.Model(BERT_MLM).task([("a", "x"), ("b", "y")], prompt_len=2, **kw)


def test_verbalizer_in_task_json_form_is_taken():
    """task.json saves the verbalizer as [[label, word], ...]: a list of 2-lists was refused
    ("expected a (label, word) pair"); it reads as tuples do, and as its JSON text does."""
    model = sp.Model(BERT_MLM)
    data = [("good", "a"), ("awful", "b")]
    saved = [["b", "bad"], ["a", "great"]]
    for verbalizer in [saved, [tuple(p) for p in saved], json.dumps(saved)]:
        task = model.task(data, prompt_len=2, task="pet", verbalizer=verbalizer)
        assert (task.labels, task.label_words) == (["b", "a"], ["bad", "great"]), verbalizer


def test_detokenize_out_of_range_names_the_argument():
    model = sp.Model(BERT_MLM)
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument ids: index 1 holds 2147483648: expected an int from -2\^31 to 2\^31-1$"):
        model.detokenize([4, 2**31])  # a bare OverflowError
    with pytest.raises(TypeError, match="'ids'"):
        model.detokenize("abc")
    assert model.detokenize([4]) == model.detokenize(__import__("numpy").array([4]))


def test_tokenize_refuses_a_text_past_2_mib():
    """A 60 MB text aborted the process inside the tokenizer."""
    model = sp.Model(BERT_MLM)
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument text: is 2097153 bytes, more than the 2097152"):
        model.tokenize("a " * (1 << 20) + "b")
    assert len(model.tokenize("a b")) == 4


@pytest.mark.parametrize("other", ["llama", "t5_v1_1"])
def test_a_task_on_a_model_of_another_kind_says_which_task_fits(cli, tmp_path, other):
    """A pet task made on BERT, handed a decoder or T5 with texts, said its row had no mask
    token; now the command line's word for `--task pet` on that model."""
    want = cli("train", "--model", FIXTURES / other, "--train", TRAIN, "--task", "pet",
               "--out", tmp_path / "cli", check=False).stderr.strip().splitlines()[-1]
    bert, model = sp.Model(BERT_MLM), sp.Model(FIXTURES / other)
    task = bert.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = bert.new_prompt(task, prompt_len=2)
    for call in (
        lambda: model.encode(task, ["a film"]),
        lambda: model.predict(task, prompt, ["a film"]),
        lambda: model.evaluate(task, prompt, ["a film"], labels=["x"]),
        lambda: model.step(task, prompt, ["a film"], labels=["x"]),
    ):
        with pytest.raises(sp.InvalidArgument) as e:
            call()
        assert f"error: {e.value}" == in_python(want)


def test_rows_are_counted_from_1_in_every_message():
    """Encoded.from_ids counted rows from 0 ("row 0, position 0 holds ...") while the step
    counted them from 1 ("ids: row 1 has token id -1"): the same row is now row 2 in both, as
    a data file's rows are counted by their lines."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = model.new_prompt(task, prompt_len=2)
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument ids: row 2, index 1 holds 2147483648"):
        sp.Encoded.from_ids([[4, 6, 5], [4, 2**31, 5]])
    rows = dict(labels=[0, 1], mask_positions=[1, 1])
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument ids: row 2 has token id -1 at index 1"):
        model.step(task, prompt, sp.Encoded.from_ids([[4, 6, 5], [4, -1, 5]], **rows))
    # hand-made rows come from no file: an argument's fault, named without a file:line
    with pytest.raises(sp.InvalidArgument,
                       match=r"^invalid argument batch: row 2: its \[MASK\] position \(mask_positions\) 7"):
        model.step(task, prompt, sp.Encoded.from_ids([[4, 6, 5], [4, 6, 5]], labels=[0, 1],
                                                     mask_positions=[1, 7]))
    with pytest.raises(sp.InvalidArgument, match="^invalid argument batch: row 2 has no token ids"):
        model.step(task, prompt, sp.Encoded.from_ids([[4, 6, 5], []], **rows))
    with pytest.raises(sp.InvalidArgument, match="^invalid argument data: row 2 has no token ids"):
        model.evaluate(task, prompt, sp.Encoded.from_ids([[4, 6, 5], []], **rows))
    with pytest.raises(sp.InvalidArgument, match="^invalid argument labels: row 2 has label 5"):
        model.step(task, prompt, sp.Encoded.from_ids([[4, 6, 5], [4, 6, 5]], labels=[0, 5],
                                                     mask_positions=[1, 1]))


def test_rows_of_another_task_and_pet_rows_without_a_mask_position_are_refused():
    """Rows encoded for a task with labels (neg, pos) were scored by one with (pos, neg)
    (accuracy 1.0 -> 0.0), and a pet row of Encoded.from_ids without mask_positions scored
    its [CLS] token: both are refused, naming the row."""
    model = sp.Model(BERT_MLM)
    a = model.task(prompt_len=4, verbalizer="neg=bad,pos=great")
    b = model.task(prompt_len=4, verbalizer="pos=great,neg=bad")
    prompt = model.new_prompt(a, 4)
    enc = model.encode(a, ["good film"], labels=["pos"])
    assert model.evaluate(a, prompt, enc)[0]["accuracy"] in (0.0, 1.0)
    want = 'data: row 1 was encoded for another task (its labels ["neg", "pos"], this task\'s ["pos", "neg"])'
    with pytest.raises(sp.InvalidArgument, match=re.escape(want)):
        model.evaluate(b, prompt, enc)
    by_hand = sp.Encoded.from_ids(enc.ids, labels=[1])
    want = "row 1: its [MASK] position (mask_positions) 0 holds token id 4, not the mask token (id 6)"
    for call, name in ((model.step, "batch"), (model.predict, "data")):
        with pytest.raises(sp.InvalidArgument, match=re.escape(f"invalid argument {name}: {want}")):
            call(a, prompt, by_hand)
    at = enc.ids[0].index(6)
    fixed = sp.Encoded.from_ids(enc.ids, labels=[1], mask_positions=[at])
    assert model.predict(a, prompt, fixed)[0]["scores"] == model.predict(a, prompt, enc)[0]["scores"]


# a str where a list is expected said "Can't extract `str` to `Vec`", naming neither the
# argument nor what it takes
def _str_for_a_list():
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = model.new_prompt(task, prompt_len=2)
    llama = sp.Model(FIXTURES / "llama")
    ltask = llama.task(prompt_len=2, task="causal", free_targets=True)
    lprompt = llama.new_prompt(ltask, prompt_len=2)
    return [
        (lambda: sp.Encoded.from_ids("abc"), "ids", "str 'abc': expected a list of rows"),
        (lambda: sp.Encoded.from_ids([[4]], labels="x"), "labels", "str 'x': expected a list of ints"),
        (lambda: sp.Encoded.from_ids(["abc"]), "ids", "row 1, got str 'abc': expected a list of token ids"),
        (lambda: sp.Encoded.from_ids(5), "ids", "got int 5: expected a list of rows"),
        (lambda: model.detokenize("abc"), "ids", "got str 'abc': expected a list of token ids"),
        (lambda: llama.generate(ltask, lprompt, "hi"), "texts", "got str 'hi': expected a list of str"),
        (lambda: llama.generate(ltask, lprompt, ["hi", 3]), "texts", "text 2 is 3: expected a str"),
        (lambda: model.step(task, prompt, ["a"], labels="x"), "labels", "got str 'x': expected a list of label names"),
        (lambda: model.evaluate(task, prompt, ["a"], labels=[1.5]), "labels", "row 1's label is 1.5: expected a str, an int or None"),
        (lambda: model.encode(task, ["a"], labels="x"), "labels", "got str 'x'"),
    ]


def test_a_str_for_a_list_names_the_argument_and_the_type():
    for call, name, message in _str_for_a_list():
        with pytest.raises(TypeError) as e:
            call()
        assert str(e.value).startswith(f"argument '{name}': "), e.value
        assert message in str(e.value), e.value
        assert "Vec" not in str(e.value), e.value


def test_values_made_in_memory_are_an_argument_error_without_file_words():
    """from_values with a NaN said BadFile 'tensor `Prompt::from_values`'; a prompt made in
    memory on a cls task said 'this folder has none'; a NaN written into the values was a
    BadFile 'tensor'."""
    np = __import__("numpy")
    with pytest.raises(sp.InvalidArgument) as e:
        sp.Prompt.from_values(np.full((2, 48), np.nan, np.float32))
    assert str(e.value) == ("invalid argument values: the value at flat index 0 is NaN: "
                            "expected a finite number")
    with pytest.raises(sp.InvalidArgument, match=r"Prompt\.from_values \(rows x width\)"):
        sp.Prompt.from_values(np.zeros((0, 48), np.float32))
    model = sp.Model(BERT_NOHEAD)
    cls = model.task([("a", "x"), ("b", "y")], prompt_len=2, task="cls", pooling="mean")
    bare = sp.Prompt.from_values(np.zeros((2, model.hidden_size), np.float32))
    with pytest.raises(sp.InvalidArgument) as e:
        model.step(cls, bare, ["a"], labels=["x"])
    assert str(e.value).startswith('invalid argument prompt: task="cls" needs the classifier head')
    assert "made in memory" in str(e.value) and "folder" not in str(e.value), e.value
    prompt = model.new_prompt(cls, prompt_len=2)
    prompt.values[1, 3] = np.inf
    with pytest.raises(sp.InvalidArgument) as e:
        model.step(cls, prompt, ["a"], labels=["x"])
    assert str(e.value) == (f"invalid argument prompt: the prompt holds inf at flat index {model.hidden_size + 3}: "
                            "every value must be finite")


class _Texts(list):
    """Texts whose reading runs `during` while the call reading them holds its prompt."""

    def __init__(self, texts, during):
        super().__init__(texts)
        self.during = during

    def __iter__(self):
        self.during()
        return super().__iter__()


def test_changing_a_prompt_in_use_says_so():
    """Writing prompt.values while evaluate held the prompt raised a bare RuntimeError
    ('Already borrowed'). The call holds it while it reads its data: the texts' own iterator
    writes the values, at a point as certain as a thread's racing it."""
    np = __import__("numpy")
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = model.new_prompt(task, prompt_len=2)
    caught = []

    def write():
        for change in (lambda: setattr(prompt, "values", np.zeros((2, 48), np.float32)),
                       lambda: prompt.values, lambda: prompt.set_model(model)):
            try:
                change()
            except sp.SoftpromptError as e:
                caught.append(str(e))

    model.evaluate(task, prompt, _Texts(["a fine film"], write), labels=["x"])
    assert len(caught) == 3, caught
    for msg, what in zip(caught, ["Prompt.values", "Prompt.values", "Prompt.set_model"]):
        assert msg.startswith(f"{what}: the prompt is in use by a call"), msg
    prompt.values = np.zeros((2, 48), np.float32)  # free again once the call returned
    assert not prompt.values.any()


@pytest.mark.parametrize("kind,fixture", [("seq2seq", "t5_v1_1"), ("causal", "bloom")])
def test_a_training_row_without_a_target_is_refused(kind, fixture):
    """A seq2seq or causal row of Encoded.from_ids with a label but an empty target was left
    out of the step (the loss and gradient of the other rows alone, its tokens counted), and a
    batch of such rows named --task seq2seq, a flag never passed: the row is refused naming
    `targets`; evaluate ranks the label targets and takes it."""
    model = sp.Model(FIXTURES / fixture)
    pairs = [("a fine film", "pos"), ("dull", "neg")]
    task = model.task(pairs, prompt_len=2, task=kind)
    prompt = model.new_prompt(task, prompt_len=2)
    enc = model.encode(task, pairs)
    a, b = enc.ids[0], enc.ids[1]
    ta, tb = a[-2:], b[-2:]  # any ids of the vocabulary train
    whole = model.step(task, prompt, sp.Encoded.from_ids([a, b], labels=enc.labels, targets=[ta, tb]))
    assert whole.loss > 0 and whole.tokens == len(a) + len(b) + 4
    want = (f"invalid argument targets: row 2 has no target: every row of a {kind} training step "
            "needs one (its label's target, as Model.encode gives it)")
    for targets in ([ta, []], [[], []]):
        with pytest.raises(sp.InvalidArgument) as e:
            model.step(task, prompt, sp.Encoded.from_ids([a, b], labels=enc.labels, targets=targets))
        assert str(e.value) == want.replace("row 2", "row 1" if targets[0] == [] else "row 2")
    rows = sp.Encoded.from_ids([a, b], labels=enc.labels, targets=[ta, []])
    assert model.evaluate(task, prompt, rows)[0]["examples"] == 2
    # a [MASK] position means nothing here: refused, not ignored
    with pytest.raises(sp.InvalidArgument) as e:
        model.predict(task, prompt, sp.Encoded.from_ids([a, b], mask_positions=[0, 3]))
    assert str(e.value) == (f"invalid argument data: row 2 has a [MASK] position (mask_positions) 3, "
                            f"but a {kind} task has none: leave mask_positions out (they are for pet tasks)")


def test_a_pet_row_with_a_target_is_refused_and_step_names_its_batch():
    """Encoded.from_ids took targets on a pet task and ignored them; Model.step named its
    argument `rows`, where Python's is `batch`."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = model.new_prompt(task, prompt_len=2)
    rows = sp.Encoded.from_ids([[4, 6, 5], [4, 6, 5]], labels=[0, 1], mask_positions=[1, 1],
                               targets=[[], [7]])
    want = ("row 2 has a target (targets), but a pet task scores its labels, not targets: "
            "leave targets out")
    with pytest.raises(sp.InvalidArgument) as e:
        model.step(task, prompt, rows)
    assert str(e.value) == f"invalid argument batch: {want}"
    for call in (model.evaluate, model.predict):
        with pytest.raises(sp.InvalidArgument) as e:
            call(task, prompt, rows)
        assert str(e.value) == f"invalid argument data: {want}"
    with pytest.raises(sp.InvalidArgument, match="^invalid argument batch: is empty"):
        model.step(task, prompt, sp.Encoded.from_ids([], labels=[], mask_positions=[]))


def test_init_vocab_first_errors_name_the_keyword(tmp_path):
    """PromptInit's field from_first is init_vocab_first to Python, on new_prompt and train."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument init_vocab_first: is 0: "):
        model.new_prompt(task, prompt_len=2, init="sample-vocab", init_vocab_first=0)
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument init_vocab_first: is 100000 but "):
        model.train(str(TRAIN), tmp_path / "py", no_progress=True, init="sample-vocab",
                    init_vocab_first=100000)
    assert not (tmp_path / "py" / "checkpoint.safetensors").exists()


def test_a_path_starting_with_cfg_keeps_its_name(tmp_path, monkeypatch):
    """Only TrainConfig's field names lose their "cfg.": a data file cfg.jsonl is named whole."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.jsonl").write_text('{"text": "fine.", "label": "positive"}\n{"text": ')
    with pytest.raises(sp.DataError, match=r"^cfg\.jsonl:2: malformed line"):
        sp.Model(BERT_MLM).train("cfg.jsonl", tmp_path / "py", no_progress=True)


def test_a_callback_that_cannot_be_called_is_refused_before_the_run(tmp_path):
    """on_event=5 trained and saved a step, then raised "'int' object is not callable"."""
    with pytest.raises(TypeError, match=r"^train\(\): on_event=5: expected a callable .* got int$"):
        sp.Model(BERT_MLM).train(str(TRAIN), tmp_path / "py", on_event=5, no_progress=True)
    assert not (tmp_path / "py").exists()


def test_python_messages_name_keywords_with_their_values():
    """The engine's advice named the command line's flags (`use --max-len 44 or less`)."""
    model = sp.Model(BERT_MLM)
    pairs = [("a", "x"), ("b", "y")]
    with pytest.raises(sp.InvalidArgument) as e:
        model.task(pairs, verbalizer="x=great,y=bad", max_len=100000)
    assert str(e.value).startswith("invalid argument max_len: 100000 tokens next to a prompt of 20")
    assert str(e.value).endswith(": use max_len=44 or less")
    with pytest.raises(sp.InvalidArgument) as e:
        model.task(pairs, verbalizer="x=great,y=bad", task="pet", pooling="mean")
    assert str(e.value).startswith("invalid argument pooling: "), str(e.value)
    assert "--" not in str(e.value)


def test_an_encoded_where_texts_are_read_says_so(tmp_path):
    """The stubs typed train's data as taking an Encoded; the refusal did not say why."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    enc = model.encode(task, [("a", "x")])
    want = ("invalid argument {}: expected a file path, a list of texts or a list of (text, "
            "label) pairs, not an Encoded (encode's rows are for step, evaluate and predict)")
    with pytest.raises(sp.InvalidArgument) as e:
        model.train(enc, tmp_path / "py", no_progress=True)
    assert str(e.value) == want.format("train")
    with pytest.raises(sp.InvalidArgument) as e:
        model.task(enc)
    assert str(e.value) == want.format("data")


def test_a_row_without_a_label_names_the_argument(tmp_path):
    """step and train named the engine's row field `label` (step's keyword is `labels`,
    train's rows come from `train`)."""
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], prompt_len=2, verbalizer="x=great,y=bad")
    prompt = model.new_prompt(task, prompt_len=2)
    with pytest.raises(sp.InvalidArgument) as e:
        model.step(task, prompt, ["good movie"])
    assert str(e.value) == ("invalid argument labels: row 1 has no label: every row of a "
                            "training step needs one")
    with pytest.raises(sp.InvalidArgument) as e:
        model.train([("a", "x"), ("b", None)], tmp_path / "py", verbalizer="x=great,y=bad",
                    no_progress=True)
    assert str(e.value) == ("invalid argument train: row 2 has no label: every row of a "
                            "training step needs one")


def test_eval_batch_size_without_dev_or_test_is_refused(tmp_path):
    """It was read by nothing, without a word, as the command line's --eval-batch-size."""
    with pytest.raises(sp.InvalidArgument) as e:
        sp.Model(BERT_MLM).train(str(TRAIN), tmp_path / "py", eval_batch_size=8, no_progress=True)
    assert str(e.value) == ("invalid argument eval_batch_size: sizes the dev and test "
                            "evaluations, and this run has neither (dev, test): leave it out")


def test_a_multi_task_folder_names_no_call_the_package_lacks(cli, tmp_path):
    """Training into a finished multi-task run's folder advised `Model.train_multi`, which
    the package has not (hostile pass 35, F3): the command line's flags only."""
    for t in ("a", "b"):
        (tmp_path / t).mkdir()
        (tmp_path / t / "train.jsonl").write_bytes(TRAIN.read_bytes())
    out = tmp_path / "out"
    cli("train", "--model", BERT_MLM, "--out", out, "--task-data", f"a={tmp_path / 'a'}",
        "--task-data", f"b={tmp_path / 'b'}", "--max-steps", "1", "--batch-size", "4",
        "--prompt-len", "2", "--no-progress")
    model = sp.Model(BERT_MLM)
    with pytest.raises(sp.FolderOccupied) as e:
        model.train(TRAIN, out, max_steps=1, batch_size=4, prompt_len=2)
    assert "(the command line's --task-data or --task-field)" in str(e.value), str(e.value)
    assert "train_multi" not in str(e.value), str(e.value)
