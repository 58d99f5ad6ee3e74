//! `Task`, and the prompt-init flags (`init`, `init_text`, `init_std`, `init_vocab_first`)
//! as the command line reads them.

use crate::kw::Kw;
use pyo3::prelude::*;
use softprompt::{PromptInit, Task};

/// A task resolved for a model (`Model.task`, `Model.task_for`): what step, train, evaluate,
/// predict and generate run.
#[pyclass(name = "Task", module = "softprompt", frozen, weakref)]
pub struct PyTask {
    pub inner: Task,
    /// the prompt_len `Model.task` was given (its max_len leaves room for that many rows):
    /// `Model.new_prompt`'s default, and a different one there is refused
    pub prompt_len: Option<usize>,
}

#[pymethods]
impl PyTask {
    /// pet, cls, seq2seq or causal.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().name()
    }

    /// The labels in score order.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.inner.labels().to_vec()
    }

    /// The prompt length the task was made for (`Model.task`'s prompt_len, when given),
    /// else None.
    #[getter]
    fn prompt_len(&self) -> Option<usize> {
        self.prompt_len
    }

    /// The text around the input.
    #[getter]
    fn template(&self) -> String {
        self.inner.spec().template.clone()
    }

    /// Tokens per row, special tokens included.
    #[getter]
    fn max_len(&self) -> usize {
        self.inner.spec().max_len
    }

    /// The words (pet) or target texts (seq2seq, causal) of the labels.
    #[getter]
    fn label_words(&self) -> Vec<String> {
        self.inner.spec().label_words.clone()
    }

    /// causal: what follows each target (eos, pad or none).
    #[getter]
    fn target_end(&self) -> &'static str {
        self.inner.spec().target_end.name()
    }

    /// Whether the task is causal under target_end "eos" (the default) on a model whose
    /// config.json names no eos_token_id: its targets then end with no token, as under
    /// target_end "none", and generation stops at its length bound (or at a stop token of
    /// generation_config.json, which no target teaches). Allowed (PEFT
    /// scores such targets the same way) and silent here; the command line warns of it, and
    /// target_end="none" says so on purpose.
    #[getter]
    fn eos_missing(&self) -> bool {
        self.inner.eos_missing()
    }

    fn __repr__(&self) -> String {
        format!(
            "Task({}, template {:?}, labels {:?})",
            self.inner.kind().name(),
            self.inner.spec().template,
            self.inner.labels()
        )
    }
}

/// `init` (random, text, sample-vocab, class-labels) and its companions, with the command
/// line's defaults.
pub fn prompt_init(kw: &mut Kw<'_>) -> PyResult<PromptInit> {
    let init: String = kw.get("init", "random".to_string())?;
    let text: Option<String> = kw.take("init_text")?;
    let std: Option<f64> = kw.take("init_std")?;
    let from_first: Option<usize> = kw.uint("init_vocab_first")?;
    PromptInit::from_flags(&init, text, std, from_first).map_err(crate::errors::to_py)
}
