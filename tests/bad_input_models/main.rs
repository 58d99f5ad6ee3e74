//! Damaged model and prompt folders (issues #16/#17, the hostile-input pass): each is
//! refused at once with exit code 2 and a message naming the file and key at fault, never a
//! hang, an abort or numbers that mean nothing. Every case builds its damaged copy of a
//! committed fixture in a scratch folder and runs the release binary on it.
//!
//! One test binary, its tests in a module per concern: a file that is not an ordinary file
//! and `inspect` on a folder without a tokenizer (`folders`), config.json's keys (`config`),
//! scores that are not finite (`scores`), tokenizer.json (`tokenizer`) and
//! adapter_config.json (`adapter`). The helpers they share live here.

#[path = "../common/mod.rs"]
mod common;

mod adapter;
mod config;
mod folders;
mod scores;
mod tokenizer;

use common::{binary, fixture, ScratchDir};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest any refusal here may take: a case that hangs fails instead of stalling the run.
const LIMIT: Duration = Duration::from_secs(60);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs the binary with `args`, killed (and the test failed) after `LIMIT`.
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run softprompt");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("softprompt {args:?} still ran after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Replaces `path` with a FIFO no one writes to.
fn make_fifo(path: &Path) {
    std::fs::remove_file(path).expect("remove");
    let c_path = std::ffi::CString::new(s(path)).expect("path");
    // SAFETY: mkfifo(3) on a NUL-terminated path we own
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// A copy of the committed PEFT prompt folder for the tiny BERT under `dir`.
fn copy_prompt(dir: &ScratchDir) -> std::path::PathBuf {
    let dst = dir.path().join("prompt");
    std::fs::create_dir_all(&dst).expect("create");
    for f in std::fs::read_dir(fixture("bert_mlm/peft_adapter")).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dst.join(f.file_name().expect("name"))).expect("copy");
    }
    dst
}

/// `cmd` (predict, eval) of the PEFT `prompt` on `model` over `data`, with its verbalizer.
fn pet_args<'a>(cmd: &'a str, prompt: &'a Path, model: &'a Path, data: &'a Path) -> Vec<&'a str> {
    vec![
        cmd,
        "--prompt",
        s(prompt),
        "--model",
        s(model),
        "--data",
        s(data),
        "--verbalizer",
        "negative=terrible,positive=good",
    ]
}
