//! The optimizer step over the trainable state: the prompt's buffer and the `cls` head's
//! host vectors pass to the optimizer as one list, are clipped and updated together, and come
//! back.

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
    let mut gbufs = vec![grads.prompt];
    let mut pbufs = vec![be.zeros(DType::F32, 0)?];
    std::mem::swap(&mut pbufs[0], &mut params.prompt);
    if let Some(h) = &params.head {
        gbufs.push(be.upload(DType::F32, &grads.head_weight)?);
        gbufs.push(be.upload(DType::F32, &grads.head_bias)?);
        pbufs.push(be.upload(DType::F32, &h.weight)?);
        pbufs.push(be.upload(DType::F32, &h.bias)?);
    }
    let outcome = clip_and_update(be, opt, &mut pbufs, &mut gbufs, max_grad_norm);
    // the prompt goes back into `params` even when the update failed
    let mut pbufs = pbufs.into_iter();
    params.prompt = pbufs
        .next()
        .ok_or_else(|| Error::Device("prompt buffer lost".into()))?;
    let (lr, norm) = outcome?;
    if let Some(h) = params.head.as_mut() {
        h.weight = be.download(
            &pbufs
                .next()
                .ok_or_else(|| Error::Device("head buffer lost".into()))?,
        )?;
        h.bias = be.download(
            &pbufs
                .next()
                .ok_or_else(|| Error::Device("head buffer lost".into()))?,
        )?;
    }
    Ok((lr, norm))
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
    let mut prefs: Vec<&mut B::Buf> = params.iter_mut().collect();
    let grefs: Vec<&B::Buf> = grads.iter().collect();
    Ok((opt.update(be, &mut prefs, &grefs)?, norm))
}
