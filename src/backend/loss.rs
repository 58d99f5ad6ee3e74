//! Loss stem: softmax cross-entropy, forward and backward fused in one pass over the logits,
//! writing the gradient in place so a (rows, V) chunk is the only logits storage at any time.
//! Reference src/cpu/loss.rs, kernels kernels/loss.cu, launchers src/cuda/loss.rs.

use crate::error::{Error, Result};

/// The label value that contributes no loss, as in PyTorch.
pub const IGNORE_INDEX: i32 = -100;

/// Checks that every target is a class of `v` or the ignore index, naming the first that is not.
pub fn check_targets(targets: &[i32], v: usize) -> Result<()> {
    match targets
        .iter()
        .position(|&t| t != IGNORE_INDEX && (t < 0 || t as usize >= v))
    {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            "labels",
            format!(
                "label {} at index {i} is outside 0..{v} (and is not the ignore index -100)",
                targets[i]
            ),
        )),
    }
}

op_family! {
    /// Cross-entropy over rows of logits.
    pub trait LossOps {
        /// In: `logits` (M, V) F32. Out: the same buffer holds d loss / d logits = (softmax -
        /// onehot) * grad_scale; `losses` (M) F32 holds each row's cross-entropy (0 for rows
        /// whose target is IGNORE_INDEX, whose gradient row is 0). Updates in place.
        fn cross_entropy_fwd_bwd(
            &self,
            logits: &mut Self::Buf,
            losses: &mut Self::Buf,
            targets: &Self::Buf,
            m: usize,
            v: usize,
            grad_scale: f64,
        ) -> Result<()>;
    }
}
