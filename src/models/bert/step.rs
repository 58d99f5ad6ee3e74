//! The whole training step: the encoder forward, the head the objective names (forward and
//! backward in one call), then the encoder backward.

use super::inputs::BertInputs;
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
        let (hidden, acts) =
            self.encoder_fwd(be, acct, prompt, inp, recompute, capture.as_deref_mut())?;
        let keep = capture.is_some();
        let (loss, logits, dhidden, head_grads) = match *objective {
            Objective::Mlm { labels } => {
                let (rows, targets) = heads::mlm_rows(labels, b, t, p, keep);
                let h = heads::mlm_head_fwd_bwd(
                    be,
                    self,
                    &hidden,
                    &rows,
                    &targets,
                    Decoder::Vocab,
                    keep,
                )?;
                (h.loss, h.logits, h.dhidden, None)
            }
            Objective::Pet {
                mask_positions,
                verbalizer_ids,
                labels,
            } => {
                let rows = heads::pet_rows(mask_positions, b, t, p)?;
                let h = heads::mlm_head_fwd_bwd(
                    be,
                    self,
                    &hidden,
                    &rows,
                    labels,
                    Decoder::Rows(verbalizer_ids),
                    keep,
                )?;
                (h.loss, h.logits, h.dhidden, None)
            }
            Objective::Cls {
                head,
                pooling,
                labels,
            } => {
                let pool_w = heads::upload_pool_weights(be, &inp.mask, b, t, p, pooling)?;
                let h = head.fwd_bwd(be, &hidden, &pool_w, labels, b, p + t)?;
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
