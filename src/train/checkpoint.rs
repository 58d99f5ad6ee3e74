//! What a run leaves in its output folder, and how it comes back:
//!
//! - `checkpoint.safetensors`: everything a resumed run needs, in ONE file written
//!   atomically (temporary file, then rename): the prompt, the head, the optimizer state, the
//!   best prompt so far, and in the metadata the step, the epoch, the batch plan of the epoch
//!   and the position in it, the RNG state, the best dev metric and a hash of the settings.
//!   A run killed at any moment leaves the previous checkpoint or the new one, never a mix.
//! - the prompt in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`), plus
//!   `task.json` (the task: template, labels, verbalizer, ...) and, for `cls`,
//!   `head.safetensors` (the K x d head). `eval` and `predict` read these. Each file is
//!   written atomically; a resumed run writes them again.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::metrics::EvalMetrics;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::weights::{write_safetensors, TensorFile};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

// the prompt folder's half of this file's doc, in a file of its own
pub use super::prompt_advice::{hidden_copy_advice, live_advice, Origin};
pub use super::prompt_dir::{
    check_arch, load_prompt_dir, save_prompt_dir, save_stamp, stamp_metadata, SavedPrompt, SAVE_KEY,
};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const TASK_FILE: &str = "task.json";
pub const HEAD_FILE: &str = "head.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub(super) const META_KEY: &str = "softprompt_checkpoint";
/// The metadata key of a checkpoint's checksum (single- and multi-task): `checksum` of its
/// state and tensors. Checkpoints written before it was recorded have none and are read
/// unchecked, as fields added since (`device`, `log_window`, `eval_window`) are read with defaults: the
/// format stays 1.
pub const CHECKSUM_KEY: &str = "softprompt_checksum";
pub const CHECKPOINT_FORMAT: u32 = 1;
/// task.json's `format`
pub const TASK_FORMAT: u64 = 1;

/// The scalar part of a checkpoint (stored as JSON in the safetensors metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    /// optimizer steps taken
    pub step: u64,
    /// epochs started (the plan below belongs to epoch `epoch`, counted from 1)
    pub epoch: u64,
    /// this epoch's batches, as row indices of the training file
    pub plan: Vec<Vec<u32>>,
    /// the next batch of `plan` to run
    pub pos: usize,
    /// the data-order generator, after drawing `plan`
    pub rng: Rng,
    /// the best dev evaluation so far (by accuracy), and the step that reached it
    pub best: Option<EvalMetrics>,
    /// the test evaluation made at the best step, when a test split was given
    pub best_test: Option<EvalMetrics>,
    pub best_step: u64,
    /// evaluations since the best one (early stopping)
    pub evals_since_best: u32,
    /// the run stopped (all steps done, or early stopping)
    pub done: bool,
    /// FNV-1a of `config`
    pub config_hash: String,
    /// the settings that shape the numbers; a resumed run must match them
    pub config: Value,
    /// rayon threads of the run (results are bit-identical for the same count)
    pub threads: usize,
    /// the device that wrote it, as `Backend::name` gives it ("cpu", "emu (mixed build)",
    /// "cuda:0 NVIDIA H200"); empty in checkpoints written before it was recorded
    #[serde(default)]
    pub device: String,
    /// the CPU kernels that wrote it, as `Storage::kernels` gives them ("gemm/avx512"); empty
    /// on a GPU and in checkpoints written before they were recorded
    #[serde(default)]
    pub kernels: String,
    /// the steps since the last metrics line, so that a resumed run's next line averages the
    /// same steps as the uninterrupted run's
    #[serde(default)]
    pub log_window: LogWindow,
    /// the steps since the last dev evaluation, so that a resumed run's next evaluation line
    /// prints the train loss of the same steps as the uninterrupted run's (empty in
    /// checkpoints written before it was recorded: that line then covers the steps since
    /// the resume)
    #[serde(default)]
    pub eval_window: LogWindow,
}

/// The losses and tokens since the last metrics line (or dev evaluation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogWindow {
    /// the f64 bits of the loss sum (bits, so that the JSON round trip is exact)
    pub loss_sum_bits: u64,
    pub steps: u64,
    pub tokens: u64,
}

impl LogWindow {
    /// Adds one step's loss and tokens.
    pub fn add(&mut self, loss: f64, tokens: usize) {
        self.loss_sum_bits = (f64::from_bits(self.loss_sum_bits) + loss).to_bits();
        self.steps += 1;
        self.tokens += tokens as u64;
    }

    /// The loss summed over the window, and its steps.
    pub fn loss(&self) -> (f64, u64) {
        (f64::from_bits(self.loss_sum_bits), self.steps)
    }
}

/// A checkpoint: the state and the named float tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub state: TrainState,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// A checkpoint's `TrainState` from its JSON, a counter that is not a non-negative integer
/// named (`whose` `step` is -1: serde names the value, not the key).
pub(crate) fn state_from_json(path: &Path, v: Value, whose: &str) -> Result<TrainState> {
    let counters = [
        "format",
        "step",
        "epoch",
        "pos",
        "best_step",
        "evals_since_best",
        "threads",
    ];
    for k in counters {
        if let Some(x) = v.get(k).filter(|x| x.as_u64().is_none()) {
            return Err(Error::file(
                path,
                format!("{whose} `{k}` is {x}: expected a non-negative integer"),
            ));
        }
    }
    serde_json::from_value(v)
        .map_err(|e| Error::file(path, format!("unreadable checkpoint state ({whose}): {e}")))
}

/// Writes a checkpoint file atomically, single- or multi-task: `tensors`, and in the metadata
/// `meta` as JSON under `meta_key` and the checksum of both under `CHECKSUM_KEY`.
pub(super) fn write_checkpoint(
    path: &Path,
    meta_key: &str,
    meta: &impl Serialize,
    tensors: &[(&str, Vec<usize>, &[f32])],
) -> Result<()> {
    let meta = serde_json::to_string(meta)
        .map_err(|e| Error::file(path, format!("cannot serialize the state: {e}")))?;
    let sum = checksum(
        &meta,
        tensors.iter().map(|(k, s, d)| (*k, s.as_slice(), *d)),
    );
    write_safetensors(
        path,
        tensors,
        Some(HashMap::from([
            (meta_key.to_string(), meta),
            (CHECKSUM_KEY.to_string(), sum),
        ])),
    )
}

impl Checkpoint {
    /// Writes `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let views: Vec<(&str, Vec<usize>, &[f32])> = self
            .tensors
            .iter()
            .map(|(k, (s, d))| (k.as_str(), s.clone(), d.as_slice()))
            .collect();
        write_checkpoint(path, META_KEY, &self.state, &views)
    }

    /// Reads `path`, refusing one whose tensors or state do not match its checksum.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let file = TensorFile::read(path).map_err(super::outdir::unresumable)?;
        let meta = file.metadata.get(META_KEY).ok_or_else(|| {
            // a multi-task run's checkpoint was called "not a softprompt checkpoint"
            let what = match file
                .metadata
                .contains_key("softprompt_multitask_checkpoint")
            {
                true => {
                    "a multi-task run's checkpoint: resume it with its tasks (--task-data or \
                         --task-field, as it was trained)"
                }
                false => "not a softprompt checkpoint",
            };
            Error::file(path, format!("{what} (no `{META_KEY}` metadata)"))
        })?;
        check_checksum(path, &file, meta).map_err(super::outdir::unresumable)?;
        let v: Value = serde_json::from_str(meta)
            .map_err(|e| Error::file(path, format!("unreadable checkpoint state: {e}")))?;
        let state = state_from_json(path, v, "the state's")?;
        if state.format != CHECKPOINT_FORMAT {
            return Err(Error::file(path, format!("checkpoint format {} is not {CHECKPOINT_FORMAT}: retrain, or use the softprompt that wrote it", state.format)));
        }
        let tensors = file
            .floats
            .into_iter()
            .map(|(k, t)| (k, (t.shape, t.data)))
            .collect();
        Ok(Checkpoint { state, tensors })
    }

    pub fn get(&self, name: &str) -> Result<&[f32]> {
        self.tensors
            .get(name)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| Error::tensor(name, "missing from the checkpoint"))
    }

    /// Tensor `name`, which must have `shape` (`dims` names the dimensions for the message)
    /// and hold finite values only.
    pub fn get_shaped(&self, name: &str, shape: &[usize], dims: &str) -> Result<&[f32]> {
        let (stored, data) = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor(name, format!("missing from {CHECKPOINT_FILE}")))?;
        if stored.as_slice() != shape || data.len() != shape.iter().product::<usize>() {
            return Err(Error::tensor(
                name,
                format!(
                    "in {CHECKPOINT_FILE} has shape {stored:?}, expected {shape:?} ({dims}) for \
                     this model and task: the checkpoint belongs to another run or is corrupt"
                ),
            ));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::tensor(
                name,
                format!("in {CHECKPOINT_FILE} holds a non-finite value at flat index {i}"),
            ));
        }
        Ok(data)
    }
}

impl Checkpoint {
    /// The optimizer's second moments (AdamW's `v`, Adafactor's `row` and `col` factors) are
    /// running means of squared gradients: a negative value would train NaN (its square root)
    /// from the first resumed step.
    pub fn check_second_moments(&self, path: &Path) -> Result<()> {
        let second = |n: &str| {
            n.starts_with("opt.") && [".v", ".row", ".col"].iter().any(|s| n.ends_with(s))
        };
        for (name, (_, data)) in self.tensors.iter().filter(|(n, _)| second(n)) {
            if let Some(i) = data.iter().position(|x| *x < 0.0) {
                return Err(Error::tensor(
                    name,
                    format!(
                        "in {} holds a negative value ({} at flat index {i}): an optimizer's \
                         second moment is a mean of squares, so the checkpoint is corrupt",
                        path.display(),
                        data.get(i).copied().unwrap_or(f32::NAN)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl TrainState {
    /// The run ended by early stopping (`patience` evaluations without a better one): what a
    /// resumed finished run reports, as the run in one go did.
    pub fn stopped_early(&self, patience: Option<u32>) -> bool {
        self.done && patience.is_some_and(|p| self.evals_since_best >= p)
    }

    /// Checks what the loop indexes with: the batch plan's row indices against the `rows` of
    /// the training file, the position in the plan, the epoch and the step counts.
    pub fn check(&self, path: &Path, rows: usize) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::file(
                path,
                format!("{msg}: the checkpoint is corrupt"),
            ))
        };
        if let Some(i) = self.plan.iter().flatten().find(|&&i| i as usize >= rows) {
            return bad(format!(
                "the batch plan names row {i}, but the training file has {rows} rows"
            ));
        }
        if self.plan.iter().any(|b| b.is_empty()) {
            return bad("the batch plan holds an empty batch".into());
        }
        if self.pos > self.plan.len() {
            return bad(format!(
                "the position {} is past the plan's {} batches",
                self.pos,
                self.plan.len()
            ));
        }
        if self.epoch == 0 || self.best_step > self.step {
            return bad(format!(
                "epoch {} / best step {} of step {} are inconsistent",
                self.epoch, self.best_step, self.step
            ));
        }
        Ok(())
    }

    /// Checks the plan and the counters against each other: each epoch's plan is every one of
    /// the `rows` training rows once, in batches of at most `batch` rows, and `step` is the
    /// batches run, `(epoch - 1)` whole plans and `pos` of this one. An edited `step` or plan
    /// trained on silently to other numbers. Run after the settings compare equal (the rows
    /// and the batch size are hashed there), so that another run is named as such.
    pub fn check_plan(&self, path: &Path, rows: usize, batch: usize) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::file(
                path,
                format!("{msg}: the checkpoint is corrupt"),
            ))
        };
        let batches = rows.div_ceil(batch.max(1));
        if self.plan.len() != batches {
            return bad(format!(
                "`plan` holds {} batches, but {rows} training rows in batches of {batch} make                  {batches}",
                self.plan.len()
            ));
        }
        if let Some(b) = self.plan.iter().find(|b| b.len() > batch) {
            return bad(format!(
                "`plan` holds a batch of {} rows, more than the batch size {batch}",
                b.len()
            ));
        }
        let mut seen = vec![false; rows];
        for &i in self.plan.iter().flatten() {
            match seen.get_mut(i as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return bad(format!(
                        "`plan` names row {i} twice (or past the file's {rows} rows): an                          epoch's plan holds every training row once"
                    ))
                }
            }
        }
        let run = (self.epoch.saturating_sub(1))
            .saturating_mul(batches as u64)
            .saturating_add(self.pos as u64);
        if self.step != run {
            return bad(format!(
                "`step` is {}, but epoch {} at batch {} of its {batches} makes {run} steps",
                self.step, self.epoch, self.pos
            ));
        }
        Ok(())
    }

    /// Checks the best evaluation so far: accuracies and F1 from 0 to 1, and the prompt it
    /// kept (`best.prompt`) present when there is one (a `best` of 7.0 was written into
    /// task.json, and then task.json was blamed).
    pub fn check_best(&self, path: &Path, has_best_prompt: bool) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::file(
                path,
                format!("{msg}: the checkpoint is corrupt"),
            ))
        };
        for (key, m) in [("best", &self.best), ("best_test", &self.best_test)] {
            let Some(m) = m else { continue };
            for (field, x) in [("accuracy", m.accuracy), ("macro_f1", m.macro_f1)] {
                if !(x.is_finite() && (0.0..=1.0).contains(&x)) {
                    return bad(format!(
                        "`{key}.{field}` is {x}: expected a number from 0 to 1"
                    ));
                }
            }
        }
        if self.best.is_some() != has_best_prompt {
            let (has, lacks) = match has_best_prompt {
                true => ("the tensor `best.prompt`", "no `best` evaluation"),
                false => (
                    "a `best` evaluation",
                    "no tensor `best.prompt` (its prompt)",
                ),
            };
            return bad(format!("it holds {has} but {lacks}"));
        }
        Ok(())
    }

    /// Checks the progress against the run's `total` steps: a step past the end, or a run
    /// marked done before its end that did not stop early (`patience` evaluations without a
    /// better one), would end a resumed run at once without a word.
    pub fn check_progress(&self, path: &Path, total: u64, patience: Option<u32>) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::file(
                path,
                format!("{msg}: the checkpoint is corrupt"),
            ))
        };
        if self.step > total {
            return bad(format!(
                "`step` is {}, past the run's {total} steps (--max-steps, or --epochs times the \
                 steps per epoch)",
                self.step
            ));
        }
        let stopped_early = patience.is_some_and(|p| self.evals_since_best >= p);
        if self.done && self.step < total && !stopped_early {
            return bad(format!(
                "`done` is true at step {} of {total}, but the run did not stop early ({} \
                 evaluations since the best, --patience {})",
                self.step,
                self.evals_since_best,
                patience.map_or("not set".into(), |p| p.to_string())
            ));
        }
        Ok(())
    }
}

/// FNV-1a 64 of a string, as 16 hex digits.
pub fn fnv1a(text: &str) -> String {
    format!("{:016x}", fnv1a_bytes(FNV_START, text.as_bytes()))
}

pub(super) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes`, continued from `h`.
pub(super) fn fnv1a_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a 64 of a checkpoint's state as stored (`meta`, its JSON text) and of each tensor's
/// name, shape and bytes, in name order, as 16 hex digits. The loaders check the tensors'
/// shapes and finiteness and the state's ranges, but a flipped bit in a value, or a NaN loss
/// sum, resumed with exit 0 and other numbers.
pub fn checksum<'a>(
    meta: &str,
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
) -> String {
    let mut all: Vec<_> = tensors.into_iter().collect();
    all.sort_by_key(|(name, _, _)| *name);
    let mut h = fnv1a_bytes(FNV_START, meta.as_bytes());
    for (name, shape, data) in all {
        // lengths first, so that no two lists of names and shapes hash the same bytes
        for n in [name.len(), shape.len()].iter().chain(shape) {
            h = fnv1a_bytes(h, &(*n as u64).to_le_bytes());
        }
        h = fnv1a_bytes(h, name.as_bytes());
        h = fnv1a_bytes(h, bytemuck::cast_slice(data));
    }
    format!("{h:016x}")
}

/// Refuses the checkpoint `file` (state `meta`) whose checksum does not match its content.
/// One without a checksum (written before it was recorded) is read unchecked.
pub(crate) fn check_checksum(path: &Path, file: &TensorFile, meta: &str) -> Result<()> {
    let Some(stored) = file.metadata.get(CHECKSUM_KEY) else {
        return Ok(());
    };
    let tensors =
        (file.floats.iter()).map(|(k, t)| (k.as_str(), t.shape.as_slice(), t.data.as_slice()));
    let found = checksum(meta, tensors);
    if *stored == found {
        return Ok(());
    }
    Err(Error::file(
        path,
        format!(
            "its tensors and state hash to {found}, but the checksum saved with them \
             (`{CHECKSUM_KEY}`) is {stored}: the checkpoint is corrupt or was edited; it cannot \
             be resumed: train into a new `out` (or delete it to start the run again)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checkpoint_round_trip_and_atomic_write() {
        let dir = std::env::temp_dir().join(format!("sp_ckpt_{}", std::process::id()));
        let path = dir.join(CHECKPOINT_FILE);
        let mut rng = Rng::new(3);
        rng.next_u64();
        let config = json!({"lr": 0.3, "seed": 3});
        let state = TrainState {
            format: CHECKPOINT_FORMAT,
            step: 7,
            epoch: 2,
            plan: vec![vec![2, 0], vec![1]],
            pos: 1,
            rng,
            best: Some(super::super::EvalMetrics {
                accuracy: 0.75,
                macro_f1: 0.7,
                examples: 8,
            }),
            best_test: None,
            best_step: 5,
            evals_since_best: 1,
            done: false,
            config_hash: fnv1a(&config.to_string()),
            config,
            threads: 2,
            device: "cpu".into(),
            kernels: "gemm/avx2".into(),
            log_window: LogWindow {
                loss_sum_bits: 0.1f64.to_bits(),
                steps: 3,
                tokens: 40,
            },
            eval_window: LogWindow {
                loss_sum_bits: 0.25f64.to_bits(),
                steps: 2,
                tokens: 30,
            },
        };
        let ck = Checkpoint {
            state,
            tensors: BTreeMap::from([(
                "prompt".to_string(),
                (vec![2, 2], vec![1.0, -0.5, f32::MIN_POSITIVE, 3.25]),
            )]),
        };
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back, ck);
        // the RNG continues the same stream
        let (mut a, mut b) = (ck.state.rng.clone(), back.state.rng.clone());
        assert_eq!(a.next_u64(), b.next_u64());
        // nothing but the checkpoint is left in the folder: the temporary file was renamed
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [CHECKPOINT_FILE]);
        // a truncated file (what a non-atomic write killed mid-way leaves) is refused clearly
        let bytes = std::fs::read(&path).unwrap();
        let broken = dir.join("broken.safetensors");
        std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpoint::load(&broken)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("truncated or corrupt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A flipped bit in a tensor, or a state edited in the file (a NaN loss sum, an all-zero
    /// RNG), resumed with exit 0 and other numbers: the checksum refuses both, naming the
    /// file; a checkpoint written before the checksum is read as before.
    #[test]
    fn a_checkpoint_that_does_not_match_its_checksum_is_refused() {
        let dir = std::env::temp_dir().join(format!("sp_ckpt_sum_{}", std::process::id()));
        let path = dir.join(CHECKPOINT_FILE);
        let state: TrainState = serde_json::from_value(json!({
            "format": 1, "step": 1, "epoch": 1, "plan": [[0]], "pos": 1, "rng": Rng::new(1),
            "best": null, "best_test": null, "best_step": 0, "evals_since_best": 0,
            "done": false, "config_hash": "", "config": {}, "threads": 1
        }))
        .unwrap();
        let ck = Checkpoint {
            state,
            tensors: BTreeMap::from([
                ("prompt".to_string(), (vec![2], vec![0.5, -1.25])),
                ("opt.prompt.v".to_string(), (vec![2], vec![0.25, 0.0])),
            ]),
        };
        ck.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), ck);
        let file = TensorFile::read(&path).unwrap();
        let rewrite = |meta: HashMap<String, String>, edit: &dyn Fn(&mut Vec<f32>)| {
            let mut views = Vec::new();
            for (k, t) in &file.floats {
                let mut d = t.data.clone();
                if k == "prompt" {
                    edit(&mut d);
                }
                views.push((k.clone(), t.shape.clone(), d));
            }
            let views: Vec<(&str, Vec<usize>, &[f32])> = (views.iter())
                .map(|(k, s, d)| (k.as_str(), s.clone(), d.as_slice()))
                .collect();
            write_safetensors(&path, &views, Some(meta)).unwrap();
        };
        let refused = || Checkpoint::load(&path).unwrap_err().to_string();
        // one bit of the prompt's last value
        let flip = |d: &mut Vec<f32>| d[1] = f32::from_bits(d[1].to_bits() ^ 1);
        rewrite(file.metadata.clone(), &flip);
        let err = refused();
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains("corrupt or was edited"),
            "{err}"
        );
        // the state edited, the tensors untouched
        for (key, value) in [
            (
                "log_window",
                json!({"loss_sum_bits": f64::NAN.to_bits(), "steps": 1, "tokens": 1}),
            ),
            ("rng", json!({"s": [0, 0, 0, 0]})),
        ] {
            let mut meta = file.metadata.clone();
            let mut v: Value = serde_json::from_str(&meta[META_KEY]).unwrap();
            v[key] = value;
            meta.insert(META_KEY.into(), v.to_string());
            rewrite(meta, &|_| ());
            assert!(refused().contains("the checksum saved with them"), "{key}");
        }
        // an older checkpoint, without a checksum: read unchecked
        let mut meta = file.metadata.clone();
        meta.remove(CHECKSUM_KEY);
        rewrite(meta, &flip);
        assert_ne!(Checkpoint::load(&path).unwrap(), ck);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Second moments (AdamW's v, Adafactor's row and col) must not be negative; a first
    /// moment may be.
    #[test]
    fn negative_second_moments_are_refused() {
        let state: TrainState = serde_json::from_value(json!({
            "format": 1, "step": 1, "epoch": 1, "plan": [[0]], "pos": 1, "rng": Rng::new(1),
            "best": null, "best_test": null, "best_step": 0, "evals_since_best": 0,
            "done": false, "config_hash": "", "config": {}, "threads": 1
        }))
        .unwrap();
        let ck = |name: &str, x: f32| Checkpoint {
            state: state.clone(),
            tensors: BTreeMap::from([(name.to_string(), (vec![2], vec![0.5, x]))]),
        };
        let path = Path::new("run/checkpoint.safetensors");
        for name in [
            "opt.prompt.v",
            "opt.head.weight.v",
            "opt.prompt.row",
            "opt.prompt.col",
        ] {
            let err = ck(name, -0.25)
                .check_second_moments(path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(name)
                    && err.contains("run/checkpoint.safetensors")
                    && err.contains("-0.25"),
                "{err}"
            );
            ck(name, 0.0).check_second_moments(path).unwrap();
        }
        ck("opt.prompt.m", -0.25)
            .check_second_moments(path)
            .unwrap();
    }

    #[test]
    fn hash() {
        assert_eq!(fnv1a(""), "cbf29ce484222325");
        assert_eq!(fnv1a("a"), "af63dc4c8601ec8c");
    }
}
