//! The NVTX v3 client (src/cuda/nvtx.rs) against a fake injection library
//! (tests/nvtx/fake_injection.c, built here with gcc), the way nsys attaches: through
//! `NVTX_INJECTION64_PATH`. The client initialises once per process, so each case runs
//! `child_workload` (below) in a fresh copy of this test binary with its own environment.
//! The fake logs every push, pop and mark to `$FAKE_NVTX_LOG`.

use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::nvtx;
use softprompt::internals::train::{Event, Model, Task, TaskKind, TaskSpec, TrainConfig, Trainer};
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn scratch(name: &str) -> PathBuf {
    common::scratch_in("nvtx_tests", name)
}

/// A folder holding nvtx3/nvToolsExt.h, looked up as src/cuda/nvrtc.rs looks up cuda_bf16.h.
fn nvtx_headers() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("SOFTPROMPT_CUDA_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for d in std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
    {
        if let Some(p) = Path::new(d).parent().filter(|_| !d.is_empty()) {
            dirs.push(p.join("include"));
        }
    }
    if let Some(p) = std::env::var_os("CUDA_PATH") {
        dirs.push(Path::new(&p).join("include"));
    }
    dirs.push("/usr/local/cuda/include".into());
    dirs.into_iter()
        .find(|d| d.join("nvtx3/nvToolsExt.h").is_file())
}

/// Builds the fake injection into `dir`; None (the test then skips) without gcc. With the
/// real NVTX headers at hand, its static asserts check its ABI against them too.
fn build_fake(dir: &Path) -> Option<PathBuf> {
    let so = dir.join("libfake_nvtx.so");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvtx/fake_injection.c");
    let mut cmd = Command::new("gcc");
    cmd.args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&so)
        .arg(&src);
    match nvtx_headers() {
        Some(inc) => {
            eprintln!("fake injection checked against {}", inc.display());
            cmd.arg("-DFAKE_NVTX_HEADERS").arg("-I").arg(inc);
        }
        None => eprintln!("no nvtx3 headers found: the fake injection's ABI is not cross-checked"),
    }
    match cmd.output() {
        Err(e) => {
            eprintln!("SKIP: cannot run gcc ({e}); the NVTX injection tests need it");
            None
        }
        Ok(out) => {
            assert!(
                out.status.success(),
                "gcc failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(so)
        }
    }
}

/// Runs `child_workload` in a fresh process with `env` (and no inherited NVTX variables).
fn child(env: &[(&str, &Path)], expect_enabled: bool, train: bool) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_workload", "--exact", "--ignored", "--nocapture"])
        .env_remove("NVTX_INJECTION64_PATH")
        .env_remove("NVTX_INJECTION32_PATH")
        .env_remove("SOFTPROMPT_NVTX_DEBUG")
        .env_remove("FAKE_NVTX_FAIL")
        .env(
            "SOFTPROMPT_NVTX_CHILD",
            if expect_enabled { "on" } else { "off" },
        )
        .env("SOFTPROMPT_NVTX_TRAIN", if train { "1" } else { "0" });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The pushes, pops and marks of one run; checks the pushes and pops balance.
fn read_log(path: &Path) -> Vec<String> {
    let lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut depth = 0i64;
    for l in &lines {
        assert!(
            !l.starts_with("error"),
            "the fake injection saw a protocol error: {l}"
        );
        if l.starts_with("push ") {
            depth += 1;
        } else if l == "pop" {
            depth -= 1;
            assert!(depth >= 0, "pop without a push:\n{}", lines.join("\n"));
        }
    }
    assert_eq!(depth, 0, "unbalanced:\n{}", lines.join("\n"));
    lines
}

/// What the children run: ranges and a mark by hand, ops through the `Profiler`, and (with
/// SOFTPROMPT_NVTX_TRAIN=1) two `Trainer` steps on the fixture BERT through the `Profiler`.
#[test]
#[ignore = "run by the other tests of this file in a child process"]
fn child_workload() {
    let Ok(expect) = std::env::var("SOFTPROMPT_NVTX_CHILD") else {
        return;
    };
    // the first calls race from several threads: the tool is still initialised once
    let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(nvtx::enabled)).collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), expect == "on");
    }
    let be = Profiler::new(CpuBackend::<f32>::new());
    {
        let _outer = nvtx::Range::push("outer");
        nvtx::mark("hello");
        let a = be.upload(DType::F32, &[1.0, 2.0]).unwrap();
        assert_eq!(be.download(&a).unwrap(), vec![1.0, 2.0]);
        let _inner = nvtx::Range::push("inner\0cut here");
    }
    // a GEMM of the CUDA backend (on the emulator): its own range inside the op's
    #[cfg(feature = "emu")]
    {
        let emu = Profiler::new(softprompt::internals::cuda::CudaBackend::emu().unwrap());
        let dt = emu.act_dtype();
        let x = emu.upload(dt, &[1.0; 4]).unwrap();
        let w = emu.upload(dt, &[1.0; 4]).unwrap();
        let mut y = emu.zeros(dt, 4).unwrap();
        nvtx::mark("emu");
        emu.linear_fwd(&mut y, &x, &w, None, 2, 2, 2).unwrap();
        nvtx::mark("emu done");
    }
    if std::env::var("SOFTPROMPT_NVTX_TRAIN").as_deref() != Ok("1") {
        return;
    }
    nvtx::mark("train");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_mlm");
    let model = Model::load(&be, &fixture).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 16;
    let task = Task::new(spec, &model).unwrap();
    let jsonl = "{\"text\": \"a great film\", \"label\": \"positive\"}\n\
                 {\"text\": \"a bad film\", \"label\": \"negative\"}\n";
    let data = softprompt::internals::train::data::Dataset::parse(
        Path::new("mem.jsonl"),
        jsonl,
        &Default::default(),
    )
    .unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    let cfg = TrainConfig {
        prompt_len: 2,
        batch_size: 2,
        max_steps: Some(2),
        save_every: 0,
        log_every: 0,
        ..TrainConfig::default()
    };
    let out = scratch(&format!("train_{}", std::process::id()));
    let mut t = Trainer::new(&be, &model, &task, &enc, None, None, cfg, &out).unwrap();
    let mut steps = 0;
    t.run(&mut |e| steps += matches!(e, Event::Step(_)) as u32)
        .unwrap();
    assert_eq!(steps, 2);
}

/// With the fake tool injected: it attaches once, and sees exactly our ranges and marks,
/// balanced, with the op names of the `Profiler` and one range per training step.
#[test]
fn ranges_reach_the_injected_tool() {
    let dir = scratch("attached");
    let Some(so) = build_fake(&dir) else { return };
    let log = dir.join("log.txt");
    child(
        &[("NVTX_INJECTION64_PATH", &so), ("FAKE_NVTX_LOG", &log)],
        true,
        true,
    );
    let lines = read_log(&log);
    assert_eq!(
        lines[..10],
        [
            "init tables 16 9 15 7 16 7",
            "push outer",
            "mark hello",
            "push upload",
            "pop",
            "push download",
            "pop",
            "push inner",
            "pop",
            "pop",
        ]
    );
    if cfg!(feature = "emu") {
        let at = lines.iter().position(|l| l == "mark emu").unwrap();
        assert_eq!(
            lines[at + 1..at + 6],
            [
                "push linear_fwd",
                "push gemm (linear_fwd)",
                "pop",
                "pop",
                "mark emu done"
            ]
        );
    }
    let train = lines.iter().position(|l| l == "mark train").unwrap();
    // the training part: its top-level ranges include one per step, each holding op ranges
    let mut depth = 0;
    let mut top = Vec::new();
    let mut inside_step = 0;
    for l in &lines[train + 1..] {
        if let Some(name) = l.strip_prefix("push ") {
            if depth == 0 {
                top.push(name);
            } else if top.last().is_some_and(|t| t.starts_with("train step")) {
                inside_step += 1;
            }
            depth += 1;
        } else if l == "pop" {
            depth -= 1;
        }
    }
    let steps: Vec<_> = top.iter().filter(|n| n.starts_with("train step")).collect();
    assert_eq!(steps, [&"train step 1", &"train step 2"], "{top:?}");
    assert!(
        top.contains(&"upload"),
        "model loading goes through the Profiler: {top:?}"
    );
    assert!(
        inside_step > 20,
        "a step's ops are ranges inside it ({inside_step})"
    );
    assert!(
        lines.iter().any(|l| l == "push linear_fwd")
            && lines.iter().any(|l| l == "push attention_bwd")
    );
}

/// Without NVTX_INJECTION64_PATH nothing is loaded: no log, and everything still works.
#[test]
fn no_tool_no_ranges() {
    let dir = scratch("detached");
    let Some(_so) = build_fake(&dir) else { return };
    let log = dir.join("log.txt");
    child(&[("FAKE_NVTX_LOG", &log)], false, false);
    assert!(!log.exists());
}

/// A tool whose init returns 0 is dropped, as the reference does; a path that does not load
/// disables NVTX with one line on stderr under SOFTPROMPT_NVTX_DEBUG=1, and no panic.
#[test]
fn failed_tools_are_ignored() {
    let dir = scratch("failed");
    let Some(so) = build_fake(&dir) else { return };
    let log = dir.join("log.txt");
    let one = Path::new("1");
    child(
        &[
            ("NVTX_INJECTION64_PATH", &so),
            ("FAKE_NVTX_LOG", &log),
            ("FAKE_NVTX_FAIL", one),
        ],
        false,
        false,
    );
    assert_eq!(read_log(&log), ["init tables 16 9 15 7 16 7"]);

    let missing = dir.join("missing.so");
    let out = child(
        &[
            ("NVTX_INJECTION64_PATH", &missing),
            ("SOFTPROMPT_NVTX_DEBUG", one),
        ],
        false,
        false,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<_> = stderr.lines().filter(|l| l.starts_with("nvtx: ")).collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("missing.so"), "{stderr}");
}
