"""softprompt: prompt tuning of frozen BERT, T5 and decoder-only models, from Python.

The engine is Rust (CPU, CUDA); this package is its face. The prompts it trains are PEFT
adapters (``PeftModel.from_pretrained`` loads them), and PEFT adapters load here.

    import softprompt as sp
    model = sp.Model("assets/all-MiniLM-L6-v2")
    summary, prompt = model.train("train.jsonl", "runs/out", dev="dev.jsonl",
                                  task="cls", prompt_len=12, max_steps=120)

Keyword arguments are the command line's flags, underscored, with the same defaults, so a
run from Python equals ``softprompt train`` with the same settings bit for bit. Compute runs
with the GIL released; prompts and gradients are numpy arrays sharing the engine's memory.
"""

from . import errors
from ._native import Encoded, Model, Prompt, StepOutput, Task, __version__, parity
from .errors import (
    BadFile,
    DataError,
    DeviceError,
    FileError,
    FolderInUse,
    FolderOccupied,
    FileNotFound,
    Interrupted,
    InvalidArgument,
    NonFinite,
    OutOfMemory,
    SoftpromptError,
    Unsupported,
)

__all__ = [
    "Model",
    "Task",
    "Prompt",
    "Encoded",
    "StepOutput",
    "parity",
    "errors",
    "SoftpromptError",
    "InvalidArgument",
    "DataError",
    "BadFile",
    "OutOfMemory",
    "FileNotFound",
    "FileError",
    "FolderInUse",
    "FolderOccupied",
    "Unsupported",
    "DeviceError",
    "NonFinite",
    "Interrupted",
    "__version__",
]
