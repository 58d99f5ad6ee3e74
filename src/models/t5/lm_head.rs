//! The LM head and its cross-entropy, in row chunks so that no (B·L, V) float32 logits tensor
//! ever exists (models/lm_head.rs).

use super::weights::T5;
use crate::backend::Backend;
use crate::error::Result;
use crate::models::common::Capture;
use crate::models::lm_head::LmHead;

impl<B: Backend> T5<B> {
    /// The head: `lm_head.weight` or `shared`, with v1.0's d_model^-0.5 output scaling.
    pub(crate) fn head(&self) -> LmHead<'_, B> {
        let c = self.cfg.d_model;
        LmHead {
            w: self.lm_head_weight(),
            c,
            v: self.cfg.vocab_size,
            scale: if self.cfg.scale_decoder_outputs {
                (c as f64).powf(-0.5)
            } else {
                1.0
            },
            budget: self.lm_chunk_bytes,
        }
    }

    /// The LM head and mean cross-entropy over labels != -100, in row chunks so that no
    /// (B·L, V) float32 logits tensor ever exists. Returns the loss and d loss / d dec_out.
    pub fn lm_loss_fwd_bwd(
        &self,
        be: &B,
        dec_out: &B::Buf,
        labels: &[i32],
        rows: usize,
        capture: Option<&mut Capture>,
    ) -> Result<(f64, B::Buf)> {
        let all: Vec<i32> = (0..rows as i32).collect();
        let mut logits = capture.is_some().then(Vec::new);
        let (loss, dy) =
            (self.head()).mean_loss_fwd_bwd(be, dec_out, rows, &all, labels, logits.as_mut())?;
        if let (Some(cap), Some(logits)) = (capture, logits) {
            cap.insert("logits".into(), logits);
        }
        Ok((loss, dy))
    }

    /// Forward only, for rank classification: each row's cross-entropy (rows), 0 where the
    /// label is -100, in the same row chunks as `lm_loss_fwd_bwd`. dec_out is (rows, C).
    pub fn lm_row_losses(
        &self,
        be: &B,
        dec_out: &B::Buf,
        labels: &[i32],
        rows: usize,
    ) -> Result<Vec<f32>> {
        crate::error::ensure_len("labels (rows)", rows, labels.len())?;
        let all: Vec<i32> = (0..rows as i32).collect();
        self.head().row_losses(be, dec_out, &all, labels)
    }

    /// Forward only, for greedy decoding: (M, V) float32 logits at the decoder rows `idx`.
    pub fn lm_logits(&self, be: &B, dec_out: &B::Buf, idx: &[i32]) -> Result<Vec<f32>> {
        be.download(&self.head().logits(be, dec_out, idx)?)
    }
}

pub use crate::models::lm_head::lm_chunk_rows;
