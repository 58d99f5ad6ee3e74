//! The boundary between the engine and Python: the engine's errors become the exceptions of
//! `softprompt.errors` (defined in Python, where an exception can have two bases: a
//! `SoftpromptError` that is also a `ValueError`, a `FileNotFoundError`, ...), a panic
//! becomes a `SoftpromptError` instead of unwinding into the interpreter, and compute runs
//! with the GIL released.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use softprompt::{Error, FolderState};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The `softprompt.errors` class an engine error is raised as.
fn class_name(e: &Error) -> &'static str {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "FileNotFound",
        Error::Io { .. } => "FileError",
        // a file error about a path that is not there: the file is missing, not bad (a
        // one-word "path" such as "the prompt" stands for something in memory)
        Error::File { path, .. } if path.components().count() > 1 && !path.exists() => {
            "FileNotFound"
        }
        // a step too large for the host's memory: the batch size or lengths passed
        Error::Arg { .. } | Error::Shape { .. } | Error::StepMemory { .. } => "InvalidArgument",
        Error::Data { .. } => "DataError",
        Error::File { .. } | Error::Config { .. } | Error::Tensor { .. } => "BadFile",
        Error::Tokenizer { .. } => "BadFile",
        Error::HostMemory { .. } => "OutOfMemory",
        Error::Folder {
            state: FolderState::InUse,
            ..
        } => "FolderInUse",
        Error::Folder {
            state: FolderState::Occupied,
            ..
        } => "FolderOccupied",
        Error::Unsupported(_) => "Unsupported",
        Error::Device(_) | Error::Kernel { .. } => "DeviceError",
        Error::NonFinite(_) | Error::Overflow { .. } => "NonFinite",
        Error::Interrupted(_) => "Interrupted",
    }
}

/// The engine's error as the Python exception of its kind, with the engine's message (what
/// the command line prints after `error: `, its advice in Python's words: `python_words`).
pub fn to_py(e: Error) -> PyErr {
    if let Error::Interrupted(msg) = &e {
        return PyKeyboardInterrupt::new_err(msg.clone());
    }
    let e = match e {
        // `PromptInit`'s field is the keyword `init_vocab_first` here
        Error::Arg { flag, msg } if flag == "from_first" => Error::Arg {
            flag: "init_vocab_first".into(),
            msg,
        },
        e => e,
    };
    let class = class_name(&e);
    let msg = python_words(&e.to_string());
    match os_fields(&e, class) {
        Some((path, errno)) => raise_os(class, msg, path, errno),
        None => raise(class, msg),
    }
}

/// The exception `class` of `softprompt.errors` with `msg` (a RuntimeError if the module
/// cannot be imported).
pub fn raise(class: &str, msg: String) -> PyErr {
    construct(class, msg.clone(), |class| class.call1((msg,)))
}

/// An `OSError` class of `softprompt.errors` (FileNotFound, FileError) with `e.filename` and
/// `e.errno` set as Python's own `open()` sets them (code reads the path from `filename`);
/// `str(e)` stays `msg`, which names the path already.
pub fn raise_os(class: &str, msg: String, path: &std::ffi::OsStr, errno: Option<i32>) -> PyErr {
    construct(class, msg.clone(), |class| class.call1((errno, msg, path)))
}

fn construct(
    class: &str,
    msg: String,
    make: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>,
) -> PyErr {
    Python::attach(|py| {
        match py
            .import("softprompt.errors")
            .and_then(|m| m.getattr(class))
        {
            Ok(class) => match make(&class) {
                Ok(v) => PyErr::from_value(v),
                Err(e) => e,
            },
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

/// The path and errno of an error raised as an `OSError` class: an I/O error's own, a
/// missing file's ENOENT.
fn os_fields<'e>(e: &'e Error, class: &str) -> Option<(&'e std::ffi::OsStr, Option<i32>)> {
    const ENOENT: i32 = 2;
    const EEXIST: i32 = 17;
    const EAGAIN: i32 = 11;
    let missing = (class == "FileNotFound").then_some(ENOENT);
    match e {
        Error::Io { path, .. } => Some((path.as_os_str(), e.raw_os_error().or(missing))),
        Error::File { path, .. } if missing.is_some() => Some((path.as_os_str(), missing)),
        // the errno Python's own BlockingIOError / FileExistsError carry
        Error::Folder { path, state, .. } => {
            let errno = match state {
                FolderState::InUse => EAGAIN,
                FolderState::Occupied => EEXIST,
            };
            Some((path.as_os_str(), Some(errno)))
        }
        _ => None,
    }
}

/// The engine's advice names the Rust API's calls (`Model::new_prompt`) and the command
/// line's flag beside them: from Python, the same calls are `Model.new_prompt`.
pub fn python_words(msg: &str) -> String {
    const CALLS: [(&str, &str); 5] = [
        (
            "Prompt::set_model (the command line: --model)",
            "Prompt.set_model",
        ),
        // the package has no multi-task training: the command line's is the way (hostile
        // pass 35, F3)
        (
            "(the command line's --task-data or --task-field, or `Model::train_multi`)",
            "(the command line's --task-data or --task-field)",
        ),
        (
            "pass overwrite (SaveOptions { overwrite: true })",
            "pass overwrite=True",
        ),
        ("Prompt::", "Prompt."),
        ("Model::", "Model."),
    ];
    let msg = CALLS
        .iter()
        .fold(msg.to_string(), |m, (rust, py)| m.replace(rust, py));
    flags_as_keywords(&cfg_fields_as_keywords(&msg))
}

/// The keywords of the package's calls that are the command line's flags underscored
/// (`--max-len` is `max_len=`): the engine's advice, shared with the command line, names the
/// flag.
const KEYWORDS: &str =
    "task template labels verbalizer pooling free_targets max_len max_target_len decode \
     target_end format quoting text_field label_field prompt_len method prefix_projection \
     prefix_placement encoder_reparameterization encoder_hidden_size encoder_num_layers init \
     init_text init_std init_vocab_first optimizer lr head_lr weight_decay decay_rate \
     schedule warmup_steps max_grad_norm batch_size eval_batch_size epochs max_steps \
     eval_every patience save_every log_every seed recompute bucket_pool no_progress resume \
     overwrite train dev test out max_new_tokens prompt_placement threads device precision \
     tol reference prompt data";

/// The words a flag of a choice takes (`--task cls`): in Python, `task="cls"`.
const CHOICES: &str =
    "pet cls seq2seq causal mlm mean first last eos pad none minimal all tsv csv jsonl adamw \
     adafactor constant linear cosine random text vocab layer mlp lstm papers peft tokens cpu \
     cuda emu bf16 f32 mixed prompt p-tuning prefix greedy rank";

/// The command line's flags in `msg` as the keywords that set the same thing: `--max-len 12`
/// is `max_len=12`, `--task cls` is `task="cls"`, `--lr` is `lr`; a flag with no keyword of
/// its name (`--model`, `--task-data`) stays.
fn flags_as_keywords(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("--") {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let name_len = (tail[2..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')))
            .unwrap_or(tail.len() - 2);
        let name = &tail[2..2 + name_len];
        let keyword = name.replace('-', "_");
        // a flag stands after a space, a quote or a bracket, not inside a word or a path
        // (`a--b`, `runs/--dev`)
        let starts_word = !head.ends_with(|c: char| c.is_alphanumeric() || "-_./\\".contains(c));
        if !(starts_word && KEYWORDS.split(' ').any(|k| k == keyword)) {
            out.push_str(&tail[..2 + name_len]);
            rest = &tail[2 + name_len..];
            continue;
        }
        out.push_str(&keyword);
        rest = &tail[2 + name_len..];
        let Some(after) = rest.strip_prefix(' ') else {
            continue;
        };
        // a quoted value (`--template "Review: {text}"`) whole
        let quoted = (after.strip_prefix('"'))
            .and_then(|v| v.find('"'))
            .map(|end| &after[..end + 2]);
        if let Some(value) = quoted {
            out.push('=');
            out.push_str(value);
            rest = &after[value.len()..];
            continue;
        }
        let value_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.+".contains(c)))
            .unwrap_or(after.len());
        let value = after[..value_len].trim_end_matches('.');
        if value.starts_with(|c: char| c.is_ascii_digit()) {
            out.push('=');
            out.push_str(value);
            rest = &after[value.len()..];
        } else if CHOICES.split(' ').any(|c| c == value) {
            out.push_str(&format!("=\"{value}\""));
            rest = &after[value.len()..];
        }
    }
    out + rest
}

/// The Rust API's `cfg.batch_size` (a `TrainConfig` field the engine names) is
/// `Model.train`'s keyword `batch_size`, its `cfg.optim.lr` the keyword `lr`; any other
/// "cfg." (a path `cfg.jsonl`, a word inside `my.cfg.json`) stays.
fn cfg_fields_as_keywords(msg: &str) -> String {
    const FIELDS: &[&str] = &[
        "prompt_len",
        "batch_size",
        "eval_batch_size",
        "bucket_pool",
        "epochs",
        "max_steps",
        "patience",
        "eval_every",
        "resume",
        "overwrite",
        "optim.lr",
        "optim.head_lr",
        "optim.weight_decay",
        "optim.max_grad_norm",
        "optim.decay_rate",
    ];
    let mut parts = msg.split("cfg.");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let in_word = out.ends_with(|c: char| c.is_alphanumeric() || "_./\\-".contains(c));
        // the field's name whole, not the start of a longer name or a file's (`cfg.epochs.tsv`)
        let whole = |after: &str| {
            let mut chars = after.chars();
            match (chars.next(), chars.next()) {
                (Some(c), _) if c.is_alphanumeric() || c == '_' => false,
                (Some('.'), Some(c)) => !c.is_alphanumeric(),
                _ => true,
            }
        };
        let field = (FIELDS.iter()).any(|f| part.strip_prefix(f).is_some_and(whole));
        if in_word || !field {
            out.push_str("cfg.");
            out.push_str(part);
        } else {
            // the optimizer's settings are keywords of their own
            out.push_str(part.strip_prefix("optim.").unwrap_or(part));
        }
    }
    out
}

/// Runs `f` with the GIL released, a panic caught and reported as an internal error, an
/// engine error raised as its exception.
pub fn compute<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> softprompt::Result<T> + Send,
{
    unwound(py, f)?.map_err(to_py)
}

/// Runs `f` with the GIL released, a panic caught and reported as an internal error; the
/// engine's result as it is.
pub fn unwound<T, F>(py: Python<'_>, f: F) -> PyResult<softprompt::Result<T>>
where
    T: Send,
    F: FnOnce() -> softprompt::Result<T> + Send,
{
    let run = || {
        let caught = catch_unwind(AssertUnwindSafe(f));
        // after a panic too
        wait_for_exit_if_finalized();
        caught
    };
    // in a child of fork() the engine's work runs on a pool of that child's (cpu::threads)
    let result = match py.detach(|| softprompt::internals::cpu::threads::fork_safe(run)) {
        Ok(caught) => caught.map_err(internal),
        Err(e) => Ok(Err(e)),
    };
    // what the call wrote, through sys.stdout (output.rs)
    crate::output::flush(py)?;
    result
}

/// A call that ends (or stops: `Interrupt::check`) while the interpreter shuts down, on a
/// daemon thread at exit: taking the GIL back would end the thread inside Rust frames
/// (Python 3.11's `PyThread_exit_thread`, an abort: "exception not rethrown"), so the
/// thread waits for the process to end, as Python 3.14 has such threads do.
fn wait_for_exit_if_finalized() {
    // SAFETY: Py_IsInitialized may be called at any time, without the GIL
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        loop {
            std::thread::park();
        }
    }
}

/// A panic's payload as a `SoftpromptError` ("internal error: ..."), never a crash.
pub fn internal(panic: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into());
    raise(
        "SoftpromptError",
        format!("internal error (please report it): {what}"),
    )
}

/// `e`, an argument error about the engine's argument `from` said of the binding's `to` (a
/// Python argument of another name); any other error as it is.
pub fn renamed_arg(e: Error, from: &str, to: &str) -> Error {
    match e {
        Error::Arg { flag, msg } if flag == from => Error::Arg {
            flag: to.into(),
            msg,
        },
        e => e,
    }
}

/// An argument error raised from the binding itself (a keyword's value the engine never sees).
pub fn arg(flag: &str, msg: impl Into<String>) -> PyErr {
    to_py(Error::arg(flag, msg.into()))
}
