//! softprompt: prompt tuning for large frozen BERT and T5 models.
//!
//! Only the P prompt rows in front of the input embeddings are trained; every weight of the
//! model stays frozen. The engine exploits that: backward computes input gradients only,
//! linear layers save nothing, attention stores no T×T matrix, and heads compute only the
//! rows their loss reads. See `shared/docs/design.md` for the architecture.

pub mod backend;
pub mod bench;
pub mod bench_decoder;
pub mod ceiling;
pub mod closeness;
pub mod config;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod memory;
pub mod models;
pub mod nvtx;
pub mod parity;
pub mod prompt;
pub mod reference;
pub mod rng;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use backend::{Backend, DType, Storage};
pub use cpu::CpuBackend;
pub use error::{Error, Result};
