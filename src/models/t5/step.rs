//! The whole training step: both stacks forward, the LM loss, both stacks backward.

use super::inputs::T5Inputs;
use super::weights::T5;
use crate::backend::Backend;
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::models::common::{output, prompt_or_prefix, zeros, Capture, Recompute};
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
        let grads = prompt_or_prefix(inp.prefix.is_some(), dprompt);
        self.step_with(be, acct, grads, prompt, inp, recompute, capture, loss)
    }

    /// The step over a batch whose rows mix the prompts of the table (K, P, C) (`inp.table`)
    /// and the prefixes of a stack (`inp.prefix` with its rows, `PrefixRows`): each part's
    /// (one job's) mean loss over its decoder rows of (B·L) (`split_by_job`), one backward
    /// adding d (Σ of the parts' means) / d table into `dtable` (K, P, C) (None: no row reads
    /// a prompt) and / d stack into `dstack` (K·L, N·2·Hkv·D) (None: `inp` reads none). Each
    /// prompt's and each prefix's slice is its own job's gradient, as no other row reads it.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_parts(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dtable: Option<&mut B::Buf>,
        dstack: Option<&mut B::Buf>,
        table: &B::Buf,
        inp: &T5Inputs<B>,
        parts: &[LossRows],
        recompute: Recompute,
    ) -> Result<Vec<f64>> {
        let rows = inp.b * inp.l;
        let loss = |dec_out: &B::Buf, _: Option<&mut Capture>| {
            self.head().parts_loss_fwd_bwd(be, dec_out, rows, parts)
        };
        self.step_with(
            be,
            acct,
            (dtable, dstack),
            table,
            inp,
            recompute,
            None,
            loss,
        )
    }

    /// Both stacks forward, `loss` on the decoder's output (B·L, C) (what it returns, and
    /// d loss / d dec_out), both stacks backward into the `(dprompt, dprefix)` the batch
    /// reads: d loss / d prompt (P, C) or table (K, P, C), and d loss / d prefix (its table's
    /// shape), each None when not wanted.
    #[allow(clippy::too_many_arguments)]
    fn step_with<R>(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        (dprompt, mut dprefix): (Option<&mut B::Buf>, Option<&mut B::Buf>),
        prompt: &B::Buf,
        inp: &T5Inputs<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
        loss: impl FnOnce(&B::Buf, Option<&mut Capture>) -> Result<(R, B::Buf)>,
    ) -> Result<R> {
        // PEFT's placement: the encoder reads no prefix, and with no prompt rows (a batch of
        // prefix jobs alone) nothing trainable is below the decoder: the encoder runs forward
        // only
        let frozen = inp.p == 0
            && inp.prefix.as_ref().is_some_and(|pre| {
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
        // the last decoder block's cross-attention writes d enc_out, the others add to it; a
        // decoder of no blocks leaves it zero
        let denc = |len| match self.decoder.blocks.is_empty() {
            true => zeros(be, be.act_dtype(), len),
            false => output(be, be.act_dtype(), len),
        };
        let mut denc_out = match enc_acts {
            Some(_) => Some(denc(be.len(&enc_out))?),
            None => None,
        };
        self.decoder_bwd(
            be,
            acct,
            denc_out.as_mut(),
            dprefix.as_deref_mut(),
            ddec_out,
            dec_acts,
            &enc_out,
            inp,
        )?;
        drop(enc_out);
        if let (Some(denc_out), Some(enc_acts)) = (denc_out, enc_acts) {
            self.encoder_bwd(be, acct, dprompt, dprefix, denc_out, enc_acts, inp)?;
        }
        Ok(loss)
    }
}
