//! BERT (post-LN encoder) with the prompt rows in front of the input embeddings.
//!
//! Mirrors transformers' `modeling_bert.py` (BertEmbeddings, BertLayer, BertLMPredictionHead)
//! with PEFT's prompt placement: the P prompt rows take positions 0..P-1 and token type 0.
//! Sizes: B batch, T = P + tokens, C hidden, H heads, D = C/H, I intermediate, V vocab.

mod encoder;
mod inputs;
mod packed;
mod step;
mod tail;
mod weights;

pub use encoder::{BertActs, BertLayerActs};
pub use inputs::{check_positions, upload_inputs, upload_rows, BertInputs};
pub use tail::{weighted_rows, HeadRows, Tail};
pub use weights::{Bert, BertLayerWeights, BertMlmHead, BertWeights};
