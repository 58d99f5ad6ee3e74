//! One device abstraction with two kinds: `Cuda` (a GPU through cudarc) and `Emu` (host memory
//! and the CPU emulator). The launchers call `launch` and `gemm` without knowing which.
//! `SOFTPROMPT_SYNC=1` synchronises after every launch and names the op that failed.

use super::gemm::Gemm;
use super::gpu::Gpu;
use super::kernels::KernelId;
use super::launch::{Args, Cfg};
use super::timing::{self, Span, Stamp};
use crate::backend::{DType, DeviceKind, KernelTime, Precision};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
#[cfg(feature = "emu")]
use std::time::Instant;

pub enum Kind {
    Cuda(Gpu),
    #[cfg(feature = "emu")]
    Emu,
}

pub struct Device {
    pub kind: Kind,
    /// which build of the kernels runs, and so how weights and activations are stored
    pub precision: Precision,
    sync_each: bool,
    live: AtomicUsize,
    peak: AtomicUsize,
    /// launches per kernel (indexed like KERNELS), for the test that every kernel runs
    launches: Vec<AtomicUsize>,
    /// the spans of a profiled region (`kernel_profile_start`), None when not profiling
    profile: Mutex<Option<Vec<Span>>>,
}

/// A device allocation (or, under `emu`, a 256-byte-aligned host allocation); freed on drop.
pub struct DevMem {
    pub ptr: u64,
    pub bytes: usize,
    dev: Arc<Device>,
}

impl Drop for DevMem {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.dev.live.fetch_sub(self.bytes, Ordering::Relaxed);
        // SAFETY: allocated by this device with this size, freed once, here.
        unsafe {
            match &self.dev.kind {
                Kind::Cuda(g) => g.free(self.ptr),
                #[cfg(feature = "emu")]
                Kind::Emu => super::emu::free(self.ptr, self.bytes),
            }
        }
    }
}

impl Device {
    pub fn cuda(ordinal: usize, precision: Precision) -> Result<Arc<Device>> {
        let sync_each = crate::env::sync()?;
        Ok(Arc::new(Device::with_kind(
            Kind::Cuda(Gpu::new(ordinal, precision)?),
            precision,
            sync_each,
        )))
    }

    #[cfg(feature = "emu")]
    pub fn emu(precision: Precision) -> Result<Arc<Device>> {
        let sync_each = crate::env::sync()?;
        Ok(Arc::new(Device::with_kind(Kind::Emu, precision, sync_each)))
    }

    fn with_kind(kind: Kind, precision: Precision, sync_each: bool) -> Device {
        Device {
            kind,
            precision,
            sync_each,
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            launches: super::kernels::KERNELS
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
            profile: Mutex::new(None),
        }
    }

    /// The storage type of activations.
    pub fn store(&self) -> DType {
        self.precision.acts()
    }

    /// The storage type of frozen weights.
    pub fn weights(&self) -> DType {
        self.precision.weights()
    }

    fn profiling(&self) -> bool {
        self.profile.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    fn stamp(&self) -> Result<Stamp> {
        match &self.kind {
            Kind::Cuda(g) => g.stamp(),
            #[cfg(feature = "emu")]
            Kind::Emu => Ok(Stamp::Host(Instant::now())),
        }
    }

    /// Runs `work`, recording it as a span named `name` when profiling.
    fn timed(&self, name: &str, work: impl FnOnce() -> Result<()>) -> Result<()> {
        if !self.profiling() {
            return work();
        }
        let start = self.stamp()?;
        work()?;
        let end = self.stamp()?;
        if let Ok(mut p) = self.profile.lock() {
            if let Some(spans) = p.as_mut() {
                spans.push(Span {
                    name: name.to_string(),
                    start,
                    end,
                });
            }
        }
        Ok(())
    }

    pub fn profile_start(&self) -> Result<()> {
        self.synchronize()?;
        let mut p = self
            .profile
            .lock()
            .map_err(|_| Error::Device("profile lock poisoned".into()))?;
        *p = Some(Vec::new());
        Ok(())
    }

    pub fn profile_stop(&self) -> Result<Vec<KernelTime>> {
        self.synchronize()?;
        let spans = self
            .profile
            .lock()
            .map_err(|_| Error::Device("profile lock poisoned".into()))?
            .take()
            .unwrap_or_default();
        timing::summarize(spans)
    }

    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Cuda(g) => g.name.clone(),
            #[cfg(feature = "emu")]
            Kind::Emu => "emu".into(),
        }
    }

    /// What kind of device this is, with the build of the kernels it runs.
    pub fn device_kind(&self) -> DeviceKind {
        match &self.kind {
            Kind::Cuda(g) => DeviceKind::Cuda(g.ordinal, self.precision),
            #[cfg(feature = "emu")]
            Kind::Emu => DeviceKind::Emu(self.precision),
        }
    }

    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DevMem> {
        let ptr = if bytes == 0 {
            0
        } else {
            match &self.kind {
                Kind::Cuda(g) => g.alloc(bytes)?,
                #[cfg(feature = "emu")]
                Kind::Emu => super::emu::alloc(bytes)?,
            }
        };
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(DevMem {
            ptr,
            bytes,
            dev: self.clone(),
        })
    }

    /// (kernel name, launches so far) for every kernel of the table.
    pub fn launch_counts(&self) -> Vec<(&'static str, usize)> {
        super::kernels::KERNELS
            .iter()
            .zip(&self.launches)
            .map(|((name, _), n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    pub fn reset_peak(&self) {
        self.peak.store(self.live_bytes(), Ordering::Relaxed);
    }

    /// # Safety
    /// (all copies) The device ranges lie inside live allocations of this device.
    pub unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        match &self.kind {
            Kind::Cuda(g) => g.htod(dst, src),
            #[cfg(feature = "emu")]
            Kind::Emu => {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len());
                Ok(())
            }
        }
    }
    /// # Safety
    /// As for `htod`.
    pub unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        match &self.kind {
            Kind::Cuda(g) => g.dtoh(dst, src),
            #[cfg(feature = "emu")]
            Kind::Emu => {
                std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len());
                Ok(())
            }
        }
    }
    /// # Safety
    /// As for `htod`.
    pub unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match &self.kind {
            Kind::Cuda(g) => g.dtod(dst, src, bytes),
            #[cfg(feature = "emu")]
            Kind::Emu => {
                std::ptr::copy(src as *const u8, dst as *mut u8, bytes);
                Ok(())
            }
        }
    }
    /// # Safety
    /// As for `htod`.
    pub unsafe fn memset0(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match &self.kind {
            Kind::Cuda(g) => g.memset0(dst, bytes),
            #[cfg(feature = "emu")]
            Kind::Emu => {
                std::ptr::write_bytes(dst as *mut u8, 0, bytes);
                Ok(())
            }
        }
    }

    pub fn synchronize(&self) -> Result<()> {
        match &self.kind {
            Kind::Cuda(g) => g.synchronize(),
            #[cfg(feature = "emu")]
            Kind::Emu => Ok(()),
        }
    }

    /// Launches `k` with the packed `args`. The launcher has checked every size and pointer,
    /// so the arguments match the kernel's signature and every access stays in bounds.
    pub fn launch(&self, k: KernelId, cfg: Cfg, mut args: Args) -> Result<()> {
        let mut ptrs = args.pointers();
        self.timed(k.name(), || match &self.kind {
            // SAFETY: see above; the pointer array outlives the (synchronous) launch call.
            Kind::Cuda(g) => unsafe { g.launch(k, &cfg, &mut ptrs) },
            #[cfg(feature = "emu")]
            Kind::Emu => super::emu::launch(k, self.precision, &cfg, &mut ptrs),
        })?;
        self.launches[k.0].fetch_add(1, Ordering::Relaxed);
        if self.sync_each {
            self.synchronize().map_err(|e| Error::Kernel {
                kernel: format!("{} (kernels/{})", k.name(), k.file()),
                msg: format!("failed (SOFTPROMPT_SYNC=1): {e}"),
            })?;
        }
        Ok(())
    }

    /// # Safety
    /// The operands lie inside live allocations (checked by the caller).
    pub unsafe fn gemm(&self, g: &Gemm, op: &str) -> Result<()> {
        let name = format!("gemm ({op})");
        // nsys names kernels itself, but a cuBLAS kernel's name does not say which GEMM it is
        let _range = crate::nvtx::enabled().then(|| crate::nvtx::Range::push(&name));
        self.timed(&name, || match &self.kind {
            Kind::Cuda(gpu) => gpu.gemm(g),
            #[cfg(feature = "emu")]
            Kind::Emu => super::emu::gemm(g),
        })?;
        if self.sync_each {
            self.synchronize().map_err(|e| Error::Kernel {
                kernel: format!("{op} (cuBLAS GEMM)"),
                msg: format!("failed (SOFTPROMPT_SYNC=1): {e}"),
            })?;
        }
        Ok(())
    }
}
