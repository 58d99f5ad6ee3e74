//! The frozen weights of a decoder-only language model, in the one shape BLOOM and the Llama
//! family share once loaded: per layer a norm, q/k/v/o projections, a norm and an MLP. The
//! checkpoint keys of each family are read by its own loader (`models::bloom`,
//! `models::llama`), which fills these structs.

use crate::backend::{Act, Backend, DType};
use crate::config::{DecoderConfig, Positions};
use crate::error::Result;
use crate::models::common::load;
use crate::weights::WeightSource;

/// A frozen linear layer: w (N, K), as checkpoints store it, and an optional bias (N).
pub struct Linear<B: Backend> {
    pub w: B::Buf,
    pub b: Option<B::Buf>,
}

/// LayerNorm (BLOOM: weight and bias) or RMSNorm (the Llama family: weight only).
pub enum Norm<B: Backend> {
    Layer { w: B::Buf, b: B::Buf },
    Rms { w: B::Buf },
}

/// The MLP: BLOOM's act(up x) → down, or the Llama family's gated act(gate x) · up x → down
/// (SwiGLU with SiLU).
pub enum Mlp<B: Backend> {
    Plain {
        up: Linear<B>,   // (I, C) dense_h_to_4h
        down: Linear<B>, // (C, I) dense_4h_to_h
    },
    Gated {
        gate: Linear<B>, // (I, C) gate_proj
        up: Linear<B>,   // (I, C) up_proj
        down: Linear<B>, // (C, I) down_proj
    },
}

pub struct DecoderLayerWeights<B: Backend> {
    pub attn_norm: Norm<B>, // (C) input_layernorm
    pub q: Linear<B>,       // (H·D, C)
    pub k: Linear<B>,       // (Hkv·D, C)
    pub v: Linear<B>,       // (Hkv·D, C)
    pub o: Linear<B>,       // (C, H·D) o_proj / dense
    pub mlp_norm: Norm<B>,  // (C) post_attention_layernorm
    pub mlp: Mlp<B>,
}

pub struct DecoderWeights<B: Backend> {
    pub embed: B::Buf, // (V, C) word_embeddings / embed_tokens
    /// BLOOM's word_embeddings_layernorm, applied to every input row (the prompt's too)
    pub embed_norm: Option<Norm<B>>,
    pub layers: Vec<DecoderLayerWeights<B>>,
    pub final_norm: Norm<B>, // (C) ln_f / norm
    /// (V, C) `lm_head.weight` when the checkpoint has one, else None: the head reads `embed`
    pub lm_head: Option<B::Buf>,
}

/// A decoder-only language model on a backend: BLOOM or the Llama family.
pub struct Decoder<B: Backend> {
    pub cfg: DecoderConfig,
    pub w: DecoderWeights<B>,
    /// RoPE's inverse frequencies (D/2) F32; None with ALiBi
    pub inv_freq: Option<B::Buf>,
    /// bytes of float32 logits the LM head may hold at once (it runs in row chunks)
    pub lm_chunk_bytes: usize,
}

impl<B: Backend> Decoder<B> {
    /// The model over loaded weights: computes RoPE's frequencies from the config.
    pub fn new(be: &B, cfg: DecoderConfig, w: DecoderWeights<B>) -> Result<Self> {
        let inv_freq = match &cfg.positions {
            Positions::Alibi => None,
            Positions::Rope {
                theta,
                llama3,
                linear_factor,
            } => {
                let mut inv = crate::backend::rope::rope_inv_freq(cfg.head_dim, *theta, *llama3);
                if let Some(f) = linear_factor {
                    inv.iter_mut().for_each(|x| *x /= *f as f32);
                }
                Some(be.upload(DType::F32, &inv)?)
            }
        };
        Ok(Decoder {
            cfg,
            w,
            inv_freq,
            lm_chunk_bytes: 64 << 20,
        })
    }

    /// The LM head's (V, C) weight.
    pub fn lm_head_weight(&self) -> &B::Buf {
        self.w.lm_head.as_ref().unwrap_or(&self.w.embed)
    }

    /// The MLP's activation.
    pub fn act(&self) -> Act {
        self.cfg.act
    }
}

impl<B: Backend> Linear<B> {
    /// `{name}.weight` (N, K) and, when `bias`, `{name}.bias` (N).
    pub fn load(
        be: &B,
        store: &dyn WeightSource,
        name: &str,
        n: usize,
        k: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Linear {
            w: load(be, store, &format!("{name}.weight"), &[n, k])?,
            b: bias
                .then(|| load(be, store, &format!("{name}.bias"), &[n]))
                .transpose()?,
        })
    }
}

impl<B: Backend> Norm<B> {
    /// `{name}.weight` and `{name}.bias` (C).
    pub fn load_layer(be: &B, store: &dyn WeightSource, name: &str, c: usize) -> Result<Self> {
        Ok(Norm::Layer {
            w: load(be, store, &format!("{name}.weight"), &[c])?,
            b: load(be, store, &format!("{name}.bias"), &[c])?,
        })
    }

    /// `{name}.weight` (C).
    pub fn load_rms(be: &B, store: &dyn WeightSource, name: &str, c: usize) -> Result<Self> {
        Ok(Norm::Rms {
            w: load(be, store, &format!("{name}.weight"), &[c])?,
        })
    }
}

/// The checkpoint's prefix: `prefix` when its keys carry it (`transformer.`, `model.`), else
/// none, decided by whether `probe` is stored under it.
pub fn key_prefix(store: &dyn WeightSource, prefix: &'static str, probe: &str) -> &'static str {
    if store.contains(&format!("{prefix}{probe}")) {
        prefix
    } else {
        ""
    }
}

/// `lm_head.weight` (V, C) when the checkpoint holds it; else None (the head reads the input
/// embeddings), or an error when the config says the two are not tied.
pub fn load_lm_head<B: Backend>(
    be: &B,
    store: &dyn WeightSource,
    cfg: &DecoderConfig,
) -> Result<Option<B::Buf>> {
    if store.contains("lm_head.weight") {
        return Ok(Some(load(
            be,
            store,
            "lm_head.weight",
            &[cfg.vocab_size, cfg.hidden_size],
        )?));
    }
    if !cfg.tie_word_embeddings {
        return Err(missing_untied_head("the input embeddings"));
    }
    Ok(None)
}

/// No `lm_head.weight` where config.json unties the head from `embeddings`: transformers would
/// start that head at random, so nothing would match its numbers; refused naming both.
pub(crate) fn missing_untied_head(embeddings: &str) -> crate::error::Error {
    crate::error::Error::tensor(
        "lm_head.weight",
        format!(
            "missing, and config.json says tie_word_embeddings: false (the head is not \
             {embeddings})"
        ),
    )
}
