"""The exceptions softprompt raises: one base, :class:`SoftpromptError`, and one subclass per
kind of fault, each also an instance of the built-in exception a Python user would catch
(``ValueError`` for a bad argument or file, ``FileNotFoundError`` for a missing one, ...).
The message is the engine's, as the command line prints it after ``error:``.

Ctrl-C during :meth:`softprompt.Model.train` raises the built-in ``KeyboardInterrupt`` once
the run's checkpoint is written.
"""


class SoftpromptError(Exception):
    """Any error of the engine; also raised (as "internal error") if the engine panicked."""


class InvalidArgument(SoftpromptError, ValueError):
    """An argument (a command-line flag's counterpart, named in the message) is invalid."""


class DataError(SoftpromptError, ValueError):
    """A data file's row is invalid; the message names the file and line."""


class BadFile(SoftpromptError, ValueError):
    """A model, prompt, tokenizer or tensor file is invalid; the message names it."""


class OutOfMemory(SoftpromptError, MemoryError):
    """A model's weights are larger than the memory this process may still allocate (the
    machine's, its ``ulimit -v`` or its cgroup's; the message says which): refused before
    loading, so nothing was allocated."""


class _EngineOSError(OSError):
    """An OSError whose ``filename`` and ``errno`` are set as ``open()`` sets them, and whose
    ``str()`` is the engine's message (which names the path already), not
    ``[Errno 2] ...: 'path'``."""

    def __str__(self) -> str:
        return self.strerror if isinstance(self.strerror, str) else super().__str__()


class FileNotFound(SoftpromptError, FileNotFoundError, _EngineOSError):
    """A file or folder does not exist; the message names it (and ``filename`` holds it)."""


class FileError(SoftpromptError, _EngineOSError):
    """A file could not be read or written; the message names it (and ``filename`` holds
    it, ``errno`` the OS's error number)."""


class FolderInUse(SoftpromptError, BlockingIOError, _EngineOSError):
    """A folder to write into, or a prompt folder read between two of its files, is being
    written now by another run or save (which holds its lock; the message names it): wait
    for it to end, or write elsewhere. ``filename`` holds the folder."""


class FolderOccupied(SoftpromptError, FileExistsError, _EngineOSError):
    """A folder to write into holds an earlier run or a saved prompt that the call was not
    told to replace (``overwrite=True`` replaces it; the message says how). ``filename``
    holds the folder."""


class Unsupported(SoftpromptError, NotImplementedError):
    """The model or task does not support what was asked."""


class DeviceError(SoftpromptError, RuntimeError):
    """The device (CUDA, the emulator) failed or is missing."""


class NonFinite(SoftpromptError, FloatingPointError):
    """A loss, gradient or parameter stopped being finite (lower the learning rate), or a
    prompt's scores or generated logits did (the model overflows on the prompt; the message
    names its file)."""


class Interrupted(SoftpromptError):
    """Kept for the engine's stop requests; no call of this package raises it today: Ctrl-C
    raises KeyboardInterrupt, after the step under way with the checkpoint written."""


__all__ = [
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
]
