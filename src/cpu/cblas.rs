//! Intel MKL's `cblas_sgemm`, loaded at run time (`--gemm mkl`), the way cudarc loads CUDA:
//! nothing is linked or downloaded at build time, and a build without MKL installed runs as
//! before. The library is `libmkl_rt` (MKL's single dynamic library), found at
//! `SOFTPROMPT_MKL` (the file, or the folder holding it) or where `pip install mkl` puts it:
//! the `lib` folder of the active virtual environment or conda prefix, of the Python on
//! `PATH`, of `~/.local`, `/usr/local`, `/usr`, or oneAPI's `/opt/intel/oneapi/mkl/latest`.
//! MKL runs its own OpenMP threads (Intel's threading layer and the `intel-openmp` wheel's
//! `libiomp5`), as many as rayon's pool, unless the user's `MKL_THREADING_LAYER` names another
//! layer, which is kept (`threading_layer`). A folder that lacks a file MKL loads at its first
//! call (`required_files`) is refused before any call: MKL itself would print to stdout and
//! exit the process. `row_major` is the one call of a CBLAS
//! `sgemm`, MKL's or OpenBLAS's (gemm_path.rs).

use super::simd::{self, Isa};
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
    /// MKL's `cblas_sgemm` (`Mkl::sgemm` hands it out)
    sgemm: Sgemm,
    /// MKL_Set_Num_Threads, when the library has it
    set_threads: Option<unsafe extern "C" fn(i32)>,
    /// where it was found (printed with the GEMM path)
    pub path: PathBuf,
    // kept loaded for the process's life: `sgemm` points into it
    _libs: Vec<libloading::Library>,
}

impl Mkl {
    /// MKL's `cblas_sgemm` (gemm_path.rs calls it through `row_major`), its OpenMP threads set
    /// to rayon's count before the first product. Not at load: asking rayon for its count
    /// builds the pool at its default size, and a load before the pool was sized (Python's
    /// `Model()` with SOFTPROMPT_GEMM=mkl) made every later `Model(threads=N)` fail; the first
    /// product runs on the pool, so by then its size is the one it keeps.
    pub fn sgemm(&self) -> Sgemm {
        static SIZED: std::sync::Once = std::sync::Once::new();
        if let Some(set) = self.set_threads {
            // SAFETY: MKL_Set_Num_Threads(int) is a plain setter of MKL's global count.
            SIZED.call_once(|| unsafe { set(rayon::current_num_threads() as i32) });
        }
        self.sgemm
    }
}

/// The file names of MKL's single dynamic library, newest first.
const NAMES: [&str; 3] = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"];

/// MKL, loaded on first use; the error names `--gemm` and every place looked at.
pub fn mkl() -> Result<&'static Mkl> {
    mkl_for("--gemm")
}

/// MKL, loaded on first use; the error names `source` (the flag or variable that asked for
/// it) and every place looked at.
pub fn mkl_for(source: &str) -> Result<&'static Mkl> {
    loaded()
        .as_ref()
        .map_err(|e| Error::arg(source, e.message()))
}

/// Whether MKL loads, for the automatic choice. None found is silent; a `libmkl_rt` found but
/// unusable (not a library, or a folder that lacks what it loads) is said once on stderr.
pub fn usable_or_warn() -> bool {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match loaded() {
        Ok(_) => true,
        Err(LoadError::NotFound(_)) => false,
        Err(LoadError::Unusable(msg)) => {
            WARNED.call_once(|| errln!("warning: {msg}; the CPU's GEMMs run on the gemm crate"));
            false
        }
    }
}

/// Why MKL did not load: nothing found where it was looked for, or a library found that
/// cannot be used.
enum LoadError {
    NotFound(String),
    Unusable(String),
}

impl LoadError {
    fn message(&self) -> String {
        match self {
            LoadError::NotFound(m) | LoadError::Unusable(m) => m.clone(),
        }
    }
}

fn loaded() -> &'static std::result::Result<Mkl, LoadError> {
    static MKL: OnceLock<std::result::Result<Mkl, LoadError>> = OnceLock::new();
    MKL.get_or_init(load)
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

fn load() -> std::result::Result<Mkl, LoadError> {
    let (files, looked) = candidates();
    let Some(path) = files.into_iter().find(|f| f.is_file()) else {
        return Err(LoadError::NotFound(format!(
            "mkl: no libmkl_rt ({}) found; looked in {looked}. Install it with `pip install \
             mkl` (into the active Python), or set SOFTPROMPT_MKL to the library or its folder",
            NAMES.join(", ")
        )));
    };
    let unusable = |e: String| {
        LoadError::Unusable(format!(
            "mkl: {} ({looked}) could not be loaded: {e}",
            path.display()
        ))
    };
    open(&path).map_err(unusable)
}

/// MKL's threading layers as `MKL_THREADING_LAYER` names them, with their library's stem.
const LAYERS: [(&str, &str); 5] = [
    ("intel", "intel_thread"),
    ("sequential", "sequential"),
    ("gnu", "gnu_thread"),
    ("tbb", "tbb_thread"),
    ("pgi", "pgi_thread"),
];

/// The stem of the threading layer's library: the user's `MKL_THREADING_LAYER` (any case, as
/// MKL reads it) when set, which MKL then runs, else Intel's, which `open` selects. A value MKL
/// does not know is an error naming the variable: MKL would pick a layer on its own.
pub fn threading_layer() -> std::result::Result<&'static str, String> {
    layer_named(std::env::var_os("MKL_THREADING_LAYER").as_deref())
}

/// `threading_layer` of the variable's value `v` (None: unset).
pub fn layer_named(v: Option<&std::ffi::OsStr>) -> std::result::Result<&'static str, String> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok("intel_thread");
    };
    let name = v.to_string_lossy().to_ascii_lowercase();
    match LAYERS.iter().find(|(n, _)| *n == name) {
        Some((_, stem)) => Ok(stem),
        None => {
            let names: Vec<String> = LAYERS.iter().map(|(n, _)| n.to_uppercase()).collect();
            Err(format!(
                "MKL_THREADING_LAYER is {v:?}: expected one of {} (any case), or unset for \
                 INTEL",
                names.join(", ")
            ))
        }
    }
}

/// The files `libmkl_rt` loads from its own folder at its first call, each a list of
/// alternatives: its core, the LP64 interface, the threading layer (`layer`, a stem of
/// `threading_layer`), and the kernels of the CPU's instruction set or else the generic ones
/// (`libmkl_def`). Measured on the 2025 wheel by removing each file in turn: without any one
/// of them MKL printed "Intel oneMKL FATAL ERROR: Cannot load ..." to stdout and exited the
/// process with status 2 (with the CPU's kernels alone missing it ran on `libmkl_def`).
/// `suffix` is libmkl_rt's own (".so.3", ".so.2", ".so"): the others share it.
pub fn required_files(suffix: &str, isa: Isa, layer: &str) -> Vec<Vec<String>> {
    let lib = |n: &str| format!("libmkl_{n}{suffix}");
    let mut kernels = match isa {
        Isa::Avx512 => vec![lib("avx512")],
        Isa::Avx2 => vec![lib("avx2")],
        Isa::Scalar => vec![],
    };
    kernels.push(lib("def"));
    vec![
        vec![lib("core")],
        vec![lib("intel_lp64")],
        vec![lib(layer)],
        kernels,
    ]
}

/// The first of `required_files` with none of its alternatives in `dir` (by `exists`), as
/// "libmkl_core.so.3" or "libmkl_avx512.so.3 or libmkl_def.so.3".
pub fn first_missing(
    dir: &Path,
    required: &[Vec<String>],
    exists: impl Fn(&Path) -> bool,
) -> Option<String> {
    required
        .iter()
        .find(|alts| !alts.iter().any(|f| exists(&dir.join(f))))
        .map(|alts| alts.join(" or "))
}

/// libmkl_rt's suffix (".so.3"), from the file a link points at when it is one (oneAPI's
/// libmkl_rt.so → libmkl_rt.so.2).
fn suffix_of(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let suffix = |n: String| n.find(".so").map(|i| n[i..].to_string());
    (name(&real).and_then(suffix))
        .or_else(|| name(path).and_then(suffix))
        .unwrap_or_else(|| ".so".into())
}

/// MKL's threading layers (`MKL_Set_Threading_Layer`): Intel OpenMP, the one checked for.
const MKL_THREADING_INTEL: i32 = 0;

fn open(path: &Path) -> std::result::Result<Mkl, String> {
    let err = |e: libloading::Error| e.to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut libs = Vec::new();
    // SAFETY (all loads): MKL's and Intel OpenMP's initialisers only set up their own state;
    // no MKL function is called before every file it will load is known to be there.
    unsafe {
        let rt = global(path).map_err(err)?;
        let sgemm: Sgemm = *rt.get::<Sgemm>(b"cblas_sgemm\0").map_err(err)?;
        let layer = threading_layer()?;
        let required = required_files(&suffix_of(path), simd::Isa::detect(), layer);
        if let Some(missing) = first_missing(dir, &required, Path::is_file) {
            return Err(format!(
                "its folder {} lacks {missing}, which MKL loads from there (an incomplete \
                 install: `pip install --force-reinstall mkl`{})",
                dir.display(),
                if layer == "intel_thread" {
                    ""
                } else {
                    ", or another MKL_THREADING_LAYER"
                }
            ));
        }
        if layer == "intel_thread" {
            libs.push(intel_openmp(dir)?);
            // unset, MKL would pick its own default layer: select the one checked
            let set = rt.get::<unsafe extern "C" fn(i32) -> i32>(b"MKL_Set_Threading_Layer\0");
            if let Ok(set) = set {
                set(MKL_THREADING_INTEL);
            }
        }
        // MKL_Set_Num_Threads(int): set from rayon's count at the first product (`Mkl::sgemm`)
        let set_threads = rt
            .get::<unsafe extern "C" fn(i32)>(b"MKL_Set_Num_Threads\0")
            .ok()
            .map(|f| *f);
        libs.push(rt);
        Ok(Mkl {
            sgemm,
            set_threads,
            path: path.to_path_buf(),
            _libs: libs,
        })
    }
}

/// Intel's OpenMP runtime, which the Intel threading layer needs and MKL does not load
/// itself: beside MKL (the intel-openmp wheel), else on the loader's path (oneAPI).
///
/// # Safety
/// As `open`'s loads: its initialiser only sets up its own state.
unsafe fn intel_openmp(dir: &Path) -> std::result::Result<libloading::Library, String> {
    let omp = dir.join("libiomp5.so");
    let omp = if omp.is_file() {
        omp
    } else {
        PathBuf::from("libiomp5.so")
    };
    global(&omp)
        .map_err(|e| format!("Intel OpenMP (libiomp5.so, beside it or on the loader's path): {e}"))
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
