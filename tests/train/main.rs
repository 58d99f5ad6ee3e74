//! Training, evaluation and prediction end to end, on the committed fixture models and small
//! generated data sets: PyTorch numbers for the PET and seq2seq scores, PEFT-saved prompts,
//! the CLI's outputs, determinism, and resume after SIGKILL.
//!
//! One test binary, its tests in a module per concern: PyTorch's and PEFT's numbers
//! (`pytorch`), the cls, seq2seq and early-stopping tasks (`tasks`), determinism and resume
//! (`determinism`), and data files and templates (`data`). The helpers they share live here.

#[path = "../common/mod.rs"]
mod common;

mod data;
mod determinism;
mod pytorch;
mod tasks;

use softprompt::internals::closeness::{Closeness, TENSOR_FLOOR};
use std::path::{Path, PathBuf};

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    common::scratch_in("train_tests", name)
}

/// Sentiment rows made of words every fixture vocabulary holds.
fn sentiment_rows() -> Vec<(String, &'static str)> {
    let pos = ["great", "good", "fine", "funny", "lovely", "brilliant"];
    let neg = ["bad", "terrible", "awful", "boring", "dull", "slow"];
    let subjects = ["movie", "film", "story", "plot", "music", "comedy"];
    let patterns = [
        "the {s} was {a}.",
        "a {a} {s}!",
        "this {s} is really {a}.",
        "i think the {s} was so {a}.",
    ];
    let mut rows = Vec::new();
    let mut i = 0;
    for s in subjects {
        for p in patterns {
            for (words, label) in [(pos, "positive"), (neg, "negative")] {
                rows.push((p.replace("{s}", s).replace("{a}", words[i % 6]), label));
            }
            i += 1;
        }
    }
    rows
}

fn write_jsonl(path: &Path, rows: &[(String, &str)]) {
    let text: String = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

/// train.jsonl (36 rows) and dev.jsonl (12 rows) in `dir`.
fn sentiment_files(dir: &Path) -> (PathBuf, PathBuf) {
    let rows = sentiment_rows();
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    write_jsonl(&train, &rows[..36]);
    write_jsonl(&dev, &rows[36..]);
    (train, dev)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The reference format's measure of a tensor: ‖got − want‖ / ‖want‖.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    Closeness::of(got, want, TENSOR_FLOOR).rel_err
}
