//! softprompt: prompt tuning for large frozen models (BERT, T5, and the decoder-only BLOOM,
//! Llama, Mistral and Qwen2).
//!
//! Only the P prompt rows in front of the input embeddings are trained; every weight of the
//! model stays frozen. The engine exploits that: backward computes input gradients only,
//! linear layers save nothing, attention stores no T×T matrix, and heads compute only the
//! rows their loss reads.
//!
//! `use softprompt::prelude::*;` brings the whole API. A custom training loop on the
//! committed test model (a tiny BERT with 64 positions and width 48):
//!
//! ```
//! use softprompt::prelude::*;
//!
//! let model = Model::open("tests/fixtures/bert_mlm", Device::Cpu)?;
//! let data = Dataset::from_pairs("reviews", [
//!     ("The movie was great.", Some("positive")),
//!     ("Terrible plot.", Some("negative")),
//! ]);
//! let opts = TaskOptions {
//!     verbalizer: Some(TaskOptions::verbalizer_from_str("negative=bad,positive=great")?),
//!     ..TaskOptions::default()
//! };
//! let task = model.task(&opts, Some(&data), 4)?; // pet: "{text} It was [MASK]."
//! let mut prompt = model.new_prompt(&task, 4, &PromptInit::Text("great movie".into()), 0)?;
//! let rows = model.encode(&task, &data)?.rows;
//!
//! let first = model.step(&task, &prompt, &rows)?.loss;
//! for _ in 0..5 {
//!     let out = model.step(&task, &prompt, &rows)?;
//!     for (p, g) in prompt.values_mut().iter_mut().zip(&out.prompt_grad) {
//!         *p -= 0.5 * g; // plain gradient descent
//!     }
//! }
//! assert!(model.step(&task, &prompt, &rows)?.loss < first);
//!
//! // save in PEFT's layout (with task.json), load, and score the same
//! let dir = std::env::temp_dir().join(format!("sp_doc_api_{}", std::process::id()));
//! model.save_prompt(&dir, &prompt, &task, SaveOptions::default())?;
//! let back = Prompt::load(&dir)?;
//! let task2 = model.task_for(&back, &TaskOptions::default(), None)?;
//! let enc = model.encode(&task2, &data)?;
//! let (metrics, preds) = model.evaluate(&task2, &back, &enc, 8)?;
//! assert_eq!(preds, model.predict(&task, &prompt, &enc, 8)?);
//! assert_eq!(metrics.examples, 2);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), softprompt::Error>(())
//! ```
//!
//! The whole run as `softprompt train` does it is [`Model::train`]; `examples/` shows both.
//! Everything else (backends and kernels, model stacks, formats, benchmarks) is in
//! [`internals`], which makes no promise of stability.

/// `eprintln!` that a closed or full stderr does not turn into a panic (`stdout::write_stderr`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::internals::stdout::write_stderr(format_args!($($arg)*))
    };
}

mod api;
pub mod internals;

// the engine's modules at the crate root, where its own code names them
pub(crate) use internals::Backend;
pub(crate) use internals::{
    backend, bench, bench_check, bench_decoder, bench_method, closeness, config, cpu, cuda, device,
    env, error, fsutil, memory, models, nvtx, parity, prompt, prompt_encoder, reference, rng,
    tokenizer, train, weights,
};

pub use api::{
    parity, ConsoleProgress, Generation, Model, MultiTask, Prompt, SaveOptions, Splits, StepOutput,
    Task, TaskOptions, TaskResult,
};
pub use backend::{DeviceKind as Device, Precision};
pub use error::{BatchSetting, Error, FolderState, Result};
pub use fsutil::is_folder_name;
pub use models::decoder::PromptPlacement;
pub use models::heads::Pooling;
pub use models::Placement;
pub use models::Recompute;
pub use prompt::PromptInit;
pub use prompt_encoder::EncoderKind;
pub use train::data::{DataSpec, Dataset, Example, Format, Quoting};
pub use train::encode::{Encoded, Row};
pub use train::optim::{OptimConfig, OptimKind, Schedule, ScheduleKind};
pub use train::outdir::{folder_writer, hidden_run_file};
pub use train::ptuning::{Method, PTuning, PrefixTuning};
pub use train::spec::{Decode, TargetEnd, TaskKind, TaskSpec};
pub use train::{EvalMetrics, Event, Prediction, StepInfo, Summary, TrainConfig};

/// Everything a program using softprompt needs: `use softprompt::prelude::*;`.
pub mod prelude {
    pub use crate::{
        parity, ConsoleProgress, DataSpec, Dataset, Decode, Device, Encoded, EncoderKind, Error,
        EvalMetrics, Event, Example, Format, Generation, Method, Model, MultiTask, OptimConfig,
        OptimKind, PTuning, Placement, Pooling, Precision, Prediction, PrefixTuning, Prompt,
        PromptInit, PromptPlacement, Quoting, Recompute, Result, Row, SaveOptions, Schedule,
        ScheduleKind, Splits, StepInfo, StepOutput, Summary, TargetEnd, Task, TaskKind,
        TaskOptions, TaskSpec, TrainConfig,
    };
}
