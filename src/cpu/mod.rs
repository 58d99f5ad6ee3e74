//! The CPU backend: pure Rust, multi-threaded (rayon) with the `gemm` crate for products.
//! It is the numerical reference every kernel is checked against, and the default where no
//! GPU is present. `CpuBackend<f64>` runs the same code in double precision for gradient
//! checks.

pub mod activation;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod head;
pub mod layernorm;
pub mod loss;
pub mod matmul;
pub mod optimizer;
pub mod real;
pub mod rmsnorm;
pub mod rope;
pub mod rows;

use crate::backend::{DType, DeviceKind, MemStats, Storage};
use crate::error::{Error, Result};
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
    crate::backend::check_ids(what, idx, rows)
}

impl<F: Real> Storage for CpuBackend<F> {
    type Buf = CpuBuf<F>;

    fn name(&self) -> String {
        if std::mem::size_of::<F>() == 8 {
            "cpu-f64".into()
        } else {
            "cpu".into()
        }
    }
    fn device(&self) -> DeviceKind {
        DeviceKind::Cpu
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
}
