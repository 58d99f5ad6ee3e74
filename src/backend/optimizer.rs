//! Optimizer stem: AdamW (PyTorch's semantics) and Adafactor (transformers' semantics, as
//! Lester et al. used it for prompt tuning). Both update the parameter in place; their state
//! is float32 whatever the device. Reference src/cpu/optimizer.rs, kernels
//! kernels/optimizer.cu, launchers src/cuda/optimizer.rs.

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdafactorHyper {
    pub lr: f64,
    /// exponent of the second-moment decay, beta2_t = 1 - t^decay_rate (Lester: -0.8)
    pub decay_rate: f64,
    /// regulariser added to grad^2 (transformers' eps[0], 1e-30)
    pub eps: f64,
    pub clip_threshold: f64,
    pub weight_decay: f64,
}

op_family! {
    /// Parameter updates; every buffer F32. `step` counts from 1.
    pub trait OptimizerOps {
        /// One AdamW step (decoupled weight decay, bias-corrected moments) of param (N) with
        /// grad (N), moments m, v (N).
        fn adamw_update(
            &self,
            param: &mut Self::Buf,
            grad: &Self::Buf,
            m: &mut Self::Buf,
            v: &mut Self::Buf,
            hp: &AdamWHyper,
            step: u64,
        ) -> Result<()>;
        /// One factored Adafactor step (no first moment, no parameter scaling) of an (R, C)
        /// param with grad (R, C); row (R) and col (C) hold the factored second moments.
        fn adafactor_update(
            &self,
            param: &mut Self::Buf,
            grad: &Self::Buf,
            row: &mut Self::Buf,
            col: &mut Self::Buf,
            hp: &AdafactorHyper,
            step: u64,
        ) -> Result<()>;
    }
}
