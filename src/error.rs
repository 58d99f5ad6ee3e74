//! The one error type of the crate. Every message names the file, tensor or flag at fault and
//! says what was expected, so a user can act on it without reading the source.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    /// What `path` holds (a model's weights) is larger than the host memory this process may
    /// still allocate (`memory::check_host_room`): refused before allocating, as no argument
    /// makes it smaller.
    #[error("{path}: {msg}")]
    HostMemory { path: PathBuf, msg: String },

    /// A folder a run or a save writes into, refused for what it is in now (`state`): being
    /// written by another run or save, or holding what the call was not told to replace.
    #[error("{path}: {msg}")]
    Folder {
        path: PathBuf,
        msg: String,
        state: FolderState,
    },

    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },

    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },

    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    #[error("unsupported: {0}")]
    Unsupported(String),

    #[error("invalid argument {flag}: {msg}")]
    Arg { flag: String, msg: String },

    /// A step on `rows` rows of `tokens` positions (prompt included) would need about `need`
    /// bytes of host memory for activations, and the machine has `available`
    /// (`Model::check_step_memory`); `batch` is the setting that sized the rows. The message
    /// names the API's fields; `flags` (the command line sets it) names its flags instead.
    /// `context` is what `Error::tagged` put before the message (the task), or empty.
    #[error("{}", step_memory(self))]
    StepMemory {
        rows: usize,
        tokens: usize,
        need: u128,
        available: u64,
        batch: BatchSetting,
        flags: bool,
        context: String,
    },

    #[error("{path}:{line}: {msg}")]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },

    #[error("device: {0}")]
    Device(String),

    #[error("kernel {kernel}: {msg}")]
    Kernel { kernel: String, msg: String },

    /// A loss, gradient or parameter stopped being finite (the trainer names the step).
    #[error("{0}")]
    NonFinite(String),

    /// A prompt's result is not a finite number (its label scores, or the logits a generated
    /// token is picked from): the model overflows on that prompt, through its values or the
    /// model's own numbers. `prompt` names it (its weights file, or "the prompt" for one never
    /// saved), `job` is its place among a mixed call's prompts (0 alone), `row` the call's row
    /// that overflowed, from 0 (the rows or texts handed in), `msg` what overflowed.
    #[error("{}: row {row} {msg}", prompt.display())]
    Overflow {
        prompt: PathBuf,
        job: usize,
        row: usize,
        msg: String,
    },

    /// A long call was stopped on request (Ctrl-C in Python, a stop flag in Rust): training
    /// after its checkpoint was written, the message saying the step and how to resume;
    /// encoding, evaluation, prediction and generation between their parts ([`GoOn`]).
    #[error("{0}")]
    Interrupted(String),
}

/// Why a folder was refused ([`Error::Folder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderState {
    /// another run or save holds its lock: it is being written now (Python: a
    /// `BlockingIOError`)
    InUse,
    /// it holds an earlier run's files or a saved prompt, and the call was not told to
    /// replace them (Python: a `FileExistsError`)
    Occupied,
}

/// The setting that sized the rows of a step refused for host memory ([`Error::StepMemory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSetting {
    /// training's steps: `cfg.batch_size` (--batch-size)
    Train,
    /// training's evaluations: `cfg.eval_batch_size` (--eval-batch-size)
    Eval,
    /// the `batch_size` argument of an evaluation or a prediction (--batch-size)
    Call,
    /// the rows given to one step (`Model::step`, `step_mixed`): one batch, as passed
    Rows,
}

impl BatchSetting {
    /// What an API user lowers (the batch setting and the prompt's length), or the flags.
    fn names(self, flags: bool) -> [&'static str; 3] {
        match (self, flags) {
            (BatchSetting::Train, false) => {
                ["cfg.batch_size", "the task's max_len", "cfg.prompt_len"]
            }
            (BatchSetting::Eval, false) => [
                "cfg.eval_batch_size",
                "the task's max_len",
                "cfg.prompt_len",
            ],
            (BatchSetting::Call, false) => {
                ["batch_size", "the task's max_len", "the prompt's rows"]
            }
            (BatchSetting::Eval, true) => ["--eval-batch-size", "--max-len", "--prompt-len"],
            (BatchSetting::Train, true) => ["--batch-size", "--max-len", "--prompt-len"],
            // eval and predict take the saved prompt's length: they have no --prompt-len
            (BatchSetting::Call, true) => ["--batch-size", "--max-len", "the prompt's rows"],
            // a step's batch is what the caller passed, whatever the surface
            (BatchSetting::Rows, _) => [
                "the number of rows passed (a step takes them as one batch)",
                "the task's max_len",
                "the prompt's rows",
            ],
        }
    }
}

/// What a step refused for host memory needs, without the advice.
fn step_memory_need(rows: usize, tokens: usize, need: u128, available: u64) -> String {
    let (need, room) = crate::memory::refusal_words(need, available);
    format!(
        "a step of {rows} rows x {tokens} positions would need about {need} for activations, \
         but {room}"
    )
}

/// `Error::StepMemory`'s message: the command line's names it as an invalid flag, as it did
/// when it was an `Arg` error.
fn step_memory(e: &Error) -> String {
    let Error::StepMemory {
        rows,
        tokens,
        need,
        available,
        batch,
        flags,
        context,
    } = e
    else {
        return String::new();
    };
    let [batch, max_len, prompt] = batch.names(*flags);
    let text = format!(
        "{context}{}: lower {batch}, {max_len} or {prompt}",
        step_memory_need(*rows, *tokens, *need, *available)
    );
    match flags {
        true => format!("invalid argument {batch}: {text}"),
        false => text,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Asked after each part of a long call (a chunk of rows encoded, a batch predicted, a token
/// generated) with the parts done so far: false ends the call with [`Error::Interrupted`]
/// (the API's `*_until` calls; Ctrl-C in Python).
pub type GoOn<'a> = &'a mut dyn FnMut(usize) -> bool;

/// Asks `go_on` after `done` of `total` parts (`what`: "rows", "tokens"). A stop ends the
/// call only while parts remain: one heard during the last part leaves the finished result
/// (it was thrown away).
pub fn ask(go_on: GoOn<'_>, done: usize, total: usize, what: &str) -> Result<()> {
    if !go_on(done) && done < total {
        return Err(Error::Interrupted(format!(
            "interrupted after {done} of {total} {what}: nothing is returned"
        )));
    }
    Ok(())
}

/// An I/O error and what was being done: the OS's error kept inside (its kind, its number),
/// where a message made of it lost them (hostile pass 24, F1).
#[derive(Debug)]
struct Doing {
    what: String,
    source: std::io::Error,
}

impl std::fmt::Display for Doing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Doing {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// `source` met while doing `what` to `path`: "PATH: WHAT: the OS's words", an
    /// `Error::Io` of the OS error's kind and number ([`Error::raw_os_error`]).
    pub fn io_doing(
        path: impl AsRef<Path>,
        what: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        let kind = source.kind();
        let what = what.into();
        Error::io(path, std::io::Error::new(kind, Doing { what, source }))
    }

    /// `io_doing`'s words changed by `reword` (the command line names its flags in them); any
    /// other error as it is.
    pub fn reword_doing(self, reword: impl FnOnce(&str) -> String) -> Error {
        match self {
            Error::Io { path, source } if source.get_ref().is_some_and(|r| r.is::<Doing>()) => {
                let kind = source.kind();
                match source.into_inner().map(|inner| inner.downcast::<Doing>()) {
                    Some(Ok(d)) => Error::io_doing(path, reword(&d.what), d.source),
                    // unreachable: the check above saw a `Doing`
                    _ => Error::io(path, std::io::Error::from(kind)),
                }
            }
            e => e,
        }
    }

    /// The OS's error number of an I/O error (through `io_doing`'s words too).
    pub fn raw_os_error(&self) -> Option<i32> {
        let Error::Io { source, .. } = self else {
            return None;
        };
        let doing = || {
            source
                .get_ref()?
                .downcast_ref::<Doing>()?
                .source
                .raw_os_error()
        };
        source.raw_os_error().or_else(doing)
    }

    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A folder being written by another run or save now.
    pub fn in_use(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Folder {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
            state: FolderState::InUse,
        }
    }

    /// A folder holding what the call was not told to replace.
    pub fn occupied(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Folder {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
            state: FolderState::Occupied,
        }
    }

    pub fn config(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }

    pub fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    pub fn arg(flag: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Arg {
            flag: flag.into(),
            msg: msg.into(),
        }
    }

    /// The error with `tag` (the prompt or task it came from) before its message; the flag,
    /// file or tensor it names stays. A missing file becomes a file error, to carry the tag.
    pub fn tagged(self, tag: &str) -> Self {
        let tag = |msg: String| format!("{tag}: {msg}");
        match self {
            Error::Arg { flag, msg } => Error::Arg {
                flag,
                msg: tag(msg),
            },
            Error::File { path, msg } => Error::File {
                path,
                msg: tag(msg),
            },
            Error::Config { path, msg } => Error::Config {
                path,
                msg: tag(msg),
            },
            Error::Folder { path, msg, state } => Error::Folder {
                path,
                msg: tag(msg),
                state,
            },
            Error::Io { path, source } => Error::File {
                path,
                msg: tag(source.to_string()),
            },
            Error::Tensor { name, msg } => Error::Tensor {
                name,
                msg: tag(msg),
            },
            Error::Unsupported(msg) => Error::Unsupported(tag(msg)),
            Error::NonFinite(msg) => Error::NonFinite(tag(msg)),
            // a multi-task run's memory refusal names its task, and stays itself (serve and
            // the command line read its fields)
            mut e @ Error::StepMemory { .. } => {
                if let Error::StepMemory { context, .. } = &mut e {
                    *context = tag(std::mem::take(context));
                }
                e
            }
            other => other,
        }
    }

    /// An `Overflow` of batch row `row` (the engine's; the batching says which of the call's
    /// rows and prompts it is, `Error::overflow_at`), not yet named after its prompt.
    pub(crate) fn overflow(row: usize, msg: impl Into<String>) -> Self {
        Error::Overflow {
            prompt: PathBuf::from("the prompt"),
            job: 0,
            row,
            msg: msg.into(),
        }
    }

    /// An `Overflow` said in the terms of the layer above: `place` maps its (row, job) to the
    /// rows and jobs there (a batch's row to the row it was made from). Other errors pass.
    pub(crate) fn overflow_at(self, place: impl FnOnce(usize, usize) -> (usize, usize)) -> Self {
        self.map_overflow(|row, job, msg| {
            let (row, job) = place(row, job);
            (row, job, msg)
        })
    }

    /// An `Overflow` with its (row, job, msg) mapped by `f`, its prompt kept: the one place
    /// that rebuilds one (the layers above renumber its row and job, the command line adds
    /// the data file's line to its message). Other errors pass.
    pub fn map_overflow(
        self,
        f: impl FnOnce(usize, usize, String) -> (usize, usize, String),
    ) -> Self {
        match self {
            Error::Overflow {
                prompt,
                job,
                row,
                msg,
            } => {
                let (row, job, msg) = f(row, job, msg);
                Error::Overflow {
                    prompt,
                    job,
                    row,
                    msg,
                }
            }
            e => e,
        }
    }

    /// A `StepMemory`'s need without the advice (serve names its own settings); None for
    /// any other error.
    pub fn step_memory_need(&self) -> Option<String> {
        match *self {
            Error::StepMemory {
                rows,
                tokens,
                need,
                available,
                ..
            } => Some(step_memory_need(rows, tokens, need, available)),
            _ => None,
        }
    }

    pub fn data(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.as_ref().to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

/// Checks a condition on sizes before any work is launched; returns a `Shape` error otherwise.
pub fn ensure_len(what: &str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::shape(what, expected, got))
    }
}

/// The sum of `terms` for a message, or, when it does not fit a usize, "more than usize::MAX
/// (a + b)": a saturated sum printed as "need 18446744073709551615 positions" read as a real
/// count.
pub(crate) fn sum_text(terms: &[usize]) -> String {
    match terms.iter().try_fold(0usize, |a, &t| a.checked_add(t)) {
        Some(sum) => sum.to_string(),
        None => {
            let parts: Vec<String> = terms.iter().map(usize::to_string).collect();
            format!("more than usize::MAX ({})", parts.join(" + "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BatchSetting, Error};

    /// A multi-task run's memory refusal, tagged with its task, keeps the task in both the
    /// API's words and the command line's, and stays a `StepMemory`.
    #[test]
    fn a_tagged_step_memory_names_its_task() {
        let e = Error::StepMemory {
            rows: 8,
            tokens: 40,
            need: 3_000_000_000,
            available: 1_000_000_000,
            batch: BatchSetting::Eval,
            flags: false,
            context: String::new(),
        }
        .tagged("task `b`");
        let need = "a step of 8 rows x 40 positions would need about 3.0 GB for activations, \
                    but the machine has 1.0 GB available";
        assert_eq!(
            e.to_string(),
            format!(
                "task `b`: {need}: lower cfg.eval_batch_size, the task's max_len or \
                 cfg.prompt_len"
            )
        );
        let Error::StepMemory { context, .. } = e else {
            panic!("not a StepMemory: {e}");
        };
        let cli = Error::StepMemory {
            rows: 8,
            tokens: 40,
            need: 3_000_000_000,
            available: 1_000_000_000,
            batch: BatchSetting::Call,
            flags: true,
            context,
        };
        assert_eq!(
            cli.to_string(),
            format!(
                "invalid argument --batch-size: task `b`: {need}: lower --batch-size, \
                 --max-len or the prompt's rows"
            )
        );
        assert_eq!(cli.step_memory_need().as_deref(), Some(need));
    }

    /// A sum that fits is printed; one past usize::MAX is named as such, with its operands.
    #[test]
    fn sums_past_usize_max_are_named_not_saturated() {
        assert_eq!(super::sum_text(&[3, 4, 5]), "12");
        assert_eq!(super::sum_text(&[usize::MAX, 0]), usize::MAX.to_string());
        assert_eq!(
            super::sum_text(&[usize::MAX, 2]),
            format!("more than usize::MAX ({} + 2)", usize::MAX)
        );
    }
}
