//! The CPU backend: pure Rust, multi-threaded (rayon) with the `gemm` crate for products.
//! It is the numerical reference every kernel is checked against, and the default where no
//! GPU is present. `CpuBackend<f64>` runs the same code in double precision for gradient
//! checks.

pub mod activation;
pub mod attention;
pub mod attention_decode;
pub mod attention_mask;
mod attention_ops;
pub mod cblas;
pub mod copy_rows;
pub mod elementwise;
pub mod embedding;
pub mod gemm_path;
pub mod head;
pub mod heap;
pub mod layernorm;
pub mod loss;
pub mod matmul;
pub mod optimizer;
pub mod real;
pub mod rmsnorm;
pub mod rope;
pub mod rows;
pub mod simd;
pub mod threads;

use crate::backend::{DType, DeviceKind, MemStats, Storage};
use crate::error::{Error, Result};
use real::Real;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The backend's memory: bytes in live buffers, their peak, and a pool of freed float
/// buffers kept for reuse. Reusing warm memory spares the allocator's zero-fill and the
/// kernel's page faults on fresh pages, which a step that allocates every activation anew
/// otherwise pays on each one. Pooled bytes count towards the peak (they are memory the
/// process holds), not towards `live`.
struct Arena<F> {
    live: AtomicUsize,
    peak: AtomicUsize,
    /// The most bytes ever live at once (never reset): what the pool may fill up to.
    high: AtomicUsize,
    pool: Mutex<Pool<F>>,
}

/// Freed buffers by length, within `Arena::room` in all.
struct Pool<F> {
    free: HashMap<usize, Vec<Vec<F>>>,
    bytes: usize,
}

/// What the pool may keep whatever the high-water mark: about one BERT-base layer's forward
/// temporaries at B=8, T=148, which is what the next layer asks for again. Beyond it the pool
/// keeps freed buffers only while live and pooled bytes stay within the most ever live at once
/// (`Arena::high`): a step frees its activations in backward and the next step's forward asks
/// for the same lengths again, so the pool then holds the step's working set (memory the
/// process held at that peak anyway) instead of handing it to glibc, which zero-fills it again
/// (`vec![0; len]`) on every step. It adds at most `POOL_BYTES` to the peak, as before.
const POOL_BYTES: usize = 64 << 20;

impl<F: Real> Arena<F> {
    fn new() -> Self {
        Arena {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            high: AtomicUsize::new(0),
            pool: Mutex::new(Pool {
                free: HashMap::new(),
                bytes: 0,
            }),
        }
    }
    fn pooled(&self) -> usize {
        self.pool.lock().map(|p| p.bytes).unwrap_or(0)
    }
    fn add(&self, bytes: usize) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high.fetch_max(now, Ordering::Relaxed);
        self.peak.fetch_max(now + self.pooled(), Ordering::Relaxed);
    }
    /// The pooled bytes allowed beside `live` live ones.
    fn room(&self, live: usize) -> usize {
        POOL_BYTES.max(self.high.load(Ordering::Relaxed).saturating_sub(live))
    }
    fn sub(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
    /// A pooled buffer of exactly `len` floats, holding whatever it held.
    /// On a miss, drops pooled buffers (other lengths: a step's own would have matched) until
    /// the fresh `len` floats fit beside the pool within `room`, so that stale lengths never
    /// raise the peak.
    fn take(&self, len: usize) -> Option<Vec<F>> {
        let mut pool = self.pool.lock().ok()?;
        let bytes = len * std::mem::size_of::<F>();
        if let Some(v) = pool.free.get_mut(&len).and_then(Vec::pop) {
            pool.bytes -= bytes;
            return Some(v);
        }
        let room = self.room(self.live.load(Ordering::Relaxed) + bytes);
        while pool.bytes > room {
            let Some((&l, _)) = pool.free.iter().find(|(_, vs)| !vs.is_empty()) else {
                break;
            };
            pool.free.get_mut(&l).and_then(Vec::pop);
            pool.bytes -= l * std::mem::size_of::<F>();
        }
        None
    }
    /// Keeps `v` for reuse while the pool has room; drops it otherwise.
    fn give(&self, v: Vec<F>) {
        let bytes = v.len() * std::mem::size_of::<F>();
        if bytes == 0 {
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            if pool.bytes + bytes <= self.room(self.live.load(Ordering::Relaxed)) {
                pool.bytes += bytes;
                pool.free.entry(v.len()).or_default().push(v);
            }
        }
    }
}

enum Data<F> {
    Real(Vec<F>),
    Int(Vec<i32>),
}

/// Host storage. `dtype` is the logical type (BF16 requested on the CPU is held as F);
/// dropping the buffer returns its bytes to the backend's counter and its floats to the pool.
pub struct CpuBuf<F: Real> {
    data: Data<F>,
    dtype: DType,
    mem: Arc<Arena<F>>,
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
        if let Data::Real(v) = &mut self.data {
            self.mem.give(std::mem::take(v));
        }
    }
}

pub struct CpuBackend<F: Real = f32> {
    mem: Arc<Arena<F>>,
    _f: PhantomData<F>,
}

impl<F: Real> Default for CpuBackend<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Real> CpuBackend<F> {
    pub fn new() -> Self {
        heap::tune();
        CpuBackend {
            mem: Arc::new(Arena::new()),
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

    /// `len` floats: a pooled buffer as it is when `zero` is false, else zeroed.
    fn floats(&self, len: usize, zero: bool) -> Vec<F> {
        match self.mem.take(len) {
            Some(mut v) => {
                if zero {
                    v.fill(F::ZERO);
                }
                v
            }
            None => vec![F::ZERO; len],
        }
    }

    /// Bytes of freed buffers the backend keeps for reuse.
    pub fn pooled_bytes(&self) -> usize {
        self.mem.pooled()
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
    fn kernels(&self) -> String {
        // float64 (the gradient checks) runs the scalar code and the gemm crate only
        if std::mem::size_of::<F>() == 8 {
            String::new()
        } else {
            gemm_path::kernels_id()
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
            _ => Data::Real(self.floats(len, true)),
        };
        Ok(self.wrap(data, dtype))
    }
    fn output(&self, dtype: DType, len: usize) -> Result<CpuBuf<F>> {
        let data = match dtype {
            DType::I32 => Data::Int(vec![0; len]),
            _ => Data::Real(self.floats(len, false)),
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
        // from the pool, as every buffer it frees goes back there: a fresh vector per upload
        // (the prompt, on every call) stacked up copies of one length until the pool was full
        let mut v = self.floats(data.len(), false);
        for (to, &x) in v.iter_mut().zip(data) {
            *to = F::from_f32(x);
        }
        Ok(self.wrap(Data::Real(v), dtype))
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
        let now = self.mem.live.load(Ordering::Relaxed) + self.mem.pooled();
        self.mem.peak.store(now, Ordering::Relaxed);
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
