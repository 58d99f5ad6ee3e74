//! Launchers of kernels/activation.cu (reference: src/cpu/activation.rs). Forward overwrites
//! its output; backward adds into its input gradients with `accumulate`, else writes them. Grid-stride over chunks of 8 elements, `act` passed as `Act::id()`.

use super::kernels::k;
use super::launch::{stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, CudaBackend, CudaBuf};
use crate::backend::{Act, ActivationOps};
use crate::error::Result;

fn cfg(n: usize) -> Cfg {
    Cfg::linear(stride_blocks(n.div_ceil(8)), STRIDE_THREADS)
}

impl ActivationOps for CudaBackend {
    // extern "C" __global__ void act_fwd(act_t* out, const act_t* inp, int act, long long n);
    /// out (N) = act(inp (N)).
    fn act_fwd(&self, out: &mut CudaBuf, inp: &CudaBuf, act: Act, n: usize) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(out, "act out", store, n)?)
            .ptr(arg(inp, "act inp", store, n)?)
            .i32(act.id())
            .i64(n as i64);
        if n == 0 {
            return Ok(());
        }
        dev.launch(k::ACT_FWD, cfg(n), args)
    }

    // extern "C" __global__ void act_bwd(act_t* dinp, const act_t* dout, const act_t* inp, int act,
    //     long long n, int accumulate);
    /// dinp (N) += dout * act'(inp) with `accumulate`, else = it.
    fn act_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        act: Act,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(dinp, "act dinp", store, n)?)
            .ptr(arg(dout, "act dout", store, n)?)
            .ptr(arg(inp, "act inp", store, n)?)
            .i32(act.id())
            .i64(n as i64)
            .i32(accumulate as i32);
        if n == 0 {
            return Ok(());
        }
        dev.launch(k::ACT_BWD, cfg(n), args)
    }

    // extern "C" __global__ void gated_act_fwd(act_t* out, const act_t* gate, const act_t* lin,
    //     int act, long long n);
    /// out (N) = act(gate) * lin.
    fn gated_act_fwd(
        &self,
        out: &mut CudaBuf,
        gate: &CudaBuf,
        lin: &CudaBuf,
        act: Act,
        n: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(out, "gated out", store, n)?)
            .ptr(arg(gate, "gated gate", store, n)?)
            .ptr(arg(lin, "gated lin", store, n)?)
            .i32(act.id())
            .i64(n as i64);
        if n == 0 {
            return Ok(());
        }
        dev.launch(k::GATED_ACT_FWD, cfg(n), args)
    }

    // extern "C" __global__ void gated_act_bwd(act_t* dgate, act_t* dlin, const act_t* dout,
    //     const act_t* gate, const act_t* lin, int act, long long n, int accumulate);
    /// dgate += dout * act'(gate) * lin, dlin += dout * act(gate) with `accumulate`, else =.
    #[allow(clippy::too_many_arguments)]
    fn gated_act_bwd(
        &self,
        dgate: &mut CudaBuf,
        dlin: &mut CudaBuf,
        dout: &CudaBuf,
        gate: &CudaBuf,
        lin: &CudaBuf,
        act: Act,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(dgate, "gated dgate", store, n)?)
            .ptr(arg(dlin, "gated dlin", store, n)?)
            .ptr(arg(dout, "gated dout", store, n)?)
            .ptr(arg(gate, "gated gate", store, n)?)
            .ptr(arg(lin, "gated lin", store, n)?)
            .i32(act.id())
            .i64(n as i64)
            .i32(accumulate as i32);
        if n == 0 {
            return Ok(());
        }
        dev.launch(k::GATED_ACT_BWD, cfg(n), args)
    }
}
