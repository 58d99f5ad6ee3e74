//! Build-time NVRTC: where the library can be loaded, build.rs compiles every kernel for sm_90
//! so that a kernel error fails `cargo build` with the NVRTC log. Where it cannot (the usual
//! machine without CUDA), the step is skipped and the start-up compile or the CI compile gate
//! (`scripts/nvrtc_check.sh`) reports errors instead.
//!
//! Found through `SOFTPROMPT_NVRTC_LIB` (a path to libnvrtc.so.*) or the dynamic loader's
//! search path; headers (`cuda_bf16.h`) through `SOFTPROMPT_CUDA_INCLUDE`, the `include`
//! folder beside the library's folder (the pip wheel layout), or `/usr/local/cuda/include`.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};

type Prog = *mut c_void;
type Create = unsafe extern "C" fn(
    *mut Prog,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type Compile = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type LogSize = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type Log = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type Destroy = unsafe extern "C" fn(*mut Prog) -> c_int;

pub struct Nvrtc {
    lib: libloading::Library,
    pub include: PathBuf,
    pub lib_path: String,
}

fn candidates() -> Vec<String> {
    match std::env::var("SOFTPROMPT_NVRTC_LIB") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

fn find_include(lib_path: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SOFTPROMPT_CUDA_INCLUDE") {
        return Some(PathBuf::from(p));
    }
    let beside = Path::new(lib_path)
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("include"));
    [beside, Some(PathBuf::from("/usr/local/cuda/include"))]
        .into_iter()
        .flatten()
        .find(|d| d.join("cuda_bf16.h").is_file())
}

impl Nvrtc {
    /// Ok(None) when no NVRTC can be loaded; Err when it loads but its headers are missing.
    pub fn load() -> Result<Option<Nvrtc>, String> {
        for name in candidates() {
            // SAFETY: loading NVRTC runs no initialisation code with preconditions.
            if let Ok(lib) = unsafe { libloading::Library::new(&name) } {
                let include = find_include(&name).ok_or_else(|| {
                    format!("NVRTC {name} loaded but cuda_bf16.h was not found: set SOFTPROMPT_CUDA_INCLUDE to the nvidia-cuda-runtime wheel's include folder")
                })?;
                return Ok(Some(Nvrtc {
                    lib,
                    include,
                    lib_path: name,
                }));
            }
        }
        Ok(None)
    }

    /// Compiles `source` (named `name`) with `headers` available to `#include "..."`;
    /// Err(log) on failure.
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        headers: &[(String, String)],
        options: &[String],
    ) -> Result<(), String> {
        let cstr = |s: &str| CString::new(s).map_err(|e| e.to_string());
        let src = cstr(source)?;
        let cname = cstr(name)?;
        let hdr_src: Vec<CString> = headers
            .iter()
            .map(|h| cstr(&h.1))
            .collect::<Result<_, _>>()?;
        let hdr_name: Vec<CString> = headers
            .iter()
            .map(|h| cstr(&h.0))
            .collect::<Result<_, _>>()?;
        let hs: Vec<*const c_char> = hdr_src.iter().map(|s| s.as_ptr()).collect();
        let hn: Vec<*const c_char> = hdr_name.iter().map(|s| s.as_ptr()).collect();
        let opts: Vec<CString> = options.iter().map(|o| cstr(o)).collect::<Result<_, _>>()?;
        let op: Vec<*const c_char> = opts.iter().map(|s| s.as_ptr()).collect();
        // SAFETY: the symbols have NVRTC's documented signatures; every pointer passed lives
        // until the program is destroyed at the end of this block.
        unsafe {
            let sym = |s: &[u8]| -> Result<*mut c_void, String> {
                self.lib
                    .get::<*mut c_void>(s)
                    .map(|f| *f)
                    .map_err(|e| e.to_string())
            };
            let create: Create = std::mem::transmute(sym(b"nvrtcCreateProgram\0")?);
            let compile: Compile = std::mem::transmute(sym(b"nvrtcCompileProgram\0")?);
            let log_size: LogSize = std::mem::transmute(sym(b"nvrtcGetProgramLogSize\0")?);
            let get_log: Log = std::mem::transmute(sym(b"nvrtcGetProgramLog\0")?);
            let destroy: Destroy = std::mem::transmute(sym(b"nvrtcDestroyProgram\0")?);
            let mut prog: Prog = std::ptr::null_mut();
            let rc = create(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                hs.len() as c_int,
                hs.as_ptr(),
                hn.as_ptr(),
            );
            if rc != 0 {
                return Err(format!("nvrtcCreateProgram failed with status {rc}"));
            }
            let rc = compile(prog, op.len() as c_int, op.as_ptr());
            let mut n = 0usize;
            log_size(prog, &mut n);
            let mut log = vec![0u8; n.max(1)];
            get_log(prog, log.as_mut_ptr() as *mut c_char);
            destroy(&mut prog);
            if rc != 0 {
                let log = String::from_utf8_lossy(&log)
                    .trim_end_matches('\0')
                    .to_string();
                return Err(log);
            }
        }
        Ok(())
    }
}
