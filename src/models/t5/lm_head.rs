//! The LM head and its cross-entropy, in row chunks so that no (B·L, V) float32 logits tensor
//! ever exists.

use super::weights::T5;
use crate::backend::IGNORE_INDEX;
use crate::backend::{Backend, DType};
use crate::error::Result;
use crate::models::common::{zeros, Capture};

impl<B: Backend> T5<B> {
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
        let (c, v) = (self.cfg.d_model, self.cfg.vocab_size);
        let act = be.act_dtype();
        let scale = if self.cfg.scale_decoder_outputs {
            (c as f64).powf(-0.5)
        } else {
            1.0
        };
        let count = labels.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let grad_scale = 1.0 / count.max(1) as f64;
        let mut y = zeros(be, act, rows * c)?;
        be.copy(&mut y, dec_out)?;
        be.scale_inplace(&mut y, scale, rows * c)?;
        let mut dy = zeros(be, act, rows * c)?;
        let chunk = lm_chunk_rows(self.lm_chunk_bytes, v, rows);
        let mut loss = 0.0f64;
        let mut all_logits = Vec::new();
        for start in (0..rows).step_by(chunk) {
            let m = chunk.min(rows - start);
            let idx: Vec<i32> = (start..start + m).map(|r| r as i32).collect();
            let idx = be.upload_i32(&idx)?;
            let mut h = zeros(be, act, m * c)?;
            be.gather_rows(&mut h, &y, &idx, m, c)?;
            let mut logits = zeros(be, DType::F32, m * v)?;
            be.linear_fwd(&mut logits, &h, self.lm_head_weight(), None, m, c, v)?;
            if capture.is_some() {
                all_logits.extend(be.download(&logits)?);
            }
            let targets = be.upload_i32(&labels[start..start + m])?;
            let mut losses = zeros(be, DType::F32, m)?;
            be.cross_entropy_fwd_bwd(&mut logits, &mut losses, &targets, m, v, grad_scale)?;
            loss += be.download_f64(&losses)?.iter().sum::<f64>();
            let mut dh = zeros(be, act, m * c)?;
            be.linear_bwd(&mut dh, &logits, self.lm_head_weight(), m, c, v)?;
            be.scatter_rows_bwd(&mut dy, &dh, &idx, m, c)?;
        }
        be.scale_inplace(&mut dy, scale, rows * c)?;
        if let Some(cap) = capture {
            cap.insert("logits".into(), all_logits);
        }
        Ok((loss * grad_scale, dy))
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
        let mut out = Vec::with_capacity(rows);
        for start in (0..rows).step_by(lm_chunk_rows(
            self.lm_chunk_bytes,
            self.cfg.vocab_size,
            rows,
        )) {
            let m = lm_chunk_rows(self.lm_chunk_bytes, self.cfg.vocab_size, rows).min(rows - start);
            let idx: Vec<i32> = (start..start + m).map(|r| r as i32).collect();
            let mut logits = self.lm_logits_buf(be, dec_out, &idx)?;
            let targets = be.upload_i32(&labels[start..start + m])?;
            let mut losses = zeros(be, DType::F32, m)?;
            be.cross_entropy_fwd_bwd(
                &mut logits,
                &mut losses,
                &targets,
                m,
                self.cfg.vocab_size,
                1.0,
            )?;
            out.extend(be.download(&losses)?);
        }
        Ok(out)
    }

    /// Forward only, for greedy decoding: (M, V) float32 logits at the decoder rows `idx`.
    pub fn lm_logits(&self, be: &B, dec_out: &B::Buf, idx: &[i32]) -> Result<Vec<f32>> {
        be.download(&self.lm_logits_buf(be, dec_out, idx)?)
    }

    /// (M, V) logits of the (scaled) decoder rows `idx` of dec_out.
    fn lm_logits_buf(&self, be: &B, dec_out: &B::Buf, idx: &[i32]) -> Result<B::Buf> {
        let (c, v, m) = (self.cfg.d_model, self.cfg.vocab_size, idx.len());
        let scale = if self.cfg.scale_decoder_outputs {
            (c as f64).powf(-0.5)
        } else {
            1.0
        };
        let idx = be.upload_i32(idx)?;
        let mut h = zeros(be, be.act_dtype(), m * c)?;
        be.gather_rows(&mut h, dec_out, &idx, m, c)?;
        be.scale_inplace(&mut h, scale, m * c)?;
        let mut logits = zeros(be, DType::F32, m * v)?;
        be.linear_fwd(&mut logits, &h, self.lm_head_weight(), None, m, c, v)?;
        Ok(logits)
    }
}

/// Rows of decoder output per LM-head chunk: `budget` bytes of float32 logits at a time.
pub fn lm_chunk_rows(budget: usize, v: usize, rows: usize) -> usize {
    (budget / (4 * v.max(1))).clamp(1, rows.max(1))
}
