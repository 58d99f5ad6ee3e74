//! The whole training step: the encoder forward, the head the objective names (forward and
//! backward in one call), then the encoder backward. Without a capture the last layer runs
//! at the rows the head reads only (`tail.rs`).

use super::inputs::BertInputs;
use super::tail::{weighted_rows, HeadRows, Tail};
use super::weights::Bert;
use crate::backend::Backend;
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{Capture, Recompute};
use crate::models::heads::{self, Decoder};
use crate::models::objective::{Objective, StepOutput};

impl<B: Backend> Bert<B> {
    /// Full forward and backward of one batch against `objective`: the loss, d loss / d prompt
    /// added into `dprompt` (P, C), and the cls head's gradients. `capture` collects the hidden
    /// states and the head's logits for parity; with a capture the `mlm` head runs at every
    /// real-token position, so that its logits are (B, T, V) like PyTorch's, and without one
    /// only at the labelled positions.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        prompt: &B::Buf,
        inp: &BertInputs<B>,
        objective: &Objective<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
    ) -> Result<StepOutput<B>> {
        let (b, t, p) = (inp.b, inp.tokens, inp.p);
        let keep = capture.is_some();
        let tail = match keep {
            true => None,
            false => Tail::covering(be, &read_rows(objective, inp)?, b, p + t)?,
        };
        let cap = capture.as_deref_mut();
        let (hidden, acts) = self.encoder_fwd_at(be, acct, prompt, inp, recompute, cap, tail)?;
        // the head's rows as rows of the hidden states it gets
        let head_rows = HeadRows::new(acts.tail(), p + t);
        let at = |rows: &[i32]| head_rows.rows(rows);
        let (loss, logits, dhidden, head_grads) = match *objective {
            Objective::Mlm { labels } => {
                let (rows, targets) = heads::mlm_rows(labels, b, t, p, keep);
                let (rows, dec) = (at(&rows)?, Decoder::Vocab);
                let h = heads::mlm_head_fwd_bwd(be, self, &hidden, &rows, &targets, dec, keep)?;
                (h.loss, h.logits, h.dhidden, None)
            }
            Objective::Pet {
                mask_positions,
                verbalizer_ids,
                labels,
            } => {
                let rows = at(&heads::pet_rows(mask_positions, b, t, p)?)?;
                let dec = Decoder::Rows(verbalizer_ids);
                let h = heads::mlm_head_fwd_bwd(be, self, &hidden, &rows, labels, dec, keep)?;
                (h.loss, h.logits, h.dhidden, None)
            }
            Objective::Cls {
                head,
                pooling,
                labels,
            } => {
                let w = heads::pool_weights(&inp.mask, b, t, p, pooling);
                let (w, s) = (head_rows.pick("pool weights", w)?, head_rows.s());
                let pool_w = be.upload(be.act_dtype(), &w)?;
                let h = head.fwd_bwd(be, &hidden, &pool_w, labels, b, s)?;
                (h.loss, Some(h.logits), h.dhidden, Some(h.dhead))
            }
            Objective::Seq2Seq { .. } | Objective::Causal { .. } => {
                return Err(objective.unsupported("BERT"))
            }
        };
        if let (Some(cap), Some(logits)) = (capture, logits) {
            cap.insert("logits".into(), logits);
        }
        drop(hidden);
        self.encoder_bwd(be, acct, dprompt, dhidden, acts, inp)?;
        Ok(StepOutput { loss, head_grads })
    }
}

/// The flat rows of the (B, P+T) hidden states the objective's head reads: `mlm`'s labelled
/// positions, `pet`'s [MASK] positions, the rows the `cls` head pools with a weight.
fn read_rows<B: Backend>(objective: &Objective<B>, inp: &BertInputs<B>) -> Result<Vec<i32>> {
    let (b, t, p) = (inp.b, inp.tokens, inp.p);
    match *objective {
        Objective::Mlm { labels } => Ok(heads::mlm_rows(labels, b, t, p, false).0),
        Objective::Pet { mask_positions, .. } => heads::pet_rows(mask_positions, b, t, p),
        Objective::Cls { pooling, .. } => Ok(weighted_rows(&heads::pool_weights(
            &inp.mask, b, t, p, pooling,
        ))),
        Objective::Seq2Seq { .. } | Objective::Causal { .. } => Err(objective.unsupported("BERT")),
    }
}
