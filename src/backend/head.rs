//! The `cls` head stem: a small trainable linear classifier on pooled states (PEFT's SEQ_CLS
//! keeps its classifier trainable), resident on the device with its optimizer state, so a
//! training step moves only the logits (B, K) to the host. Reference src/cpu/head.rs, kernels
//! kernels/head.cu, launchers src/cuda/head.rs.
//!
//! Its weight and bias are trainable, so unlike every other op it has weight gradients; they
//! are float32 and tiny (K x C). The arithmetic follows one fixed order on every backend
//! (each dot product summed over C in order, the softmax in double precision), the order the
//! host head used before it moved to the device.

use crate::error::Result;

/// The row's max and Σ exp(x - max) in double precision: what the head's softmax, its
/// gradient (`cls_xent_grad`) and the loss reported on the host (`cls_loss`) all start from.
pub fn softmax_stats(row: &[f32]) -> (f32, f64) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = row.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>();
    (m, sum)
}

/// Mean cross-entropy of logits (B, K) against labels (B), in double precision: the head's
/// loss, computed on the host from the logits the step downloads.
pub fn cls_loss(logits: &[f32], labels: &[i32], k: usize) -> f64 {
    let mut loss = 0.0f64;
    for (row, &t) in logits.chunks(k).zip(labels) {
        let (m, sum) = softmax_stats(row);
        loss += sum.ln() - (row[t as usize] - m) as f64;
    }
    loss / labels.len().max(1) as f64
}

op_family! {
    /// The linear classifier, its softmax cross-entropy gradient and its backward.
    pub trait HeadOps {
        /// logits (B, K) F32 = bias (K) + pooled (B, C) · weightᵀ (K, C); weight and bias F32.
        fn cls_head_fwd(
            &self,
            logits: &mut Self::Buf,
            pooled: &Self::Buf,
            weight: &Self::Buf,
            bias: &Self::Buf,
            b: usize,
            k: usize,
            c: usize,
        ) -> Result<()>;
        /// dlogits (B, K) F32 = (softmax(logits) - onehot(labels)) / B: the gradient of the
        /// mean cross-entropy, which starts the backward pass. Overwrites, like
        /// `cross_entropy_fwd_bwd`: it is the loss's output, not an input gradient.
        fn cls_xent_grad(
            &self,
            dlogits: &mut Self::Buf,
            logits: &Self::Buf,
            labels: &Self::Buf,
            b: usize,
            k: usize,
        ) -> Result<()>;
        /// dweight (K, C) += dlogitsᵀ · pooled; dbias (K) += Σ_b dlogits; dpooled (B, C) +=
        /// dlogits · weight. With `accumulate` false all three are written whole instead, bit
        /// for bit what adding into zeros gives (the step's head gradients are its alone).
        fn cls_head_bwd(
            &self,
            dweight: &mut Self::Buf,
            dbias: &mut Self::Buf,
            dpooled: &mut Self::Buf,
            dlogits: &Self::Buf,
            pooled: &Self::Buf,
            weight: &Self::Buf,
            b: usize,
            k: usize,
            c: usize,
            accumulate: bool,
        ) -> Result<()>;
    }
}
