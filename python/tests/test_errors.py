"""Bad inputs raise the exception of their kind with the engine's message: the very line the
command line prints after `error: `."""
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
]


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
    assert str(e.value) == want
    assert isinstance(e.value, sp.SoftpromptError)
    assert not (tmp_path / "py" / "checkpoint.safetensors").exists()


def test_exception_bases():
    assert issubclass(sp.InvalidArgument, ValueError)
    assert issubclass(sp.FileNotFound, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        sp.Prompt.load(DATA / "no_prompt_here")


def test_unknown_keyword_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="'prompt_length'"):
        sp.Model(BERT_MLM).train(str(TRAIN), tmp_path, prompt_length=4)


def test_mismatched_inputs():
    model = sp.Model(BERT_MLM)
    task = model.task([("a", "x"), ("b", "y")], verbalizer="x=great,y=bad", prompt_len=2)
    wide = sp.Prompt.from_values(__import__("numpy").zeros((2, 7), "float32"))
    with pytest.raises(sp.BadFile, match="7 wide"):
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
    (dict(ids=[[4] * 500], labels=[0], mask_positions=[1]), "max_position_embeddings"),
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
    (dict(ids=[[4, 2**40, 5]]), "ids: row 0, position 1 holds 1099511627776: expected an int from -2^31 to 2^31-1"),
    (dict(ids=[[4, 5], [4, -(2**31) - 1]]), "ids: row 1, position 1"),
    (dict(ids=[[4, 5]], targets=[[2**33]]), "targets: row 0, position 0"),
    (dict(ids=[[4, 5]], labels=[-1]), "labels: row 0 holds -1: expected an int from 0"),
    (dict(ids=[[4, 5]], mask_positions=[2**70]), "mask_positions: row 0 holds"),
]


@pytest.mark.parametrize("rows,message", OUT_OF_RANGE)
def test_ints_out_of_range_name_the_argument(rows, message):
    with pytest.raises(sp.InvalidArgument, match=message.replace("^", r"\^").replace("+", r"\+")):
        sp.Encoded.from_ids(**rows)


def test_ints_of_the_wrong_type_name_the_argument():
    for rows, name in [
        (dict(ids=[[4, 1.5]]), "ids: row 0, position 1 holds 1.5: expected an int"),
        (dict(ids=[[4]], mask_positions=[None]), "mask_positions: row 0 holds None"),
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


@pytest.mark.parametrize("value", [-1, 2**70, 1.5], ids=["-1", "2**70", "1.5"])
@pytest.mark.parametrize("where", list(INT_ARGS))
def test_int_arguments_out_of_range_name_the_argument(tmp_path, where, value):
    name = where.split(".")[-1]
    with pytest.raises(sp.InvalidArgument) as e:
        INT_ARGS[where](value, tmp_path)
    assert str(e.value).startswith(f"invalid argument {name}: got {value!r}: expected an int from 0 to "), e.value
    assert not (tmp_path / "out").exists()


# task keywords of the wrong type raised PyO3's TypeError ("'int' object cannot be cast as
# 'Sequence'") naming neither the keyword nor what it takes
BAD_TASK_KEYWORDS = [
    (dict(labels=123), "labels: got 123: expected a list of label names, or one string of them"),
    (dict(labels=["a", 1]), "labels: item 1 holds 1: expected a str"),
    (dict(verbalizer={"a": 1}), "verbalizer: the word of 'a' holds 1: expected a str"),
    (dict(verbalizer={2: "b"}), "verbalizer: a label holds 2: expected a str"),
    (dict(verbalizer=[("a",)]), r"verbalizer: item 0 holds \('a',\): expected a \(label, word\) pair"),
    (dict(verbalizer=5), r"verbalizer: got 5: expected a dict \{label: word\}, a list of"),
]


@pytest.mark.parametrize("kw,message", BAD_TASK_KEYWORDS, ids=[str(c[0]) for c in BAD_TASK_KEYWORDS])
def test_task_keywords_of_the_wrong_type_name_the_keyword(kw, message):
    with pytest.raises(sp.InvalidArgument, match="^invalid argument " + message):
        sp.Model(BERT_MLM).task([("a", "x"), ("b", "y")], prompt_len=2, **kw)


def test_detokenize_out_of_range_names_the_argument():
    model = sp.Model(BERT_MLM)
    with pytest.raises(sp.InvalidArgument, match=r"^invalid argument ids: position 1 holds 2147483648: expected an int from -2\^31 to 2\^31-1$"):
        model.detokenize([4, 2**31])  # a bare OverflowError
    with pytest.raises(TypeError, match="'ids'"):
        model.detokenize("abc")
    assert model.detokenize([4]) == model.detokenize(__import__("numpy").array([4]))


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
        assert f"error: {e.value}" == want
