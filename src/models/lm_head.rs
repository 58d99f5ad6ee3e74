//! The language-model head and its cross-entropy at chosen rows of the final hidden states, in
//! row chunks, so that no (rows, V) float32 logits tensor larger than a chunk ever exists and
//! only the rows a loss reads are computed (T5's decoder rows, a causal LM's target rows).
//! Vocabularies of 128k–250k make the full logits the largest tensor of a step otherwise.

use crate::backend::{Backend, DType, IGNORE_INDEX};
use crate::error::{Error, Result};
use crate::models::common::{output, zeros};

/// Rows per LM-head chunk: `budget` bytes of float32 logits at a time.
pub fn lm_chunk_rows(budget: usize, v: usize, rows: usize) -> usize {
    (budget / (4 * v.max(1))).clamp(1, rows.max(1))
}

/// One part of a batch's LM loss (one job's): flat rows of the hidden states (N, C) and their
/// targets (-100 ignored).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossRows {
    pub rows: Vec<i32>,
    pub targets: Vec<i32>,
}

/// `rows` and their `targets` split by job: flat row r lies in batch row r / `width`, whose
/// job is `slot[r / width]` of `k` (a row of no job is dropped). In row order within a part.
pub fn split_by_job(
    rows: &[i32],
    targets: &[i32],
    width: usize,
    slot: &[i32],
    k: usize,
) -> Vec<LossRows> {
    let mut parts = vec![LossRows::default(); k];
    for (&r, &target) in rows.iter().zip(targets) {
        let job = slot.get(r as usize / width.max(1)).copied().unwrap_or(-1);
        if let Some(part) = usize::try_from(job).ok().and_then(|j| parts.get_mut(j)) {
            part.rows.push(r);
            part.targets.push(target);
        }
    }
    parts
}

/// The head: weight (V, C), the scale applied to the hidden rows before it (T5 v1.0's
/// d_model^-0.5; 1 elsewhere), and the chunk budget in bytes.
#[derive(Clone, Copy)]
pub(crate) struct LmHead<'a, B: Backend> {
    pub w: &'a B::Buf,
    pub c: usize,
    pub v: usize,
    pub scale: f64,
    pub budget: usize,
}

impl<B: Backend> LmHead<'_, B> {
    /// (M, C) = scale · hidden[idx]: the chunk's rows of hidden (N, C).
    fn gather(&self, be: &B, hidden: &B::Buf, idx: &B::Buf, m: usize) -> Result<B::Buf> {
        let mut h = output(be, be.act_dtype(), m * self.c)?;
        be.gather_rows(&mut h, hidden, idx, m, self.c)?;
        if self.scale != 1.0 {
            be.scale_inplace(&mut h, self.scale, m * self.c)?;
        }
        Ok(h)
    }

    /// (M, V) float32 logits at rows `rows` of hidden (N, C), in one chunk.
    pub fn logits(&self, be: &B, hidden: &B::Buf, rows: &[i32]) -> Result<B::Buf> {
        let m = rows.len();
        let h = self.gather(be, hidden, &be.upload_i32(rows)?, m)?;
        let mut logits = output(be, DType::F32, m * self.v)?;
        be.linear_fwd(&mut logits, &h, self.w, None, m, self.c, self.v)?;
        Ok(logits)
    }

    /// Mean-scaled cross-entropy at `rows` of hidden (N, C) against `targets` (-100 ignored),
    /// forward and backward in row chunks: returns the summed loss of the rows and
    /// d loss / d hidden (N, C) = grad_scale · d Σ loss, zero on the rows not read. With
    /// `capture`, the logits of every row are appended to it.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_fwd_bwd(
        &self,
        be: &B,
        hidden: &B::Buf,
        n: usize,
        rows: &[i32],
        targets: &[i32],
        grad_scale: f64,
        mut capture: Option<&mut Vec<f32>>,
    ) -> Result<(f64, B::Buf)> {
        crate::error::ensure_len("LM head targets", rows.len(), targets.len())?;
        let (c, v) = (self.c, self.v);
        let mut dhidden = zeros(be, be.act_dtype(), n * c)?;
        let chunk = lm_chunk_rows(self.budget, v, rows.len());
        let mut loss = 0.0f64;
        for (rows, targets) in rows.chunks(chunk).zip(targets.chunks(chunk)) {
            let m = rows.len();
            let idx = be.upload_i32(rows)?;
            let h = self.gather(be, hidden, &idx, m)?;
            let mut logits = output(be, DType::F32, m * v)?;
            be.linear_fwd(&mut logits, &h, self.w, None, m, c, v)?;
            if let Some(cap) = capture.as_deref_mut() {
                cap.extend(be.download(&logits)?);
            }
            let targets = be.upload_i32(targets)?;
            let mut losses = output(be, DType::F32, m)?;
            be.cross_entropy_fwd_bwd(&mut logits, &mut losses, &targets, m, v, grad_scale)?;
            loss += be.download_f64(&losses)?.iter().sum::<f64>();
            let mut dh = output(be, be.act_dtype(), m * c)?;
            be.linear_bwd(&mut dh, &logits, self.w, m, c, v, false)?;
            if self.scale != 1.0 {
                be.scale_inplace(&mut dh, self.scale, m * c)?;
            }
            be.scatter_rows_bwd(&mut dhidden, &dh, &idx, m, c)?;
        }
        Ok((loss, dhidden))
    }

    /// The mean cross-entropy over the targets != -100 at `rows` of hidden (N, C), forward
    /// and backward: returns the mean loss and d mean / d hidden (N, C).
    pub fn mean_loss_fwd_bwd(
        &self,
        be: &B,
        hidden: &B::Buf,
        n: usize,
        rows: &[i32],
        targets: &[i32],
        capture: Option<&mut Vec<f32>>,
    ) -> Result<(f64, B::Buf)> {
        let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let grad_scale = 1.0 / count.max(1) as f64;
        let (loss, dhidden) =
            self.loss_fwd_bwd(be, hidden, n, rows, targets, grad_scale, capture)?;
        Ok((loss * grad_scale, dhidden))
    }

    /// Each part's mean cross-entropy (`mean_loss_fwd_bwd` over its rows and targets), and
    /// d (Σ of the parts' means) / d hidden (N, C): several jobs' losses over one batch, each
    /// job's gradient that of its own mean.
    pub fn parts_loss_fwd_bwd(
        &self,
        be: &B,
        hidden: &B::Buf,
        n: usize,
        parts: &[LossRows],
    ) -> Result<(Vec<f64>, B::Buf)> {
        let mut dhidden = zeros(be, be.act_dtype(), n * self.c)?;
        let mut losses = Vec::with_capacity(parts.len());
        for part in parts {
            if part.rows.is_empty() {
                losses.push(0.0);
                continue;
            }
            let (loss, d) =
                self.mean_loss_fwd_bwd(be, hidden, n, &part.rows, &part.targets, None)?;
            be.add_inplace(&mut dhidden, &d, n * self.c)?;
            losses.push(loss);
        }
        Ok((losses, dhidden))
    }

    /// Forward only: each row's cross-entropy (0 where the target is -100), in the same
    /// chunks, for rank classification.
    pub fn row_losses(
        &self,
        be: &B,
        hidden: &B::Buf,
        rows: &[i32],
        targets: &[i32],
    ) -> Result<Vec<f32>> {
        crate::error::ensure_len("LM head targets", rows.len(), targets.len())?;
        let chunk = lm_chunk_rows(self.budget, self.v, rows.len());
        let mut out = Vec::with_capacity(rows.len());
        for (rows, targets) in rows.chunks(chunk).zip(targets.chunks(chunk)) {
            let m = rows.len();
            let mut logits = self.logits(be, hidden, rows)?;
            let targets = be.upload_i32(targets)?;
            let mut losses = output(be, DType::F32, m)?;
            be.cross_entropy_fwd_bwd(&mut logits, &mut losses, &targets, m, self.v, 1.0)?;
            out.extend(be.download(&losses)?);
        }
        Ok(out)
    }
}

/// Greedy decoding's pick: the index of the largest logit, the first on ties (0 when empty).
pub(crate) fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if xs.get(best).is_some_and(|&b| x > b) {
            best = i;
        }
    }
    best
}

/// Greedy decoding's pick for batch row `bi` at generation step `step` (from 0), from its
/// logits (V): the largest logit's index and its log-probability. Logits that are not all
/// finite pick nothing (argmax skipped the NaN and chose a token anyway): an
/// `Error::Overflow` of the row, naming the step.
pub(crate) fn pick(row: &[f32], bi: usize, step: usize) -> Result<(usize, f64)> {
    let nan = row.iter().filter(|x| x.is_nan()).count();
    let inf = row.iter().filter(|x| x.is_infinite()).count();
    if nan + inf > 0 {
        return Err(Error::overflow(
            bi,
            format!(
                "has logits that are not finite numbers at generation step {step} (from 0; \
                 {nan} NaN and {inf} infinite of {}): no token can be picked",
                row.len()
            ),
        ));
    }
    let best = argmax(row);
    Ok((best, log_softmax_at(row, best)))
}

/// log softmax(row)[i], in f64: the pick's log-probability.
pub(crate) fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    row.get(i).map_or(f64::NAN, |&x| x as f64 - lse)
}
