//! The `cuda` device: a cudarc context on one GPU, the kernels compiled by NVRTC at start-up
//! and loaded as modules, and a cuBLAS handle. All work goes to the legacy default stream, so
//! copies, launches and GEMMs are ordered without events.

use super::gemm::Gemm;
use super::kernels::{self, KernelId};
use super::launch::Cfg;
use super::nvrtc;
use crate::backend::{DType, Precision};
use crate::error::{Error, Result};
use cudarc::cublas::sys as cublas;
use cudarc::driver::{result, sys, CudaContext};
use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;

pub struct Gpu {
    ctx: Arc<CudaContext>,
    functions: Vec<sys::CUfunction>,
    cublas: cublas::cublasHandle_t,
    async_alloc: bool,
    pub name: String,
    pub arch: String,
    pub ordinal: usize,
}

// SAFETY: the raw handles are used only after binding the context to the calling thread, and
// the driver and cuBLAS are thread-safe for one handle used from one thread at a time; the
// backend's ops take &self but the models call them from one thread.
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

fn driver_err(what: &str) -> impl Fn(result::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("{what}: {e:?}"))
}

/// Says clearly why no GPU can be used; never panics (cudarc's context panics without
/// libcuda, so the library's presence is checked first).
pub fn probe(ordinal: usize) -> Result<()> {
    // SAFETY: only tries to dlopen libcuda.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Device(
            "no CUDA device: libcuda not found (no NVIDIA driver on this machine); use --device cpu, \
             or --device emu in a build with --features emu"
                .into(),
        ));
    }
    let count = CudaContext::device_count()
        .map_err(driver_err("no CUDA device: cuInit/cuDeviceGetCount"))?;
    if count <= 0 {
        return Err(Error::Device(
            "no CUDA device: the driver reports 0 devices".into(),
        ));
    }
    if ordinal >= count as usize {
        return Err(Error::Device(format!(
            "no CUDA device {ordinal}: the driver reports {count}"
        )));
    }
    if !nvrtc::nvrtc_present() {
        return Err(Error::Device(
            "NVRTC not found: put the folder of libnvrtc.so.13 (the nvidia-cuda-nvrtc wheel's \
             nvidia/cu13/lib) on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    // SAFETY: only tries to dlopen libcublas.
    if !unsafe { cublas::is_culib_present() } {
        return Err(Error::Device(
            "cuBLAS not found: put the folder of libcublas.so.13 on LD_LIBRARY_PATH".into(),
        ));
    }
    Ok(())
}

impl Gpu {
    /// GPU `ordinal` with every kernel compiled in the `precision` build.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Gpu> {
        probe(ordinal)?;
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuda context"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver_err("compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let functions = load_kernels(&arch, precision)?;
        raise_smem_limits(&functions)?;
        let handle = cudarc::cublas::result::create_handle()
            .map_err(|e| Error::Device(format!("cublasCreate: {e:?}")))?;
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        Ok(Gpu {
            async_alloc: ctx.has_async_alloc(),
            ctx,
            functions,
            cublas: handle,
            name: format!("cuda:{ordinal} {name}"),
            arch,
            ordinal,
        })
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(driver_err("bind context"))
    }

    pub fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // SAFETY: a plain allocation on the default stream; freed by `free`.
        unsafe {
            if self.async_alloc {
                result::malloc_async(std::ptr::null_mut(), bytes)
            } else {
                result::malloc_sync(bytes)
            }
        }
        .map_err(driver_err("cuMemAlloc"))
    }

    /// SAFETY: `ptr` came from `alloc` and is freed once.
    pub unsafe fn free(&self, ptr: u64) {
        if self.bind().is_ok() {
            let _ = if self.async_alloc {
                result::free_async(ptr, std::ptr::null_mut())
            } else {
                result::free_sync(ptr)
            };
        }
    }

    /// SAFETY (all copies): the device ranges lie inside live allocations.
    pub unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.bind()?;
        result::memcpy_htod_sync(dst, src).map_err(driver_err("cuMemcpyHtoD"))
    }
    pub unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        self.bind()?;
        result::memcpy_dtoh_sync(dst, src).map_err(driver_err("cuMemcpyDtoH"))
    }
    pub unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        result::memcpy_dtod_sync(dst, src, bytes).map_err(driver_err("cuMemcpyDtoD"))
    }
    pub unsafe fn memset0(&self, dst: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        result::memset_d8_sync(dst, 0, bytes).map_err(driver_err("cuMemsetD8"))
    }

    /// A CUDA event recorded now on the default stream.
    pub fn stamp(&self) -> Result<super::timing::Stamp> {
        self.bind()?;
        super::timing::event_stamp()
    }

    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.ctx.synchronize().map_err(driver_err("synchronize"))
    }

    /// SAFETY: `args` matches the kernel's parameters (launch.rs); pointers are live.
    pub unsafe fn launch(&self, k: KernelId, cfg: &Cfg, args: &mut [*mut c_void]) -> Result<()> {
        self.bind()?;
        result::launch_kernel(
            self.functions[k.0],
            (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
            (cfg.block[0], cfg.block[1], cfg.block[2]),
            cfg.smem,
            std::ptr::null_mut(),
            args,
        )
        .map_err(|e| Error::Kernel {
            kernel: format!("{} (kernels/{})", k.name(), k.file()),
            msg: format!("cuLaunchKernel: {e:?}"),
        })
    }

    /// SAFETY: the operands lie inside live allocations (checked by the launchers).
    pub unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        let ty = |d: DType| match d {
            DType::BF16 => cublas::cudaDataType_t::CUDA_R_16BF,
            _ => cublas::cudaDataType_t::CUDA_R_32F,
        };
        let op = |t: bool| {
            if t {
                cublas::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (1.0f32, g.beta);
        let rc = cublas::cublasGemmEx(
            self.cublas,
            op(g.trans_a),
            op(g.trans_b),
            g.m as i32,
            g.n as i32,
            g.k as i32,
            &alpha as *const f32 as *const c_void,
            g.a as *const c_void,
            ty(g.ab_type),
            g.lda as i32,
            g.b as *const c_void,
            ty(g.ab_type),
            g.ldb as i32,
            &beta as *const f32 as *const c_void,
            g.c as *mut c_void,
            ty(g.c_type),
            g.ldc as i32,
            cublas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        );
        if rc != cublas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(Error::Device(format!(
                "cublasGemmEx ({}x{}x{}): {rc:?}",
                g.m, g.n, g.k
            )));
        }
        Ok(())
    }
}

/// The attention kernels use more than the default 48 KB of dynamic shared memory.
fn raise_smem_limits(functions: &[sys::CUfunction]) -> Result<()> {
    for (i, &(name, file)) in kernels::KERNELS.iter().enumerate() {
        if !name.starts_with("attention") {
            continue;
        }
        // SAFETY: a function handle loaded from a live module.
        unsafe {
            result::function::set_function_attribute(
                functions[i],
                sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                super::attention::MAX_DYNAMIC_SMEM as i32,
            )
        }
        .map_err(|e| Error::Kernel {
            kernel: format!("{name} (kernels/{file})"),
            msg: format!("cannot raise its dynamic shared memory limit: {e:?}"),
        })?;
    }
    Ok(())
}

/// Compiles (or reads from the cache) every kernel file, loads the modules and looks up every
/// kernel of the table; any failure names the .cu file.
fn load_kernels(arch: &str, precision: Precision) -> Result<Vec<sys::CUfunction>> {
    let mut modules = BTreeMap::new();
    for c in nvrtc::compile_all(arch, precision)? {
        // SAFETY: a CUBIN image produced by NVRTC for this device's architecture.
        let module = unsafe { result::module::load_data(c.cubin.as_ptr() as *const c_void) }
            .map_err(|e| Error::Kernel {
                kernel: format!("kernels/{}", c.file),
                msg: format!("cuModuleLoadData: {e:?}"),
            })?;
        modules.insert(c.file, module);
    }
    kernels::KERNELS
        .iter()
        .map(|&(name, file)| {
            let fail = |msg: String| Error::Kernel {
                kernel: format!("{name} (kernels/{file})"),
                msg,
            };
            let module = *modules
                .get(file)
                .ok_or_else(|| fail("its module was not compiled".into()))?;
            let cname = CString::new(name).map_err(|e| fail(e.to_string()))?;
            // SAFETY: a module loaded above.
            unsafe { result::module::get_function(module, cname) }
                .map_err(|e| fail(format!("cuModuleGetFunction: {e:?}")))
        })
        .collect()
}
