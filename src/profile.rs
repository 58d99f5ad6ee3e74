//! `softprompt profile`: a backend decorator that times every op. On the CPU each op is
//! synchronous, so wall time per call is its cost; on a GPU the decorator synchronises after
//! each launch, which serialises the stream but attributes time to the right op.

use crate::backend::{AttnDims, Backend, BiasRef, DType, KernelTime, MemStats};
use crate::cpu::activation::Act;
use crate::cpu::optimizer::{AdafactorHyper, AdamWHyper};
use crate::error::Result;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// Per-op call counts and total seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpStats {
    pub calls: u64,
    pub seconds: f64,
}

pub struct Profiler<B: Backend> {
    pub inner: B,
    stats: Mutex<BTreeMap<&'static str, OpStats>>,
}

impl<B: Backend> Profiler<B> {
    pub fn new(inner: B) -> Self {
        Profiler {
            inner,
            stats: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs one op (and the synchronisation after it) inside an NVTX range named after it.
    fn time<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _range = crate::cuda::nvtx::Range::push(op);
        let start = Instant::now();
        let out = f()?;
        self.inner.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        if let Ok(mut stats) = self.stats.lock() {
            let s = stats.entry(op).or_default();
            s.calls += 1;
            s.seconds += secs;
        }
        Ok(out)
    }

    /// (op, stats) sorted by time, largest first.
    pub fn report(&self) -> Vec<(&'static str, OpStats)> {
        let mut rows: Vec<_> = self
            .stats
            .lock()
            .map(|s| s.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        rows
    }

    pub fn reset(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.clear();
        }
    }

    /// A text table: op, calls, total ms, share of the total.
    pub fn table(&self) -> String {
        let rows = self.report();
        let total: f64 = rows.iter().map(|r| r.1.seconds).sum();
        let mut s = format!(
            "{:<24} {:>7} {:>11} {:>7}\n",
            "op", "calls", "total ms", "share"
        );
        for (op, st) in &rows {
            s += &format!(
                "{:<24} {:>7} {:>11.2} {:>6.1}%\n",
                op,
                st.calls,
                st.seconds * 1e3,
                100.0 * st.seconds / total.max(1e-12)
            );
        }
        s += &format!("{:<24} {:>7} {:>11.2}\n", "total", "", total * 1e3);
        s
    }
}

impl<B: Backend> Backend for Profiler<B> {
    type Buf = B::Buf;

    fn name(&self) -> String {
        self.inner.name()
    }
    fn act_dtype(&self) -> DType {
        self.inner.act_dtype()
    }
    fn weight_dtype(&self) -> DType {
        self.inner.weight_dtype()
    }
    fn len(&self, buf: &B::Buf) -> usize {
        self.inner.len(buf)
    }
    fn dtype(&self, buf: &B::Buf) -> DType {
        self.inner.dtype(buf)
    }
    fn buf_id(&self, buf: &B::Buf) -> usize {
        self.inner.buf_id(buf)
    }
    fn zeros(&self, dtype: DType, len: usize) -> Result<B::Buf> {
        self.time("zeros", || self.inner.zeros(dtype, len))
    }
    fn upload(&self, dtype: DType, data: &[f32]) -> Result<B::Buf> {
        self.time("upload", || self.inner.upload(dtype, data))
    }
    fn upload_i32(&self, data: &[i32]) -> Result<B::Buf> {
        self.time("upload_i32", || self.inner.upload_i32(data))
    }
    fn download(&self, buf: &B::Buf) -> Result<Vec<f32>> {
        self.time("download", || self.inner.download(buf))
    }
    fn download_f64(&self, buf: &B::Buf) -> Result<Vec<f64>> {
        self.time("download", || self.inner.download_f64(buf))
    }
    fn copy(&self, dst: &mut B::Buf, src: &B::Buf) -> Result<()> {
        self.time("copy", || self.inner.copy(dst, src))
    }
    fn memory(&self) -> MemStats {
        self.inner.memory()
    }
    fn reset_peak(&self) {
        self.inner.reset_peak()
    }
    fn kernel_profile_start(&self) -> Result<()> {
        self.inner.kernel_profile_start()
    }
    fn kernel_profile_stop(&self) -> Result<Vec<KernelTime>> {
        self.inner.kernel_profile_stop()
    }
    fn synchronize(&self) -> Result<()> {
        self.time("synchronize", || self.inner.synchronize())
    }
    fn embedding_fwd(
        &self,
        out: &mut B::Buf,
        prompt: &B::Buf,
        wte: &B::Buf,
        wpe: Option<&B::Buf>,
        wtt: Option<&B::Buf>,
        ids: &B::Buf,
        type_ids: Option<&B::Buf>,
        b: usize,
        t: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        self.time("embedding_fwd", || {
            self.inner
                .embedding_fwd(out, prompt, wte, wpe, wtt, ids, type_ids, b, t, p, c)
        })
    }
    fn prompt_grad_bwd(
        &self,
        dprompt: &mut B::Buf,
        dout: &B::Buf,
        b: usize,
        t: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        self.time("prompt_grad_bwd", || {
            self.inner.prompt_grad_bwd(dprompt, dout, b, t, p, c)
        })
    }
    fn layernorm_fwd(
        &self,
        out: &mut B::Buf,
        mean: &mut B::Buf,
        rstd: &mut B::Buf,
        inp: &B::Buf,
        w: &B::Buf,
        bias: &B::Buf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        self.time("layernorm_fwd", || {
            self.inner
                .layernorm_fwd(out, mean, rstd, inp, w, bias, n, c, eps)
        })
    }
    fn layernorm_bwd(
        &self,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        inp: &B::Buf,
        w: &B::Buf,
        mean: &B::Buf,
        rstd: &B::Buf,
        n: usize,
        c: usize,
    ) -> Result<()> {
        self.time("layernorm_bwd", || {
            self.inner
                .layernorm_bwd(dinp, dout, inp, w, mean, rstd, n, c)
        })
    }
    fn rmsnorm_fwd(
        &self,
        out: &mut B::Buf,
        rstd: &mut B::Buf,
        inp: &B::Buf,
        w: &B::Buf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        self.time("rmsnorm_fwd", || {
            self.inner.rmsnorm_fwd(out, rstd, inp, w, n, c, eps)
        })
    }
    fn rmsnorm_bwd(
        &self,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        inp: &B::Buf,
        w: &B::Buf,
        rstd: &B::Buf,
        n: usize,
        c: usize,
    ) -> Result<()> {
        self.time("rmsnorm_bwd", || {
            self.inner.rmsnorm_bwd(dinp, dout, inp, w, rstd, n, c)
        })
    }
    fn linear_fwd(
        &self,
        out: &mut B::Buf,
        inp: &B::Buf,
        w: &B::Buf,
        bias: Option<&B::Buf>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        self.time("linear_fwd", || {
            self.inner.linear_fwd(out, inp, w, bias, m, k, n)
        })
    }
    fn linear_bwd(
        &self,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        w: &B::Buf,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        self.time("linear_bwd", || {
            self.inner.linear_bwd(dinp, dout, w, m, k, n, accumulate)
        })
    }
    fn act_fwd(&self, out: &mut B::Buf, inp: &B::Buf, act: Act, n: usize) -> Result<()> {
        self.time("act_fwd", || self.inner.act_fwd(out, inp, act, n))
    }
    fn act_bwd(
        &self,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        inp: &B::Buf,
        act: Act,
        n: usize,
    ) -> Result<()> {
        self.time("act_bwd", || self.inner.act_bwd(dinp, dout, inp, act, n))
    }
    fn gated_act_fwd(
        &self,
        out: &mut B::Buf,
        gate: &B::Buf,
        lin: &B::Buf,
        act: Act,
        n: usize,
    ) -> Result<()> {
        self.time("gated_act_fwd", || {
            self.inner.gated_act_fwd(out, gate, lin, act, n)
        })
    }
    fn gated_act_bwd(
        &self,
        dgate: &mut B::Buf,
        dlin: &mut B::Buf,
        dout: &B::Buf,
        gate: &B::Buf,
        lin: &B::Buf,
        act: Act,
        n: usize,
    ) -> Result<()> {
        self.time("gated_act_bwd", || {
            self.inner
                .gated_act_bwd(dgate, dlin, dout, gate, lin, act, n)
        })
    }
    fn attention_fwd(
        &self,
        out: &mut B::Buf,
        lse: &mut B::Buf,
        q: &B::Buf,
        k: &B::Buf,
        v: &B::Buf,
        key_mask: &B::Buf,
        bias: Option<BiasRef<'_, B::Buf>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        self.time("attention_fwd", || {
            self.inner
                .attention_fwd(out, lse, q, k, v, key_mask, bias, causal, scale, dims)
        })
    }
    fn attention_bwd(
        &self,
        dq: &mut B::Buf,
        dk: &mut B::Buf,
        dv: &mut B::Buf,
        dout: &B::Buf,
        q: &B::Buf,
        k: &B::Buf,
        v: &B::Buf,
        lse: &B::Buf,
        key_mask: &B::Buf,
        bias: Option<BiasRef<'_, B::Buf>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        self.time("attention_bwd", || {
            self.inner.attention_bwd(
                dq, dk, dv, dout, q, k, v, lse, key_mask, bias, causal, scale, dims,
            )
        })
    }
    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut B::Buf,
        losses: &mut B::Buf,
        targets: &B::Buf,
        m: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        self.time("cross_entropy_fwd_bwd", || {
            self.inner
                .cross_entropy_fwd_bwd(logits, losses, targets, m, v, grad_scale)
        })
    }
    fn gather_rows(
        &self,
        out: &mut B::Buf,
        inp: &B::Buf,
        idx: &B::Buf,
        m: usize,
        c: usize,
    ) -> Result<()> {
        self.time("gather_rows", || {
            self.inner.gather_rows(out, inp, idx, m, c)
        })
    }
    fn scatter_rows_bwd(
        &self,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        idx: &B::Buf,
        m: usize,
        c: usize,
    ) -> Result<()> {
        self.time("scatter_rows_bwd", || {
            self.inner.scatter_rows_bwd(dinp, dout, idx, m, c)
        })
    }
    fn mean_pool_fwd(
        &self,
        out: &mut B::Buf,
        inp: &B::Buf,
        weight: &B::Buf,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        self.time("mean_pool_fwd", || {
            self.inner.mean_pool_fwd(out, inp, weight, b, t, c)
        })
    }
    fn mean_pool_bwd(
        &self,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        weight: &B::Buf,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        self.time("mean_pool_bwd", || {
            self.inner.mean_pool_bwd(dinp, dout, weight, b, t, c)
        })
    }
    fn add_fwd(&self, out: &mut B::Buf, a: &B::Buf, b: &B::Buf, n: usize) -> Result<()> {
        self.time("add_fwd", || self.inner.add_fwd(out, a, b, n))
    }
    fn add_inplace(&self, acc: &mut B::Buf, a: &B::Buf, n: usize) -> Result<()> {
        self.time("add_inplace", || self.inner.add_inplace(acc, a, n))
    }
    fn scale_inplace(&self, x: &mut B::Buf, s: f64, n: usize) -> Result<()> {
        self.time("scale_inplace", || self.inner.scale_inplace(x, s, n))
    }
    fn adamw_update(
        &self,
        param: &mut B::Buf,
        grad: &B::Buf,
        m: &mut B::Buf,
        v: &mut B::Buf,
        hp: &AdamWHyper,
        step: u64,
    ) -> Result<()> {
        self.time("adamw_update", || {
            self.inner.adamw_update(param, grad, m, v, hp, step)
        })
    }
    fn adafactor_update(
        &self,
        param: &mut B::Buf,
        grad: &B::Buf,
        row: &mut B::Buf,
        col: &mut B::Buf,
        hp: &AdafactorHyper,
        step: u64,
    ) -> Result<()> {
        self.time("adafactor_update", || {
            self.inner.adafactor_update(param, grad, row, col, hp, step)
        })
    }
}
