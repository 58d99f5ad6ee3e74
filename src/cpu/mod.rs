//! The CPU backend: pure Rust, multi-threaded (rayon) with the `gemm` crate for products.
//! It is the numerical reference every kernel is checked against, and the default where no
//! GPU is present. `CpuBackend<f64>` runs the same code in double precision for gradient
//! checks.

pub mod activation;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod loss;
pub mod matmul;
pub mod optimizer;
pub mod real;
pub mod rmsnorm;
pub mod rows;

use crate::backend::{AttnDims, Backend, BiasRef, DType, MemStats};
use crate::error::{Error, Result};
use activation::Act;
use optimizer::{AdafactorHyper, AdamWHyper};
use real::Real;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default, Debug)]
struct MemCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemCounter {
    fn add(&self, bytes: usize) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
}

enum Data<F> {
    Real(Vec<F>),
    Int(Vec<i32>),
}

/// Host storage. `dtype` is the logical type (BF16 requested on the CPU is held as F);
/// dropping the buffer returns its bytes to the backend's counter.
pub struct CpuBuf<F: Real> {
    data: Data<F>,
    dtype: DType,
    mem: Arc<MemCounter>,
}

impl<F: Real> CpuBuf<F> {
    fn bytes(&self) -> usize {
        match &self.data {
            Data::Real(v) => v.len() * std::mem::size_of::<F>(),
            Data::Int(v) => v.len() * 4,
        }
    }
    fn len(&self) -> usize {
        match &self.data {
            Data::Real(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }
}

impl<F: Real> Drop for CpuBuf<F> {
    fn drop(&mut self) {
        self.mem.sub(self.bytes());
    }
}

pub struct CpuBackend<F: Real = f32> {
    mem: Arc<MemCounter>,
    _f: PhantomData<F>,
}

impl<F: Real> Default for CpuBackend<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Real> CpuBackend<F> {
    pub fn new() -> Self {
        CpuBackend {
            mem: Arc::new(MemCounter::default()),
            _f: PhantomData,
        }
    }

    fn wrap(&self, data: Data<F>, dtype: DType) -> CpuBuf<F> {
        let buf = CpuBuf {
            data,
            dtype,
            mem: self.mem.clone(),
        };
        self.mem.add(buf.bytes());
        buf
    }
}

/// Borrows the floats of a buffer, checking its type and that it holds at least `len`.
fn real<'a, F: Real>(buf: &'a CpuBuf<F>, what: &str, len: usize) -> Result<&'a [F]> {
    match &buf.data {
        Data::Real(v) if v.len() >= len => Ok(&v[..len]),
        Data::Real(v) => Err(Error::shape(what, format!(">= {len} elements"), v.len())),
        Data::Int(_) => Err(Error::tensor(what, "expected a float buffer, got I32")),
    }
}

fn real_mut<'a, F: Real>(buf: &'a mut CpuBuf<F>, what: &str, len: usize) -> Result<&'a mut [F]> {
    match &mut buf.data {
        Data::Real(v) => {
            let have = v.len();
            v.get_mut(..len)
                .ok_or_else(|| Error::shape(what, format!(">= {len} elements"), have))
        }
        Data::Int(_) => Err(Error::tensor(what, "expected a float buffer, got I32")),
    }
}

fn ints<'a, F: Real>(buf: &'a CpuBuf<F>, what: &str, len: usize) -> Result<&'a [i32]> {
    match &buf.data {
        Data::Int(v) if v.len() >= len => Ok(&v[..len]),
        Data::Int(v) => Err(Error::shape(what, format!(">= {len} elements"), v.len())),
        Data::Real(_) => Err(Error::tensor(what, "expected an I32 buffer, got floats")),
    }
}

fn opt_real<'a, F: Real>(
    buf: Option<&'a CpuBuf<F>>,
    what: &str,
    len: usize,
) -> Result<Option<&'a [F]>> {
    buf.map(|b| real(b, what, len)).transpose()
}

fn check_rows(what: &str, idx: &[i32], rows: usize) -> Result<()> {
    embedding::check_ids(what, idx, rows)
}

impl<F: Real> Backend for CpuBackend<F> {
    type Buf = CpuBuf<F>;

    fn name(&self) -> String {
        if std::mem::size_of::<F>() == 8 {
            "cpu-f64".into()
        } else {
            "cpu".into()
        }
    }
    fn act_dtype(&self) -> DType {
        DType::F32
    }
    fn weight_dtype(&self) -> DType {
        DType::F32
    }
    fn len(&self, buf: &CpuBuf<F>) -> usize {
        buf.len()
    }
    fn dtype(&self, buf: &CpuBuf<F>) -> DType {
        buf.dtype
    }
    fn buf_id(&self, buf: &CpuBuf<F>) -> usize {
        match &buf.data {
            Data::Real(v) => v.as_ptr() as usize,
            Data::Int(v) => v.as_ptr() as usize,
        }
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<CpuBuf<F>> {
        let data = match dtype {
            DType::I32 => Data::Int(vec![0; len]),
            _ => Data::Real(vec![F::ZERO; len]),
        };
        Ok(self.wrap(data, dtype))
    }
    fn upload(&self, dtype: DType, data: &[f32]) -> Result<CpuBuf<F>> {
        if dtype == DType::I32 {
            return Err(Error::tensor(
                "upload",
                "float data cannot be uploaded as I32",
            ));
        }
        Ok(self.wrap(
            Data::Real(data.iter().map(|&x| F::from_f32(x)).collect()),
            dtype,
        ))
    }
    fn upload_i32(&self, data: &[i32]) -> Result<CpuBuf<F>> {
        Ok(self.wrap(Data::Int(data.to_vec()), DType::I32))
    }
    fn download(&self, buf: &CpuBuf<F>) -> Result<Vec<f32>> {
        Ok(match &buf.data {
            Data::Real(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::Int(v) => v.iter().map(|&x| x as f32).collect(),
        })
    }
    fn download_f64(&self, buf: &CpuBuf<F>) -> Result<Vec<f64>> {
        Ok(match &buf.data {
            Data::Real(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
        })
    }
    fn copy(&self, dst: &mut CpuBuf<F>, src: &CpuBuf<F>) -> Result<()> {
        match (&mut dst.data, &src.data) {
            (Data::Real(d), Data::Real(s)) if d.len() == s.len() => d.copy_from_slice(s),
            (Data::Int(d), Data::Int(s)) if d.len() == s.len() => d.copy_from_slice(s),
            _ => {
                return Err(Error::shape(
                    "copy",
                    format!("{} elements of {:?}", dst.len(), dst.dtype),
                    format!("{} elements of {:?}", src.len(), src.dtype),
                ))
            }
        }
        Ok(())
    }
    fn memory(&self) -> MemStats {
        MemStats {
            live_bytes: self.mem.live.load(Ordering::Relaxed),
            peak_bytes: self.mem.peak.load(Ordering::Relaxed),
        }
    }
    fn reset_peak(&self) {
        self.mem
            .peak
            .store(self.mem.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn embedding_fwd(
        &self,
        out: &mut CpuBuf<F>,
        prompt: &CpuBuf<F>,
        wte: &CpuBuf<F>,
        wpe: Option<&CpuBuf<F>>,
        wtt: Option<&CpuBuf<F>>,
        ids: &CpuBuf<F>,
        type_ids: Option<&CpuBuf<F>>,
        b: usize,
        t: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        let type_ids = type_ids
            .map(|x| ints(x, "token_type_ids", b * t))
            .transpose()?;
        embedding::embedding_fwd(
            real_mut(out, "embedding out", b * (p + t) * c)?,
            real(prompt, "prompt", p * c)?,
            real(wte, "word embeddings", wte.len())?,
            opt_real(wpe, "position embeddings", wpe.map_or(0, |x| x.len()))?,
            opt_real(wtt, "token type embeddings", wtt.map_or(0, |x| x.len()))?,
            ints(ids, "input_ids", b * t)?,
            type_ids,
            b,
            t,
            p,
            c,
        )
    }
    fn prompt_grad_bwd(
        &self,
        dprompt: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        b: usize,
        t: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        embedding::prompt_grad_bwd(
            real_mut(dprompt, "prompt grad", p * c)?,
            real(dout, "embedding grad", b * (p + t) * c)?,
            b,
            t,
            p,
            c,
        );
        Ok(())
    }

    fn layernorm_fwd(
        &self,
        out: &mut CpuBuf<F>,
        mean: &mut CpuBuf<F>,
        rstd: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        bias: &CpuBuf<F>,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        layernorm::layernorm_fwd(
            real_mut(out, "layernorm out", n * c)?,
            real_mut(mean, "layernorm mean", n)?,
            real_mut(rstd, "layernorm rstd", n)?,
            real(inp, "layernorm inp", n * c)?,
            real(w, "layernorm weight", c)?,
            real(bias, "layernorm bias", c)?,
            c,
            eps,
        );
        Ok(())
    }
    fn layernorm_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        mean: &CpuBuf<F>,
        rstd: &CpuBuf<F>,
        n: usize,
        c: usize,
    ) -> Result<()> {
        layernorm::layernorm_bwd(
            real_mut(dinp, "layernorm dinp", n * c)?,
            real(dout, "layernorm dout", n * c)?,
            real(inp, "layernorm inp", n * c)?,
            real(w, "layernorm weight", c)?,
            real(mean, "layernorm mean", n)?,
            real(rstd, "layernorm rstd", n)?,
            c,
        );
        Ok(())
    }

    fn rmsnorm_fwd(
        &self,
        out: &mut CpuBuf<F>,
        rstd: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        rmsnorm::rmsnorm_fwd(
            real_mut(out, "rmsnorm out", n * c)?,
            real_mut(rstd, "rmsnorm rstd", n)?,
            real(inp, "rmsnorm inp", n * c)?,
            real(w, "rmsnorm weight", c)?,
            c,
            eps,
        );
        Ok(())
    }
    fn rmsnorm_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        rstd: &CpuBuf<F>,
        n: usize,
        c: usize,
    ) -> Result<()> {
        rmsnorm::rmsnorm_bwd(
            real_mut(dinp, "rmsnorm dinp", n * c)?,
            real(dout, "rmsnorm dout", n * c)?,
            real(inp, "rmsnorm inp", n * c)?,
            real(w, "rmsnorm weight", c)?,
            real(rstd, "rmsnorm rstd", n)?,
            c,
        );
        Ok(())
    }

    fn linear_fwd(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        bias: Option<&CpuBuf<F>>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        matmul::linear_fwd(
            real_mut(out, "linear out", m * n)?,
            real(inp, "linear inp", m * k)?,
            real(w, "linear weight", n * k)?,
            opt_real(bias, "linear bias", n)?,
            m,
            k,
            n,
        );
        Ok(())
    }
    fn linear_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        w: &CpuBuf<F>,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        matmul::linear_bwd(
            real_mut(dinp, "linear dinp", m * k)?,
            real(dout, "linear dout", m * n)?,
            real(w, "linear weight", n * k)?,
            m,
            k,
            n,
            accumulate,
        );
        Ok(())
    }

    fn act_fwd(&self, out: &mut CpuBuf<F>, inp: &CpuBuf<F>, act: Act, n: usize) -> Result<()> {
        activation::act_fwd(real_mut(out, "act out", n)?, real(inp, "act inp", n)?, act);
        Ok(())
    }
    fn act_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        inp: &CpuBuf<F>,
        act: Act,
        n: usize,
    ) -> Result<()> {
        activation::act_bwd(
            real_mut(dinp, "act dinp", n)?,
            real(dout, "act dout", n)?,
            real(inp, "act inp", n)?,
            act,
        );
        Ok(())
    }
    fn gated_act_fwd(
        &self,
        out: &mut CpuBuf<F>,
        gate: &CpuBuf<F>,
        lin: &CpuBuf<F>,
        act: Act,
        n: usize,
    ) -> Result<()> {
        activation::gated_act_fwd(
            real_mut(out, "gated out", n)?,
            real(gate, "gated gate", n)?,
            real(lin, "gated lin", n)?,
            act,
        );
        Ok(())
    }
    fn gated_act_bwd(
        &self,
        dgate: &mut CpuBuf<F>,
        dlin: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        gate: &CpuBuf<F>,
        lin: &CpuBuf<F>,
        act: Act,
        n: usize,
    ) -> Result<()> {
        activation::gated_act_bwd(
            real_mut(dgate, "gated dgate", n)?,
            real_mut(dlin, "gated dlin", n)?,
            real(dout, "gated dout", n)?,
            real(gate, "gated gate", n)?,
            real(lin, "gated lin", n)?,
            act,
        );
        Ok(())
    }

    fn attention_fwd(
        &self,
        out: &mut CpuBuf<F>,
        lse: &mut CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<BiasRef<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims { b, tq, tk, h, d } = dims;
        let bias = cpu_bias(bias, &dims)?;
        attention::attention_fwd(
            real_mut(out, "attention out", b * tq * h * d)?,
            real_mut(lse, "attention lse", b * h * tq)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * h * d)?,
            real(v, "attention v", b * tk * h * d)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
        );
        Ok(())
    }
    fn attention_bwd(
        &self,
        dq: &mut CpuBuf<F>,
        dk: &mut CpuBuf<F>,
        dv: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        lse: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<BiasRef<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims { b, tq, tk, h, d } = dims;
        let bias = cpu_bias(bias, &dims)?;
        attention::attention_bwd(
            real_mut(dq, "attention dq", b * tq * h * d)?,
            real_mut(dk, "attention dk", b * tk * h * d)?,
            real_mut(dv, "attention dv", b * tk * h * d)?,
            real(dout, "attention dout", b * tq * h * d)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * h * d)?,
            real(v, "attention v", b * tk * h * d)?,
            real(lse, "attention lse", b * h * tq)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
        );
        Ok(())
    }

    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut CpuBuf<F>,
        losses: &mut CpuBuf<F>,
        targets: &CpuBuf<F>,
        m: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        loss::cross_entropy_fwd_bwd(
            real_mut(logits, "logits", m * v)?,
            real_mut(losses, "losses", m)?,
            ints(targets, "targets", m)?,
            v,
            grad_scale,
        )
    }

    fn gather_rows(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        idx: &CpuBuf<F>,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let idx = ints(idx, "row index", m)?;
        let inp = real(inp, "gather inp", inp.len())?;
        check_rows("row index", idx, inp.len() / c.max(1))?;
        rows::gather_rows(real_mut(out, "gather out", m * c)?, inp, idx, c);
        Ok(())
    }
    fn scatter_rows_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        idx: &CpuBuf<F>,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let idx = ints(idx, "row index", m)?;
        let rows_in = dinp.len() / c.max(1);
        check_rows("row index", idx, rows_in)?;
        let n = dinp.len();
        rows::scatter_rows_bwd(
            real_mut(dinp, "scatter dinp", n)?,
            real(dout, "scatter dout", m * c)?,
            idx,
            c,
        );
        Ok(())
    }
    fn mean_pool_fwd(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        weight: &CpuBuf<F>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        rows::mean_pool_fwd(
            real_mut(out, "pool out", b * c)?,
            real(inp, "pool inp", b * t * c)?,
            real(weight, "pool weight", b * t)?,
            t,
            c,
        );
        Ok(())
    }
    fn mean_pool_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        weight: &CpuBuf<F>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        rows::mean_pool_bwd(
            real_mut(dinp, "pool dinp", b * t * c)?,
            real(dout, "pool dout", b * c)?,
            real(weight, "pool weight", b * t)?,
            t,
            c,
        );
        Ok(())
    }

    fn add_fwd(&self, out: &mut CpuBuf<F>, a: &CpuBuf<F>, b: &CpuBuf<F>, n: usize) -> Result<()> {
        elementwise::add_fwd(
            real_mut(out, "add out", n)?,
            real(a, "add a", n)?,
            real(b, "add b", n)?,
        );
        Ok(())
    }
    fn add_inplace(&self, acc: &mut CpuBuf<F>, a: &CpuBuf<F>, n: usize) -> Result<()> {
        elementwise::add_inplace(real_mut(acc, "add acc", n)?, real(a, "add a", n)?);
        Ok(())
    }
    fn scale_inplace(&self, x: &mut CpuBuf<F>, s: f64, n: usize) -> Result<()> {
        elementwise::scale_inplace(real_mut(x, "scale x", n)?, s);
        Ok(())
    }

    fn adamw_update(
        &self,
        param: &mut CpuBuf<F>,
        grad: &CpuBuf<F>,
        m: &mut CpuBuf<F>,
        v: &mut CpuBuf<F>,
        hp: &AdamWHyper,
        step: u64,
    ) -> Result<()> {
        let n = param.len();
        optimizer::adamw_update(
            real_mut(param, "param", n)?,
            real(grad, "grad", n)?,
            real_mut(m, "adam m", n)?,
            real_mut(v, "adam v", n)?,
            hp,
            step,
        );
        Ok(())
    }
    fn adafactor_update(
        &self,
        param: &mut CpuBuf<F>,
        grad: &CpuBuf<F>,
        row: &mut CpuBuf<F>,
        col: &mut CpuBuf<F>,
        hp: &AdafactorHyper,
        step: u64,
    ) -> Result<()> {
        let (n, r, c) = (param.len(), row.len(), col.len());
        if r * c != n {
            return Err(Error::shape("adafactor factors", n, format!("{r} x {c}")));
        }
        optimizer::adafactor_update(
            real_mut(param, "param", n)?,
            real(grad, "grad", n)?,
            real_mut(row, "adafactor row", r)?,
            real_mut(col, "adafactor col", c)?,
            hp,
            step,
        );
        Ok(())
    }
}

fn cpu_bias<'a, F: Real>(
    bias: Option<BiasRef<'a, CpuBuf<F>>>,
    dims: &AttnDims,
) -> Result<Option<attention::PositionBias<'a, F>>> {
    let Some(bias) = bias else { return Ok(None) };
    let buckets = ints(bias.buckets, "bias buckets", dims.tq + dims.tk - 1)?;
    let table = real(bias.table, "relative_attention_bias", bias.table.len())?;
    let rows = table.len() / dims.h.max(1);
    check_rows("bias buckets", buckets, rows)?;
    Ok(Some(attention::PositionBias { table, buckets }))
}
