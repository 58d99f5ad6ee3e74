//! The environment variables the engine reads (src/env.rs), against the command line: a value
//! a variable does not accept is refused at start, naming the variable and what it accepts
//! (a typo ran another configuration silently); `SOFTPROMPT_GEMM=mkl` is `--gemm mkl`; MKL
//! with `--threads` (the pool is sized before MKL loads: every count failed); a folder that
//! holds libmkl_rt without the libraries it loads (MKL printed to stdout and exited).
//!
//! The MKL parts need MKL (CI has none): they run where it is installed (`pip install mkl`,
//! or `SOFTPROMPT_MKL`) and say that they skipped elsewhere.

mod common;

use common::{fixture, refused, stdout_ok, ScratchDir};
use softprompt::internals::cpu::cblas;
use softprompt::internals::device::gemm_path;
use std::path::Path;
use std::process::{Command, Output};

fn data(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data");
    p.join(name).display().to_string()
}

/// The binary with `args` and the variables `env` set (and none of them inherited).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_softprompt"));
    for var in [
        "SOFTPROMPT_GEMM",
        "SOFTPROMPT_SIMD",
        "SOFTPROMPT_HOST_MEMORY",
        "SOFTPROMPT_HEAP",
        "RAYON_NUM_THREADS",
        "RAYON_RS_NUM_CPUS",
        "SOFTPROMPT_SYNC",
        "SOFTPROMPT_NVTX_DEBUG",
        "SOFTPROMPT_BENCH_CHECK",
        "SOFTPROMPT_ATTN_FWD",
        "SOFTPROMPT_ATTN_BWD_DQ",
        "SOFTPROMPT_ATTN_BWD_DKDV",
        "MKL_THREADING_LAYER",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

/// What a run printed, stdout then stderr.
fn said(got: &Output) -> String {
    let (out, err) = (&got.stdout, &got.stderr);
    format!(
        "{}{}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    )
}

/// A one-step `cls` run on the headless BERT fixture into `out`, with `extra` flags.
fn train(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let model = fixture("bert_nohead").display().to_string();
    let (train, out) = (data("train.jsonl"), out.display().to_string());
    let mut args = vec![
        "train",
        "--model",
        &model,
        "--task",
        "cls",
        "--pooling",
        "mean",
        "--prompt-len",
        "2",
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--train",
        &train,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run(&args, env)
}

/// Each bad value is refused before anything is written, naming the variable and the value.
#[test]
fn bad_values_are_refused_naming_the_variable() {
    let scratch = ScratchDir::new("cli_env_bad");
    let out = scratch.path().join("run");
    let cases: &[(&str, &str, &str)] = &[
        ("SOFTPROMPT_GEMM", "bogus", "one of gemm"),
        ("SOFTPROMPT_GEMM", "MKL", "one of gemm"),
        ("SOFTPROMPT_GEMM", " gemm", "one of gemm"),
        ("SOFTPROMPT_SIMD", "bogus", "scalar"),
        ("SOFTPROMPT_SIMD", "AVX2", "scalar"),
        ("SOFTPROMPT_SIMD", "avx10", "scalar"),
        ("SOFTPROMPT_HOST_MEMORY", "bogus", "a number of bytes"),
        ("SOFTPROMPT_HOST_MEMORY", "-1", "a number of bytes"),
        ("SOFTPROMPT_HEAP", "bogus", "default"),
        ("RAYON_NUM_THREADS", "5000", "0 (all cores) to 1024"),
        ("RAYON_NUM_THREADS", "18446744073709551615", "to 1024"),
        ("RAYON_NUM_THREADS", "bogus", "to 1024"),
        ("RAYON_RS_NUM_CPUS", "100000", "to 1024"),
        // the GPU's and tools' switches: refused on the CPU too, not at the next GPU run
        ("SOFTPROMPT_SYNC", "yes", "one of 0, 1"),
        ("SOFTPROMPT_SYNC", "true", "one of 0, 1"),
        ("SOFTPROMPT_NVTX_DEBUG", "2", "one of 0, 1"),
        ("SOFTPROMPT_BENCH_CHECK", "Warn", "one of error, warn"),
        ("SOFTPROMPT_BENCH_CHECK", "warning", "one of error, warn"),
        // checked only where a GPU started
        ("SOFTPROMPT_ATTN_FWD", "MMA", "one of wmma, mma"),
        ("SOFTPROMPT_ATTN_BWD_DQ", "fast", "one of wmma, mma"),
        ("SOFTPROMPT_ATTN_BWD_DKDV", "wmma ", "one of wmma, mma"),
    ];
    // the variable's error gives the hint the flag's does
    let openblas = (
        "SOFTPROMPT_GEMM",
        "openblas",
        "needs a build with --features openblas",
    );
    let built_without = (!cfg!(feature = "openblas")).then_some(&openblas);
    for &(var, value, expected) in cases.iter().chain(built_without) {
        let got = train(&out, &["--threads", "1"], &[(var, value)]);
        let quoted = format!("{value:?}");
        refused(&got, &[var, &quoted, expected]);
        assert!(
            !out.exists(),
            "{var}={value}: a refused run wrote its folder"
        );
    }
}

/// Good values run, and the ones that choose kernels are the ones the run records.
#[test]
fn good_values_run_and_choose() {
    let scratch = ScratchDir::new("cli_env_good");
    let env = [
        ("SOFTPROMPT_GEMM", "gemm"),
        ("SOFTPROMPT_SIMD", "scalar"),
        ("SOFTPROMPT_HOST_MEMORY", "1000000000000"),
        ("SOFTPROMPT_HEAP", ""),
        ("RAYON_NUM_THREADS", "2"),
        ("SOFTPROMPT_SYNC", "1"),
        ("SOFTPROMPT_NVTX_DEBUG", "0"),
        ("SOFTPROMPT_BENCH_CHECK", "warn"),
        ("SOFTPROMPT_ATTN_FWD", "mma"),
        ("SOFTPROMPT_ATTN_BWD_DQ", "wmma"),
        ("SOFTPROMPT_ATTN_BWD_DKDV", ""),
    ];
    let got = train(&scratch.path().join("run"), &[], &env);
    stdout_ok(&got);
    let all = said(&got);
    assert!(all.contains(&scalar_rows_stamp()), "{all}");
}

/// The kernels of a run under `SOFTPROMPT_GEMM=gemm SOFTPROMPT_SIMD=scalar`: the gemm crate
/// still runs the CPU's own kernels, which the stamp says where they are not scalar.
fn scalar_rows_stamp() -> String {
    use softprompt::internals::cpu::simd::Isa;
    match Isa::detect() {
        Isa::Scalar => "gemm/scalar".into(),
        own => format!("gemm[{}]/scalar", own.name()),
    }
}

/// `SOFTPROMPT_GEMM=mkl` is `--gemm mkl`: where MKL is not found, an error naming the
/// variable and where it looked (it ran on the gemm crate without a word); `--gemm` wins.
#[test]
fn softprompt_gemm_mkl_without_mkl_is_an_error() {
    let scratch = ScratchDir::new("cli_env_gemm");
    let env = [
        ("SOFTPROMPT_GEMM", "mkl"),
        ("SOFTPROMPT_MKL", "/nonexistent/mkl"),
    ];
    let out = scratch.path().join("run");
    let got = train(&out, &["--threads", "1"], &env);
    refused(
        &got,
        &["SOFTPROMPT_GEMM", "SOFTPROMPT_MKL=/nonexistent/mkl"],
    );
    assert!(!out.exists());
    stdout_ok(&train(&out, &["--threads", "1", "--gemm", "gemm"], &env));
    // parity too (it ran the gemm crate and passed: a check of MKL's numbers that checked
    // another library's), and it names the kernels it ran
    let model = fixture("bert_mlm");
    let reference = model.join("ref_pet_text.safetensors");
    let (model, reference) = (model.to_str().unwrap(), reference.to_str().unwrap());
    let args = ["parity", "--model", model, "--reference", reference];
    refused(
        &run(&args, &env),
        &["SOFTPROMPT_GEMM", "SOFTPROMPT_MKL=/nonexistent/mkl"],
    );
    let got = run(
        &args,
        &[("SOFTPROMPT_GEMM", "gemm"), ("SOFTPROMPT_SIMD", "scalar")],
    );
    stdout_ok(&got);
    let first = String::from_utf8_lossy(&got.stdout)
        .lines()
        .next()
        .map(str::to_string);
    assert!(
        first
            .as_deref()
            .is_some_and(|l| l.ends_with(&format!("on cpu ({})", scalar_rows_stamp()))),
        "{first:?}"
    );
}

/// Where MKL is installed, the file `cblas` found (this process looked the same way).
fn installed_mkl() -> Option<String> {
    match cblas::mkl() {
        Ok(m) => Some(m.path.display().to_string()),
        Err(e) => {
            println!("MKL is not installed here: skipped ({e})");
            None
        }
    }
}

/// `--gemm mkl` (or `SOFTPROMPT_GEMM=mkl`) with `--threads N`: loading MKL asked rayon for
/// its count first, which built the pool, and every `--threads` then failed.
#[test]
fn mkl_runs_with_a_thread_count() {
    let Some(mkl) = installed_mkl() else { return };
    let scratch = ScratchDir::new("cli_env_mkl_threads");
    let env = [("SOFTPROMPT_MKL", mkl.as_str())];
    let flags = ["--threads", "1", "--gemm", "mkl"];
    stdout_ok(&train(&scratch.path().join("a"), &flags, &env));
    let env = [("SOFTPROMPT_MKL", mkl.as_str()), ("SOFTPROMPT_GEMM", "mkl")];
    stdout_ok(&train(&scratch.path().join("b"), &["--threads", "2"], &env));
}

/// A folder holding libmkl_rt alone: MKL printed "Intel oneMKL FATAL ERROR: Cannot load
/// libmkl_core.so.3" to stdout and exited the process (status 2), even in the automatic
/// choice, replacing `--json`'s output. Now the automatic choice warns once and runs on the
/// gemm crate; `--gemm mkl` is an error naming the folder and the file it lacks.
#[test]
fn an_incomplete_mkl_folder_is_refused_before_mkl_runs() {
    let Some(mkl) = installed_mkl() else { return };
    let scratch = ScratchDir::new("cli_env_mkl_incomplete");
    let lone = scratch.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    let name = Path::new(&mkl).file_name().unwrap();
    std::os::unix::fs::symlink(&mkl, lone.join(name)).unwrap();
    let prompt = scratch.path().join("p");
    stdout_ok(&train(&prompt, &["--threads", "1"], &[]));
    let lone_s = lone.display().to_string();
    let env = [("SOFTPROMPT_MKL", lone_s.as_str())];
    let (p, dev) = (prompt.display().to_string(), data("dev.jsonl"));
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--prompt", &p, "--data", &dev, "--json"];
        args.extend_from_slice(extra);
        run(&args, &env)
    };
    let auto = eval(&[]);
    let json: serde_json::Value = serde_json::from_str(&stdout_ok(&auto)).unwrap();
    assert_eq!(json["examples"], 8, "{json}");
    let stderr = String::from_utf8_lossy(&auto.stderr);
    let warnings = stderr.matches("warning: mkl:").count();
    let expected = usize::from(gemm_path::is_intel());
    assert_eq!(warnings, expected, "{stderr}");
    if expected == 1 {
        assert!(
            stderr.contains(&lone_s) && stderr.contains("libmkl_core"),
            "{stderr}"
        );
    }
    let err = refused(
        &eval(&["--gemm", "mkl"]),
        &["--gemm", &lone_s, "libmkl_core"],
    );
    assert!(err.contains("SOFTPROMPT_MKL="), "{err}");
}

/// A folder of links to every file of the installed MKL's but those named in `without`.
fn mkl_without(scratch: &ScratchDir, name: &str, mkl: &str, without: &[&str]) -> String {
    let folder = scratch.path().join(name);
    std::fs::create_dir(&folder).unwrap();
    for f in std::fs::read_dir(Path::new(mkl).parent().unwrap()).unwrap() {
        let f = f.unwrap().path();
        let n = f.file_name().unwrap().to_string_lossy().into_owned();
        if !without.iter().any(|w| n.starts_with(w)) {
            std::os::unix::fs::symlink(&f, folder.join(&n)).unwrap();
        }
    }
    folder
        .join(Path::new(mkl).file_name().unwrap())
        .display()
        .to_string()
}

/// A user's `MKL_THREADING_LAYER=sequential` was overridden by Intel's layer, and the folder
/// had to hold Intel's threading library and OpenMP. Now the user's layer runs: a folder
/// without those runs under it (had Intel's been forced, MKL would have exited: its library is
/// not there), is refused without it naming the Intel library, and a value MKL does not know
/// is refused naming the variable.
#[test]
fn a_users_mkl_threading_layer_is_kept() {
    let Some(mkl) = installed_mkl() else { return };
    let scratch = ScratchDir::new("cli_env_mkl_layer");
    let seq = mkl_without(&scratch, "seq", &mkl, &["libmkl_intel_thread", "libiomp5"]);
    let flags = ["--threads", "2", "--gemm", "mkl"];
    let env = [
        ("SOFTPROMPT_MKL", seq.as_str()),
        ("MKL_THREADING_LAYER", "sequential"),
    ];
    let got = train(&scratch.path().join("a"), &flags, &env);
    stdout_ok(&got);
    let all = said(&got);
    // the layer sums in its own order: a checkpoint's kernels say which
    assert!(all.contains("mkl[sequential]/"), "{all}");
    let env = [("SOFTPROMPT_MKL", seq.as_str())];
    refused(
        &train(&scratch.path().join("b"), &flags, &env),
        &["--gemm", "libmkl_intel_thread"],
    );
    let env = [
        ("SOFTPROMPT_MKL", mkl.as_str()),
        ("MKL_THREADING_LAYER", "omp"),
    ];
    refused(
        &train(&scratch.path().join("c"), &flags, &env),
        &["--gemm", "MKL_THREADING_LAYER is \"omp\"", "SEQUENTIAL"],
    );
}

/// `--precision` with `--device cpu`: the run computes in float32 as before, and says so when
/// given bf16 or mixed (it was silent); f32 or no flag, nothing.
#[test]
fn a_cpu_run_given_a_bf16_precision_says_it_computes_in_float32() {
    let scratch = ScratchDir::new("cli_env_precision");
    let warning = "warning: --precision bf16 applies on cuda and emu: the CPU computes in float32";
    let got = train(&scratch.path().join("bf16"), &["--precision", "bf16"], &[]);
    stdout_ok(&got);
    assert!(
        String::from_utf8_lossy(&got.stderr).contains(warning),
        "{}",
        said(&got)
    );
    for (name, extra) in [("f32", &["--precision", "f32"][..]), ("none", &[][..])] {
        let got = train(&scratch.path().join(name), extra, &[]);
        stdout_ok(&got);
        assert!(!said(&got).contains("--precision"), "{}", said(&got));
    }
}
