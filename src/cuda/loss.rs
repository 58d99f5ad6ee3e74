//! Launcher of kernels/loss.cu (reference: src/cpu/loss.rs). The logits buffer is
//! overwritten by its gradient.

use super::kernels::k;
use super::launch::{grid_x, int, Args, Cfg};
use super::{arg, ints, CudaBackend, CudaBuf};
use crate::backend::{DType, LossOps, IGNORE_INDEX};
use crate::error::{Error, Result};

impl LossOps for CudaBackend {
    // extern "C" __global__ void cross_entropy_fwd_bwd(float* logits, float* losses,
    //     const int* targets, int m, int v, float grad_scale);
    /// logits (M, V) f32 in, d loss / d logits out; losses (M) f32. One block per row, up to
    /// 1024 threads (a 32k vocabulary row is 32 elements per thread).
    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut CudaBuf,
        losses: &mut CudaBuf,
        targets: &CudaBuf,
        m: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        let dev = &self.dev;
        let (host, targets_ptr) = ints(targets, "targets", m)?;
        if let Some(i) = host
            .iter()
            .position(|&t| t != IGNORE_INDEX && (t < 0 || t as usize >= v))
        {
            return Err(Error::tensor(
                "labels",
                format!(
                    "label {} at index {i} is outside 0..{v} (and is not the ignore index -100)",
                    host[i]
                ),
            ));
        }
        let args = Args::new()
            .ptr(arg(logits, "logits", DType::F32, m * v)?)
            .ptr(arg(losses, "losses", DType::F32, m)?)
            .ptr(targets_ptr)
            .i32(int("rows", m)?)
            .i32(int("vocabulary", v)?)
            .f32(grad_scale as f32);
        if m == 0 || v == 0 {
            return Ok(());
        }
        let threads = (v.div_ceil(8).div_ceil(32) * 32).clamp(32, 1024) as u32;
        dev.launch(
            k::CROSS_ENTROPY_FWD_BWD,
            Cfg::linear(grid_x("loss rows", m)?, threads),
            args,
        )
    }
}
