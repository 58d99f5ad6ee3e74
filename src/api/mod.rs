//! The library's surface: a model on a device picked at run time, tasks resolved as the
//! command line resolves them, prompts on the host, one step or a whole run, evaluation,
//! prediction, generation, PEFT adapters and parity. The command line is a thin layer over
//! it; the generic engine underneath is in `crate::internals`.

// every public item of the API is documented
#![deny(missing_docs)]

mod checks;
mod mixed;
mod model;
mod parity;
mod peft_base;
mod progress;
mod prompt;
mod save;
mod task;
mod train;
mod train_multi;
mod until;

pub use model::{Generation, Model, StepOutput};
pub use parity::parity;
pub use progress::ConsoleProgress;
pub use prompt::Prompt;
pub use save::SaveOptions;
pub use task::{Task, TaskOptions};
pub use train::Splits;
pub use train_multi::{MultiTask, TaskResult};
