//! The boundary between the engine and Python: the engine's errors become the exceptions of
//! `softprompt.errors` (defined in Python, where an exception can have two bases: a
//! `SoftpromptError` that is also a `ValueError`, a `FileNotFoundError`, ...), a panic
//! becomes a `SoftpromptError` instead of unwinding into the interpreter, and compute runs
//! with the GIL released.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use softprompt::Error;
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
    raise(class_name(&e), python_words(&e.to_string()))
}

/// The exception `class` of `softprompt.errors` with `msg` (a RuntimeError if the module
/// cannot be imported).
pub fn raise(class: &str, msg: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("softprompt.errors")
            .and_then(|m| m.getattr(class))
        {
            Ok(class) => match class.call1((msg,)) {
                Ok(v) => PyErr::from_value(v),
                Err(e) => e,
            },
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

/// The engine's advice names the Rust API's calls (`Model::new_prompt`) and the command
/// line's flag beside them: from Python, the same calls are `Model.new_prompt`.
fn python_words(msg: &str) -> String {
    const CALLS: [(&str, &str); 4] = [
        ("pass --quoting none", "pass quoting=\"none\""),
        (
            "Prompt::set_model (the command line: --model)",
            "Prompt.set_model",
        ),
        ("Prompt::", "Prompt."),
        ("Model::", "Model."),
    ];
    let msg = CALLS
        .iter()
        .fold(msg.to_string(), |m, (rust, py)| m.replace(rust, py));
    cfg_fields_as_keywords(&msg)
}

/// The Rust API's `cfg.batch_size` (a `TrainConfig` field the engine names) is
/// `Model.train`'s keyword `batch_size`; any other "cfg." (a path `cfg.jsonl`, a word inside
/// `my.cfg.json`) stays.
fn cfg_fields_as_keywords(msg: &str) -> String {
    const FIELDS: [&str; 9] = [
        "prompt_len",
        "batch_size",
        "eval_batch_size",
        "bucket_pool",
        "epochs",
        "max_steps",
        "patience",
        "resume",
        "overwrite",
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
        }
        out.push_str(part);
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
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(internal)
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
