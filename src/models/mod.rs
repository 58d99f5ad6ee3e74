//! The models, each written once against the `Backend` trait: forward one op per line, and
//! backward the same ops in exact reverse order.
//!
//! This file only declares and re-exports: the files below import the file that defines a
//! name, never this one, so that no import runs in a circle.

pub mod bert;
mod common;
pub mod heads;
pub mod t5;

pub use common::{Capture, Recompute, TokenBatch};
