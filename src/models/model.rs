//! One enum over the models, so that training, `parity` and `bench` load, size and step every
//! model the same way.

use super::bert::{self, Bert};
use super::common::{Capture, Recompute, TokenBatch};
use super::decoder::Decoder;
use super::objective::{Objective, StepOutput};
use super::prefix::PrefixSpec;
use super::t5::{self, T5};
use crate::backend::{Backend, DType};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::memory::MemoryAccountant;
use crate::weights::{HostTensor, RandomWeights, WeightSource, WeightStore};
use std::path::Path;

/// How a step reads its trained table: the rows in front of the tokens (prompt tuning, and
/// P-tuning, whose encoder gives them), or the keys and values in front of the attention
/// layers' (prefix tuning, `models::prefix`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// a (P, C) prompt of P rows
    Prompt(usize),
    /// a (P, N·2·Hkv·D) prefix table
    Prefix(PrefixSpec),
}

impl Tuning {
    /// A table of `p` rows: the prefix `prefix` describes, or else a prompt.
    pub fn of(p: usize, prefix: Option<PrefixSpec>) -> Tuning {
        prefix.map_or(Tuning::Prompt(p), Tuning::Prefix)
    }
}

/// What a model's load allocates beside its weights and their largest conversion (tokenizer,
/// tables, the allocator's own), in bytes.
pub const LOAD_SLACK: u128 = 16_000_000;

/// A frozen network on a backend.
pub enum Model<B: Backend> {
    Bert(Bert<B>),
    T5(T5<B>),
    /// `BloomForCausalLM`
    Bloom(Decoder<B>),
    /// `LlamaForCausalLM`, Mistral, Qwen2
    Llama(Decoder<B>),
}

impl<B: Backend> Model<B> {
    /// Loads `config.json` and the weights of a Hugging Face folder onto `be`.
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        let cfg = ModelConfig::load(dir)?;
        let store = WeightStore::open(dir)?;
        // on the CPU the weights are copied into the backend's storage type beside the files
        // read (a device holds its own copy in its own memory)
        if !be.device().is_gpu() {
            // with the largest tensor's conversion beside them and a margin for the rest of
            // the load (a band of limits just past the weights alone aborted; verification
            // 31, F10b-1)
            let size = be.weight_dtype().size() as u128;
            let need = (store.float_elements() + store.largest_elements()) * size + LOAD_SLACK;
            crate::memory::check_host_room(dir, "its weights, held on the host,", need)?;
        }
        // as transformers does, a config with fewer layers than the weights loads the first
        // ones and says so (its "Some weights of the model checkpoint ... were not used")
        for w in unused_layers(&cfg, store.names()) {
            errln!("warning: {}: {w}", dir.join("config.json").display());
        }
        Self::from_config(be, &store, cfg)
    }

    /// The network `cfg` describes, with its weights read from `store`.
    pub fn from_config(be: &B, store: &dyn WeightSource, cfg: ModelConfig) -> Result<Self> {
        Ok(match cfg {
            ModelConfig::Bert(c) => Model::Bert(Bert::load(be, store, c)?),
            ModelConfig::T5(c) => Model::T5(T5::load(be, store, c)?),
            ModelConfig::Bloom(c) => Model::Bloom(super::bloom::load(be, store, c)?),
            ModelConfig::Llama(c) => Model::Llama(super::llama::load(be, store, c)?),
        })
    }

    /// Random weights in the backend's storage type.
    pub fn random(be: &B, cfg: &ModelConfig, seed: u64) -> Result<Self> {
        Self::random_as(be, cfg, seed, be.weight_dtype())
    }

    /// Random weights that `storage` represents exactly (bf16 values on a float backend make
    /// it a reference for a bf16 device): a BertForMaskedLM with the decoder tied to the word
    /// embeddings unless the config unties it, a T5 whose stacks read `shared`, or a decoder-only LM whose head is its own
    /// `lm_head.weight` unless the config ties it.
    pub fn random_as(be: &B, cfg: &ModelConfig, seed: u64, storage: DType) -> Result<Self> {
        let present: Box<dyn Fn(&str) -> bool + Send + Sync> = match cfg {
            ModelConfig::Bert(c) => {
                let tied = c.tie_word_embeddings;
                Box::new(move |n: &str| !(tied && n.starts_with("cls.predictions.decoder")))
            }
            // no `transformer.` names: the loader's probe for that prefix (a T5 classification
            // checkpoint) must find none, or every tensor is drawn under another name
            ModelConfig::T5(_) => {
                Box::new(|n: &str| !n.contains("embed_tokens") && !n.starts_with("transformer."))
            }
            ModelConfig::Bloom(c) | ModelConfig::Llama(c) => {
                let tied = c.tie_word_embeddings;
                Box::new(move |n: &str| !(tied && n == "lm_head.weight"))
            }
        };
        let w = RandomWeights {
            seed,
            std: 0.02,
            present,
            bf16: storage == DType::BF16,
        };
        Self::from_config(be, &w, cfg.clone())
    }

    /// One forward and backward of `batch` with the trained table `table` read as `tuning`
    /// says: adds d loss / d table into `dtable` (the same shape) and returns the loss (and the
    /// `cls` head's gradients). `Tuning::Prompt(p)`: the table is the (P, C) prompt in front of
    /// the tokens. `Tuning::Prefix(spec)`: it is the (P, N·2·Hkv·D) prefix (`prefix_layout`)
    /// in front of the keys of the layers its placement names, and the batch has no prompt
    /// rows. `capture` collects the hidden states and logits for `parity` (with a prefix, of
    /// the real tokens only).
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        be: &B,
        acct: &mut MemoryAccountant,
        dtable: &mut B::Buf,
        table: &B::Buf,
        batch: &TokenBatch,
        tuning: Tuning,
        objective: &Objective<B>,
        recompute: Recompute,
        capture: Option<&mut Capture>,
    ) -> Result<StepOutput<B>> {
        let prefix = match tuning {
            Tuning::Prompt(_) => None,
            Tuning::Prefix(spec) => {
                crate::error::ensure_len(
                    "prefix gradient (P, N·2·Hkv·D)",
                    be.len(table),
                    be.len(dtable),
                )?;
                Some((self.prefix_inputs(be, table, spec)?, spec))
            }
        };
        // a prefix step has no prompt rows: the embeddings read an empty prompt
        let no_prompt = be.zeros(DType::F32, 0)?;
        let (p, prompt) = match tuning {
            Tuning::Prompt(p) => (p, table),
            Tuning::Prefix(_) => (0, &no_prompt),
        };
        let done = |loss| StepOutput {
            loss,
            head_grads: None,
        };
        match self {
            Model::Bert(m) => {
                let inp = match prefix {
                    None => bert::upload_inputs(be, &m.cfg, batch, p)?,
                    Some((pre, spec)) => Self::bert_prefix_inputs(be, m, batch, pre, spec)?,
                };
                m.train_step(
                    be, acct, dtable, prompt, &inp, objective, recompute, capture,
                )
            }
            Model::T5(m) => {
                let Objective::Seq2Seq { labels, l } = *objective else {
                    return Err(objective.unsupported("T5"));
                };
                let mut inp = t5::upload_inputs(be, &m.cfg, batch, p, labels, l)?;
                if let Some((pre, _)) = prefix {
                    inp = inp.with_prefix(be, &m.cfg, pre)?;
                }
                let loss =
                    m.train_step(be, acct, dtable, prompt, &inp, labels, recompute, capture)?;
                Ok(done(loss))
            }
            Model::Bloom(m) | Model::Llama(m) => {
                let Objective::Causal { labels } = *objective else {
                    return Err(objective.unsupported(self.arch_name()));
                };
                let mut inp = m.upload_inputs(be, batch, p, Some(labels))?;
                if let Some((pre, _)) = prefix {
                    inp = m.with_prefix(be, inp, pre)?;
                }
                let loss = m.train_step(be, acct, dtable, prompt, &inp, recompute, capture)?;
                Ok(done(loss))
            }
        }
    }

    /// `recompute` against this model: `mlp:K` within a gated decoder's layers (the other
    /// models refuse `mlp` itself as their forward starts).
    pub fn check_recompute(&self, recompute: Recompute) -> Result<()> {
        match self {
            Model::Llama(m) => recompute.check_layers(m.cfg.num_layers),
            Model::Bert(_) | Model::T5(_) | Model::Bloom(_) => Ok(()),
        }
    }

    /// The decoder-only model behind `Bloom` and `Llama`, if this is one.
    pub fn decoder(&self) -> Option<&Decoder<B>> {
        match self {
            Model::Bloom(m) | Model::Llama(m) => Some(m),
            _ => None,
        }
    }

    pub fn arch_name(&self) -> &'static str {
        match self {
            Model::Bert(_) => "bert",
            Model::T5(_) => "t5",
            Model::Bloom(_) => "bloom",
            Model::Llama(_) => "llama",
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Model::Bert(m) => m.cfg.hidden_size,
            Model::T5(m) => m.cfg.d_model,
            Model::Bloom(m) | Model::Llama(m) => m.cfg.hidden_size,
        }
    }

    pub fn has_mlm_head(&self) -> bool {
        matches!(self, Model::Bert(m) if m.w.mlm_head.is_some())
    }

    /// Most real tokens a row may hold next to a prompt of `p` rows (BERT's position table).
    pub fn max_tokens(&self, p: usize) -> Option<usize> {
        match self {
            Model::Bert(m) => Some(m.cfg.max_position_embeddings.saturating_sub(p)),
            Model::T5(_) => None,
            Model::Bloom(m) | Model::Llama(m) => m.cfg.sliding_window.map(|w| w.saturating_sub(p)),
        }
    }

    /// (attention heads, layers), as PEFT's adapter_config.json records them.
    pub fn heads_and_layers(&self) -> (usize, usize) {
        match self {
            Model::Bert(m) => (m.cfg.num_attention_heads, m.cfg.num_hidden_layers),
            Model::T5(m) => (m.cfg.num_heads, m.cfg.num_layers),
            Model::Bloom(m) | Model::Llama(m) => (m.cfg.num_heads, m.cfg.num_layers),
        }
    }

    /// The heads PEFT records as a prefix adapter's `num_attention_heads`: its
    /// `_prepare_prompt_learning_config` lays a grouped-query model's prefix out per key/value
    /// head (a config with `num_key_value_heads`, the Llama family), every other model's per
    /// attention head.
    pub fn prefix_heads(&self) -> usize {
        match self {
            Model::Bert(m) => m.cfg.num_attention_heads,
            Model::T5(m) => m.cfg.num_heads,
            Model::Bloom(m) | Model::Llama(m) => m.cfg.num_kv_heads,
        }
    }

    /// Rows of the input embedding table: every token id must be below it.
    pub fn vocab_size(&self) -> usize {
        match self {
            Model::Bert(m) => m.cfg.vocab_size,
            Model::T5(m) => m.cfg.vocab_size,
            Model::Bloom(m) | Model::Llama(m) => m.cfg.vocab_size,
        }
    }

    /// An upper estimate of the bytes one training step holds (`step_bytes_of` its config).
    pub fn step_bytes(&self, act: usize, rows: usize, tokens: usize, target_len: usize) -> u128 {
        step_bytes_of(&self.config(), act, rows, tokens, target_len)
    }

    /// An upper estimate of the bytes a forward pass without backward holds
    /// (`forward_bytes_of`): evaluation, prediction, generation.
    pub fn forward_bytes(&self, act: usize, rows: usize, tokens: usize, target_len: usize) -> u128 {
        forward_bytes_of(&self.config(), act, rows, tokens, target_len)
    }

    fn config(&self) -> ModelConfig {
        match self {
            Model::Bert(m) => ModelConfig::Bert(m.cfg.clone()),
            Model::T5(m) => ModelConfig::T5(m.cfg.clone()),
            Model::Bloom(m) => ModelConfig::Bloom(m.cfg.clone()),
            Model::Llama(m) => ModelConfig::Llama(m.cfg.clone()),
        }
    }

    /// The (V, C) input embedding table, on the host (prompt initialisation reads it).
    pub fn word_embeddings(&self, be: &B) -> Result<HostTensor> {
        let (buf, v) = match self {
            Model::Bert(m) => (&m.w.word_embeddings, m.cfg.vocab_size),
            Model::T5(m) => (&m.shared, m.cfg.vocab_size),
            Model::Bloom(m) | Model::Llama(m) => (&m.w.embed, m.cfg.vocab_size),
        };
        let data = be.download(buf)?;
        Ok(HostTensor::new(vec![v, self.hidden_size()], data))
    }
}

/// An upper estimate of the bytes one training step holds: every layer's saved state
/// and its largest transient (about 12 rows of the width and 3 of the feed-forward per
/// token and layer), and the vocabulary logits of the targets; `act` bytes per activation.
/// From the config alone: bench --ceiling checks a workload with it and builds no model.
pub fn step_bytes_of(
    cfg: &ModelConfig,
    act: usize,
    rows: usize,
    tokens: usize,
    target_len: usize,
) -> u128 {
    pass_bytes_of(cfg, act, (rows, tokens, target_len), true)
}

/// An upper estimate of the bytes a forward pass without backward holds: one layer's
/// activations and transient at a time, the keys and values a cache keeps for every layer
/// (a decoder's rows, rank scoring and greedy decoding; T5's cross-attention over the
/// encoder), and the vocabulary logits of the targets. Evaluation sized by the training
/// step's estimate was refused at a batch that ran in a fifth of it under `ulimit -v`
/// (verification 30, R3).
pub fn forward_bytes_of(
    cfg: &ModelConfig,
    act: usize,
    rows: usize,
    tokens: usize,
    target_len: usize,
) -> u128 {
    pass_bytes_of(cfg, act, (rows, tokens, target_len), false)
}

/// `step_bytes_of` (`backward`: every layer's state kept) or `forward_bytes_of`.
fn pass_bytes_of(
    cfg: &ModelConfig,
    act: usize,
    (rows, tokens, target_len): (usize, usize, usize),
    backward: bool,
) -> u128 {
    let act = act as u128;
    let (rows, tokens, target_len) = (rows as u128, tokens as u128, target_len as u128);
    let kept = |layers: usize| if backward { layers as u128 } else { 1 };
    // a forward pass's cache: keys and values of every layer, per position
    let cache = |layers: usize, width: usize| match backward {
        true => 0,
        false => 2 * layers as u128 * width as u128,
    };
    match cfg {
        ModelConfig::Bert(c) => {
            let per_token =
                kept(c.num_hidden_layers) * (12 * c.hidden_size + 3 * c.intermediate_size) as u128;
            act * rows * tokens * (per_token + 4 * c.hidden_size as u128)
        }
        ModelConfig::T5(c) => {
            let width = (c.d_model + c.inner_dim()) as u128;
            let kv = cache(c.num_decoder_layers, c.inner_dim());
            let enc = kept(c.num_layers) * (6 * width + 3 * c.d_ff as u128) + kv;
            let dec = kept(c.num_decoder_layers) * (9 * width + 3 * c.d_ff as u128) + kv;
            act * rows * (tokens * enc + target_len * dec)
                + 4 * rows * target_len * c.vocab_size as u128
        }
        // the gated MLP keeps gate, up and their product: 4 rows of the feed-forward; a
        // forward pass places the targets after the rows (rank scoring, generation)
        ModelConfig::Bloom(c) | ModelConfig::Llama(c) => {
            let per_token = kept(c.num_layers)
                * (12 * c.hidden_size + 4 * c.intermediate_size) as u128
                + cache(c.num_layers, c.hidden_size);
            let positions = if backward {
                tokens
            } else {
                tokens + target_len
            };
            act * rows * positions * (per_token + 4 * c.hidden_size as u128)
                + 4 * rows * target_len * c.vocab_size as u128
        }
    }
}

/// For each stack whose weights hold more layers than the config names: which key says how
/// many, and how many the weights hold. `names` are the checkpoint's tensor names.
pub fn unused_layers<'a>(cfg: &ModelConfig, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    // (the stack's parent and its key in the tensor names, the config key, its value)
    let stacks: Vec<(Option<&str>, &str, &str, usize)> = match cfg {
        ModelConfig::Bert(c) => vec![(
            Some("encoder"),
            "layer",
            "num_hidden_layers",
            c.num_hidden_layers,
        )],
        // T5's attribute_map alias `num_hidden_layers` may have set the encoder's count
        ModelConfig::T5(c) => vec![
            (
                Some("encoder"),
                "block",
                "num_layers`/`num_hidden_layers",
                c.num_layers,
            ),
            (
                Some("decoder"),
                "block",
                "num_decoder_layers",
                c.num_decoder_layers,
            ),
        ],
        // either key may have set the count (num_hidden_layers wins, as in transformers)
        ModelConfig::Bloom(c) => vec![(None, "h", "num_hidden_layers`/`n_layer", c.num_layers)],
        ModelConfig::Llama(c) => vec![(None, "layers", "num_hidden_layers", c.num_layers)],
    };
    let mut held = vec![0usize; stacks.len()];
    for name in names {
        let parts: Vec<&str> = name.split('.').collect();
        for (i, w) in parts.windows(2).enumerate() {
            let (Some(&key), Some(n)) = (w.first(), w.get(1).and_then(|n| n.parse::<usize>().ok()))
            else {
                continue;
            };
            let parent = i.checked_sub(1).and_then(|p| parts.get(p)).copied();
            for (h, (want_parent, stack, ..)) in held.iter_mut().zip(&stacks) {
                if key == *stack && want_parent.is_none_or(|p| parent == Some(p)) {
                    *h = (*h).max(n + 1);
                }
            }
        }
    }
    stacks
        .iter()
        .zip(held)
        .filter(|((.., n), held)| held > n)
        .map(|((_, _, key, n), held)| {
            format!(
                "`{key}` is {n} but the weights hold {held} layers: only the first {n} are \
                 loaded (as transformers does); the other weights are not used"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers past the config's count are named per stack; a config that matches the weights
    /// says nothing.
    #[test]
    fn unused_layers_per_stack() {
        let cfg = ModelConfig::load(Path::new("tests/fixtures/t5_flan")).unwrap();
        let ModelConfig::T5(mut c) = cfg else {
            panic!("t5")
        };
        let names = [
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            "encoder.block.1.layer.1.layer_norm.weight",
            "decoder.block.0.layer.0.SelfAttention.q.weight",
        ];
        c.num_layers = 2;
        c.num_decoder_layers = 1;
        assert!(unused_layers(&ModelConfig::T5(c.clone()), names.into_iter()).is_empty());
        c.num_layers = 1;
        let w = unused_layers(&ModelConfig::T5(c), names.into_iter());
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("`num_layers`/`num_hidden_layers` is 1 but the weights hold 2 layers"),
            "{w:?}"
        );
    }
}
