//! The GEMM paths the float32 CPU backend can run its frozen-weight products on, behind one
//! interface (`fwd`, `bwd`), and which one this process uses.
//!
//! - `gemm`: the pure-Rust `gemm` crate, in every build, and the default.
//! - `openblas`: the system's OpenBLAS (`cblas_sgemm`), in a build with `--features openblas`
//!   (Debian: `libopenblas-dev`); its threads are set to rayon's.
//! - `mkl`: Intel MKL's `cblas_sgemm`, loaded at run time where installed (src/cpu/cblas.rs:
//!   `pip install mkl`, or `SOFTPROMPT_MKL`); in every build, usable where the library is.
//!
//! The choice is deterministic: `--gemm` or `SOFTPROMPT_GEMM` when given, else `mkl` on an
//! Intel CPU where MKL is installed, else `gemm` (bench/README.md: on the Intel Xeon measured,
//! MKL ran the step's products at 92% of the FMA peak against the gemm crate's 82%; on the
//! AMD EPYC, at 0.62 to 0.89× the gemm crate's rate; `softprompt bench --ceiling` measures
//! every path). It never depends on a timing at start-up. The path changes the
//! last bits of results, so checkpoints record it with the SIMD instruction set
//! (`kernels_id`) and a resume on another warns, as one on another thread count does.

use super::cblas::{row_major, Sgemm};
use super::simd;
use crate::error::{Error, Result};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// the `gemm` crate
    Crate,
    /// the system's OpenBLAS (`--features openblas`)
    OpenBlas,
    /// Intel MKL, loaded at run time (src/cpu/cblas.rs)
    Mkl,
}

impl GemmPath {
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Crate => "gemm",
            GemmPath::OpenBlas => "openblas",
            GemmPath::Mkl => "mkl",
        }
    }

    /// Every path this process can run, the default first: those compiled in, and MKL where
    /// it is installed (looking for it loads it).
    pub fn available() -> Vec<GemmPath> {
        let mut v = vec![GemmPath::Crate];
        if cfg!(feature = "openblas") {
            v.push(GemmPath::OpenBlas);
        }
        if super::cblas::mkl().is_ok() {
            v.push(GemmPath::Mkl);
        }
        v
    }

    /// `--gemm`: a path of this build; `mkl` when MKL loads, else the error that says where
    /// it was looked for.
    pub fn parse(s: &str) -> Result<GemmPath> {
        GemmPath::parse_as(s, "--gemm")
    }

    /// `s` as a path of this build, for the flag or variable `source`, which errors name.
    pub fn parse_as(s: &str, source: &str) -> Result<GemmPath> {
        match s {
            "gemm" => Ok(GemmPath::Crate),
            "openblas" if cfg!(feature = "openblas") => Ok(GemmPath::OpenBlas),
            "mkl" => super::cblas::mkl_for(source).map(|_| GemmPath::Mkl),
            _ => {
                let extra = if s == "openblas" {
                    " (openblas needs a build with --features openblas)"
                } else {
                    ""
                };
                Err(Error::arg(
                    source,
                    format!("\"{s}\": expected one of {}{extra}", BUILD_NAMES.join(", ")),
                ))
            }
        }
    }
}

/// The names of the paths this build has (mkl: where Intel MKL is installed).
const BUILD_NAMES: &[&str] = if cfg!(feature = "openblas") {
    &["gemm", "openblas", "mkl"]
} else {
    &["gemm", "mkl"]
};

/// The variable that chooses the path when `--gemm` is not given.
pub const GEMM_VAR: &str = "SOFTPROMPT_GEMM";

/// `SOFTPROMPT_GEMM`'s name of a path of this build (not yet loaded), or None when unset.
pub fn from_env() -> Result<Option<&'static str>> {
    crate::env::one_of(GEMM_VAR, BUILD_NAMES).map_err(|e| {
        // the hint `--gemm openblas` gives
        match std::env::var(GEMM_VAR).as_deref() {
            Ok("openblas") => GemmPath::parse_as("openblas", GEMM_VAR).err().unwrap_or(e),
            _ => e,
        }
    })
}

static SELECTED: OnceLock<GemmPath> = OnceLock::new();

/// Sets the path for this process, as `source` (`--gemm`, or `SOFTPROMPT_GEMM`) asked; fails,
/// naming `source`, once another one is in use.
pub fn select(path: GemmPath, source: &str) -> Result<()> {
    if SELECTED.set(path).is_err() && selected() != path {
        return Err(Error::arg(
            source,
            format!(
                "{}: the GEMM path of this process is already {} (a process has one)",
                path.name(),
                selected().name()
            ),
        ));
    }
    Ok(())
}

/// `--gemm` when given, else `SOFTPROMPT_GEMM`, selected; a path that does not load (MKL
/// not installed) is an error naming the flag or the variable. Neither given: the automatic
/// choice, made on first use.
pub fn choose(flag: Option<&str>) -> Result<()> {
    let (path, source) = match (flag, from_env()?) {
        (Some(s), _) => (GemmPath::parse(s)?, "--gemm"),
        (None, Some(s)) => (GemmPath::parse_as(s, GEMM_VAR)?, GEMM_VAR),
        (None, None) => return Ok(()),
    };
    select(path, source)
}

/// Whether this process's path is fixed: chosen by `select`, or by its first GEMM.
pub fn is_chosen() -> bool {
    SELECTED.get().is_some()
}

/// The path in use: the one `select` set, else `SOFTPROMPT_GEMM` when it names one that
/// loads (a bad value is refused at start, by `choose`), else the automatic choice.
pub fn selected() -> GemmPath {
    *SELECTED.get_or_init(|| {
        let asked = from_env().ok().flatten();
        asked
            .and_then(|s| GemmPath::parse_as(s, GEMM_VAR).ok())
            .unwrap_or_else(automatic)
    })
}

/// The path without `--gemm` or `SOFTPROMPT_GEMM`: MKL on an Intel CPU where it loads, else
/// the gemm crate.
pub fn automatic() -> GemmPath {
    // MKL is looked for (and loaded) on Intel only: elsewhere it is never the default
    automatic_for(is_intel(), super::cblas::usable_or_warn)
}

/// `automatic`'s rule, given the CPU's vendor and whether MKL loads (asked only on Intel).
pub fn automatic_for(intel: bool, mkl_loads: impl FnOnce() -> bool) -> GemmPath {
    if intel && mkl_loads() {
        GemmPath::Mkl
    } else {
        GemmPath::Crate
    }
}

/// Whether the CPU's vendor is Intel (`cpuid` leaf 0: "GenuineIntel").
pub fn is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // leaf 0 exists on every x86-64 CPU
        let r = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What shapes the CPU's float32 results, for checkpoints: "gemm/avx512" (the GEMM path, then
/// the row ops' instruction set); in brackets what else the library runs by: MKL under a
/// threading layer other than Intel's (the user's `MKL_THREADING_LAYER`) or with `MKL_CBWR`
/// set ("mkl[sequential,MKL_CBWR=COMPATIBLE]/avx512"), the gemm crate's own kernels where
/// `SOFTPROMPT_SIMD` chose other row ops ("gemm[avx2]/scalar"). The libraries' own pick by
/// CPU is not recorded whole (MKL's code path): results are bit-identical on the same CPU.
pub fn kernels_id() -> String {
    let path = selected();
    let settings = match path {
        // MKL's threading layer where it is not the default, and its switches of code path
        // (MKL_CBWR, MKL_ENABLE_INSTRUCTIONS: other kernels, other bits)
        GemmPath::Mkl => {
            let layer = (super::cblas::threading_layer().ok()).filter(|l| *l != "intel_thread");
            // MKL reads both case-blind
            let set = |var: &str| {
                (std::env::var(var).ok())
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("{var}={}", v.to_uppercase()))
            };
            let own = [set("MKL_CBWR"), set("MKL_ENABLE_INSTRUCTIONS")];
            (layer.map(str::to_string).into_iter())
                .chain(own.into_iter().flatten())
                .collect()
        }
        // the gemm crate picks its kernels from the CPU itself (SOFTPROMPT_SIMD does not reach
        // it; `Isa::detect` is its rule): said where it is not the row ops' set
        GemmPath::Crate => (simd::Isa::detect() != simd::isa())
            .then(|| simd::Isa::detect().name().to_string())
            .into_iter()
            .collect(),
        GemmPath::OpenBlas => Vec::new(),
    };
    match settings.is_empty() {
        true => format!("{}/{}", path.name(), simd::isa().name()),
        false => format!(
            "{}[{}]/{}",
            path.name(),
            settings.join(","),
            simd::isa().name()
        ),
    }
}

/// Whether a checkpoint's kernels stamp and this run's name the same kernels. A stamp of an
/// earlier build without brackets did not record the gemm crate's own set or MKL's switches:
/// it is compared with this run's path and row-op set alone (it warned of nothing more).
pub fn same_kernels(recorded: &str, now: &str) -> bool {
    match recorded.contains('[') {
        true => recorded == now,
        false => recorded == without_settings(now),
    }
}

/// A stamp without its bracketed settings: "gemm[avx512]/avx2" is "gemm/avx2".
fn without_settings(stamp: &str) -> String {
    match (stamp.split_once('['), stamp.split_once(']')) {
        (Some((head, _)), Some((_, tail))) => format!("{head}{tail}"),
        _ => stamp.to_string(),
    }
}

/// What to set to run a checkpoint's kernels `stamp` again: "--gemm mkl,
/// SOFTPROMPT_SIMD=avx2, MKL_THREADING_LAYER=sequential".
pub fn resume_settings(stamp: &str) -> String {
    let (path, isa) = stamp.split_once('/').unwrap_or((stamp, "?"));
    let (gemm, settings) = match path.split_once('[') {
        Some((gemm, rest)) => (gemm, rest.trim_end_matches(']')),
        None => (path, ""),
    };
    let mut said = vec![format!("--gemm {gemm}"), format!("SOFTPROMPT_SIMD={isa}")];
    for s in settings.split(',').filter(|s| !s.is_empty()) {
        said.push(match (gemm, s.contains('=')) {
            (_, true) => s.to_string(),
            // MKL's threading layer, the one bracket word without its variable
            ("mkl", false) => format!("MKL_THREADING_LAYER={s}"),
            // the gemm crate's kernels follow the CPU
            (_, false) => format!("a CPU whose gemm kernels are {s}"),
        });
    }
    said.join(", ")
}

/// out (M, N) = inp (M, K) · Wᵀ (+ out when `accumulate`), W (N, K) row-major.
#[allow(clippy::too_many_arguments)]
pub fn fwd(
    path: GemmPath,
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    debug_assert!(out.len() >= m * n && inp.len() >= m * k && w.len() >= n * k);
    match cblas_sgemm(path) {
        // SAFETY: the callers checked that out, inp and w hold M·N, M·K and N·K floats.
        Some(sgemm) => unsafe { row_major(sgemm, out, inp, w, (m, n, k), true, accumulate) },
        None => super::matmul::crate_gemm_wt(out, inp, w, m, k, n, accumulate),
    }
}

/// dinp (M, K) = dout (M, N) · W (N, K) (+ dinp when `accumulate`).
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    path: GemmPath,
    dinp: &mut [f32],
    dout: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    debug_assert!(dinp.len() >= m * k && dout.len() >= m * n && w.len() >= n * k);
    match cblas_sgemm(path) {
        // SAFETY: the callers checked that dinp, dout and w hold M·K, M·N and N·K floats.
        Some(sgemm) => unsafe { row_major(sgemm, dinp, dout, w, (m, k, n), false, accumulate) },
        None => super::matmul::crate_gemm(
            m,
            k,
            n,
            dinp,
            (dout, n as isize, 1),
            (w, k as isize, 1),
            accumulate,
        ),
    }
}

/// The CBLAS `sgemm` a BLAS path runs on: OpenBLAS's (linked) or MKL's (loaded); None for
/// the `gemm` crate, and for MKL where it did not load (never reached: `parse` yields Mkl
/// only once it loaded), which then runs on the crate.
fn cblas_sgemm(path: GemmPath) -> Option<Sgemm> {
    match path {
        GemmPath::Crate => None,
        GemmPath::OpenBlas => openblas::sgemm(),
        GemmPath::Mkl => super::cblas::mkl().ok().map(super::cblas::Mkl::sgemm),
    }
}

#[cfg(feature = "openblas")]
mod openblas {
    use super::Sgemm;
    use std::sync::Once;

    #[link(name = "openblas")]
    extern "C" {
        fn cblas_sgemm(
            layout: i32,
            trans_a: i32,
            trans_b: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
        fn openblas_set_num_threads(n: i32);
    }

    /// OpenBLAS's `cblas_sgemm`, its threads set to rayon's on first use.
    pub fn sgemm() -> Option<Sgemm> {
        static THREADS: Once = Once::new();
        // SAFETY: a plain setter of OpenBLAS's thread count.
        THREADS
            .call_once(|| unsafe { openblas_set_num_threads(rayon::current_num_threads() as i32) });
        Some(cblas_sgemm)
    }
}

#[cfg(not(feature = "openblas"))]
mod openblas {
    /// Never reached (`GemmPath::parse` only yields paths of this build): the crate then.
    pub fn sgemm() -> Option<super::Sgemm> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path chosen by `SOFTPROMPT_GEMM` after another is in use: the error named `--gemm`
    /// (Python has no such flag; the variable asked).
    #[test]
    fn a_second_choice_is_refused_naming_its_source() {
        let now = selected();
        let other = if now == GemmPath::Crate {
            GemmPath::Mkl
        } else {
            GemmPath::Crate
        };
        let e = select(other, GEMM_VAR).unwrap_err().to_string();
        let want = format!(
            "invalid argument SOFTPROMPT_GEMM: {}: the GEMM path of this process is already {}",
            other.name(),
            now.name()
        );
        assert!(e.contains(&want), "{e}");
        assert!(!e.contains("--gemm"), "{e}");
        let e = select(other, "--gemm").unwrap_err().to_string();
        assert!(e.contains("invalid argument --gemm: "), "{e}");
        select(now, GEMM_VAR).unwrap();
        assert_eq!(selected(), now);
    }

    /// A stamp of an earlier build (no brackets) is the same kernels as this build's stamp of
    /// the same path and row-op set, whatever it adds in brackets; bracketed stamps compare
    /// whole. The advice spells each setting as the variable a user sets.
    #[test]
    fn stamps_compare_across_builds_and_advise_settings() {
        assert!(same_kernels("gemm/avx2", "gemm/avx2"));
        assert!(same_kernels("gemm/avx2", "gemm[avx512]/avx2"));
        assert!(!same_kernels("gemm/avx2", "gemm/scalar"));
        assert!(same_kernels("mkl[sequential]/avx2", "mkl[sequential]/avx2"));
        assert!(!same_kernels(
            "mkl[sequential]/avx2",
            "mkl[sequential,MKL_CBWR=AVX2]/avx2"
        ));
        assert!(!same_kernels("gemm[avx512]/avx2", "gemm/avx2"));
        assert_eq!(
            resume_settings("mkl[sequential,MKL_CBWR=COMPATIBLE]/avx2"),
            "--gemm mkl, SOFTPROMPT_SIMD=avx2, MKL_THREADING_LAYER=sequential, MKL_CBWR=COMPATIBLE"
        );
        assert_eq!(
            resume_settings("gemm[avx512]/avx2"),
            "--gemm gemm, SOFTPROMPT_SIMD=avx2, a CPU whose gemm kernels are avx512"
        );
        assert_eq!(
            resume_settings("gemm/scalar"),
            "--gemm gemm, SOFTPROMPT_SIMD=scalar"
        );
    }
}
