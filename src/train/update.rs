//! The optimizer step over the trainable state: the prompt and the `cls` head's weight and
//! bias, all on the device, pass to the optimizer as one list, are clipped and updated
//! together, and go back into `Params`.

use super::optim::{self, Optimizer};
use super::step::{Grads, Params};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};

/// The optimizer shapes for `params`: the prompt (P, d), then the `cls` head's weight
/// (K, d) and bias (1, K), in the order `optimizer_step` passes them.
pub fn optimizer_shapes<B: Backend>(params: &Params<B>) -> Vec<(&'static str, usize, usize, bool)> {
    let mut shapes = vec![("prompt", params.p, params.d, false)];
    if let Some(h) = &params.head {
        shapes.push(("head.weight", h.k, h.c, true));
        shapes.push(("head.bias", 1, h.k, true));
    }
    shapes
}

/// Clips the gradients to `max_grad_norm` (None: no clipping) and applies one optimizer
/// update to the prompt and the head. Returns the prompt's learning rate and the gradient
/// norm before clipping.
pub fn optimizer_step<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut Params<B>,
    grads: Grads<B>,
    max_grad_norm: Option<f64>,
) -> Result<(f64, f64)> {
    // the buffers move into one list and back, so nothing is copied
    let mut gbufs = vec![grads.prompt];
    let mut pbufs = vec![std::mem::replace(
        &mut params.prompt,
        be.zeros(DType::F32, 0)?,
    )];
    if let (Some(h), Some(g)) = (params.head.as_mut(), grads.head) {
        gbufs.extend([g.weight, g.bias]);
        pbufs.push(std::mem::replace(&mut h.weight, be.zeros(DType::F32, 0)?));
        pbufs.push(std::mem::replace(&mut h.bias, be.zeros(DType::F32, 0)?));
    }
    let outcome = clip_and_update(be, opt, &mut pbufs, &mut gbufs, max_grad_norm);
    // the parameters go back into `params` even when the update failed
    let mut pbufs = pbufs.into_iter();
    let mut next = || {
        pbufs
            .next()
            .ok_or_else(|| Error::Device("parameter buffer lost".into()))
    };
    params.prompt = next()?;
    if let Some(h) = params.head.as_mut() {
        h.weight = next()?;
        h.bias = next()?;
    }
    outcome
}

fn clip_and_update<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut [B::Buf],
    grads: &mut [B::Buf],
    max_grad_norm: Option<f64>,
) -> Result<(f64, f64)> {
    let mut grefs: Vec<&mut B::Buf> = grads.iter_mut().collect();
    let norm = optim::clip_grad_norm(be, &mut grefs, max_grad_norm)?;
    // the norm is one scalar on the host already: a NaN or infinite gradient stops here,
    // before it reaches the parameters
    if !norm.is_finite() {
        return Err(Error::NonFinite(format!(
            "the gradient norm is {norm} (the parameters were not updated)"
        )));
    }
    let mut prefs: Vec<&mut B::Buf> = params.iter_mut().collect();
    let grefs: Vec<&B::Buf> = grads.iter().collect();
    Ok((opt.update(be, &mut prefs, &grefs)?, norm))
}
