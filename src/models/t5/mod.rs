//! T5 (pre-RMS-norm encoder-decoder) with the prompt in front of the encoder input only, as
//! PEFT feeds it. Mirrors transformers' `modeling_t5.py`: no attention scaling, the relative
//! position bias of block 0 shared by every block of a stack (bidirectional in the encoder,
//! causal in the decoder, none in cross-attention), gated or plain feed-forward, and the
//! decoder output scaled by d_model^-0.5 when the config says so.
//! Sizes: B batch, T = P + encoder tokens, L decoder length, C = d_model, A = num_heads·d_kv
//! (the inner width), F = d_ff, V vocab.

mod block;
mod cross;
mod generate;
mod inputs;
mod lm_head;
mod stack;
mod step;
mod weights;

pub use block::{AttnActs, T5BlockActs};
pub use cross::{fold_pays, CrossActs, CrossFold};
pub use generate::{T5Cache, FIRST_STEPS};
pub use inputs::{shift_right, upload_inputs, T5Inputs};
pub use lm_head::lm_chunk_rows;
pub use stack::StackActs;
pub use weights::{T5AttnWeights, T5BlockWeights, T5FfnWeights, T5Stack, T5};
