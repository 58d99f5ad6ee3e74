"""The runtime's signatures are the stub's: `help(model.train)`, Jupyter's shift-tab and
`inspect.signature` read the compiled module's text signatures, which listed `**kwargs` only
for the calls that take keywords; each now lists the stub's parameters, defaults and kinds."""
import ast
import inspect
from pathlib import Path

import pytest

import softprompt as sp

STUB = Path(__file__).resolve().parents[1] / "softprompt" / "_native.pyi"
CLASSES = {"Model": sp.Model, "Prompt": sp.Prompt, "Encoded": sp.Encoded}


def _stub_functions():
    """(name, runtime callable, stub def) for every method of the classes above (a method's
    `__init__` stands for the class) and every module-level function."""
    tree = ast.parse(STUB.read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.append((node.name, getattr(sp, node.name), node))
        if isinstance(node, ast.ClassDef) and node.name in CLASSES:
            cls = CLASSES[node.name]
            for f in node.body:
                if not isinstance(f, ast.FunctionDef) or _is_property(f):
                    continue
                if f.name == "__init__":
                    found.append((f"{node.name}()", cls, f))
                elif not f.name.startswith("__"):
                    found.append((f"{node.name}.{f.name}", getattr(cls, f.name), f))
    return found


def _is_property(f):
    return any(
        isinstance(d, ast.Name) and d.id == "property" or isinstance(d, ast.Attribute) and d.attr == "setter"
        for d in f.decorator_list
    )


def _stub_params(f):
    """[(name, kind, default)] of a stub def, `self` left out."""
    a, P = f.args, inspect.Parameter
    positional = [(p, P.POSITIONAL_ONLY) for p in a.posonlyargs] + [(p, P.POSITIONAL_OR_KEYWORD) for p in a.args]
    defaults = [P.empty] * (len(positional) - len(a.defaults)) + [ast.literal_eval(d) for d in a.defaults]
    params = [(p.arg, kind, d) for (p, kind), d in zip(positional, defaults)]
    if a.vararg:
        params.append((a.vararg.arg, P.VAR_POSITIONAL, P.empty))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        params.append((p.arg, P.KEYWORD_ONLY, P.empty if d is None else ast.literal_eval(d)))
    if a.kwarg:
        params.append((a.kwarg.arg, P.VAR_KEYWORD, P.empty))
    return [p for p in params if p[0] != "self"]


def _runtime_params(obj):
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(obj).parameters.values()
        if p.name != "self"
    ]


FUNCTIONS = _stub_functions()


def test_the_stub_lists_the_calls_that_take_keywords():
    names = {name for name, _, _ in FUNCTIONS}
    assert {"Model()", "Model.task", "Model.new_prompt", "Model.train", "Model.predict", "parity"} <= names


@pytest.mark.parametrize("name,obj,stub", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_runtime_signature_is_the_stubs(name, obj, stub):
    assert _runtime_params(obj) == _stub_params(stub), name


def test_help_of_train_lists_its_keywords():
    text = str(inspect.signature(sp.Model.train))
    for keyword in ["prompt_len=20", "lr=None", "batch_size=32", "eval_batch_size=None", "label_field='label'"]:
        assert keyword in text, text
    assert "**kwargs" not in text


def test_help_of_model_says_what_the_constructor_takes():
    """help(Model) showed the class line only: PyO3 does not expose a #[new] docstring."""
    doc = sp.Model.__doc__
    for word in ["Model(dir, device=\"cpu\", precision=\"bf16\", threads=0)", "cuda:N",
                 "first computation"]:
        assert word in doc, doc
