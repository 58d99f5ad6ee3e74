//! Launchers of kernels/rmsnorm.cu (reference: src/cpu/rmsnorm.rs). Backward adds into
//! `dinp` (the residual stream). One block per row, 32..256 threads by row width.

use super::kernels::k;
use super::launch::{grid_x, int, row_threads, Args, Cfg};
use super::{arg, CudaBackend, CudaBuf};
use crate::backend::{DType, RmsNormOps};
use crate::error::Result;

impl RmsNormOps for CudaBackend {
    // extern "C" __global__ void rmsnorm_fwd(act_t* out, float* rstd, const act_t* inp,
    //     const w_t* w, int n, int c, float eps);
    /// out (N, C) bf16 and rstd (N) f32 from inp (N, C).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_fwd(
        &self,
        out: &mut CudaBuf,
        rstd: &mut CudaBuf,
        inp: &CudaBuf,
        w: &CudaBuf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(out, "rmsnorm out", store, n * c)?)
            .ptr(arg(rstd, "rmsnorm rstd", DType::F32, n)?)
            .ptr(arg(inp, "rmsnorm inp", store, n * c)?)
            .ptr(arg(w, "rmsnorm weight", dev.weights(), c)?)
            .i32(int("rows", n)?)
            .i32(int("hidden size", c)?)
            .f32(eps as f32);
        if n == 0 {
            return Ok(());
        }
        dev.launch(
            k::RMSNORM_FWD,
            Cfg::linear(grid_x("rmsnorm rows", n)?, row_threads(c)),
            args,
        )
    }

    // extern "C" __global__ void rmsnorm_bwd(act_t* dinp, const act_t* dout, const act_t* inp,
    //     const w_t* w, const float* rstd, int n, int c, int accumulate);
    /// dinp (N, C) += RMS-norm backward of dout (N, C) with `accumulate`, else = it.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        w: &CudaBuf,
        rstd: &CudaBuf,
        n: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(dinp, "rmsnorm dinp", store, n * c)?)
            .ptr(arg(dout, "rmsnorm dout", store, n * c)?)
            .ptr(arg(inp, "rmsnorm inp", store, n * c)?)
            .ptr(arg(w, "rmsnorm weight", dev.weights(), c)?)
            .ptr(arg(rstd, "rmsnorm rstd", DType::F32, n)?)
            .i32(int("rows", n)?)
            .i32(int("hidden size", c)?)
            .i32(accumulate as i32);
        if n == 0 {
            return Ok(());
        }
        dev.launch(
            k::RMSNORM_BWD,
            Cfg::linear(grid_x("rmsnorm rows", n)?, row_threads(c)),
            args,
        )
    }
}
