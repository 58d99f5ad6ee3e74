//! The whole training step: both stacks forward, the LM loss, both stacks backward.

use super::inputs::T5Inputs;
use super::weights::T5;
use crate::backend::Backend;
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{zeros, Capture, Recompute};
use crate::models::lm_head::LossRows;
use crate::models::prefix::t5_block;

impl<B: Backend> T5<B> {
    /// Full forward and backward of one batch against `labels` (B, L): returns the mean loss
    /// and adds d loss / d prompt into `dprompt` (P, C). `capture` collects hidden states and
    /// logits for parity.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        labels: &[i32],
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<f64> {
        let rows = inp.b * inp.l;
        let loss = |dec_out: &B::Buf, cap: Option<&mut Capture>| {
            self.lm_loss_fwd_bwd(be, dec_out, labels, rows, cap)
        };
        self.step_with(be, acct, dprompt, prompt, inp, recompute, capture, loss)
    }

    /// The step over a batch whose rows mix the prompts of the table (K, P, C) (`inp.table`):
    /// each part's (one job's) mean loss over its decoder rows of (B·L) (`split_by_job`), and
    /// d (Σ of the parts' means) / d table added into `dtable` (K, P, C): each prompt's slice
    /// is its own job's gradient, as no other row reads it.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_parts(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dtable: &mut B::Buf,
        table: &B::Buf,
        inp: &T5Inputs<B>,
        parts: &[LossRows],
        recompute: Recompute,
    ) -> Result<Vec<f64>> {
        let rows = inp.b * inp.l;
        let loss = |dec_out: &B::Buf, _: Option<&mut Capture>| {
            self.head().parts_loss_fwd_bwd(be, dec_out, rows, parts)
        };
        self.step_with(be, acct, dtable, table, inp, recompute, None, loss)
    }

    /// Both stacks forward, `loss` on the decoder's output (B·L, C) (what it returns, and
    /// d loss / d dec_out), both stacks backward into `dprompt`.
    #[allow(clippy::too_many_arguments)]
    fn step_with<R>(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
        loss: impl FnOnce(&B::Buf, Option<&mut Capture>) -> Result<(R, B::Buf)>,
    ) -> Result<R> {
        // PEFT's placement: the encoder reads no prefix and there are no prompt rows, so
        // nothing trainable is below the decoder: the encoder runs forward only
        let frozen = inp.prefix.as_ref().is_some_and(|pre| {
            t5_block(pre.placement, false, 0, self.cfg.num_layers, pre.blocks).is_none()
        });
        let (enc_out, enc_acts) = if frozen {
            let out = self.encoder_frozen_fwd(be, acct, inp, capture.as_deref_mut())?;
            (out, None)
        } else {
            let (out, acts) =
                self.encoder_fwd(be, acct, prompt, inp, recompute, capture.as_deref_mut())?;
            (out, Some(acts))
        };
        let (dec_out, dec_acts) =
            self.decoder_fwd(be, acct, &enc_out, inp, recompute, capture.as_deref_mut())?;
        acct.end_forward();
        let (loss, ddec_out) = loss(&dec_out, capture)?;
        drop(dec_out);
        let mut denc_out = match enc_acts {
            Some(_) => Some(zeros(be, be.act_dtype(), be.len(&enc_out))?),
            None => None,
        };
        let dprefix = inp.prefix.is_some().then_some(&mut *dprompt);
        self.decoder_bwd(
            be,
            acct,
            denc_out.as_mut(),
            dprefix,
            ddec_out,
            dec_acts,
            &enc_out,
            inp,
        )?;
        drop(enc_out);
        if let (Some(denc_out), Some(enc_acts)) = (denc_out, enc_acts) {
            self.encoder_bwd(be, acct, dprompt, denc_out, enc_acts, inp)?;
        }
        Ok(loss)
    }
}
