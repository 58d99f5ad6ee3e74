//! BLOOM (`BloomForCausalLM`): the checkpoint's keys read into the decoder-only model of
//! `models::decoder`, which runs it (LayerNorm, ALiBi, tanh GELU, tied head).
//!
//! Mirrors transformers' `modeling_bloom.py` (BloomModel, BloomBlock, BloomAttention): the
//! embedding LayerNorm over every input row (the prompt's too), the fused `query_key_value`
//! in BLOOM's interleaved layout ((H, 3, D) rows: q, k, v of head 0, then of head 1, ...),
//! split into q, k and v at load, and the residual from each block's input
//! (`apply_residual_connection_post_layernorm: false`).

mod weights;

pub use weights::load;
