"""Type stubs of softprompt's compiled module (python/src/*.rs). Keyword arguments marked
``**flags`` are the command line's flags, underscored, with its defaults (see Model.train).

Messages count rows from 1, as the command line counts a data file's rows by their lines
(``ids: row 2, index 1 holds ...`` is ``ids[1][1]``); a position within a row is an index,
from 0. An int argument given a bool (``prompt_len=True``) raises InvalidArgument; a str
where a list is expected (``generate(task, prompt, "hi")``) a TypeError naming the argument."""
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, final

import numpy as np
import numpy.typing as npt

StrPath = Union[str, bytes, PathLike]
# a data file (jsonl, tsv, csv), texts, or (text, label) pairs: what train and task read
# a label is a name, or an int read as its digits (as a data file's number is)
Label = Union[str, int]
RawData = Union[StrPath, Sequence[str], Sequence[Tuple[str, Optional[Label]]], Sequence[Sequence[Optional[Label]]]]
# the same, or rows Model.encode made: what encode, step, evaluate and predict read
Data = Union[RawData, "Encoded"]
# A path (Model(dir), Prompt.load, data=..., save_prompt, train's splits and out, parity) is
# read as open() reads it: a str holding a lone surrogate raises UnicodeEncodeError.
# data: a str is a file path; a pandas DataFrame or a dict raises TypeError (iterating one
# gives its column names): pass df["text"] (labels=df["label"]) or list(zip(...)) pairs.
# The data flags (format, quoting, text_field, label_field) read a file: given with rows in
# memory, they raise InvalidArgument.
Verbalizer = Union[str, Mapping[Label, str], Sequence[Union[Tuple[str, str], Sequence[str]]]]

__version__: str

@final
class Task:
    """A task resolved for a model (Model.task, Model.task_for)."""
    @property
    def kind(self) -> str:
        """pet, cls, seq2seq or causal."""
    @property
    def labels(self) -> List[str]:
        """The labels in score order."""
    @property
    def prompt_len(self) -> Optional[int]:
        """The prompt_len Model.task was given (new_prompt's default), else None."""
    @property
    def template(self) -> str:
        """The text around the input, with {text}."""
    @property
    def max_len(self) -> int:
        """Tokens per row, special tokens included."""
    @property
    def label_words(self) -> List[str]:
        """The labels' words (pet) or target texts (seq2seq, causal)."""
    @property
    def target_end(self) -> str:
        """causal: what follows each target (eos, pad or none)."""
    @property
    def eos_missing(self) -> bool:
        """Whether the task is causal under target_end "eos" (the default) on a model whose
        config.json names no eos_token_id: its targets then end with no token, as under "none",
        and generation stops at its length bound, or at a stop token of generation_config.json,
        which no target teaches (the command line warns of it)."""

@final
class Prompt:
    """A soft prompt: P rows of the model's width, float32, on the host. A prefix-tuning
    prompt's rows hold every layer's keys and values instead, (P, 2 * layers * d_kv), which
    `width` and `values` give as they are; `from_values` makes prompts of the model's width
    only, so copy a prefix prompt with copy(), or save_prompt and Prompt.load."""
    @staticmethod
    def from_values(values: npt.NDArray[np.float32]) -> "Prompt":
        """A prompt from a (P, d) float32 array (copied); a value that is not finite raises
        InvalidArgument naming `values` and its flat index. Used on a model of another width
        or on a cls task (it has no head), it raises InvalidArgument naming `prompt`."""
    @staticmethod
    def load(dir: StrPath) -> "Prompt":
        """A prompt folder softprompt or PEFT saved (adapter_model.safetensors; a pickled
        .bin is refused)."""
    @property
    def rows(self) -> int:
        """P."""
    @property
    def width(self) -> int:
        """d."""
    @property
    def values(self) -> npt.NDArray[np.float32]:
        """(P, d), a writable view of the prompt's memory: writes change the prompt the next
        step, evaluate or save_prompt uses (no copy). Do not write it while another thread
        runs a call on this prompt: getting or setting values (or head, or set_model) then
        raises SoftpromptError "the prompt is in use by a call ..."."""
    @values.setter
    def values(self, values: npt.NDArray[np.float32]) -> None:
        """Copies a (P, d) array into the prompt."""
    @property
    def head(self) -> Optional[Tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        """A cls prompt's head: writable views of weight (K, d) and bias (K); else None."""
    @property
    def dir(self) -> Optional[Path]:
        """The folder it was loaded from."""
    @property
    def init_name(self) -> str:
        """RANDOM, TEXT or SAMPLE_VOCAB, in PEFT's words."""
    def model_dir(self) -> Path:
        """The model folder the prompt belongs to (its task.json, else the model it was made
        on or given by set_model, else PEFT's base model)."""
    def set_model(self, model: "Model") -> Optional[str]:
        """Records `model` as the prompt's own, to run a prompt made or saved on another model
        on it on purpose (every use on another model is refused); returns what it replaced
        (the warning) when it recorded another model, else None."""
    def copy(self) -> "Prompt":
        """An independent copy (copy.copy and copy.deepcopy give one too; pickling raises
        TypeError: save it, or send its values to Prompt.from_values)."""
    def __copy__(self) -> "Prompt": ...
    def __deepcopy__(self, memo: Any) -> "Prompt": ...

@final
class Encoded:
    """Rows encoded for a task; a slice is a batch for Model.step."""
    @staticmethod
    def from_ids(
        ids: Sequence[Sequence[int]],
        labels: Optional[Sequence[Optional[int]]] = None,
        mask_positions: Optional[Sequence[int]] = None,
        targets: Optional[Sequence[Sequence[int]]] = None,
    ) -> "Encoded":
        """Rows from token ids (special tokens included), class indices, pet's [MASK]
        positions (a pet task refuses a row whose position, 0 when not given, does not hold
        the mask token), seq2seq's and causal's target ids. A value that is not an int32 (ids,
        targets) or a non-negative int (labels, mask_positions) raises InvalidArgument naming
        the argument, the row (from 1) and the index in it (from 0)."""
    def __len__(self) -> int: ...
    def __getitem__(self, index: Union[int, slice], /) -> Any:
        """A slice: an Encoded of those rows; an int: that row's ids."""
    @property
    def ids(self) -> List[List[int]]: ...
    @property
    def labels(self) -> List[Optional[int]]: ...
    @property
    def truncated(self) -> int:
        """Rows whose text was cut to max_len."""

@final
class StepOutput:
    """The loss and gradients of one batch."""
    @property
    def loss(self) -> float:
        """The mean loss over the batch."""
    @property
    def prompt_grad(self) -> npt.NDArray[np.float32]:
        """d loss / d prompt, (P, d): the engine's buffer moved into numpy."""
    @property
    def head_grad(self) -> Optional[Tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        """cls: the gradients of the head's weight (K, d) and bias (K)."""
    @property
    def tokens(self) -> int:
        """Real tokens in the batch."""

@final
class Model:
    """A Hugging Face model folder (BERT, T5, BLOOM, Llama, Mistral, Qwen2) on a device."""
    def __init__(
        self, dir: StrPath, device: str = "cpu", precision: str = "bf16", threads: int = 0
    ) -> None:
        """device: cpu, cuda, cuda:N or emu; precision (cuda, emu): bf16, f32 or mixed;
        threads: the CPU pool's size, as --threads sets it (0: all cores). A process has one
        pool, sized by the first Model that gives a count: another count later raises
        InvalidArgument."""
    @property
    def dir(self) -> Path: ...
    @property
    def arch(self) -> str:
        """bert, t5, bloom or llama."""
    @property
    def hidden_size(self) -> int: ...
    @property
    def device(self) -> str: ...
    def tokenize(self, text: str) -> List[int]:
        """Token ids, special tokens included (the GIL released). A text of more than 2 MiB
        raises InvalidArgument naming the limit."""
    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens left out. An id that is not an int32 raises
        InvalidArgument naming its position."""
    def task(
        self,
        data: Optional[RawData] = None,
        prompt_len: Optional[int] = None,
        *,
        task: Optional[str] = None,
        template: Optional[str] = None,
        labels: Optional[Union[str, Sequence[Label]]] = None,
        verbalizer: Optional[Verbalizer] = None,
        pooling: Optional[str] = None,
        free_targets: bool = False,
        max_len: Optional[int] = None,
        max_target_len: Optional[int] = None,
        decode: Optional[str] = None,
        target_end: Optional[str] = None,
        format: Optional[str] = None,
        quoting: Optional[str] = None,
        text_field: str = "text",
        label_field: str = "label",
    ) -> Task:
        """The task a new prompt of prompt_len rows (default 20) trains: the flags over the model's
        defaults, the labels from data when nothing else gives them. labels: names, or one
        string "a,b"; verbalizer: {label: word}, (label, word) pairs (tuples, or task.json's
        [label, word] lists) or "a=x,b=y". Another
        type raises InvalidArgument naming the keyword and the item."""
    def task_for(self, prompt: Prompt, data: Optional[RawData] = None, **flags: Any) -> Task:
        """A saved prompt's task (its task.json) with the task flags on top (flags: task,
        template, labels, verbalizer, pooling, free_targets, max_len, max_target_len, decode,
        target_end, as Model.task; and the data flags for data)."""
    def new_prompt(
        self,
        task: Task,
        prompt_len: Optional[int] = None,
        seed: int = 0,
        *,
        init: str = "random",
        init_text: Optional[str] = None,
        init_std: Optional[float] = None,
        init_vocab_first: Optional[int] = None,
    ) -> Prompt:
        """The prompt train starts from with the same settings (a cls head at zero).
        prompt_len defaults to the task's (Task.prompt_len), else 20; another one than the
        task's raises InvalidArgument naming both."""
    def encode(
        self, task: Task, data: Data, labels: Optional[Sequence[Optional[Label]]] = None, **flags: Any
    ) -> Encoded:
        """data encoded for task (texts with labels, pairs, or a file with the data flags:
        format, quoting, text_field, label_field).
        A task made for another kind of model raises InvalidArgument saying which fits.
        Ctrl-C stops it after the chunk of rows under way (KeyboardInterrupt); during the
        last chunk, it finishes but still raises KeyboardInterrupt, the result discarded."""
    def step(
        self, task: Task, prompt: Prompt, batch: Data, labels: Optional[Sequence[Optional[Label]]] = None
    ) -> StepOutput:
        """One batch's loss and gradients; nothing is updated. The numbers are as computed,
        as PyTorch's: a loss or gradient that overflowed is NaN or infinite, for the loop to
        check (train() stops on one). The GIL is released (Ctrl-C is raised once the batch is
        done)."""
    def evaluate(
        self,
        task: Task,
        prompt: Prompt,
        data: Data,
        labels: Optional[Sequence[Optional[Label]]] = None,
        batch_size: int = 64,
        **flags: Any,
    ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
        """({"accuracy", "macro_f1", "examples"}, every row's prediction). A row in memory
        without a label (a None label) is predicted and left out of the metrics, as the Rust
        API's evaluate does; a file's row without one is refused, as `softprompt eval` refuses
        it. Ctrl-C stops it
        after the batch under way and raises KeyboardInterrupt (no result); during the last
        batch, it finishes but still raises KeyboardInterrupt, the result discarded."""
    def predict(
        self, task: Task, prompt: Prompt, data: Data, batch_size: int = 64, **flags: Any
    ) -> List[Dict[str, Any]]:
        """Per row: {"label", "class", "scores", "ids", "score", "truncated"} (truncated: the
        text was cut to the task's max_len); under greedy decoding or
        free targets also "output", the generated text up to the stop token that ended it
        ("ids" end with that token; "label" is the text under free targets, None when the
        output is no label's target, as `softprompt predict` writes null). Ctrl-C stops it after the
        batch under way and raises KeyboardInterrupt (no result); during the last batch, it
        finishes but still raises KeyboardInterrupt, the result discarded."""
    def generate(
        self,
        task: Task,
        prompt: Prompt,
        texts: Sequence[str],
        max_new_tokens: int = 32,
        prompt_placement: str = "tokens",
    ) -> List[Dict[str, Any]]:
        """Greedy generation on a decoder-only model: {"output", "text", "ids", "logprob",
        "truncated"} per text (output and text: the generated text, up to the stop token that
        ended it, which "ids" end with; truncated: the input text
        was cut to the task's max_len). Ctrl-C stops it after the token under way (KeyboardInterrupt); during the last token, it finishes but still
        raises KeyboardInterrupt, the result discarded."""
    def save_prompt(
        self, dir: StrPath, prompt: Prompt, task: Task, overwrite: bool = False
    ) -> None:
        """PEFT's adapter files, task.json, and head.safetensors for cls; a folder holding a
        saved prompt is refused unless overwrite=True. A P-tuning prompt (or a prefix with a
        projection) is saved as its table, the encoder's output: its
        prompt_encoder.safetensors is not carried."""
    def train(
        self,
        train: RawData,
        out: StrPath,
        dev: Optional[RawData] = None,
        test: Optional[RawData] = None,
        on_event: Optional[Callable[[Dict[str, Any]], None]] = None,
        *,
        prompt_len: int = 20,
        method: str = "prompt",
        prefix_projection: bool = False,
        prefix_placement: Optional[str] = None,
        encoder_reparameterization: Optional[str] = None,
        encoder_hidden_size: Optional[int] = None,
        encoder_num_layers: Optional[int] = None,
        init: str = "random",
        init_text: Optional[str] = None,
        init_std: Optional[float] = None,
        init_vocab_first: Optional[int] = None,
        optimizer: str = "adamw",
        lr: Optional[float] = None,
        head_lr: Optional[float] = None,
        weight_decay: Optional[float] = None,
        decay_rate: Optional[float] = None,
        schedule: Optional[str] = None,
        warmup_steps: int = 0,
        max_grad_norm: Optional[float] = None,
        batch_size: int = 32,
        eval_batch_size: Optional[int] = None,
        epochs: int = 1,
        max_steps: Optional[int] = None,
        eval_every: int = 0,
        patience: Optional[int] = None,
        save_every: int = 50,
        log_every: int = 10,
        seed: int = 0,
        recompute: str = "none",
        bucket_pool: int = 50,
        no_progress: bool = False,
        resume: bool = False,
        overwrite: bool = False,
        task: Optional[str] = None,
        template: Optional[str] = None,
        labels: Optional[Union[str, Sequence[Label]]] = None,
        verbalizer: Optional[Verbalizer] = None,
        pooling: Optional[str] = None,
        free_targets: bool = False,
        max_len: Optional[int] = None,
        max_target_len: Optional[int] = None,
        decode: Optional[str] = None,
        target_end: Optional[str] = None,
        format: Optional[str] = None,
        quoting: Optional[str] = None,
        text_field: str = "text",
        label_field: str = "label",
    ) -> Tuple[Dict[str, Any], Prompt]:
        """The whole run as `softprompt train` does it, with its flags and defaults: the
        same progress bar, metrics.jsonl, checkpoints and bit-identical numbers. method:
        prompt, p-tuning (PEFT's prompt encoder: encoder_reparameterization mlp or lstm,
        encoder_hidden_size, encoder_num_layers for the LSTM) or prefix (prefix_projection,
        with encoder_hidden_size; prefix_placement papers or peft); a keyword of another
        method, or init with p-tuning or prefix, raises InvalidArgument as the command line
        refuses the flag. Multi-task training (--task-data, --task-field, --task-config) is
        the command line's only. Ctrl-C ends
        it after the step under way with the checkpoint written and raises
        KeyboardInterrupt (resume=True continues). Ctrl-C during the last step or the final
        test evaluation lets the run finish (out holds the finished run: Prompt.load(out)
        reads the kept prompt) but still raises KeyboardInterrupt, (summary, prompt)
        discarded. Returns (summary, the kept prompt). eval_batch_size: 64 when dev or test
        is given (given without either, InvalidArgument). on_event(dict) is called on the
        calling thread at each event (docs/python.md lists them); its return value is
        ignored, and an exception it raises stops the run as Ctrl-C does, then propagates.
        (In a child of fork() whose parent ran the engine, on_event runs on the child's own
        pool thread and Ctrl-C is heard when train returns: docs/python.md.)
        The run's report lines (optimizer, trainable, dev results) go through sys.stdout,
        written after each step and when train returns; the progress bar is drawn on the
        process's stderr (file descriptor 2)."""

def parity(
    model_dir: StrPath,
    reference: StrPath,
    device: str = "cpu",
    precision: str = "mixed",
    tol: Optional[float] = None,
) -> Dict[str, Any]:
    """`softprompt parity`: {"passed", "rows", "skipped", "table"}."""
