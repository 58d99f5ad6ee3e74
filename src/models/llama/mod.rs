//! The Llama family (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`): the
//! checkpoint's keys read into the decoder-only model of `models::decoder`, which runs it
//! (RMSNorm, RoPE with Llama 3's scaling, grouped-query attention, SwiGLU, tied or untied head).
//!
//! Mirrors transformers' `modeling_llama.py` (LlamaModel, LlamaDecoderLayer, LlamaAttention,
//! LlamaMLP); Qwen2 adds q/k/v biases, Mistral an explicit `head_dim`.

mod weights;

pub use weights::load;
