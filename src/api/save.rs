//! A prompt's folder written from the API, as a training run writes its `--out`: nothing the
//! user has is replaced unless asked, and nothing that loading would refuse is written.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checks::checked;
use super::model::{on_engine, Engine, Model};
use super::prompt::Prompt;
use super::task::Task;
use crate::error::{Error, Result};
use crate::train::checkpoint::save_prompt_dir;
use crate::train::model_id::FINGERPRINT_KEY;
use crate::train::outdir;
use crate::train::save_lock::SaveLock;
use std::path::Path;

/// What a save may do beyond writing a new folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// replace a prompt already saved in the folder (its files, and only those, are
    /// replaced; one the new prompt has not, such as a `cls` head, is removed after); without
    /// it such a folder is refused, as `train` refuses an `--out` that holds
    /// a run without `--overwrite`
    pub overwrite: bool,
}

impl Model {
    /// Writes the prompt into `dir` as `softprompt train` does: PEFT's adapter files (which
    /// PEFT's `PeftModel.from_pretrained` loads), task.json, and head.safetensors for `cls`.
    /// A folder holding a saved prompt is refused unless `opts.overwrite`; an empty path, a
    /// file and a model's folder are refused; and the prompt is checked as every use checks
    /// it (its width against the model, finite values, the `cls` head's shape), so that a
    /// folder `Prompt::load` would refuse is never written. A P-tuning prompt (or a prefix
    /// with a projection) is saved as its table, the encoder's output, which is all it
    /// predicts with: its `prompt_encoder.safetensors` is not carried, so training cannot
    /// go on through the encoder from the new folder (`--resume` the run's own folder).
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let model = Model::open("tests/fixtures/bert_mlm", Device::Cpu)?;
    /// let opts = TaskOptions { labels: Some(vec!["no".into(), "yes".into()]),
    ///     task: Some(TaskKind::Cls), ..Default::default() };
    /// let task = model.task(&opts, None, 4)?;
    /// let prompt = model.new_prompt(&task, 4, &PromptInit::Random { std: 1.0 }, 0)?;
    /// let dir = std::env::temp_dir().join(format!("sp_doc_save_{}", std::process::id()));
    /// model.save_prompt(&dir, &prompt, &task, SaveOptions::default())?;
    /// // a second save into it is refused unless asked
    /// assert!(model.save_prompt(&dir, &prompt, &task, SaveOptions::default()).is_err());
    /// model.save_prompt(&dir, &prompt, &task, SaveOptions { overwrite: true })?;
    /// assert_eq!(Prompt::load(&dir)?.values(), prompt.values());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn save_prompt(
        &self,
        dir: impl AsRef<Path>,
        prompt: &Prompt,
        task: &Task,
        opts: SaveOptions,
    ) -> Result<()> {
        let dir = dir.as_ref();
        outdir::check_folder(dir, "dir", "the folder to save in")?;
        on_engine!(&self.engine, |_be, m| {
            // every check before the first write: a refused save leaves the folder as it was
            let (_, head) = checked(m, task, prompt)?;
            check_room(m, task, prompt)?;
            let how = "pass overwrite (SaveOptions { overwrite: true }) to replace it, or \
                       save into another folder";
            let mut held = SaveLock::acquire(dir)?;
            outdir::check_prompt_folder(dir, opts.overwrite, how)?;
            let made = !dir.exists();
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            // a folder that did not exist is held once made: two processes saving into one
            // new folder both went in, and mixed their files (verification 30, R4); one that
            // finished first is then an earlier prompt, refused as any. The folder stays: the
            // other save writes into it
            held.hold_made(dir)?;
            outdir::check_prompt_folder(dir, opts.overwrite, how)?;
            let info = m.adapter_info(task.inner.spec.kind.peft_task_type());
            let saved = save_prompt_dir(
                dir,
                &prompt.table,
                (head.as_ref(), None),
                &task.inner.spec,
                &m.dir,
                &info,
                // as a training run records them: `check_arch` (and serve's 400) read the
                // first, every use of the loaded prompt the second
                serde_json::json!({
                    "arch": m.arch_name(),
                    (FINGERPRINT_KEY): m.identity.hex(),
                }),
            );
            // a failed save into a folder it made (a full disk) left it there, empty
            // (hostile pass 24, F8); removed only while empty
            if saved.is_err() && made {
                let _ = std::fs::remove_dir(dir);
            }
            saved
        })
    }
}

/// The task's max_len fits the model's positions next to the prompt's rows: else the folder
/// could not be loaded back (`Model::task_for` refuses it; a task made for a shorter prompt
/// was saved with a longer one without a word; hostile pass 22). As `task_for` checks it, a
/// causal task's targets counted once they are tokens.
fn check_room<B: crate::backend::Backend>(
    m: &crate::train::Model<B>,
    task: &Task,
    prompt: &Prompt,
) -> Result<()> {
    let spec = &task.inner.spec;
    let max_len = Some(spec.max_len).filter(|_| spec.kind != crate::TaskKind::Causal);
    let rows = prompt.rows();
    m.check_lengths(rows, max_len).map_err(|e| match e {
        // the limit without the command line's advice (a flag of another command)
        Error::Arg { flag, msg } => {
            let why = msg.split(": use --").next().unwrap_or(&msg);
            let msg = match flag.as_str() {
                // the prompt alone leaves no room for a row
                "--prompt-len" => {
                    format!("{why}: a folder of {rows} rows could not be loaded back on it")
                }
                // a max_len given (not the default that a prompt length sets) needs lowering
                // too (review 15, R15-5)
                _ => format!(
                    "{rows} rows, and the task was made for a shorter prompt: {why}; a folder \
                     saved so could not be loaded back: make the task with this prompt's length \
                     (and a max_len that fits beside it)"
                ),
            };
            Error::arg("prompt", msg)
        }
        e => e,
    })
}
