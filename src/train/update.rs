//! The optimizer step over the trainable state: the prompt and the `cls` head's weight and
//! bias, all on the device, pass to the optimizer as one list, are clipped and updated
//! together, and go back into `Params`.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::encoder::{EncoderSpec, HostEncoder, HostTape};
use super::optim::{self, OptimConfig, Optimizer};
use super::step::{Grads, Params};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::models::cls_head::ClsHead;

/// The optimizer shapes for `params`: the prompt (P, d), then the `cls` head's weight
/// (K, d) and bias (1, K), in the order `optimizer_step` passes them.
pub fn optimizer_shapes<B: Backend>(params: &Params<B>) -> Vec<(&'static str, usize, usize, bool)> {
    let mut shapes = vec![("prompt", params.p, params.d, false)];
    shapes.extend(head_shapes(params));
    shapes
}

fn head_shapes<B: Backend>(params: &Params<B>) -> Vec<(&'static str, usize, usize, bool)> {
    match &params.head {
        Some(h) => vec![("head.weight", h.k, h.c, true), ("head.bias", 1, h.k, true)],
        None => Vec::new(),
    }
}

/// A host encoder's optimizer shapes (P-tuning's encoder, prefix tuning's projection): every
/// encoder tensor as `encoder.<name>` (vectors as (1, N)), in `EncoderSpec::shapes` order,
/// then the head's, in the order `encoder_step` passes them.
pub fn encoder_optimizer_shapes<B: Backend>(
    enc: &EncoderSpec,
    params: &Params<B>,
) -> Vec<(String, usize, usize, bool)> {
    let mut shapes: Vec<(String, usize, usize, bool)> = enc
        .shapes()
        .into_iter()
        .map(|(name, shape)| {
            let (rows, cols) = match shape.as_slice() {
                [r, c] => (*r, *c),
                s => (1, s.iter().product()),
            };
            (format!("encoder.{name}"), rows, cols, false)
        })
        .collect();
    shapes.extend(
        head_shapes(params)
            .into_iter()
            .map(|(n, r, c, h)| (n.to_string(), r, c, h)),
    );
    shapes
}

/// The optimizer of `params`: over the table, or over `encoder`'s tensors when the table is
/// its output, then the head.
pub fn new_optimizer<B: Backend>(
    be: &B,
    cfg: OptimConfig,
    params: &Params<B>,
    encoder: Option<&HostEncoder>,
) -> Result<Optimizer<B>> {
    match encoder {
        None => Optimizer::new(be, cfg, &optimizer_shapes(params)),
        Some(e) => {
            let shapes = encoder_optimizer_shapes(&e.spec(), params);
            let shapes: Vec<_> = (shapes.iter())
                .map(|(n, r, c, h)| (n.as_str(), *r, *c, *h))
                .collect();
            Optimizer::new(be, cfg, &shapes)
        }
    }
}

/// A step's table from its host encoder, if any: its output uploaded into `params.prompt`,
/// and the tape its backward needs (None without an encoder: the table is the parameter).
pub fn encoder_fwd<B: Backend>(
    be: &B,
    params: &mut Params<B>,
    encoder: Option<&HostEncoder>,
) -> Result<Option<HostTape>> {
    let Some(enc) = encoder else {
        return Ok(None);
    };
    let (table, tape) = enc.forward()?;
    params.prompt = be.upload(DType::F32, &table)?;
    Ok(Some(tape))
}

/// The update of a step's gradients: through the host encoder when the table came out of one
/// (`encoder_step` with the tape of `encoder_fwd`), else on the table (`optimizer_step`).
/// Returns the learning rate and the gradient norm before clipping.
pub fn update<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut Params<B>,
    encoder: Option<(&mut HostEncoder, &HostTape)>,
    grads: Grads<B>,
    max_grad_norm: Option<f64>,
) -> Result<(f64, f64)> {
    match encoder {
        Some((enc, tape)) => encoder_step(be, opt, params, enc, tape, grads, max_grad_norm),
        None => optimizer_step(be, opt, params, grads, max_grad_norm),
    }
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
    let prompt = std::mem::replace(&mut params.prompt, be.zeros(DType::F32, 0)?);
    let (mut back, outcome) = update_with_head(
        be,
        opt,
        params,
        vec![prompt],
        vec![grads.prompt],
        grads.head,
        max_grad_norm,
    )?;
    params.prompt = back.pop().ok_or_else(lost)?;
    outcome
}

/// A host encoder's step: the engine's table gradient (in `grads.prompt`) goes back through
/// the host encoder (`tape` from the forward that gave `params.prompt`); the encoder's tensors and
/// gradients go to the device as one list with the head's, are clipped together (as
/// transformers' `clip_grad_norm_` over all trainable parameters) and updated, and come back
/// into `enc`; `params.prompt` becomes the updated encoder's output.
pub fn encoder_step<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut Params<B>,
    enc: &mut HostEncoder,
    tape: &HostTape,
    grads: Grads<B>,
    max_grad_norm: Option<f64>,
) -> Result<(f64, f64)> {
    let d_prompt = be.download(&grads.prompt)?;
    let mut g = enc.backward(tape, &d_prompt)?;
    let names: Vec<String> = enc.spec().shapes().into_iter().map(|(n, _)| n).collect();
    let (mut pbufs, mut gbufs) = (Vec::new(), Vec::new());
    for name in &names {
        let p = enc.tensors().get(name).ok_or_else(|| missing(name))?;
        let dp = g.remove(name).ok_or_else(|| missing(name))?;
        pbufs.push(be.upload(DType::F32, p)?);
        gbufs.push(be.upload(DType::F32, &dp)?);
    }
    let (back, outcome) =
        update_with_head(be, opt, params, pbufs, gbufs, grads.head, max_grad_norm)?;
    for (name, buf) in names.iter().zip(&back) {
        enc.tensors_mut().insert(name.clone(), be.download(buf)?);
    }
    let (lr, norm) = outcome?;
    params.prompt = be.upload(DType::F32, &enc.forward()?.0)?;
    Ok((lr, norm))
}

/// Clips and updates `pbufs` (with `gbufs`) and then the head's tensors with `head_grads`;
/// the head goes back into `params` and `pbufs` come back, even when the update failed (its
/// outcome is the second value).
#[allow(clippy::type_complexity)]
fn update_with_head<B: Backend>(
    be: &B,
    opt: &mut Optimizer<B>,
    params: &mut Params<B>,
    mut pbufs: Vec<B::Buf>,
    mut gbufs: Vec<B::Buf>,
    head_grads: Option<ClsHead<B>>,
    max_grad_norm: Option<f64>,
) -> Result<(Vec<B::Buf>, Result<(f64, f64)>)> {
    let n = pbufs.len();
    if let (Some(h), Some(g)) = (params.head.as_mut(), head_grads) {
        gbufs.extend([g.weight, g.bias]);
        pbufs.push(std::mem::replace(&mut h.weight, be.zeros(DType::F32, 0)?));
        pbufs.push(std::mem::replace(&mut h.bias, be.zeros(DType::F32, 0)?));
    }
    let outcome = clip_and_update(be, opt, &mut pbufs, &mut gbufs, max_grad_norm);
    let mut rest = pbufs.split_off(n.min(pbufs.len())).into_iter();
    if let Some(h) = params.head.as_mut() {
        h.weight = rest.next().ok_or_else(lost)?;
        h.bias = rest.next().ok_or_else(lost)?;
    }
    Ok((pbufs, outcome))
}

fn lost() -> Error {
    Error::Device("parameter buffer lost".into())
}

fn missing(name: &str) -> Error {
    Error::Tensor {
        name: name.into(),
        msg: "missing from the prompt encoder or its gradient".into(),
    }
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
