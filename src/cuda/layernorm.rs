//! Launchers of kernels/layernorm.cu (reference: src/cpu/layernorm.rs). Backward adds into
//! `dinp` with `accumulate`, else writes it whole. One block per row, 32..256 threads by row width.

use super::kernels::k;
use super::launch::{grid_x, int, row_threads, Args, Cfg};
use super::{arg, CudaBackend, CudaBuf};
use crate::backend::{DType, LayerNormOps};
use crate::error::Result;

impl LayerNormOps for CudaBackend {
    // extern "C" __global__ void layernorm_fwd(act_t* out, float* mean, float* rstd,
    //     const act_t* inp, const w_t* w, const w_t* bias, int n, int c, float eps);
    /// out (N, C) bf16, mean and rstd (N) f32 from inp (N, C).
    #[allow(clippy::too_many_arguments)]
    fn layernorm_fwd(
        &self,
        out: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        inp: &CudaBuf,
        w: &CudaBuf,
        bias: &CudaBuf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(out, "layernorm out", store, n * c)?)
            .ptr(arg(mean, "layernorm mean", DType::F32, n)?)
            .ptr(arg(rstd, "layernorm rstd", DType::F32, n)?)
            .ptr(arg(inp, "layernorm inp", store, n * c)?)
            .ptr(arg(w, "layernorm weight", dev.weights(), c)?)
            .ptr(arg(bias, "layernorm bias", dev.weights(), c)?)
            .i32(int("rows", n)?)
            .i32(int("hidden size", c)?)
            .f32(eps as f32);
        if n == 0 {
            return Ok(());
        }
        dev.launch(
            k::LAYERNORM_FWD,
            Cfg::linear(grid_x("layernorm rows", n)?, row_threads(c)),
            args,
        )
    }

    // extern "C" __global__ void layernorm_bwd(act_t* dinp, const act_t* dout, const act_t* inp,
    //     const w_t* w, const float* mean, const float* rstd, int n, int c, int accumulate);
    /// dinp (N, C) += LayerNorm backward of dout (N, C) with `accumulate`, else = it.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        w: &CudaBuf,
        mean: &CudaBuf,
        rstd: &CudaBuf,
        n: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(dinp, "layernorm dinp", store, n * c)?)
            .ptr(arg(dout, "layernorm dout", store, n * c)?)
            .ptr(arg(inp, "layernorm inp", store, n * c)?)
            .ptr(arg(w, "layernorm weight", dev.weights(), c)?)
            .ptr(arg(mean, "layernorm mean", DType::F32, n)?)
            .ptr(arg(rstd, "layernorm rstd", DType::F32, n)?)
            .i32(int("rows", n)?)
            .i32(int("hidden size", c)?)
            .i32(accumulate as i32);
        if n == 0 {
            return Ok(());
        }
        dev.launch(
            k::LAYERNORM_BWD,
            Cfg::linear(grid_x("layernorm rows", n)?, row_threads(c)),
            args,
        )
    }
}
