//! Rotary position embeddings (RoPE, the Llama family): reference src/cpu/rope.rs, kernels
//! kernels/rope.cu, launchers src/cuda/rope.rs.
//!
//! Both ops rotate in place, like `scale_inplace`: the frozen model's q and k are rotated
//! where the projection wrote them, and backward rotates their gradient back (the rotation's
//! transpose) in the same buffer. The angles are computed inside the op from the positions
//! and the frequencies (no cos/sin table): for pair i < D/2 at position p, f = p · inv_freq[i]
//! in float32, as transformers computes it, and the pair is (x_i, x_{i+D/2}) (`rotate_half`).

use crate::error::{Error, Result};

/// The inverse frequencies (D/2) of a rotary embedding over `head_dim`, as transformers
/// computes them in float32: 1 / theta^(2i / D), then, for `rope_type: "llama3"`, Llama 3.1's
/// smoothing of the low frequencies (`factor`, `low_freq_factor`, `high_freq_factor`,
/// `original_max_position_embeddings`).
pub fn rope_inv_freq(head_dim: usize, theta: f64, llama3: Option<Llama3Scaling>) -> Vec<f32> {
    let theta = theta as f32;
    (0..head_dim / 2)
        .map(|i| {
            let inv = 1.0f32 / theta.powf((2 * i) as f32 / head_dim as f32);
            match llama3 {
                None => inv,
                Some(s) => s.apply(inv),
            }
        })
        .collect()
}

/// `rope_scaling` of type `llama3` (Llama 3.1, 3.2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

impl Llama3Scaling {
    /// transformers' `_compute_llama3_parameters` for one frequency, in float32.
    fn apply(&self, inv: f32) -> f32 {
        let (factor, lo, hi) = (
            self.factor as f32,
            self.low_freq_factor as f32,
            self.high_freq_factor as f32,
        );
        let old = self.original_max_position_embeddings as f32;
        let wavelen = 2.0 * std::f32::consts::PI / inv;
        let scaled = if wavelen > old / lo {
            inv / factor
        } else {
            inv
        };
        if wavelen < old / hi || wavelen > old / lo {
            return scaled;
        }
        let smooth = (old / wavelen - lo) / (hi - lo);
        (1.0 - smooth) * scaled / factor + smooth * scaled
    }
}

/// Checks a rotary embedding's sizes: D even, inv_freq (D/2), positions (B, T).
pub fn check_rope(head_dim: usize) -> Result<()> {
    if !head_dim.is_multiple_of(2) {
        return Err(Error::shape("rope head dim", "an even number", head_dim));
    }
    Ok(())
}

op_family! {
    /// Rotary position embeddings, in place.
    pub trait RopeOps {
        /// x (B, T, H, D) rotated in place: for i < D/2 and f = pos[b, t] · inv_freq[i],
        /// (x_i, x_{i+D/2}) ← (x_i cos f − x_{i+D/2} sin f, x_{i+D/2} cos f + x_i sin f).
        /// inv_freq (D/2) F32, pos (B, T) I32.
        fn rope_fwd(
            &self,
            x: &mut Self::Buf,
            inv_freq: &Self::Buf,
            pos: &Self::Buf,
            b: usize,
            t: usize,
            h: usize,
            d: usize,
        ) -> Result<()>;
        /// dx (B, T, H, D) rotated back in place (the transpose of rope_fwd's rotation): the
        /// gradient before the rotation from the gradient after it.
        fn rope_bwd(
            &self,
            dx: &mut Self::Buf,
            inv_freq: &Self::Buf,
            pos: &Self::Buf,
            b: usize,
            t: usize,
            h: usize,
            d: usize,
        ) -> Result<()>;
    }
}
