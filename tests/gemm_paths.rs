//! The CPU's GEMM paths (src/cpu/gemm_path.rs) against the default one, the `gemm` crate.
//!
//! MKL (`--gemm mkl`, loaded at run time, src/cpu/cblas.rs) is compared where it is installed:
//! this test never downloads it (CI has none), so there it checks the error instead and says
//! that it skipped the numeric part. To run the numeric part, point `SOFTPROMPT_MKL` at an
//! installed `libmkl_rt` or its folder (`pip install mkl` puts it in the environment's lib/).
//!
//! Tolerance (relative L2): 1e-5 for sums of up to 3072 float32 products that two libraries
//! block and order differently (measured ≤ 1e-6 at these shapes).

use softprompt::internals::cpu::cblas;
use softprompt::internals::device::gemm_path::{self, GemmPath};
use softprompt::internals::rng::Rng;
use std::process::Command;

mod common;
use common::assert_close;

/// bert-base's frozen-weight products at B=2, T=148 (rows, K, N): q/k/v/out, intermediate,
/// output; plus odd sizes that leave every kind of edge in both libraries' blocking.
const SHAPES: [(usize, usize, usize); 4] = [
    (296, 768, 768),
    (296, 768, 3072),
    (296, 3072, 768),
    (37, 65, 131),
];

fn rand(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

#[test]
fn mkl_matches_the_default_path_or_says_where_it_looked() {
    let mkl = match cblas::mkl() {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("--gemm") && msg.contains("libmkl_rt") && msg.contains("looked in"),
                "the error names the flag, the library and where it looked: {msg}"
            );
            assert!(GemmPath::parse("mkl").is_err());
            assert!(!GemmPath::available().contains(&GemmPath::Mkl));
            println!("MKL is not installed here: numeric comparison skipped ({msg})");
            return;
        }
    };
    println!("MKL at {}", mkl.path.display());
    assert_eq!(GemmPath::parse("mkl").unwrap(), GemmPath::Mkl);
    let mut rng = Rng::new(21);
    for (m, k, n) in SHAPES {
        let (x, w, dy) = (
            rand(&mut rng, m * k),
            rand(&mut rng, n * k),
            rand(&mut rng, m * n),
        );
        for accumulate in [false, true] {
            let start = rand(&mut rng, m * n);
            let (mut want, mut got) = (start.clone(), start);
            gemm_path::fwd(GemmPath::Crate, &mut want, &x, &w, m, k, n, accumulate);
            gemm_path::fwd(GemmPath::Mkl, &mut got, &x, &w, m, k, n, accumulate);
            let name = format!("fwd {m}x{k}x{n} accumulate={accumulate}");
            assert_close(&name, &got, &want, 1e-5);
        }
        for accumulate in [false, true] {
            let start = rand(&mut rng, m * k);
            let (mut want, mut got) = (start.clone(), start);
            gemm_path::bwd(GemmPath::Crate, &mut want, &dy, &w, m, k, n, accumulate);
            gemm_path::bwd(GemmPath::Mkl, &mut got, &dy, &w, m, k, n, accumulate);
            let name = format!("bwd {m}x{k}x{n} accumulate={accumulate}");
            assert_close(&name, &got, &want, 1e-5);
        }
    }
}

/// A `SOFTPROMPT_MKL` that holds no library: `--gemm mkl` fails before any work, with exit
/// status 2 and an error that names the flag and the path it was given.
#[test]
fn a_missing_mkl_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args([
            "bench",
            "--preset",
            "bert-base",
            "--gemm",
            "mkl",
            "--steps",
            "1",
        ])
        .env("SOFTPROMPT_MKL", "/nonexistent/mkl")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--gemm") && err.contains("SOFTPROMPT_MKL=/nonexistent/mkl"),
        "{err}"
    );
}

/// The Rust API checks the environment as the command line does: `Model::open` and `parity`
/// under `SOFTPROMPT_GEMM=mkl` without MKL ran the gemm crate (parity passed, checking
/// another library's numbers). The variable is read once per process, so a child runs it.
#[test]
fn the_rust_api_refuses_a_softprompt_gemm_that_does_not_load() {
    let env = [
        ("SOFTPROMPT_GEMM", "mkl"),
        ("SOFTPROMPT_MKL", "/nonexistent/mkl"),
    ];
    common::run_child_test("rust_api_gemm_child", &env);
}

/// The child of `the_rust_api_refuses_a_softprompt_gemm_that_does_not_load`; run alone, it
/// has nothing to check.
#[test]
#[ignore = "run by the_rust_api_refuses_a_softprompt_gemm_that_does_not_load"]
fn rust_api_gemm_child() {
    if std::env::var("SOFTPROMPT_MKL").as_deref() != Ok("/nonexistent/mkl") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_mlm");
    let reference = dir.join("ref_pet_text.safetensors");
    let needles = ["SOFTPROMPT_GEMM", "SOFTPROMPT_MKL=/nonexistent/mkl"];
    let err = softprompt::Model::open(&dir, softprompt::Device::Cpu)
        .err()
        .expect("Model::open ran without MKL")
        .to_string();
    assert!(needles.iter().all(|n| err.contains(n)), "{err}");
    let err = softprompt::parity(&dir, &reference, softprompt::Device::Cpu, None)
        .expect_err("parity ran without MKL")
        .to_string();
    assert!(needles.iter().all(|n| err.contains(n)), "{err}");
    // a bad value of any other variable too, as the command line refuses it
    std::env::remove_var("SOFTPROMPT_GEMM");
    std::env::set_var("SOFTPROMPT_SIMD", "sse9");
    let err = softprompt::Model::open(&dir, softprompt::Device::Cpu)
        .err()
        .expect("Model::open ran under SOFTPROMPT_SIMD=sse9")
        .to_string();
    assert!(err.contains("SOFTPROMPT_SIMD"), "{err}");
}

/// Without `--gemm` or `SOFTPROMPT_GEMM`: MKL on an Intel CPU where it loads (bench/README.md:
/// faster than the gemm crate on the Intel Xeon measured), else the gemm crate (MKL measured
/// slower on the AMD EPYC), whatever is installed.
#[test]
fn the_automatic_choice_is_mkl_on_intel_else_the_gemm_crate() {
    // the rule itself, every case; MKL is not even looked for off Intel
    assert_eq!(gemm_path::automatic_for(true, || true), GemmPath::Mkl);
    assert_eq!(gemm_path::automatic_for(true, || false), GemmPath::Crate);
    let asked = std::cell::Cell::new(false);
    let off_intel = gemm_path::automatic_for(false, || {
        asked.set(true);
        true
    });
    assert_eq!(off_intel, GemmPath::Crate);
    assert!(
        !asked.get(),
        "MKL was looked for on a CPU that is not Intel's"
    );
    // and this machine's: the vendor from /proc/cpuinfo, independently of cpuid
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !info.is_empty() {
        assert_eq!(gemm_path::is_intel(), info.contains("GenuineIntel"));
    }
    if std::env::var_os("SOFTPROMPT_GEMM").is_some() {
        println!("SOFTPROMPT_GEMM is set: the automatic choice is not in play");
        return;
    }
    let expected = match gemm_path::is_intel() && cblas::mkl().is_ok() {
        true => GemmPath::Mkl,
        false => GemmPath::Crate,
    };
    assert_eq!(gemm_path::selected(), expected);
    assert!(gemm_path::kernels_id().starts_with(&format!("{}/", expected.name())));
}

/// The files libmkl_rt loads from its folder (measured on the wheel: without any one, MKL
/// exits the process): the first one a folder lacks, with its alternatives.
#[test]
fn the_files_mkl_loads_and_the_first_one_missing() {
    use softprompt::internals::cpu::simd::Isa;
    let dir = std::path::Path::new("/mkl");
    let required = cblas::required_files(".so.3", Isa::Avx512, "intel_thread");
    let having = |names: &[&str]| {
        let names: Vec<std::path::PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        move |p: &std::path::Path| names.iter().any(|n| n == p)
    };
    let all = [
        "libmkl_core.so.3",
        "libmkl_intel_lp64.so.3",
        "libmkl_intel_thread.so.3",
        "libmkl_avx512.so.3",
        "libmkl_def.so.3",
    ];
    assert_eq!(cblas::first_missing(dir, &required, having(&all)), None);
    // the CPU's kernels or the generic ones, either
    for kept in [3, 4] {
        let some: Vec<&str> = (all.iter().enumerate())
            .filter(|&(i, _)| i < 3 || i == kept)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(cblas::first_missing(dir, &required, having(&some)), None);
    }
    assert_eq!(
        cblas::first_missing(dir, &required, having(&all[..3])).as_deref(),
        Some("libmkl_avx512.so.3 or libmkl_def.so.3")
    );
    for (i, name) in all[..3].iter().enumerate() {
        let without: Vec<&str> = (all.iter().enumerate())
            .filter(|&(j, _)| j != i)
            .map(|(_, n)| *n)
            .collect();
        let missing = cblas::first_missing(dir, &required, having(&without));
        assert_eq!(missing.as_deref(), Some(*name));
    }
    assert_eq!(
        cblas::first_missing(dir, &required, having(&["libmkl_rt.so.3"])).as_deref(),
        Some("libmkl_core.so.3")
    );
    // another version's suffix, and a CPU without AVX: the generic kernels only
    let old = cblas::required_files(".so.2", Isa::Scalar, "intel_thread");
    assert_eq!(old.last().unwrap(), &vec!["libmkl_def.so.2".to_string()]);
    assert_eq!(old[0], vec!["libmkl_core.so.2".to_string()]);
}

/// A user's MKL_THREADING_LAYER is kept (it was overridden by Intel's): its library is the
/// one required in place of libmkl_intel_thread; unset or empty is Intel's; a value MKL does
/// not know is refused naming the variable.
#[test]
fn the_users_threading_layer_is_the_one_required() {
    use softprompt::internals::cpu::simd::Isa;
    use std::ffi::OsStr;
    let layer = |v: Option<&str>| cblas::layer_named(v.map(OsStr::new));
    for (value, stem) in [
        (None, "intel_thread"),
        (Some(""), "intel_thread"),
        (Some("INTEL"), "intel_thread"),
        (Some("sequential"), "sequential"),
        (Some("SEQUENTIAL"), "sequential"),
        (Some("GNU"), "gnu_thread"),
        (Some("tbb"), "tbb_thread"),
    ] {
        assert_eq!(layer(value), Ok(stem), "{value:?}");
    }
    let e = layer(Some("omp")).unwrap_err();
    assert!(
        e.contains("MKL_THREADING_LAYER is \"omp\": expected one of INTEL, SEQUENTIAL, GNU"),
        "{e}"
    );
    let required = cblas::required_files(".so.3", Isa::Avx2, "sequential");
    assert_eq!(required[2], vec!["libmkl_sequential.so.3".to_string()]);
    let dir = std::path::Path::new("/mkl");
    let intel_only = [
        "libmkl_core.so.3",
        "libmkl_intel_lp64.so.3",
        "libmkl_intel_thread.so.3",
        "libmkl_def.so.3",
    ];
    let has = |p: &std::path::Path| intel_only.iter().any(|n| dir.join(n) == p);
    let missing = cblas::first_missing(dir, &required, has);
    assert_eq!(missing.as_deref(), Some("libmkl_sequential.so.3"));
}
