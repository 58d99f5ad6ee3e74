//! Intel MKL's `cblas_sgemm`, loaded at run time (`--gemm mkl`), the way cudarc loads CUDA:
//! nothing is linked or downloaded at build time, and a build without MKL installed runs as
//! before. The library is `libmkl_rt` (MKL's single dynamic library), found at
//! `SOFTPROMPT_MKL` (the file, or the folder holding it) or where `pip install mkl` puts it:
//! the `lib` folder of the active virtual environment or conda prefix, of the Python on
//! `PATH`, of `~/.local`, `/usr/local`, `/usr`, or oneAPI's `/opt/intel/oneapi/mkl/latest`.
//! MKL runs its own OpenMP threads (the `intel-openmp` wheel's `libiomp5`, loaded first when
//! it lies beside MKL), as many as rayon's pool. `row_major` is the one call of a CBLAS
//! `sgemm`, MKL's or OpenBLAS's (gemm_path.rs).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// CBLAS's `cblas_sgemm` (layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
/// ldc): MKL's, loaded here, or OpenBLAS's, linked (gemm_path.rs)
pub type Sgemm = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);

/// The loaded library and its entry point.
pub struct Mkl {
    /// MKL's `cblas_sgemm` (gemm_path.rs calls it through `row_major`)
    pub sgemm: Sgemm,
    /// where it was found (printed with the GEMM path)
    pub path: PathBuf,
    // kept loaded for the process's life: `sgemm` points into it
    _libs: Vec<libloading::Library>,
}

/// The file names of MKL's single dynamic library, newest first.
const NAMES: [&str; 3] = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"];

/// MKL, loaded on first use; the error names `--gemm mkl` and every place looked at.
pub fn mkl() -> Result<&'static Mkl> {
    static MKL: OnceLock<std::result::Result<Mkl, String>> = OnceLock::new();
    MKL.get_or_init(load)
        .as_ref()
        .map_err(|e| Error::arg("--gemm", e.clone()))
}

/// The folders to look in, in order (see the module's documentation).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(p) = std::env::var_os(var) {
            dirs.push(PathBuf::from(p).join("lib"));
        }
    }
    // the prefix of the first python3 on PATH (a venv's bin/python3 → the venv's lib)
    if let Some(path) = std::env::var_os("PATH") {
        let python = std::env::split_paths(&path)
            .map(|d| d.join("python3"))
            .find(|p| p.is_file());
        if let Some(prefix) = python
            .as_deref()
            .and_then(Path::parent)
            .and_then(Path::parent)
        {
            dirs.push(prefix.join("lib"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/lib"));
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/opt/intel/oneapi/mkl/latest/lib",
        "/opt/intel/oneapi/mkl/latest/lib/intel64",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.dedup();
    dirs
}

/// Every file that would be tried: `SOFTPROMPT_MKL` alone when set, else each name in each
/// search folder.
fn candidates() -> (Vec<PathBuf>, String) {
    if let Some(p) = std::env::var_os("SOFTPROMPT_MKL") {
        let p = PathBuf::from(p);
        let files = if p.is_dir() {
            NAMES.iter().map(|n| p.join(n)).collect()
        } else {
            vec![p.clone()]
        };
        return (files, format!("SOFTPROMPT_MKL={}", p.display()));
    }
    let dirs = search_dirs();
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let files = dirs
        .iter()
        .flat_map(|d| NAMES.iter().map(move |n| d.join(n)))
        .collect();
    (files, shown.join(", "))
}

fn load() -> std::result::Result<Mkl, String> {
    let (files, looked) = candidates();
    let Some(path) = files.into_iter().find(|f| f.is_file()) else {
        return Err(format!(
            "mkl: no libmkl_rt ({}) found; looked in {looked}. Install it with `pip install \
             mkl` (into the active Python), or set SOFTPROMPT_MKL to the library or its folder",
            NAMES.join(", ")
        ));
    };
    open(&path).map_err(|e| format!("mkl: {} could not be loaded: {e}", path.display()))
}

fn open(path: &Path) -> std::result::Result<Mkl, libloading::Error> {
    let mut libs = Vec::new();
    // SAFETY (all loads): MKL's and Intel OpenMP's initialisers only set up their own state.
    unsafe {
        // the wheel's libmkl_rt finds its threading layer beside it, but not Intel's OpenMP
        // runtime, which the intel-openmp wheel puts in the same folder
        if let Some(omp) = path.parent().map(|d| d.join("libiomp5.so")) {
            if omp.is_file() {
                libs.push(global(&omp)?);
            }
        }
        let rt = global(path)?;
        let sgemm: Sgemm = *rt.get::<Sgemm>(b"cblas_sgemm\0")?;
        // MKL_Set_Num_Threads(int): as many OpenMP threads as rayon runs
        if let Ok(set) = rt.get::<unsafe extern "C" fn(i32)>(b"MKL_Set_Num_Threads\0") {
            set(rayon::current_num_threads() as i32);
        }
        libs.push(rt);
        Ok(Mkl {
            sgemm,
            path: path.to_path_buf(),
            _libs: libs,
        })
    }
}

/// dlopen with RTLD_GLOBAL, so MKL's own later loads resolve against what is loaded.
unsafe fn global(path: &Path) -> std::result::Result<libloading::Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL).map(Into::into)
    }
    #[cfg(not(unix))]
    {
        libloading::Library::new(path)
    }
}

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// c (M, N) (+)= a (M, K) · op(b) through a CBLAS `sgemm`, row-major; op(b) = bᵀ with
/// b (N, K) when `tb`, else b (K, N).
///
/// # Safety
/// `sgemm` is a CBLAS `cblas_sgemm`; a, b and c hold M·K, N·K and M·N floats (the leading
/// dimensions describe exactly those row-major layouts). Sizes fit in i32 for every model
/// this engine loads (the largest product is vocab × hidden).
pub unsafe fn row_major(
    sgemm: Sgemm,
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    tb: bool,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let ldb = if tb { k } else { n };
    sgemm(
        ROW_MAJOR,
        NO_TRANS,
        if tb { TRANS } else { NO_TRANS },
        m as i32,
        n as i32,
        k as i32,
        1.0,
        a.as_ptr(),
        k as i32,
        b.as_ptr(),
        ldb as i32,
        if accumulate { 1.0 } else { 0.0 },
        c.as_mut_ptr(),
        n as i32,
    )
}
