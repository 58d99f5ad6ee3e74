//! The `cls` head: a small linear classifier on pooled states, trained with the prompt
//! (PEFT's SEQ_CLS keeps its classifier trainable). Its weights, their gradients and their
//! optimizer state live on the device (src/backend/head.rs), so a step moves only the logits
//! (B, K) to the host, for the loss; files and checkpoints hold the host form.

use super::common::{output, zeros};
use crate::backend::head::cls_loss;
use crate::backend::{Backend, DType};
use crate::error::Result;

/// The head on the host, as `head.safetensors` and checkpoints hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostClsHead {
    pub k: usize,
    pub c: usize,
    pub weight: Vec<f32>, // (K, C)
    pub bias: Vec<f32>,   // (K)
}

impl HostClsHead {
    /// A fresh head of zeros: plain softmax regression at the start.
    pub fn zeros(k: usize, c: usize) -> HostClsHead {
        HostClsHead {
            k,
            c,
            weight: vec![0.0; k * c],
            bias: vec![0.0; k],
        }
    }

    /// Trainable parameters of the head.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    pub fn upload<B: Backend>(&self, be: &B) -> Result<ClsHead<B>> {
        crate::error::ensure_len("head.weight", self.k * self.c, self.weight.len())?;
        crate::error::ensure_len("head.bias", self.k, self.bias.len())?;
        Ok(ClsHead {
            k: self.k,
            c: self.c,
            weight: be.upload(DType::F32, &self.weight)?,
            bias: be.upload(DType::F32, &self.bias)?,
        })
    }
}

/// The head's tensors on the device, float32: its weights, or their gradients.
pub struct ClsHead<B: Backend> {
    pub k: usize,
    pub c: usize,
    pub weight: B::Buf, // (K, C)
    pub bias: B::Buf,   // (K)
}

/// What `ClsHead::fwd_bwd` returns.
pub struct ClsOutput<B: Backend> {
    /// the mean cross-entropy
    pub loss: f64,
    /// (B, K), on the host
    pub logits: Vec<f32>,
    /// (B, T, C) d loss / d hidden
    pub dhidden: B::Buf,
    /// d loss / d weight (K, C) and d loss / d bias (K)
    pub dhead: ClsHead<B>,
}

impl<B: Backend> ClsHead<B> {
    /// A head (or a gradient) of zeros.
    pub fn zeros(be: &B, k: usize, c: usize) -> Result<ClsHead<B>> {
        Ok(ClsHead {
            k,
            c,
            weight: zeros(be, DType::F32, k * c)?,
            bias: zeros(be, DType::F32, k)?,
        })
    }

    /// Trainable parameters of the head.
    pub fn num_params(&self) -> usize {
        self.k * self.c + self.k
    }

    pub fn download(&self, be: &B) -> Result<HostClsHead> {
        Ok(HostClsHead {
            k: self.k,
            c: self.c,
            weight: be.download(&self.weight)?,
            bias: be.download(&self.bias)?,
        })
    }

    /// logits (B, K) of pooled (B, C), on the device.
    pub fn logits(&self, be: &B, pooled: &B::Buf, b: usize) -> Result<B::Buf> {
        let mut logits = output(be, DType::F32, b * self.k)?;
        be.cls_head_fwd(
            &mut logits,
            pooled,
            &self.weight,
            &self.bias,
            b,
            self.k,
            self.c,
        )?;
        Ok(logits)
    }

    /// Pools `hidden` (B, T, C) with `pool_w` (B, T), runs the head and its cross-entropy
    /// against `labels` (B), and returns the loss and the gradients of the head and of the
    /// hidden states. The logits are the one tensor that comes back to the host.
    pub fn fwd_bwd(
        &self,
        be: &B,
        hidden: &B::Buf,
        pool_w: &B::Buf,
        labels: &[i32],
        b: usize,
        t: usize,
    ) -> Result<ClsOutput<B>> {
        let (k, c, act) = (self.k, self.c, be.act_dtype());
        crate::backend::check_ids("class labels", labels, k)?;
        let labels_buf = be.upload_i32(labels)?;
        // forward ops and the loss's gradient overwrite their outputs
        let mut pooled = output(be, act, b * c)?;
        be.mean_pool_fwd(&mut pooled, hidden, pool_w, b, t, c)?;
        let logits = self.logits(be, &pooled, b)?;
        let mut dlogits = output(be, DType::F32, b * k)?;
        be.cls_xent_grad(&mut dlogits, &logits, &labels_buf, b, k)?;
        // the head's backward writes its gradients whole: they are this step's alone
        let mut dhead = ClsHead {
            k,
            c,
            weight: output(be, DType::F32, k * c)?,
            bias: output(be, DType::F32, k)?,
        };
        let mut dpooled = output(be, act, b * c)?;
        be.cls_head_bwd(
            &mut dhead.weight,
            &mut dhead.bias,
            &mut dpooled,
            &dlogits,
            &pooled,
            &self.weight,
            b,
            k,
            c,
            false,
        )?;
        let mut dhidden = output(be, act, be.len(hidden))?;
        be.mean_pool_bwd(&mut dhidden, &dpooled, pool_w, b, t, c, false)?;
        let logits = be.download(&logits)?;
        Ok(ClsOutput {
            loss: cls_loss(&logits, labels, k),
            logits,
            dhidden,
            dhead,
        })
    }
}
