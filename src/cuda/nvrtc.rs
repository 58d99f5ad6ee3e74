//! NVRTC: every kernel file compiled to CUBIN for the device's architecture at start-up, and
//! cached on disk under `$SOFTPROMPT_CACHE` (default `~/.cache/softprompt/kernels`), keyed by
//! sha256 of the sources, the options, the architecture and the NVRTC version. The same
//! compile, with `-Xptxas -v`, is the CI compile gate (`softprompt kernels`): it parses the
//! resource report and fails on any register spill.

#[path = "../../build/nvrtc_options.rs"]
mod options;

use super::kernels;
use crate::backend::Precision;
use crate::error::{Error, Result};
use cudarc::nvrtc::sys;
use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};

/// A compiled kernel file.
pub struct Compiled {
    pub file: &'static str,
    pub cubin: Vec<u8>,
    /// NVRTC's log (the ptxas report when compiled with `verbose`)
    pub log: String,
}

/// Whether libnvrtc can be loaded (from LD_LIBRARY_PATH or the usual places).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(rc, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(rc: sys::nvrtcResult, what: &str) -> Result<()> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device(format!("{what} failed: {rc:?}")))
    }
}

/// The folder holding cuda_bf16.h: `$SOFTPROMPT_CUDA_INCLUDE`, an `include` folder beside a
/// folder of `$LD_LIBRARY_PATH` (the pip wheels' layout, nvidia/cu13/{lib,include}),
/// `$CUDA_PATH/include`, or /usr/local/cuda/include.
pub fn include_dir() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SOFTPROMPT_CUDA_INCLUDE") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .filter_map(|d| Path::new(d).parent().map(|p| p.join("include")))
        .collect();
    if let Ok(p) = std::env::var("CUDA_PATH") {
        dirs.push(Path::new(&p).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs.into_iter()
        .find(|d| d.join("cuda_bf16.h").is_file())
        .ok_or_else(|| {
            Error::Device(
                "cuda_bf16.h not found: set SOFTPROMPT_CUDA_INCLUDE to a CUDA include folder \
                 (the nvidia-cuda-runtime wheel's nvidia/cu13/include)"
                    .into(),
            )
        })
}

/// Compiles one kernel file; a failure names the file and carries NVRTC's log.
pub fn compile_file(file: &'static str, source: &str, opts: &[String]) -> Result<Compiled> {
    let fail = |msg: String| Error::Kernel {
        kernel: format!("kernels/{file}"),
        msg,
    };
    let cstr = |s: &str| CString::new(s).map_err(|e| fail(e.to_string()));
    let src = cstr(source)?;
    let name = cstr(file)?;
    let hdrs: Vec<(CString, CString)> = kernels::headers()
        .map(|(n, s)| Ok((cstr(n)?, cstr(s)?)))
        .collect::<Result<_>>()?;
    let hdr_src: Vec<*const c_char> = hdrs.iter().map(|h| h.1.as_ptr()).collect();
    let hdr_name: Vec<*const c_char> = hdrs.iter().map(|h| h.0.as_ptr()).collect();
    let copts: Vec<CString> = opts.iter().map(|o| cstr(o)).collect::<Result<_>>()?;
    let popts: Vec<*const c_char> = copts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer passed points into the CStrings above, alive until destroy.
    unsafe {
        let rc = sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            hdrs.len() as i32,
            hdr_src.as_ptr(),
            hdr_name.as_ptr(),
        );
        check(rc, "nvrtcCreateProgram").map_err(|e| fail(e.to_string()))?;
        let rc = sys::nvrtcCompileProgram(prog, popts.len() as i32, popts.as_ptr());
        let log = program_log(prog);
        let result = if rc != sys::nvrtcResult::NVRTC_SUCCESS {
            Err(fail(format!("NVRTC failed ({rc:?}):\n{log}")))
        } else {
            program_cubin(prog)
                .map(|cubin| Compiled { file, cubin, log })
                .map_err(|e| fail(e.to_string()))
        };
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

/// SAFETY: `prog` is a live program.
unsafe fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut n = 0usize;
    sys::nvrtcGetProgramLogSize(prog, &mut n);
    let mut buf = vec![0u8; n.max(1)];
    sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char);
    String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_string()
}

/// SAFETY: `prog` is a live, successfully compiled program.
unsafe fn program_cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut n = 0usize;
    check(sys::nvrtcGetCUBINSize(prog, &mut n), "nvrtcGetCUBINSize")?;
    let mut buf = vec![0u8; n];
    check(
        sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char),
        "nvrtcGetCUBIN",
    )?;
    Ok(buf)
}

/// The options for `arch` ("sm_90") and the `precision` build of the kernels; `verbose` adds
/// ptxas's resource report.
pub fn options(arch: &str, precision: Precision, verbose: bool) -> Result<Vec<String>> {
    let mut o = options::nvrtc_options(arch, &include_dir()?.to_string_lossy());
    if let Some(define) = build_define(precision) {
        o.push(format!("-D{define}"));
    }
    if verbose {
        o.push("-Xptxas".into());
        o.push("-v".into());
    }
    Ok(o)
}

fn cache_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SOFTPROMPT_CACHE") {
        return Some(PathBuf::from(p).join("kernels"));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| Path::new(&h).join(".cache/softprompt/kernels"))
}

fn cache_key(file: &str, source: &str, opts: &[String], arch: &str) -> Result<String> {
    let (major, minor) = nvrtc_version()?;
    let mut text = format!("{file}\n{source}\n");
    for (n, s) in kernels::headers() {
        text += &format!("{n}\n{s}\n");
    }
    text += &format!("{}\n{arch}\nnvrtc {major}.{minor}\n", opts.join(" "));
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Every kernel file compiled for `arch`, from the disk cache where possible. A cache that
/// cannot be read or written is skipped (compiling again is always correct).
pub fn compile_all(arch: &str, precision: Precision) -> Result<Vec<Compiled>> {
    let opts = options(arch, precision, false)?;
    let dir = cache_dir();
    kernels::files()
        .map(|(file, source)| {
            let key = cache_key(file, source, &opts, arch)?;
            let path = dir.as_ref().map(|d| d.join(format!("{key}.cubin")));
            if let Some(cubin) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
                return Ok(Compiled {
                    file,
                    cubin,
                    log: String::new(),
                });
            }
            let compiled = compile_file(file, source, &opts)?;
            if let Some(p) = &path {
                let _ = crate::fsutil::write_atomic(p, &compiled.cubin);
            }
            Ok(compiled)
        })
        .collect()
}

/// One kernel's line of ptxas's resource report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub kernel: String,
    pub file: String,
    pub registers: u32,
    pub smem_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

fn number_before(line: &str, word: &str) -> Option<u32> {
    let i = line.find(word)?;
    line[..i].split_whitespace().last()?.parse().ok()
}

/// Parses `-Xptxas -v` output: "Compiling entry function 'k'", then the stack/spill line and
/// the "Used N registers" line of that function.
pub fn parse_ptxas_report(file: &str, log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(Resources {
                kernel: name,
                file: file.to_string(),
                ..Default::default()
            });
        } else if let Some(r) = out.last_mut() {
            if line.contains("spill stores") {
                r.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                r.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                r.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = number_before(line, "registers").unwrap_or(0);
                r.smem_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// The macro that selects the `precision` build (none for bf16).
fn build_define(precision: Precision) -> Option<&'static str> {
    let [(_, f32_define, _), (_, mixed_define, _)] = options::VARIANT_BUILDS;
    match precision {
        Precision::Bf16 => None,
        Precision::F32 => Some(f32_define),
        Precision::Mixed => Some(mixed_define),
    }
}

/// The compile gate: every kernel file for `arch` with the resource report, no cache, in all
/// three builds; the other builds' rows name their file "<file> (f32)" and "<file> (mixed)".
pub fn resource_report(arch: &str) -> Result<Vec<Resources>> {
    let mut all = Vec::new();
    for (precision, suffix) in [
        (Precision::Bf16, ""),
        (Precision::F32, " (f32)"),
        (Precision::Mixed, " (mixed)"),
    ] {
        let opts = options(arch, precision, true)?;
        for (file, source) in kernels::files() {
            let c = compile_file(file, source, &opts)?;
            all.extend(parse_ptxas_report(&format!("{file}{suffix}"), &c.log));
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'layernorm_fwd' for 'sm_90'\n\
ptxas info    : Function properties for layernorm_fwd\n\
ptxas         .     16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n\
ptxas info    : Used 40 registers, used 1 barriers, 128 bytes smem\n\
ptxas info    : Compiling entry function 'k2' for 'sm_90'\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 13 registers, used 0 barriers\n";
        let r = parse_ptxas_report("layernorm.cu", log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].kernel.as_str(),
                r[0].registers,
                r[0].smem_bytes,
                r[0].stack_bytes
            ),
            ("layernorm_fwd", 40, 128, 16)
        );
        assert_eq!((r[0].spill_stores, r[0].spill_loads), (4, 8));
        assert_eq!(
            (r[1].kernel.as_str(), r[1].registers, r[1].smem_bytes),
            ("k2", 13, 0)
        );
    }
}
