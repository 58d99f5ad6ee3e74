//! The prompt on the host: its rows, the `cls` head trained with it, the task it was trained
//! for, and its folder (PEFT's adapter files, task.json, head.safetensors).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::prompt::{PromptTable, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::train::checkpoint::{check_arch, load_prompt_dir, SavedPrompt};
use crate::train::model_id::ModelId;
use crate::train::spec::TaskSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A soft prompt: P rows of the model's width, float32, on the host.
///
/// Made by [`crate::Model::new_prompt`], loaded from a folder ours or PEFT's
/// ([`Prompt::load`]), or from values ([`Prompt::from_values`]); saved in PEFT's layout with
/// [`crate::Model::save_prompt`].
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub(crate) table: PromptTable,
    /// the `cls` task's linear head, trained with the prompt
    pub(crate) head: Option<HostClsHead>,
    /// the task.json it was saved with (None: made here, or a PEFT folder)
    pub(crate) task: Option<TaskSpec>,
    /// the folder it was loaded from
    pub(crate) dir: Option<PathBuf>,
    /// the model folders its task.json records, in the order they are tried
    pub(crate) recorded_models: Vec<PathBuf>,
    /// the architecture its task.json records
    pub(crate) arch: Option<String>,
    /// the model it was made on (`Model::new_prompt`) or that its task.json records; None:
    /// values made by hand, a PEFT adapter, or a folder saved before softprompt recorded it.
    /// Every use on another model is refused
    pub(crate) model: Option<Arc<ModelId>>,
    /// what loading it found worth a word: an unstamped adapter whose values are not those
    /// its folder's task.json (and head) were saved with
    pub(crate) load_warning: Option<String>,
    /// the labels in the order of the `cls` head's rows, as its head.safetensors records
    /// them: a folder without task.json is scored in this order
    pub(crate) head_labels: Option<Vec<String>>,
    /// the `cls` task its head.safetensors records (template, pooling, max_len): a folder
    /// without task.json is scored with it
    pub(crate) head_task: Option<TaskSpec>,
}

impl Prompt {
    /// A prompt of `rows` rows of `width` values each, `values` row-major.
    /// Zero rows or width and non-finite values are refused, as when a prompt is loaded.
    pub fn from_values(rows: usize, width: usize, values: Vec<f32>) -> Result<Prompt> {
        if rows == 0 || width == 0 {
            return Err(Error::shape(
                "Prompt::from_values (rows x width)",
                "at least 1 x 1",
                format!("{rows} x {width}"),
            ));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::arg(
                "values",
                format!("the value at flat index {i} is {v}: expected a finite number"),
            ));
        }
        Ok(Prompt::from_table(PromptTable::from_data(
            rows, width, values,
        )?))
    }

    pub(crate) fn from_table(table: PromptTable) -> Prompt {
        Prompt {
            table,
            head: None,
            task: None,
            dir: None,
            recorded_models: Vec::new(),
            arch: None,
            model: None,
            load_warning: None,
            head_labels: None,
            head_task: None,
        }
    }

    /// Reads a prompt folder: one `softprompt train` wrote (with task.json, and
    /// head.safetensors for `cls`) or one PEFT saved (adapter_config.json and
    /// adapter_model.safetensors or .bin).
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// // a folder PEFT's save_pretrained wrote: its rows, and its base model found next to it
    /// let prompt = Prompt::load("tests/fixtures/bert_mlm/peft_adapter")?;
    /// assert_eq!((prompt.rows(), prompt.width()), (5, 48));
    /// assert!(prompt.saved_task().is_none()); // PEFT writes no task.json
    /// assert!(prompt.model_dir()?.ends_with("bert_mlm"));
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn load(dir: impl AsRef<Path>) -> Result<Prompt> {
        let dir = dir.as_ref();
        let SavedPrompt {
            prompt,
            head,
            task,
            model,
            model_abs,
            arch,
            model_id,
            warning,
            head_labels,
            head_task,
        } = load_prompt_dir(dir)?;
        Ok(Prompt {
            table: prompt,
            head,
            task,
            dir: Some(dir.to_path_buf()),
            recorded_models: model_abs.into_iter().chain(model).collect(),
            arch,
            model: model_id.map(Arc::new),
            load_warning: warning,
            head_labels,
            head_task,
        })
    }

    /// A warning about the folder it was loaded from, to show the user: its adapter has no
    /// save stamp (PEFT's, or values edited and saved without it) and its values are not
    /// those the folder's task.json (and head) were saved with. A stamped adapter whose
    /// values do not match its stamp is refused by [`Prompt::load`] instead.
    pub fn load_warning(&self) -> Option<&str> {
        self.load_warning.as_deref()
    }

    /// P, the number of rows.
    pub fn rows(&self) -> usize {
        self.table.p
    }

    /// d, the width of a row (the model's hidden size).
    pub fn width(&self) -> usize {
        self.table.d
    }

    /// The values, (P, d) row-major.
    pub fn values(&self) -> &[f32] {
        &self.table.data
    }

    /// The values to change in place, (P, d) row-major: a custom training loop's update.
    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.table.data
    }

    /// The `cls` head's weight (K, d) and bias (K), when the prompt has one.
    pub fn head(&self) -> Option<(&[f32], &[f32])> {
        self.head
            .as_ref()
            .map(|h| (h.weight.as_slice(), h.bias.as_slice()))
    }

    /// The labels in the order of the `cls` head's rows, as the folder's head.safetensors
    /// records them (softprompt saves them there): what a folder without task.json is scored
    /// with. None without a head, or for one saved without them (an earlier softprompt's).
    pub fn head_labels(&self) -> Option<&[String]> {
        self.head_labels.as_deref()
    }

    /// The `cls` task (template, pooling, max_len, labels) the folder's head.safetensors
    /// records (softprompt saves it there since 2026-12-07): what a folder without task.json
    /// is scored with. None without a head, or for one saved without it.
    pub fn head_task(&self) -> Option<&TaskSpec> {
        self.head_task.as_ref()
    }

    /// The `cls` head to change in place: weight (K, d) and bias (K).
    pub fn head_mut(&mut self) -> Option<(&mut [f32], &mut [f32])> {
        self.head
            .as_mut()
            .map(|h| (h.weight.as_mut_slice(), h.bias.as_mut_slice()))
    }

    /// Every trainable value: the prompt's rows, then the `cls` head's weight and bias (the
    /// order of [`crate::StepOutput::grads`]).
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut f32> {
        let head = self
            .head
            .as_mut()
            .map(|h| h.weight.iter_mut().chain(h.bias.iter_mut()));
        self.table.data.iter_mut().chain(head.into_iter().flatten())
    }

    /// How many values [`Prompt::params_mut`] gives.
    pub fn num_params(&self) -> usize {
        self.table.data.len() + self.head.as_ref().map_or(0, |h| h.num_params())
    }

    /// The task the prompt was saved with (its task.json), if any.
    pub fn saved_task(&self) -> Option<&TaskSpec> {
        self.task.as_ref()
    }

    /// How the prompt was initialised, in PEFT's words (`RANDOM`, `TEXT`, `SAMPLE_VOCAB`).
    pub fn init_name(&self) -> &str {
        &self.table.init
    }

    /// The prompt's architecture (its task.json's `arch`) against `model`'s: a prompt trained
    /// on one architecture means nothing on another of the same width. A mismatch is an error
    /// naming task.json, unless `explicit` (the user named the model on purpose): then it is
    /// a warning to show. Ok(None) when they agree or nothing was recorded.
    ///
    /// A PEFT folder (no task.json) says its model only in adapter_config.json: a
    /// `base_model_name_or_path` of another model family than `model` (its config.json where
    /// that folder exists, else the family its name reads as), or a `task_type` this model
    /// cannot be (SEQ_2_SEQ_LM on a decoder), comes back as a warning: PEFT warns likewise.
    pub fn check_arch(&self, model: &crate::Model, explicit: bool) -> Result<Option<String>> {
        let dir = self.dir.clone().unwrap_or_default();
        let cfg = self.table.layout.config.as_ref();
        match (self.saved_task(), cfg) {
            (None, Some(cfg)) => {
                let found = super::peft_base::warnings(cfg, &dir, model.dir(), model.arch());
                Ok((!found.is_empty()).then(|| found.join("; and ")))
            }
            _ => check_arch(self.arch.as_deref(), &dir, model.arch(), explicit),
        }
    }

    /// The fingerprint of the model the prompt was made on, or that its task.json records
    /// (`model_fingerprint`): 16 hex digits, a hash of the model folder's config.json (its
    /// content, not its formatting) and tokenizer file. None for values made by hand, a PEFT
    /// adapter, and a folder saved before softprompt recorded it. Every use on another model
    /// is refused; those without one run on any model they fit. [`Prompt::model_dir`] gives
    /// the folder.
    pub fn model_fingerprint(&self) -> Option<String> {
        self.model.as_deref().map(ModelId::hex)
    }

    /// Records `model` as the prompt's own: to run a prompt of another model on this one on
    /// purpose (a copy of the model whose config.json was saved again, say), as the command
    /// line's `--model` does with a warning. Its values are unchanged. Returns, when it
    /// recorded another model, what every use would have refused it for (the warning).
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let (a, b) = (Model::open("tests/fixtures/bert_nohead", Device::Cpu)?,
    ///     Model::open("tests/fixtures/realistic/bert_rand_2", Device::Cpu)?);
    /// let opts = TaskOptions { task: Some(TaskKind::Cls), labels: Some(vec!["n".into(), "y".into()]), ..Default::default() };
    /// let mut prompt = a.new_prompt(&a.task(&opts, None, 4)?, 4, &PromptInit::Random { std: 1.0 }, 0)?;
    /// let on_b = b.task(&opts, None, 4)?; // as wide as bert_nohead's (36)
    /// assert!(b.check_prompt(&on_b, &prompt).is_err()); // a prompt of bert_nohead
    /// let warning = prompt.set_model(&b).unwrap();
    /// assert!(warning.contains("bert_nohead") && warning.contains("bert_rand_2"));
    /// b.check_prompt(&on_b, &prompt)?;
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn set_model(&mut self, model: &crate::Model) -> Option<String> {
        let id = model.identity();
        let was = self.model.replace(id.clone())?;
        was.differs(&id, &self.made_on())
    }

    /// How the prompt came to its model, for messages: "the prompt in DIR was trained on"
    /// for a loaded one.
    pub(crate) fn made_on(&self) -> String {
        match &self.dir {
            Some(dir) => format!("the prompt in {} was trained on", dir.display()),
            None => "the prompt was made on".to_string(),
        }
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The model folder this prompt belongs to: the first place its task.json records that
    /// holds a config.json, else the model it was made on or given ([`crate::Model::new_prompt`],
    /// [`Prompt::set_model`]), else PEFT's `base_model_name_or_path` when it names a folder
    /// (as is, or next to the prompt folder or a folder above it). The error lists every path
    /// tried.
    pub fn model_dir(&self) -> Result<PathBuf> {
        self.model_dir_noted().map(|(dir, _)| dir)
    }

    /// [`Prompt::model_dir`], with a note to show when adapter_config.json's
    /// `base_model_name_or_path` was taken (silently, though it may name another model, and a
    /// hub id meets whatever folder of that name sits nearby): the note names the folder
    /// used, and where task.json records a model folder that none of its places holds, those
    /// places too.
    pub fn model_dir_noted(&self) -> Result<(PathBuf, Option<String>)> {
        let here = self.dir.clone().unwrap_or_default();
        let peft_base = self
            .table
            .layout
            .config
            .as_ref()
            .and_then(|c| c.get("base_model_name_or_path"))
            .and_then(|v| v.as_str());
        let mut tries: Vec<PathBuf> = self.recorded_models.clone();
        // a prompt made in memory (`Model::new_prompt`, `set_model`) knows its model's folder
        tries.extend(self.model.iter().map(|m| m.dir.clone()));
        if let Some(base) = peft_base {
            tries.extend(super::peft_base::base_dirs(base, &here));
        }
        let mut seen = std::collections::HashSet::new();
        tries.retain(|p| seen.insert(p.clone()));
        if let Some(found) = tries.iter().find(|p| p.join("config.json").is_file()) {
            let recorded = &self.recorded_models;
            let made_on = self.model.as_ref().is_some_and(|m| &m.dir == found);
            let base = peft_base.unwrap_or_default();
            let note = match (recorded.is_empty(), recorded.contains(found) || made_on) {
                (_, true) => None,
                (false, false) => {
                    let at: Vec<String> =
                        recorded.iter().map(|p| p.display().to_string()).collect();
                    Some(format!(
                        "{} records its model at {}, which holds no config.json: using {}, \
                         adapter_config.json's base_model_name_or_path ({base})",
                        here.join("task.json").display(),
                        at.join(", "),
                        found.display(),
                    ))
                }
                // a hub id met whatever folder of that name sits nearby, without a word
                (true, false) => Some(format!(
                    "using the model in {}: {}'s base_model_name_or_path is {base:?} (pass \
                     --model to name another)",
                    found.display(),
                    here.join(ADAPTER_CONFIG).display(),
                )),
            };
            return Ok((found.clone(), note));
        }
        let tried: Vec<String> = tries.iter().map(|p| p.display().to_string()).collect();
        let what = match &self.dir {
            Some(dir) => dir.display().to_string(),
            None => "the prompt (made in memory)".into(),
        };
        let how = "name it with Prompt::set_model (the command line: --model)";
        Err(Error::arg(
            "model",
            if tried.is_empty() {
                format!("{what} does not say which model it belongs to: {how}")
            } else {
                format!(
                    "no model folder (with a config.json) for {what} at {}: {how}",
                    tried.join(", ")
                )
            },
        ))
    }

    /// `e`, when it is an `Overflow` (a result that is not a finite number), named after this
    /// prompt: its weights file, and why the numbers broke. A row whose sum of squares passes
    /// f32::MAX is no row a norm can compute (a finite 3e38 made every score NaN, and the
    /// message blamed the model's config.json); else the model's own numbers are at fault.
    /// Any other error passes as it is. Checked only once a run has failed: cheap, and no
    /// prompt that runs is refused.
    pub(crate) fn named_overflow(&self, e: Error) -> Error {
        let Error::Overflow { job, row, msg, .. } = e else {
            return e;
        };
        let square_sum = |row: &[f32]| row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        let rows = self.values().chunks(self.width().max(1)).enumerate();
        let why = match rows
            .into_iter()
            .find(|(_, row)| square_sum(row) > f64::from(f32::MAX))
        {
            Some((r, values)) => format!(
                "the prompt's row {r} holds values up to {:e}: its sum of squares overflows \
                 float32, so the model's norms cannot compute it (a corrupt prompt, or one \
                 saved from a diverged run?)",
                values.iter().fold(0f32, |m, x| m.max(x.abs()))
            ),
            None => "the model's numbers are not finite on this prompt (its config.json's norm \
                     epsilon, or its weights?)"
                .into(),
        };
        let prompt = match &self.dir {
            Some(dir) => dir.join(ADAPTER_WEIGHTS),
            None => PathBuf::from("the prompt"),
        };
        Error::Overflow {
            prompt,
            job,
            row,
            msg: format!("{msg}; {why}"),
        }
    }

    /// Where a head or width mismatch is reported: the prompt's folder, else "the prompt".
    pub(crate) fn origin(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("the prompt"))
    }

    /// A mismatch of the prompt with its use: a file error naming its folder (or `file` in
    /// it) when it was loaded, else an argument error naming the prompt (no file to blame).
    pub(crate) fn fault(&self, file: Option<&str>, msg: impl Into<String>) -> Error {
        match (&self.dir, file) {
            (Some(dir), Some(f)) => Error::file(dir.join(f), msg.into()),
            (Some(dir), None) => Error::file(dir, msg.into()),
            (None, _) => Error::arg("prompt", msg.into()),
        }
    }
}
