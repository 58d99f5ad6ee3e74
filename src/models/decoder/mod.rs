//! Decoder-only language models, written once against `B: Backend` for BLOOM and the Llama
//! family, whose checkpoints `models::bloom` and `models::llama` read into these structs.
//!
//! Prompt placement (PEFT's CAUSAL_LM): the P prompt rows come before the first token of
//! every row, at positions 0..P-1, real tokens at P..P+T-1, key mask `cat(ones(P), mask)`,
//! and P labels of -100 in front of the labels, so that the last prompt row predicts label 0.
//! Training batches are right-padded. Generation (`generate.rs`) pads on the left and puts
//! the prompt directly before each row's first real token.
//!
//! Sizes: B batch, S = P + T positions, C hidden, H heads, Hkv key/value heads, D head dim,
//! I MLP width, V vocab.

mod generate;
mod generate_prefix;
mod inputs;
mod layer;
mod rank;
mod stack;
mod step;
mod weights;

pub use generate::{GenerateOptions, Generated, MixedGeneration, PromptPlacement};
pub use inputs::{causal_targets, DecoderInputs};
pub use layer::{DecoderLayerActs, NormActs};
pub use rank::RankPrefill;
pub use stack::DecoderActs;
pub(crate) use weights::missing_untied_head;
pub use weights::{
    key_prefix, load_lm_head, Decoder, DecoderLayerWeights, DecoderWeights, Linear, Mlp, Norm,
};
