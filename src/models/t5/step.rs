//! The whole training step: both stacks forward, the LM loss, both stacks backward.

use super::inputs::T5Inputs;
use super::weights::T5;
use crate::backend::Backend;
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{zeros, Capture, Recompute};

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
        mut capture: Option<&mut Capture>,
    ) -> Result<f64> {
        let (enc_out, enc_acts) =
            self.encoder_fwd(be, acct, prompt, inp, recompute, capture.as_deref_mut())?;
        let (dec_out, dec_acts) =
            self.decoder_fwd(be, acct, &enc_out, inp, recompute, capture.as_deref_mut())?;
        acct.end_forward();
        let (loss, ddec_out) =
            self.lm_loss_fwd_bwd(be, &dec_out, labels, inp.b * inp.l, capture)?;
        drop(dec_out);
        let mut denc_out = zeros(be, be.act_dtype(), be.len(&enc_out))?;
        let dprefix = inp.prefix.is_some().then_some(&mut *dprompt);
        self.decoder_bwd(
            be,
            acct,
            &mut denc_out,
            dprefix,
            ddec_out,
            dec_acts,
            &enc_out,
            inp,
        )?;
        drop(enc_out);
        self.encoder_bwd(be, acct, dprompt, denc_out, enc_acts, inp)?;
        Ok(loss)
    }
}
