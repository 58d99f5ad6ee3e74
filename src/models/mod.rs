//! The models, each written once against the `Backend` trait: forward one op per line, and
//! backward the same ops in exact reverse order. [`Model`] holds either; its `train_step` is
//! the one training step that training, `parity` and `bench` all run.
//!
//! This file only declares and re-exports: the files below import the file that defines a
//! name, never this one, so that no import runs in a circle.

pub mod bert;
pub mod bloom;
pub mod cls_head;
mod common;
pub mod decoder;
pub mod heads;
pub mod llama;
pub mod lm_head;
mod model;
mod objective;
pub mod prefix;
mod prefix_inputs;
pub mod t5;

pub use common::{Capture, MixedPrompts, PromptRows, Recompute, TokenBatch, MAX_TOKENS};
pub use model::{step_bytes_of, Model, Tuning, LOAD_SLACK};
pub use objective::{Objective, StepOutput};
pub use prefix::{Placement, PrefixSpec};
