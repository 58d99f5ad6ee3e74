//! Accuracy and macro-F1, and the metrics log (JSON lines).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use serde_json::Value;
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Evaluation of one split.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalMetrics {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub examples: usize,
}

impl EvalMetrics {
    /// The `eval --json` object: exactly `accuracy`, `macro_f1` and `examples`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"accuracy": self.accuracy, "macro_f1": self.macro_f1, "examples": self.examples})
    }
}

/// Accuracy and macro-F1 of predicted against gold class ids. As scikit-learn's
/// `f1_score(average="macro")`, the mean runs over the classes that occur in gold or
/// predictions, and a class with no true positive scores 0.
///
/// ```
/// use softprompt::internals::train::metrics::classification_metrics;
/// // gold: a a b b c, pred: a b b b a
/// let m = classification_metrics(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0]);
/// assert_eq!(m.accuracy, 0.6);
/// // F1: a = 2·(1/2·1/2)/(1/2+1/2) = 0.5, b = 2·(2/3·1)/(2/3+1) = 0.8, c = 0
/// assert!((m.macro_f1 - 1.3 / 3.0).abs() < 1e-12);
/// ```
pub fn classification_metrics(gold: &[usize], pred: &[usize]) -> EvalMetrics {
    let n = gold.len().min(pred.len());
    let k = gold.iter().chain(pred).copied().max().map_or(0, |m| m + 1);
    // (tp, fp, fn) per class; k bounds every class seen, so `get_mut` always finds it
    let mut counts = vec![(0usize, 0usize, 0usize); k];
    let mut correct = 0;
    for (&g, &p) in gold.iter().zip(pred) {
        if g == p {
            if let Some(c) = counts.get_mut(g) {
                c.0 += 1;
            }
            correct += 1;
        } else {
            if let Some(c) = counts.get_mut(p) {
                c.1 += 1;
            }
            if let Some(c) = counts.get_mut(g) {
                c.2 += 1;
            }
        }
    }
    let mut f1_sum = 0.0;
    let mut classes = 0;
    for &(tp, fp, fn_) in &counts {
        if tp + fp + fn_ == 0 {
            continue;
        }
        classes += 1;
        f1_sum += 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
    }
    EvalMetrics {
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        macro_f1: if classes == 0 {
            0.0
        } else {
            f1_sum / classes as f64
        },
        examples: n,
    }
}

/// The metrics of a run, one JSON object per line. The file is first written whole and
/// atomically (temporary file, then rename): a fresh run's empty file at its start, a resumed
/// run's lines up to its checkpoint at its first line or checkpoint (`settle`), so that a
/// resume killed before then leaves the file as it was. Later lines are appended, each in one write: rewriting the whole file per
/// line made a long run's disk writes quadratic (62 GB for a 4 MB log). A line torn by a crash
/// lies past the last checkpoint, and the resume that follows drops it with the rest.
pub struct MetricsLog {
    path: PathBuf,
    lines: Vec<String>,
    /// the file holds `lines` (written whole once): appends may go to its end
    written: Cell<bool>,
}

impl MetricsLog {
    /// Starts a fresh log at `path`.
    pub fn create(path: &Path) -> MetricsLog {
        MetricsLog {
            path: path.to_path_buf(),
            lines: Vec::new(),
            written: Cell::new(false),
        }
    }

    /// Reopens a log for a resumed run, keeping only the lines up to `step` (later ones are
    /// recomputed by the resumed run).
    pub fn resume(path: &Path, step: u64) -> Result<MetricsLog> {
        // read to the stream bound (a link to /dev/zero ate all memory), and a line of
        // invalid UTF-8 costs that line only (every line before it was dropped)
        let text = match path.exists() {
            true => String::from_utf8_lossy(&crate::fsutil::read_stream(path)?).into_owned(),
            false => String::new(),
        };
        let lines = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .map(String::from)
            .collect();
        // the file is left as it is until the run's first line rewrites it whole: a
        // finished run resumed to be re-scored lost its last line (the kept prompt's test
        // score, which has no step) when it was killed before it appended it again
        // (hostile pass 21, F3); the next resume drops the later lines again
        Ok(MetricsLog {
            path: path.to_path_buf(),
            lines,
            written: Cell::new(false),
        })
    }

    pub fn append(&mut self, v: &Value) -> Result<()> {
        let line = v.to_string();
        self.lines.push(line.clone());
        if !self.written.get() {
            return self.flush();
        }
        let append = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().append(true).open(&self.path)?;
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_data()
        };
        append().map_err(|e| Error::io(&self.path, e))
    }

    /// Writes the log whole if a resume has not written it yet: a checkpoint is saved with
    /// the log of its step (else lines of the run that was resumed, past its checkpoint,
    /// stayed in the file until the next line).
    pub fn settle(&self) -> Result<()> {
        match self.written.get() {
            true => Ok(()),
            false => self.flush(),
        }
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Writes the log as it stands (a fresh run's empty file: --log-every 0 without a dev
    /// split appends nothing, and the file a run says it saved must exist).
    pub fn flush(&self) -> Result<()> {
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        crate::fsutil::write_atomic(&self.path, text.as_bytes())?;
        self.written.set(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_skips_absent_classes_like_sklearn() {
        // sklearn: f1_score([0,0,2,2], [0,2,2,2], average="macro") = (0.6667 + 0.8) / 2
        let m = classification_metrics(&[0, 0, 2, 2], &[0, 2, 2, 2]);
        assert!(
            (m.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12,
            "{m:?}"
        );
        assert_eq!(m.accuracy, 0.75);
        assert_eq!(m.examples, 4);
        let all_one = classification_metrics(&[0, 1, 1, 0], &[1, 1, 1, 1]);
        assert!((all_one.macro_f1 - (0.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn log_resume_drops_later_steps() {
        let dir = std::env::temp_dir().join(format!("sp_metrics_{}", std::process::id()));
        let path = dir.join("metrics.jsonl");
        let mut log = MetricsLog::create(&path);
        for s in 1..=5u64 {
            log.append(&serde_json::json!({"step": s, "loss": s as f64 / 10.0}))
                .unwrap();
        }
        // a half-written line as a crash could leave with plain appends
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"step\": 6, \"lo");
        std::fs::write(&path, &text).unwrap();
        let mut log = MetricsLog::resume(&path, 3).unwrap();
        assert_eq!(log.lines().len(), 3);
        // untouched until the resumed run's first line: a kill before it loses nothing
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        log.append(&serde_json::json!({"step": 4, "loss": 0.45}))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"loss\":0.1,\"step\":1}\n{\"loss\":0.2,\"step\":2}\n{\"loss\":0.3,\"step\":3}\n\
             {\"loss\":0.45,\"step\":4}\n"
        );
        // later lines go to the end of that file (rewriting it whole per line was quadratic)
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&path);
        log.append(&serde_json::json!({"step": 5, "loss": 0.5}))
            .unwrap();
        assert_eq!(inode(&path), before, "appended, not replaced");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("{\"loss\":0.45,\"step\":4}\n{\"loss\":0.5,\"step\":5}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
