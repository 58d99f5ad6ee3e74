//! The engine's machinery, for the command line, the tests and the benchmarks, and for users
//! who need a piece the API at the crate root does not offer: backends and kernels, the model
//! stacks, the file formats, the training loop's parts, benchmarks and parity. Nothing here is
//! part of the stable surface; `softprompt::prelude` is.
//!
//! Inside the crate these modules are also reachable at its root (`crate::backend`), which is
//! where the engine's own code names them.

#[path = "backend/mod.rs"]
pub mod backend;
#[path = "bench.rs"]
pub mod bench;
#[path = "bench_check.rs"]
pub mod bench_check;
#[path = "bench_decoder.rs"]
pub mod bench_decoder;
#[path = "bench_method.rs"]
pub mod bench_method;
#[path = "ceiling.rs"]
pub mod ceiling;
#[path = "closeness.rs"]
pub mod closeness;
#[path = "config.rs"]
pub mod config;
#[path = "cpu/mod.rs"]
pub mod cpu;
#[path = "cuda/mod.rs"]
pub mod cuda;
#[path = "device.rs"]
pub mod device;
#[path = "env.rs"]
pub mod env;
#[path = "error.rs"]
pub mod error;
#[path = "fsutil.rs"]
pub mod fsutil;
#[path = "memory.rs"]
pub mod memory;
#[path = "models/mod.rs"]
pub mod models;
#[path = "nvtx.rs"]
pub mod nvtx;
#[path = "parity.rs"]
pub mod parity;
#[path = "prompt.rs"]
pub mod prompt;
#[path = "prompt_encoder/mod.rs"]
pub mod prompt_encoder;
#[path = "reference.rs"]
pub mod reference;
#[path = "rng.rs"]
pub mod rng;
#[path = "stdout.rs"]
pub mod stdout;
#[path = "tokenizer.rs"]
pub mod tokenizer;
#[path = "train/mod.rs"]
pub mod train;
#[path = "weights.rs"]
pub mod weights;

pub use backend::{Backend, DType, Storage};
pub use cpu::CpuBackend;

/// (kernel name, launches so far) of every kernel on `model`'s device, what a test counts to
/// tell one pass of a model from two (tests/mixed_one_pass.rs); empty on the CPU, which
/// launches none.
pub fn kernel_launches(model: &crate::Model) -> Vec<(&'static str, usize)> {
    model.kernel_launches()
}
