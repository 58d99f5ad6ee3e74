//! Launchers of kernels/optimizer.cu (reference: src/cpu/optimizer.rs). Both update the
//! float32 parameter and state in place.

use super::kernels::k;
use super::launch::{int, stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, CudaBackend, CudaBuf};
use crate::backend::{AdafactorHyper, AdamWHyper, DType, OptimizerOps};
use crate::error::{Error, Result};

impl OptimizerOps for CudaBackend {
    // extern "C" __global__ void adamw_update(float* param, const float* grad, float* m, float* v,
    //     double lr, double beta1, double beta2, double eps, double weight_decay, double bc1,
    //     double bc2, long long n);
    /// One AdamW step on param, grad, m, v (N) f32; `step` counts from 1. Grid-stride.
    fn adamw_update(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        hp: &AdamWHyper,
        step: u64,
    ) -> Result<()> {
        let dev = &self.dev;
        let n = param.len();
        let f = DType::F32;
        let args = Args::new()
            .ptr(arg(param, "param", f, n)?)
            .ptr(arg(grad, "grad", f, n)?)
            .ptr(arg(m, "adam m", f, n)?)
            .ptr(arg(v, "adam v", f, n)?)
            .f64(hp.lr)
            .f64(hp.beta1)
            .f64(hp.beta2)
            .f64(hp.eps)
            .f64(hp.weight_decay)
            .f64(1.0 - hp.beta1.powi(step as i32))
            .f64(1.0 - hp.beta2.powi(step as i32))
            .i64(n as i64);
        if n == 0 {
            return Ok(());
        }
        dev.launch(
            k::ADAMW_UPDATE,
            Cfg::linear(stride_blocks(n), STRIDE_THREADS),
            args,
        )
    }

    // extern "C" __global__ void adafactor_update(float* param, const float* grad, float* row,
    //     float* col, double lr, double beta2t, double eps, double clip_threshold,
    //     double weight_decay, int r, int c);
    /// One factored Adafactor step on a (R, C) param; row (R), col (C). One block of 1024
    /// threads: the prompt is small, and one block keeps every reduction deterministic.
    fn adafactor_update(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        row: &mut CudaBuf,
        col: &mut CudaBuf,
        hp: &AdafactorHyper,
        step: u64,
    ) -> Result<()> {
        let dev = &self.dev;
        let (n, r, c) = (param.len(), row.len(), col.len());
        if r * c != n {
            return Err(Error::shape("adafactor factors", n, format!("{r} x {c}")));
        }
        let f = DType::F32;
        let args = Args::new()
            .ptr(arg(param, "param", f, n)?)
            .ptr(arg(grad, "grad", f, n)?)
            .ptr(arg(row, "adafactor row", f, r)?)
            .ptr(arg(col, "adafactor col", f, c)?)
            .f64(hp.lr)
            .f64(1.0 - (step as f64).powf(hp.decay_rate))
            .f64(hp.eps)
            .f64(hp.clip_threshold)
            .f64(hp.weight_decay)
            .i32(int("adafactor rows", r)?)
            .i32(int("adafactor cols", c)?);
        if n == 0 {
            return Ok(());
        }
        dev.launch(k::ADAFACTOR_UPDATE, Cfg::linear(1, 1024), args)
    }
}
