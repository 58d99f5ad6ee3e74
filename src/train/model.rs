//! A frozen model folder ready for prompt tuning: config.json, the weights on the backend, and
//! tokenizer.json.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::models;
use crate::prompt::{AdapterInfo, PromptInit, PromptTable};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use crate::weights::HostTensor;
use std::path::{Path, PathBuf};

pub struct Model<B: Backend> {
    pub dir: PathBuf,
    /// the network behind the folder
    pub net: models::Model<B>,
    pub tokenizer: Tokenizer,
}

impl<B: Backend> Model<B> {
    /// Loads a Hugging Face folder (BERT or T5) onto `be`.
    ///
    /// ```
    /// use softprompt::{CpuBackend, train::Model};
    /// let be = CpuBackend::<f32>::new();
    /// let model = Model::load(&be, "tests/fixtures/bert_nohead".as_ref()).unwrap();
    /// assert_eq!(model.hidden_size(), 36);
    /// assert!(!model.has_mlm_head());
    /// ```
    pub fn load(be: &B, dir: &Path) -> Result<Model<B>> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "not a folder: --model expects a Hugging Face model folder",
            ));
        }
        let net = models::Model::load(be, dir)?;
        let tokenizer = Tokenizer::load(dir)?;
        Ok(Model {
            dir: dir.to_path_buf(),
            net,
            tokenizer,
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

    /// Most real tokens a row may hold next to a prompt of `p` rows (BERT's position table).
    pub fn max_tokens(&self, p: usize) -> Option<usize> {
        self.net.max_tokens(p)
    }

    /// The (V, d) input embedding table, on the host (prompt initialisation reads it).
    pub fn word_embeddings(&self, be: &B) -> Result<HostTensor> {
        self.net.word_embeddings(be)
    }

    /// A fresh prompt of `p` rows.
    ///
    /// ```
    /// use softprompt::{CpuBackend, prompt::PromptInit, rng::Rng, train::Model};
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
