//! Launchers of kernels/rope.cu (reference: src/cpu/rope.rs). Both rotate in place; one thread
//! per (row, head, pair), grid-stride.

use super::kernels::{k, KernelId};
use super::launch::{int, stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, ints, CudaBackend, CudaBuf};
use crate::backend::rope::check_rope;
use crate::backend::{check_ids, DType, RopeOps};
use crate::error::Result;

impl CudaBackend {
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        kernel: KernelId,
        x: &mut CudaBuf,
        inv_freq: &CudaBuf,
        pos: &CudaBuf,
        (b, t, h, d): (usize, usize, usize, usize),
    ) -> Result<()> {
        check_rope(d)?;
        let (host, pos_p) = ints(pos, "rope positions", b * t)?;
        check_ids("rope positions", host, i32::MAX as usize)?;
        let args = Args::new()
            .ptr(arg(x, "rope x", self.store(), b * t * h * d)?)
            .ptr(arg(inv_freq, "rope inv_freq", DType::F32, d / 2)?)
            .ptr(pos_p)
            .i64((b * t) as i64)
            .i32(int("rope heads", h)?)
            .i32(int("rope head dim", d)?);
        let work = b * t * h * (d / 2);
        if work == 0 {
            return Ok(());
        }
        self.dev.launch(
            kernel,
            Cfg::linear(stride_blocks(work), STRIDE_THREADS),
            args,
        )
    }
}

impl RopeOps for CudaBackend {
    // extern "C" __global__ void rope_fwd(act_t* x, const float* inv_freq, const int* pos,
    //     long long rows, int h, int d);
    /// x (B, T, H, D) rotated in place at positions pos (B, T).
    #[allow(clippy::too_many_arguments)]
    fn rope_fwd(
        &self,
        x: &mut CudaBuf,
        inv_freq: &CudaBuf,
        pos: &CudaBuf,
        b: usize,
        t: usize,
        h: usize,
        d: usize,
    ) -> Result<()> {
        self.rope(k::ROPE_FWD, x, inv_freq, pos, (b, t, h, d))
    }

    // extern "C" __global__ void rope_bwd(act_t* dx, const float* inv_freq, const int* pos,
    //     long long rows, int h, int d);
    /// dx (B, T, H, D) rotated back in place.
    #[allow(clippy::too_many_arguments)]
    fn rope_bwd(
        &self,
        dx: &mut CudaBuf,
        inv_freq: &CudaBuf,
        pos: &CudaBuf,
        b: usize,
        t: usize,
        h: usize,
        d: usize,
    ) -> Result<()> {
        self.rope(k::ROPE_BWD, dx, inv_freq, pos, (b, t, h, d))
    }
}
