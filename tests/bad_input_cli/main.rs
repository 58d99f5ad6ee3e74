//! The bad-input corpus of issue #13 (`tests/bad_inputs/`, written by
//! `scripts/make_bad_inputs.py`) against the release binary: one test per case. Each checks
//! the exit code, that nothing panicked, and that the message names the file, key, flag or
//! tensor at fault; the data-loss cases compare the files that must survive byte for byte.
//! Every run is a few steps on the small fixture models, so the whole binary takes seconds.
//!
//! One test binary, its tests in a module per command or concern: the model's files
//! (`model`), `parity`, `train`'s flags (`train_flags`) and runs (`train_runs`), the other
//! commands' flags (`commands`), saved prompt folders (`prompt_folder`), data files (`data`),
//! `predict`, checkpoints and `--resume` (`checkpoint`), and multi-task training (`multitask`).
//! The helpers they share live here.

#[path = "../common/mod.rs"]
mod common;

mod checkpoint;
mod commands;
mod data;
mod lengths;
mod model;
mod multitask;
mod parity;
mod predict;
mod prompt_folder;
mod train_flags;
mod train_runs;

use common::{binary, fixture, ScratchDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad_inputs")
        .join(rel)
}

fn cases() -> Value {
    let text = std::fs::read_to_string(corpus("cases.json")).expect("tests/bad_inputs/cases.json");
    serde_json::from_str(&text).expect("cases.json")
}

fn case(group: &str, name: &str) -> Value {
    let v = cases()[group][name].clone();
    assert!(!v.is_null(), "{group}/{name} is not in cases.json");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn softprompt(args: &[&str]) -> Output {
    softprompt_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn softprompt_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run softprompt")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Succeeds, and returns stdout + stderr.
fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit {:?}\n{text}", out.status);
    assert!(!text.contains("panicked"), "{text}");
    text
}

/// A few-step PET training command on `model` into `out` (extra flags appended).
fn train_args<'a>(model: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = common::tiny_pet_train_args(model, out)
        .into_iter()
        .map(|a| &*Box::leak(a.into_boxed_str()))
        .collect();
    args.extend_from_slice(extra);
    args
}

/// A path that lives for the whole test run (the corpus' files never move).
fn s_static(p: PathBuf) -> &'static str {
    Box::leak(
        p.into_os_string()
            .into_string()
            .expect("utf-8")
            .into_boxed_str(),
    )
}

/// The files of a folder, name -> bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("folder")
        .flatten()
        // the lock file holds the pid of the last run that looked, not the user's data
        .filter(|e| e.path().is_file() && e.file_name() != ".softprompt.lock")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    files.sort();
    files
}

fn edit_json(path: &Path, patch: &Value) {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("json");
    for (k, x) in patch.as_object().expect("a patch object") {
        v[k] = x.clone();
    }
    std::fs::write(path, serde_json::to_string_pretty(&v).expect("json")).expect("write json");
}

/// A trained prompt folder (2 steps of PET on bert_mlm) in `dir`.
fn trained(dir: &ScratchDir, extra: &[&str]) -> PathBuf {
    let out = dir.path().join("run");
    ok(&softprompt(&train_args(&fixture("bert_mlm"), &out, extra)));
    out
}

/// Every case of cases.json has its test in one of the modules (a case added to the corpus
/// without one fails here).
#[test]
fn every_corpus_case_has_a_test() {
    let source = [
        include_str!("checkpoint.rs"),
        include_str!("commands.rs"),
        include_str!("data.rs"),
        include_str!("model.rs"),
        include_str!("multitask.rs"),
        include_str!("parity.rs"),
        include_str!("predict.rs"),
        include_str!("prompt_folder.rs"),
        include_str!("train_flags.rs"),
        include_str!("train_runs.rs"),
    ]
    .concat();
    for (group, fun) in [
        ("config", "config_case"),
        ("flags", "flag_case"),
        ("verbalizer", "verbalizer_case"),
        ("task", "task_case"),
        ("adapter", "adapter_case"),
    ] {
        for name in cases()[group].as_object().expect("group").keys() {
            let call = format!("{fun}(\"{name}\");");
            assert!(source.contains(&call), "no test calls {call}");
        }
    }
}
