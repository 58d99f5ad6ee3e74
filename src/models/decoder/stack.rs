//! The whole stack: the input embedding with the prompt in front (and BLOOM's embedding
//! LayerNorm), the layers and the final norm; forward beside backward, which runs the layers in
//! exact reverse and ends at the prompt rows' gradient.

use super::inputs::DecoderInputs;
use super::layer::{DecoderLayerActs, Keep, Kept, NormActs, Tail};
use super::weights::Decoder;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::{
    hold, output, prompt_or_prefix, zeros, Capture, FrontRows, PromptRows, Recompute,
};

enum Saved<B: Backend> {
    Full(DecoderLayerActs<B>),
    /// (N, C) the layer input, under `Recompute::Layer`
    Input(B::Buf),
}

/// Everything the stack keeps for backward.
pub struct DecoderActs<B: Backend> {
    /// BLOOM: the embedding output (N, C) and its LayerNorm statistics
    embed_norm: Option<NormActs<B>>,
    layers: Vec<Saved<B>>,
    final_norm: NormActs<B>, // the last layer's output (N, C) and its statistics
    /// where the last layer and the final norm ran, when not at every row
    pub(super) tail: Option<Tail<B>>,
}

impl<B: Backend> Decoder<B> {
    /// hidden (B·S, C) after the final norm, and the saved state. `capture` receives
    /// `hidden_states.{i}` as transformers outputs them: the input embeddings (BLOOM: after
    /// the embedding LayerNorm), each layer's input, and last the final norm's output.
    pub fn stack_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &DecoderInputs<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<(B::Buf, DecoderActs<B>)> {
        self.stack_fwd_at(be, acct, prompt, inp, recompute, capture, None)
    }

    /// `stack_fwd` whose last layer and final norm run at the `tail`'s rows only: hidden
    /// (B·rows, C) then; the saved state keeps the tail for backward.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stack_fwd_at(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        prompt: &B::Buf,
        inp: &DecoderInputs<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
        tail: Option<Tail<B>>,
    ) -> Result<(B::Buf, DecoderActs<B>)> {
        let (n, c, eps) = (inp.b * inp.s(), self.cfg.hidden_size, self.cfg.norm_eps);
        let (b, t, p) = (inp.b, inp.tokens, inp.p);
        let x = self.embed_rows(be, prompt, &inp.ids, &inp.table, b, t, p)?;
        let (mut x, embed_norm) = self.embed_norm_fwd(be, x, n)?;
        if let Some(a) = &embed_norm {
            for (name, buf) in a.named("embed_norm") {
                hold(be, acct, name, buf);
            }
        }
        for (name, buf) in tail.iter().flat_map(Tail::named) {
            hold(be, acct, name.into(), buf);
        }
        let cap = capture.as_deref_mut();
        let layers = self.layers_fwd(be, acct, &mut x, inp, recompute, cap, tail.as_ref())?;
        let n_out = inp.b * tail.as_ref().map_or(inp.s(), |t| t.rows);
        let (out, final_norm) = self.w.final_norm.fwd(be, x, n_out, c, eps)?;
        for (name, buf) in final_norm.named("final_norm") {
            hold(be, acct, name, buf);
        }
        if let Some(cap) = capture {
            cap.insert(
                format!("hidden_states.{}", self.w.layers.len()),
                be.download(&out)?,
            );
        }
        Ok((
            out,
            DecoderActs {
                embed_norm,
                layers,
                final_norm,
                tail,
            },
        ))
    }

    /// out (B, P+T, C) = concat(prompt (P, C), embed[ids] (B, T, C)) along the sequence.
    pub(super) fn embed(
        &self,
        be: &B,
        prompt: &B::Buf,
        ids: &B::Buf,
        b: usize,
        t: usize,
        p: usize,
    ) -> Result<B::Buf> {
        self.embed_rows(be, prompt, ids, &PromptRows::one(), b, t, p)
    }

    /// `embed` where the prompt is the table (K, P, C) and `tab` names each row's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn embed_rows(
        &self,
        be: &B,
        prompt: &B::Buf,
        ids: &B::Buf,
        tab: &PromptRows<B>,
        b: usize,
        t: usize,
        p: usize,
    ) -> Result<B::Buf> {
        let c = self.cfg.hidden_size;
        let mut x = output(be, be.act_dtype(), b * (p + t) * c)?;
        be.embedding_fwd(
            &mut x,
            prompt,
            &self.w.embed,
            None,
            None,
            ids,
            None,
            tab.idx.as_ref(),
            tab.lens.as_ref(),
            b,
            t,
            tab.k,
            p,
            c,
        )?;
        Ok(x)
    }

    /// BLOOM's embedding LayerNorm over x (N, C), which it takes over (with its state); x
    /// unchanged for the Llama family.
    pub(super) fn embed_norm_fwd(
        &self,
        be: &B,
        x: B::Buf,
        n: usize,
    ) -> Result<(B::Buf, Option<NormActs<B>>)> {
        match &self.w.embed_norm {
            Some(norm) => {
                let (out, acts) = norm.fwd(be, x, n, self.cfg.hidden_size, self.cfg.norm_eps)?;
                Ok((out, Some(acts)))
            }
            None => Ok((x, None)),
        }
    }

    /// The layers over x (N, C), in place (the last one's output at the `tail`'s rows, when
    /// given); what each keeps for backward.
    #[allow(clippy::too_many_arguments)]
    fn layers_fwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        x: &mut B::Buf,
        inp: &DecoderInputs<B>,
        recompute: Recompute,
        mut capture: Option<&mut Capture>,
        tail: Option<&Tail<B>>,
    ) -> Result<Vec<Saved<B>>> {
        if self.cfg.is_bloom() {
            recompute.refuse_mlp("BLOOM")?;
        }
        let n = inp.b * inp.s() * self.cfg.hidden_size;
        let mut layers = Vec::with_capacity(self.w.layers.len());
        for l in 0..self.w.layers.len() {
            if let Some(cap) = capture.as_deref_mut() {
                cap.insert(format!("hidden_states.{l}"), be.download(x)?);
            }
            let input = std::mem::replace(x, zeros(be, be.act_dtype(), 0)?);
            let tail = tail.filter(|_| l + 1 == self.w.layers.len());
            let saved = match recompute {
                Recompute::None | Recompute::Mlp | Recompute::MlpLayers(_) => {
                    let up = !recompute.recomputes_mlp_up(l);
                    let (out, kept) =
                        self.layer_fwd(be, acct, l, input, inp, tail, Keep::State { up })?;
                    *x = out;
                    Saved::Full(state(kept)?)
                }
                Recompute::Layer => {
                    let mut keep = zeros(be, be.act_dtype(), n)?;
                    be.copy(&mut keep, &input)?;
                    hold(be, acct, format!("layer.{l}.input"), &keep);
                    *x = (self.layer_fwd(be, acct, l, input, inp, tail, Keep::Nothing)?).0;
                    Saved::Input(keep)
                }
            };
            layers.push(saved);
        }
        Ok(layers)
    }

    /// dprompt (P, C) += d loss / d prompt from dhidden (B·S, C), or (B·rows, C) with the
    /// forward's tail (`acts.tail`); with a prefix, dprompt is the prefix table's gradient,
    /// where the backward stops. Consumes the saved state.
    pub fn stack_bwd(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: &mut B::Buf,
        dhidden: B::Buf,
        acts: DecoderActs<B>,
        inp: &DecoderInputs<B>,
    ) -> Result<()> {
        let (dprompt, dprefix) = prompt_or_prefix(inp.prefix.is_some(), dprompt);
        self.stack_bwd_split(be, acct, dprompt, dprefix, dhidden, acts, inp)
    }

    /// `stack_bwd` into both tables of a batch that reads both (a mixed step's prompt rows
    /// and prefix rows): dprompt (K, P, C) += d loss / d prompt table (None: no row reads
    /// one, the gradient stops at the first layer), dprefix (the prefix's shape) += d loss /
    /// d prefix (None: `inp` reads none).
    #[allow(clippy::too_many_arguments)]
    pub fn stack_bwd_split(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dprompt: Option<&mut B::Buf>,
        mut dprefix: Option<&mut B::Buf>,
        dhidden: B::Buf,
        acts: DecoderActs<B>,
        inp: &DecoderInputs<B>,
    ) -> Result<()> {
        let tail = acts.tail.as_ref();
        let (n, c) = (inp.b * inp.s(), self.cfg.hidden_size);
        let n_out = inp.b * tail.map_or(inp.s(), |t| t.rows);
        let mut dx = output(be, be.act_dtype(), n_out * c)?;
        self.w
            .final_norm
            .bwd(be, &mut dx, &dhidden, &acts.final_norm, n_out, c, false)?;
        drop(dhidden);
        release(acct, "final_norm", &acts.final_norm);
        drop(acts.final_norm);
        let last = acts.layers.len().saturating_sub(1);
        // the first layer's input gradient is read at the prompt rows only (none without a
        // prompt): (B·P, C) then, the (B, P + 0, C) prompt_grad_bwd reads; not when the first
        // layer is the last and runs at the tail
        let front = match (tail, acts.layers.len()) {
            (_, 0) | (Some(_), 1) => None,
            _ => Some(FrontRows::new(
                be,
                inp.b,
                inp.s(),
                dprompt.as_ref().map_or(0, |_| inp.p),
            )?),
        };
        for (l, saved) in acts.layers.into_iter().enumerate().rev() {
            let tail = tail.filter(|_| l == last);
            let layer_acts = match saved {
                Saved::Full(a) => a,
                Saved::Input(x) => {
                    acct.release(&format!("layer.{l}.input"));
                    let keep = Keep::State { up: true };
                    state(self.layer_fwd(be, acct, l, x, inp, tail, keep)?.1)?
                }
            };
            let dpre = inp.prefix.as_ref().and(dprefix.as_deref_mut());
            let at = front.as_ref().filter(|_| l == 0);
            self.layer_bwd(be, &mut dx, dpre, &layer_acts, l, inp, tail, at)?;
            for (name, _) in layer_acts.named() {
                acct.release(&format!("layer.{l}.{name}"));
            }
        }
        for (name, _) in tail.into_iter().flat_map(Tail::named) {
            acct.release(name);
        }
        let Some(dprompt) = dprompt else {
            // the gradient stops at the prefix: nothing trainable below the first layer
            if let Some(a) = &acts.embed_norm {
                release(acct, "embed_norm", a);
            }
            return Ok(());
        };
        // (rows, tokens) of dx: the front's B·P, or every row
        let (rows, t) = front.as_ref().map_or((n, inp.tokens), |f| (f.m, 0));
        if let (Some(norm), Some(a)) = (&self.w.embed_norm, &acts.embed_norm) {
            let mut demb = output(be, be.act_dtype(), rows * c)?;
            match &front {
                // the LayerNorm's statistics at those rows, recomputed: the same ops
                Some(f) => {
                    let x = f.gather(be, &a.inp, c)?;
                    let (_, at) = norm.fwd(be, x, rows, c, self.cfg.norm_eps)?;
                    norm.bwd(be, &mut demb, &dx, &at, rows, c, false)?;
                }
                None => norm.bwd(be, &mut demb, &dx, a, n, c, false)?,
            }
            release(acct, "embed_norm", a);
            dx = demb;
        }
        let (idx, lens, k) = (inp.table.idx.as_ref(), inp.table.lens.as_ref(), inp.table.k);
        be.prompt_grad_bwd(dprompt, &dx, idx, lens, inp.b, t, k, inp.p, c)
    }
}

fn release<B: Backend>(acct: &mut MemoryAccountant, prefix: &str, a: &NormActs<B>) {
    for (name, _) in a.named(prefix) {
        acct.release(&name);
    }
}

fn state<B: Backend>(kept: Kept<B>) -> Result<DecoderLayerActs<B>> {
    match kept {
        Kept::State(a) => Ok(a),
        _ => Err(Error::Device("layer state missing".into())),
    }
}
