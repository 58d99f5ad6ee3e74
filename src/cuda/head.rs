//! Launchers of kernels/head.cu (reference: src/cpu/head.rs): the trainable `cls` head, all
//! float32 but the pooled states (activations). Grid-stride, 256 threads; the work is K x C.

use super::kernels::k;
use super::launch::{int, stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, ints, CudaBackend, CudaBuf};
use crate::backend::{check_ids, DType, HeadOps};
use crate::error::Result;

fn cfg(items: usize) -> Cfg {
    Cfg::linear(stride_blocks(items), STRIDE_THREADS)
}

impl HeadOps for CudaBackend {
    // extern "C" __global__ void cls_head_fwd(float* logits, const act_t* pooled,
    //     const float* weight, const float* bias, int b, int k, int c);
    /// logits (B, K) = bias + pooled (B, C) · weightᵀ (K, C).
    fn cls_head_fwd(
        &self,
        logits: &mut CudaBuf,
        pooled: &CudaBuf,
        weight: &CudaBuf,
        bias: &CudaBuf,
        b: usize,
        k: usize,
        c: usize,
    ) -> Result<()> {
        let args = Args::new()
            .ptr(arg(logits, "head logits", DType::F32, b * k)?)
            .ptr(arg(pooled, "head pooled", self.store(), b * c)?)
            .ptr(arg(weight, "head weight", DType::F32, k * c)?)
            .ptr(arg(bias, "head bias", DType::F32, k)?)
            .i32(int("batch", b)?)
            .i32(int("labels", k)?)
            .i32(int("hidden size", c)?);
        if b * k == 0 {
            return Ok(());
        }
        self.dev.launch(k::CLS_HEAD_FWD, cfg(b * k), args)
    }

    // extern "C" __global__ void cls_xent_grad(float* dlogits, const float* logits,
    //     const int* labels, int b, int k);
    /// dlogits (B, K) = (softmax(logits) - onehot(labels)) / B; labels checked on the host.
    fn cls_xent_grad(
        &self,
        dlogits: &mut CudaBuf,
        logits: &CudaBuf,
        labels: &CudaBuf,
        b: usize,
        k: usize,
    ) -> Result<()> {
        let (host_labels, labels_ptr) = ints(labels, "class labels", b)?;
        check_ids("class labels", host_labels, k)?;
        let args = Args::new()
            .ptr(arg(dlogits, "head dlogits", DType::F32, b * k)?)
            .ptr(arg(logits, "head logits", DType::F32, b * k)?)
            .ptr(labels_ptr)
            .i32(int("batch", b)?)
            .i32(int("labels", k)?);
        if b * k == 0 {
            return Ok(());
        }
        self.dev.launch(k::CLS_XENT_GRAD, cfg(b), args)
    }

    // extern "C" __global__ void cls_head_bwd(float* dweight, float* dbias, act_t* dpooled,
    //     const float* dlogits, const act_t* pooled, const float* weight, int b, int k, int c,
    //     int accumulate);
    /// dweight (K, C), dbias (K), dpooled (B, C) += the head's gradients from dlogits (B, K),
    /// or = with `accumulate` false.
    fn cls_head_bwd(
        &self,
        dweight: &mut CudaBuf,
        dbias: &mut CudaBuf,
        dpooled: &mut CudaBuf,
        dlogits: &CudaBuf,
        pooled: &CudaBuf,
        weight: &CudaBuf,
        b: usize,
        k: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        let store = self.store();
        let args = Args::new()
            .ptr(arg(dweight, "head dweight", DType::F32, k * c)?)
            .ptr(arg(dbias, "head dbias", DType::F32, k)?)
            .ptr(arg(dpooled, "head dpooled", store, b * c)?)
            .ptr(arg(dlogits, "head dlogits", DType::F32, b * k)?)
            .ptr(arg(pooled, "head pooled", store, b * c)?)
            .ptr(arg(weight, "head weight", DType::F32, k * c)?)
            .i32(int("batch", b)?)
            .i32(int("labels", k)?)
            .i32(int("hidden size", c)?)
            .i32(accumulate as i32);
        let items = k * c + k + b * c;
        if items == 0 {
            return Ok(());
        }
        self.dev.launch(k::CLS_HEAD_BWD, cfg(items), args)
    }
}
