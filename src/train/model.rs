//! A frozen model folder ready for prompt tuning: config.json, the weights on the backend, and
//! tokenizer.json.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model_id::ModelId;
use crate::backend::Backend;
use crate::error::{BatchSetting, Error, Result};
use crate::models;
use crate::prompt::{AdapterInfo, PromptInit, PromptTable};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use crate::weights::HostTensor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::models::MAX_TOKENS;

pub struct Model<B: Backend> {
    pub dir: PathBuf,
    /// the network behind the folder
    pub net: models::Model<B>,
    pub tokenizer: Tokenizer,
    /// a fingerprint of its config.json and tokenizer file, which every task, encoded row
    /// and prompt made on it carries (`model_id.rs`)
    pub identity: Arc<ModelId>,
}

impl<B: Backend> Model<B> {
    /// Loads a Hugging Face folder (BERT or T5) onto `be`.
    ///
    /// ```
    /// use softprompt::internals::{CpuBackend, train::Model};
    /// let be = CpuBackend::<f32>::new();
    /// let model = Model::load(&be, "tests/fixtures/bert_nohead".as_ref()).unwrap();
    /// assert_eq!(model.hidden_size(), 36);
    /// assert!(!model.has_mlm_head());
    /// ```
    pub fn load(be: &B, dir: &Path) -> Result<Model<B>> {
        if !dir.is_dir() {
            let what = match dir.exists() {
                true => "not a folder",
                false => "no such folder",
            };
            return Err(Error::file(
                dir,
                format!(
                    "{what}: expected a Hugging Face model folder on this machine (a Hub id \
                     is not downloaded: huggingface_hub's `snapshot_download(ID, \
                     local_dir=DIR)` makes one)"
                ),
            ));
        }
        let net = models::Model::load(be, dir)?;
        let tokenizer = Tokenizer::load(dir)?;
        // an id of the vocabulary past the table would fail only at the first step that
        // meets it. Added tokens past it (a pad token a fine-tune added without resizing the
        // embeddings) load, as transformers loads them: the task refuses a text, template or
        // label that uses one (`Task::check_in_table`)
        let rows = net.vocab_size();
        if let Some(max) = tokenizer.max_vocab_id().filter(|&m| m as usize >= rows) {
            return Err(Error::file(
                tokenizer.path(),
                format!(
                    "holds token id {max} in its vocabulary, but the model's embedding table \
                     has {rows} rows (vocab_size in config.json): the tokenizer belongs to \
                     another model"
                ),
            ));
        }
        let identity = Arc::new(ModelId::of_folder(dir, &tokenizer)?);
        Ok(Model {
            dir: dir.to_path_buf(),
            net,
            tokenizer,
            identity,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.net.hidden_size()
    }

    pub fn arch_name(&self) -> &'static str {
        self.net.arch_name()
    }

    pub fn has_mlm_head(&self) -> bool {
        self.net.has_mlm_head()
    }

    /// Most real tokens a row may hold next to a prompt of `p` rows: BERT's position table,
    /// or `MAX_TOKENS` for a model without one (T5's relative positions have no end).
    pub fn max_tokens(&self, p: usize) -> Option<usize> {
        Some(
            self.net
                .max_tokens(p)
                .unwrap_or_else(|| MAX_TOKENS.saturating_sub(p)),
        )
    }

    /// What bounds a row's positions, for messages.
    pub fn position_limit(&self) -> (usize, String) {
        let config = self.dir.join("config.json");
        match self.net.max_tokens(0) {
            // a decoder's bound is its attention window, not a position table
            Some(n) if matches!(self.net, models::Model::Bloom(_) | models::Model::Llama(_)) => {
                (n, format!("sliding_window {n} in {}", config.display()))
            }
            Some(n) => (
                n,
                format!(
                    "the model's position table (max_position_embeddings {n} in {})",
                    config.display()
                ),
            ),
            None => (
                MAX_TOKENS,
                format!(
                    "this engine's cap for a {} model ({MAX_TOKENS} positions)",
                    self.arch_name()
                ),
            ),
        }
    }

    /// Checks a prompt of `p` rows, and rows of up to `max_len` tokens, against the positions
    /// the model has; the error names the flag and the model's limit.
    pub fn check_lengths(&self, p: usize, max_len: Option<usize>) -> Result<()> {
        let (limit, what) = self.position_limit();
        if p.saturating_add(2) > limit {
            return Err(Error::arg(
                "--prompt-len",
                format!(
                    "{p} rows and a row of at least 2 tokens need {} positions, but {what} \
                     holds {limit}: use --prompt-len {} or less (less still by what the \
                     template takes beside the text)",
                    crate::error::sum_text(&[p, 2]),
                    limit.saturating_sub(2)
                ),
            ));
        }
        if let Some(n) = max_len.filter(|&n| p.saturating_add(n) > limit) {
            // so few that the template may not fit them, which a later check says, pointing
            // back here (verification 30, R1): the prompt is the other way out
            let few = match limit - p < 16 {
                true => {
                    " (a template and its special tokens may need more: a shorter \
                         --prompt-len leaves more)"
                }
                false => "",
            };
            return Err(Error::arg(
                "--max-len",
                format!(
                    "{n} tokens next to a prompt of {p} rows need {} positions, but {what} \
                     holds {limit}: use --max-len {} or less{few}",
                    crate::error::sum_text(&[p, n]),
                    limit - p
                ),
            ));
        }
        Ok(())
    }

    /// Fails, before anything is allocated, when one training step on `rows` rows of `tokens`
    /// positions each (prompt included) and `target_len` target tokens would need more host
    /// memory than the machine has available. GPU backends keep their activations on the
    /// device, whose allocator reports its own failures; there the check passes. `batch` is the
    /// setting that sized `rows`, for the error to name.
    pub fn check_step_memory(
        &self,
        be: &B,
        rows: usize,
        tokens: usize,
        target_len: usize,
        batch: BatchSetting,
    ) -> Result<()> {
        let need = self.step_bytes(be, rows, tokens, target_len);
        self.check_host_bytes(be, need, (rows, tokens), batch)
    }

    /// `check_step_memory` for a forward pass without backward (evaluation, prediction,
    /// generation), by its own estimate (`models::forward_bytes_of`).
    pub fn check_forward_memory(
        &self,
        be: &B,
        rows: usize,
        tokens: usize,
        target_len: usize,
        batch: BatchSetting,
    ) -> Result<()> {
        let act = be.act_dtype().size();
        let need = self.net.forward_bytes(act, rows, tokens, target_len);
        self.check_host_bytes(be, need, (rows, tokens), batch)
    }

    /// `need` bytes for `rows` rows of `tokens` positions within the host's memory.
    fn check_host_bytes(
        &self,
        be: &B,
        need: u128,
        (rows, tokens): (usize, usize),
        batch: BatchSetting,
    ) -> Result<()> {
        if be.device().is_gpu() {
            return Ok(());
        }
        let Some(available) = crate::memory::host_available_bytes() else {
            return Ok(());
        };
        if need <= available as u128 {
            return Ok(());
        }
        Err(Error::StepMemory {
            rows,
            tokens,
            need,
            available,
            batch,
            flags: false,
            context: String::new(),
        })
    }

    /// `check_step_memory` for one batch of `rows` behind a prompt of `p` rows (their longest
    /// text and target sized).
    pub fn check_batch_memory(
        &self,
        be: &B,
        rows: &[crate::train::encode::Row],
        p: usize,
        batch: BatchSetting,
    ) -> Result<()> {
        let longest = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let target = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
        self.check_step_memory(be, rows.len(), p + longest, target, batch)
    }

    /// An upper estimate of the bytes one training step holds (`models::Model::step_bytes`).
    pub fn step_bytes(&self, be: &B, rows: usize, tokens: usize, target_len: usize) -> u128 {
        let act = be.act_dtype().size();
        self.net.step_bytes(act, rows, tokens, target_len)
    }

    /// The (V, d) input embedding table, on the host (prompt initialisation reads it).
    pub fn word_embeddings(&self, be: &B) -> Result<HostTensor> {
        self.net.word_embeddings(be)
    }

    /// A fresh prompt of `p` rows.
    ///
    /// ```
    /// use softprompt::internals::{CpuBackend, prompt::PromptInit, rng::Rng, train::Model};
    /// let be = CpuBackend::<f32>::new();
    /// let model = Model::load(&be, "tests/fixtures/bert_mlm".as_ref()).unwrap();
    /// let init = PromptInit::Text("great movie".into());
    /// let prompt = model.init_prompt(&be, 6, &init, &mut Rng::new(0)).unwrap();
    /// assert_eq!((prompt.p, prompt.d), (6, 48));
    /// assert_eq!(prompt.init, "TEXT");
    /// ```
    pub fn init_prompt(
        &self,
        be: &B,
        p: usize,
        init: &PromptInit,
        rng: &mut Rng,
    ) -> Result<PromptTable> {
        // before P x d values are allocated (the API's new_prompt aborted on 2^40 rows)
        self.check_lengths(p, None)?;
        init.check()?;
        PromptTable::init(
            p,
            init,
            &self.word_embeddings(be)?,
            Some(&self.tokenizer),
            rng,
        )
    }

    /// What PEFT's adapter_config.json records about this model.
    pub fn adapter_info(&self, task_type: &str) -> AdapterInfo {
        let (heads, layers) = self.net.heads_and_layers();
        let name = Some(self.dir.display().to_string());
        AdapterInfo {
            task_type: Some(task_type.into()),
            base_model_name_or_path: name.clone(),
            tokenizer_name_or_path: name,
            num_attention_heads: heads,
            num_layers: layers,
        }
    }
}
