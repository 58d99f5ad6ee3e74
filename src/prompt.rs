//! The prompt table: P trainable rows of width d, float32, on the host. Initialised RANDOM,
//! TEXT, SAMPLE_VOCAB or CLASS_LABELS; saved and loaded in PEFT's layout
//! (`adapter_config.json` + `adapter_model.safetensors` with the key `prompt_embeddings`), so
//! prompts move between this engine and PEFT in both directions.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

#[path = "adapter_folder.rs"]
mod adapter_folder;

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use crate::weights::{write_safetensors, HostTensor, TensorFile};
pub(crate) use adapter_folder::config_count;
use adapter_folder::{
    check_adapter_types, check_prefix_table, check_weights_file, not_a_prompt_folder,
    table_submodules,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const PROMPT_KEY: &str = "prompt_embeddings";

#[derive(Clone, Debug, PartialEq)]
pub enum PromptInit {
    /// normal(0, std) rows; PEFT's RANDOM is nn.Embedding's default, std 1
    Random { std: f64 },
    /// the embeddings of the tokenized text (special tokens included), repeated and trimmed
    Text(String),
    /// embeddings of tokens drawn uniformly from the first `from_first` ids (Lester et al.
    /// sample from the 5,000 most common tokens) or from the whole vocabulary
    SampleVocab { from_first: Option<usize> },
    /// google-research/prompt-tuning's class-label init (`prompts.from_embedded_list` over
    /// `from_sample_of_embeddings`): P sampled vocabulary rows, then row i is the mean
    /// embedding of label i's pieces (one row per label, however many pieces it has); labels
    /// past P are left out (`ClassLabels::dropped` names them, for a warning)
    ClassLabels {
        /// per label: its name and the ids of its word's pieces. Leave it empty: the task
        /// fills it in (`--init class-labels`); labels given must equal the task's, else
        /// the prompt is refused naming both
        labels: Vec<(String, Vec<i32>)>,
        from_first: Option<usize>,
    },
}

/// The largest `--init-std`: far past any embedding's scale, and its draws stay finite in f32.
pub const MAX_INIT_STD: f64 = 1e6;

/// `--init-text` is blank: a text init needs words.
fn empty_init_text(t: &str) -> Error {
    Error::arg(
        "--init-text",
        format!("is {t:?}: --init text needs words to start the prompt from"),
    )
}

impl PromptInit {
    /// What the command line's flags refuse, for an init made in code: a random init's
    /// standard deviation from 0 to `MAX_INIT_STD` (NaN gave a NaN prompt, and 1e39, finite
    /// in f64, a prompt of inf in f32), a text init's text not blank, a vocabulary sample's
    /// `from_first` not 0.
    pub fn check(&self) -> Result<()> {
        match self {
            PromptInit::Random { std } if !(*std >= 0.0 && *std <= MAX_INIT_STD) => {
                Err(Error::arg(
                    "--init-std",
                    format!(
                        "{std} is out of range: expected a finite number from 0 to \
                         {MAX_INIT_STD:e} (embedding rows are near 1; the prompt is float32)"
                    ),
                ))
            }
            PromptInit::Text(t) if t.trim().is_empty() => Err(empty_init_text(t)),
            // sampling from no ids: `init` drew from the first one (the pad token) instead
            PromptInit::SampleVocab {
                from_first: Some(0),
            }
            | PromptInit::ClassLabels {
                from_first: Some(0),
                ..
            } => Err(Error::arg(
                // the field an API user set (the command line names --init-vocab-first)
                "from_first",
                "is 0: expected at least 1 (how many of the vocabulary's first ids to sample \
                 from)",
            )),
            _ => Ok(()),
        }
    }

    /// The init the command line's flags name: `init` is random, text, sample-vocab or
    /// class-labels; `text` is --init-text (read only by, and needed by, text); `std` is
    /// --init-std (random, default 1); `from_first` is --init-vocab-first (sample-vocab,
    /// class-labels). A companion the init does not read is refused naming both flags.
    pub fn from_flags(
        init: &str,
        text: Option<String>,
        std: Option<f64>,
        from_first: Option<usize>,
    ) -> Result<PromptInit> {
        const INITS: [&str; 4] = ["random", "text", "sample-vocab", "class-labels"];
        // an unknown init first: its companions' refusal named the init as if it were one
        // ("--init-text is read only with --init text, and --init is \"TEXT\"")
        if !INITS.contains(&init) {
            return Err(Error::arg(
                "--init",
                format!("\"{init}\": expected random, text, sample-vocab or class-labels"),
            ));
        }
        let readers: [(&str, bool, &[&str]); 3] = [
            ("--init-text", text.is_some(), &["text"]),
            ("--init-std", std.is_some(), &["random"]),
            (
                "--init-vocab-first",
                from_first.is_some(),
                &["sample-vocab", "class-labels"],
            ),
        ];
        let unread = readers
            .iter()
            .find(|(_, given, by)| *given && !by.contains(&init));
        if let Some((flag, _, by)) = unread {
            return Err(Error::arg(
                *flag,
                format!(
                    "is read only with --init {}, and --init is {init:?}",
                    by.join(" or --init ")
                ),
            ));
        }
        Ok(match init {
            "random" => PromptInit::Random {
                std: std.unwrap_or(1.0),
            },
            "text" => match text {
                Some(t) if !t.trim().is_empty() => PromptInit::Text(t),
                Some(t) => return Err(empty_init_text(&t)),
                None => return Err(Error::arg("--init text", "needs --init-text \"...\"")),
            },
            "sample-vocab" => PromptInit::SampleVocab { from_first },
            // class-labels, the last of INITS
            _ => PromptInit::ClassLabels {
                labels: Vec::new(),
                from_first,
            },
        })
    }

    pub fn peft_name(&self) -> &'static str {
        match self {
            PromptInit::Random { .. } => "RANDOM",
            PromptInit::Text(_) => "TEXT",
            PromptInit::SampleVocab { .. } => "SAMPLE_VOCAB",
            // PEFT has no CLASS_LABELS init and refuses a value it does not know; a saved
            // prompt is just weights, and task.json records the real init (`record`)
            PromptInit::ClassLabels { .. } => "RANDOM",
        }
    }

    /// What task.json records about the init: its real name, and for class labels the
    /// labels whose words gave rows.
    pub fn record(&self, p: usize) -> Value {
        match self {
            PromptInit::Random { std } => json!({"init": "random", "init_std": std}),
            PromptInit::Text(t) => json!({"init": "text", "init_text": t}),
            PromptInit::SampleVocab { from_first } => {
                json!({"init": "sample-vocab", "init_vocab_first": from_first})
            }
            PromptInit::ClassLabels { labels, from_first } => {
                let used: Vec<&str> = labels.iter().take(p).map(|(l, _)| l.as_str()).collect();
                json!({"init": "class-labels", "init_labels": used, "init_vocab_first": from_first})
            }
        }
    }

    /// Class labels that a prompt of `p` rows has no row for.
    pub fn dropped(&self, p: usize) -> Vec<String> {
        match self {
            PromptInit::ClassLabels { labels, .. } => {
                labels.iter().skip(p).map(|(l, _)| l.clone()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Where a loaded prompt came from, so that saving writes the same layout back.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterLayout {
    /// 1, or 2 for PEFT seq2seq adapters whose table holds P encoder rows then P decoder rows
    pub num_transformer_submodules: usize,
    /// the rows after the first P, kept unchanged (PEFT's decoder rows, unused by prompt tuning)
    pub extra_rows: Vec<f32>,
    /// the adapter_config.json that was loaded, rewritten on save with our updates
    pub config: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PromptTable {
    pub p: usize,
    pub d: usize,
    /// (P, d) row-major
    pub data: Vec<f32>,
    pub init: String,
    pub init_text: Option<String>,
    pub layout: AdapterLayout,
}

impl PromptTable {
    pub fn from_data(p: usize, d: usize, data: Vec<f32>) -> Result<PromptTable> {
        let n = p.checked_mul(d).ok_or_else(|| {
            Error::shape("prompt (P*d)", "a size that fits", format!("{p} x {d}"))
        })?;
        crate::error::ensure_len("prompt (P*d)", n, data.len())?;
        Ok(PromptTable {
            p,
            d,
            data,
            init: "RANDOM".into(),
            init_text: None,
            layout: AdapterLayout {
                num_transformer_submodules: 1,
                extra_rows: Vec::new(),
                config: None,
            },
        })
    }

    /// A new table of `p` rows; `word_embeddings` is the model's (V, d) input embedding table.
    pub fn init(
        p: usize,
        init: &PromptInit,
        word_embeddings: &HostTensor,
        tokenizer: Option<&Tokenizer>,
        rng: &mut Rng,
    ) -> Result<PromptTable> {
        if p == 0 {
            return Err(Error::arg(
                "--prompt-len",
                "the prompt needs at least one row",
            ));
        }
        let &[v, d] = word_embeddings.shape.as_slice() else {
            return Err(Error::tensor(
                "word embeddings",
                format!("has shape {:?}: expected [vocab, d]", word_embeddings.shape),
            ));
        };
        // every id is checked against v before it gets here (check_ids)
        let rows = |ids: &[i32]| -> Vec<f32> {
            ids.iter()
                .flat_map(|&id| {
                    let at = id.max(0) as usize * d;
                    word_embeddings
                        .data
                        .get(at..at + d)
                        .unwrap_or_default()
                        .iter()
                        .copied()
                })
                .collect()
        };
        let from_first = match init {
            PromptInit::SampleVocab { from_first } | PromptInit::ClassLabels { from_first, .. } => {
                *from_first
            }
            _ => None,
        };
        if let Some(n) = from_first.filter(|&n| n > v) {
            return Err(Error::arg(
                "from_first",
                format!("is {n} but the model's vocabulary has {v} tokens: expected 1 to {v}"),
            ));
        }
        let sample = |rng: &mut Rng, n: usize, from_first: Option<usize>| -> Vec<i32> {
            let limit = from_first.unwrap_or(v).min(v);
            (0..n).map(|_| rng.below(limit as u64) as i32).collect()
        };
        let (data, text) = match init {
            PromptInit::Random { std } => (
                (0..p * d).map(|_| (rng.normal() * std) as f32).collect(),
                None,
            ),
            PromptInit::Text(text) => {
                let tok = tokenizer.ok_or_else(|| {
                    Error::arg("--init text", "TEXT init needs the model's tokenizer.json")
                })?;
                // a 60 MB text took 7 GB to tokenize for 4 rows, or aborted (hostile pass 24)
                crate::train::encode_text::check_tokenize_bytes(text, "--init-text")?;
                let ids = tok.encode(text, true)?;
                if ids.is_empty() {
                    return Err(Error::arg(
                        "--init-text",
                        format!("{text:?} tokenizes to nothing"),
                    ));
                }
                crate::backend::check_ids("prompt init text", &ids, v)?;
                // PEFT: repeat the ids until there are enough, then trim to P
                let ids: Vec<i32> = ids.iter().copied().cycle().take(p).collect();
                (rows(&ids), Some(text.clone()))
            }
            PromptInit::SampleVocab { from_first } => (rows(&sample(rng, p, *from_first)), None),
            PromptInit::ClassLabels { labels, from_first } => {
                // sampled rows first (as prompt-tuning's initializer draws them), then each
                // label's mean piece embedding over row i
                let mut data = rows(&sample(rng, p, *from_first));
                for ((label, ids), row) in labels.iter().zip(data.chunks_exact_mut(d)) {
                    crate::backend::check_ids(&format!("class label {label:?}"), ids, v)?;
                    if ids.is_empty() {
                        return Err(Error::arg(
                            "--init class-labels",
                            format!("label {label:?} tokenizes to nothing"),
                        ));
                    }
                    let mean = mean_rows(&rows(ids), d, ids.len());
                    row.copy_from_slice(&mean);
                }
                (data, None)
            }
        };
        let mut table = PromptTable::from_data(p, d, data)?;
        table.init = init.peft_name().into();
        table.init_text = text;
        Ok(table)
    }

    /// Loads a PEFT prompt-tuning adapter folder (ours or PEFT's). With
    /// `num_transformer_submodules` 2 (absent or null, PEFT's default for task_type
    /// SEQ_2_SEQ_LM where the table has 2P rows) the table holds 2P rows and only the first
    /// P are used, as PEFT from 0.4 uses them (docs/peft.md: adapters of PEFT 0.2 and 0.3).
    pub fn load_peft(dir: &Path) -> Result<PromptTable> {
        if dir.is_file() {
            return Err(Error::file(
                dir,
                "is a file: expected a prompt folder (adapter_config.json, adapter_model.safetensors)",
            ));
        }
        let cfg_path = dir.join(ADAPTER_CONFIG);
        if !cfg_path.exists() {
            return Err(not_a_prompt_folder(dir));
        }
        let text = crate::fsutil::read_json_text(&cfg_path)?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&cfg_path, format!("not valid JSON: {e}")))?;
        let peft_type = match cfg.get("peft_type") {
            None => return Err(Error::file(
                &cfg_path,
                "has no `peft_type`: expected \"PROMPT_TUNING\", \"P_TUNING\" or \"PREFIX_TUNING\"",
            )),
            Some(v) => v,
        };
        // P-tuning's adapter holds its encoder's output (PEFT saves that, not the encoder):
        // a prompt table like prompt tuning's; prefix tuning's holds its (P, N·2·w) table,
        // with a projection its output too
        let prefix = peft_type == "PREFIX_TUNING";
        if peft_type != "PROMPT_TUNING" && peft_type != "P_TUNING" && !prefix {
            // the value as found: a number read as "" named a value the file does not hold
            return Err(Error::file(
                &cfg_path,
                format!("peft_type is {peft_type}: expected \"PROMPT_TUNING\", \"P_TUNING\" or \"PREFIX_TUNING\" (LoRA and other adapters are not prompt tables)"),
            ));
        }
        check_adapter_types(&cfg, &cfg_path)?;
        let p = match cfg.get("num_virtual_tokens") {
            None => Err("missing `num_virtual_tokens` (a positive integer)".to_string()),
            Some(v) => v
                .as_u64()
                .filter(|&n| n >= 1)
                .ok_or_else(|| format!("`num_virtual_tokens` is {v}: expected a positive integer")),
        }
        .map_err(|msg| Error::file(&cfg_path, msg))? as usize;
        let subs = config_count(&cfg, "num_transformer_submodules", &cfg_path)?;
        if let Some(n) = subs.filter(|n| !(1..=2).contains(n)) {
            return Err(Error::file(
                &cfg_path,
                format!("num_transformer_submodules is {n}: expected 1 or 2"),
            ));
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        check_weights_file(dir, &weights_path)?;
        let file = TensorFile::read(&weights_path)?;
        let table = file.floats.get(PROMPT_KEY).ok_or_else(|| {
            // an integer table, or PEFT's projection weights alone, said only "missing"
            let mut held: Vec<&str> = file.floats.keys().map(String::as_str).collect();
            held.sort_unstable();
            let why = match file.ints.contains_key(PROMPT_KEY) {
                true => {
                    "holds `prompt_embeddings` as integers: expected floating point".to_string()
                }
                false => format!("missing the tensor `{PROMPT_KEY}` (it holds {held:?})"),
            };
            Error::file(&weights_path, why)
        })?;
        warn_unread(&weights_path, &file);
        let (rows, d) = match table.shape.as_slice() {
            // a width of 0 holds no values whatever its rows, so its rows bound nothing
            [r, d] if *d > 0 => (*r, *d),
            s => {
                return Err(Error::file(
                    &weights_path,
                    format!("`{PROMPT_KEY}` has shape {s:?}: expected [rows, d], d at least 1"),
                ))
            }
        };
        let subs = table_submodules(&cfg, (p, subs, prefix), rows, (&cfg_path, &weights_path))?;
        if let Some(td) = config_count(&cfg, "token_dim", &cfg_path)? {
            match prefix {
                true => check_prefix_table(&cfg, td, d, &cfg_path)?,
                false if td != d as u64 => {
                    return Err(Error::file(
                        &cfg_path,
                        format!("token_dim {td} does not match the width of `{PROMPT_KEY}` in {ADAPTER_WEIGHTS}, {d}"),
                    ))
                }
                false => {}
            }
        }
        let init = cfg
            .get("prompt_tuning_init")
            .and_then(|v| v.as_str())
            .unwrap_or("RANDOM")
            .to_string();
        let init_text = cfg
            .get("prompt_tuning_init_text")
            .and_then(|v| v.as_str())
            .map(String::from);
        Ok(PromptTable {
            p,
            d,
            data: table.data.get(..p * d).unwrap_or_default().to_vec(),
            init,
            init_text,
            layout: AdapterLayout {
                num_transformer_submodules: subs,
                extra_rows: table.data.get(p * d..).unwrap_or_default().to_vec(),
                config: Some(cfg),
            },
        })
    }

    /// Writes the PEFT layout into `dir` (each file atomically). `info` supplies the model
    /// facts PEFT records: task type, base model path, layers and heads.
    pub fn save_peft(&self, dir: &Path, info: &AdapterInfo) -> Result<()> {
        self.save_peft_with(dir, info, None)
    }

    /// `save_peft`, with `metadata` in the adapter's safetensors header (PEFT reads none of
    /// it): the save stamp every file of a prompt folder carries.
    pub fn save_peft_with(
        &self,
        dir: &Path,
        info: &AdapterInfo,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let subs = self.layout.num_transformer_submodules;
        let mut table = self.data.clone();
        table.extend_from_slice(&self.layout.extra_rows);
        let rows = table.len() / self.d;
        write_safetensors(
            &dir.join(ADAPTER_WEIGHTS),
            &[(PROMPT_KEY, vec![rows, self.d], &table)],
            metadata,
        )?;
        let mut cfg = self.layout.config.clone().unwrap_or_else(|| json!({}));
        // a P-tuning or prefix adapter (trained here, or loaded) stays one, without prompt
        // tuning's keys
        let peft_type = match cfg.get("peft_type").and_then(|v| v.as_str()) {
            Some(t @ ("P_TUNING" | "PREFIX_TUNING")) => t.to_string(),
            _ => "PROMPT_TUNING".to_string(),
        };
        let prefix = peft_type == "PREFIX_TUNING";
        let ptuning = peft_type != "PROMPT_TUNING";
        let mut fresh = json!({
            "peft_type": peft_type,
            "task_type": info.task_type,
            "num_virtual_tokens": self.p,
            "token_dim": self.d,
            "num_transformer_submodules": subs,
            "num_attention_heads": info.num_attention_heads,
            "num_layers": info.num_layers,
            "prompt_tuning_init": self.init,
            "prompt_tuning_init_text": self.init_text,
            "tokenizer_name_or_path": info.tokenizer_name_or_path,
            "base_model_name_or_path": info.base_model_name_or_path,
            "inference_mode": true,
            "revision": null,
            "tokenizer_kwargs": null,
            "modules_to_save": null,
            "auto_mapping": null,
        });
        if let (true, Some(f)) = (ptuning, fresh.as_object_mut()) {
            // PromptEncoderConfig has none of these keys (PEFT warns about them)
            for k in [
                "prompt_tuning_init",
                "prompt_tuning_init_text",
                "tokenizer_name_or_path",
                "tokenizer_kwargs",
            ] {
                f.remove(k);
            }
            // the prefix's own layout (blocks of token_dim) comes with its config
            if prefix {
                for k in ["token_dim", "num_layers", "num_transformer_submodules"] {
                    f.remove(k);
                }
            }
        }
        if let (Some(obj), Some(new)) = (cfg.as_object_mut(), fresh.as_object()) {
            for (k, v) in new {
                // keep what a loaded PEFT config says about its own model and task; a
                // task_type this model cannot be (SEQ_2_SEQ_LM on a llama) was kept too
                let keep = match (k.as_str(), obj.get(k)) {
                    (_, None) => false,
                    ("task_type", Some(found)) => (found.as_str().zip(v.as_str()))
                        .is_some_and(|(f, ours)| crate::train::spec::peft_task_type_fits(f, ours)),
                    (key, Some(_)) => matches!(
                        key,
                        "base_model_name_or_path"
                            | "tokenizer_name_or_path"
                            | "num_attention_heads"
                            | "num_layers"
                    ),
                };
                if !keep {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        crate::fsutil::write_json_atomic(&dir.join(ADAPTER_CONFIG), &cfg)
    }
}

/// Facts about the base model that PEFT's adapter_config.json records.
#[derive(Clone, Debug, Default)]
pub struct AdapterInfo {
    /// "SEQ_2_SEQ_LM", "SEQ_CLS", "FEATURE_EXTRACTION", ...
    pub task_type: Option<String>,
    pub base_model_name_or_path: Option<String>,
    pub tokenizer_name_or_path: Option<String>,
    pub num_attention_heads: usize,
    pub num_layers: usize,
}

/// Tensors of an adapter file that no method reads (a head PEFT saved through
/// `modules_to_save`, another tool's extras) are left unread, which was silent: a user took
/// them for used. Said once per file and process, naming them all, on stderr.
fn warn_unread(path: &Path, file: &TensorFile) {
    static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut unread: Vec<&str> = (file.floats.keys().chain(file.ints.keys()))
        .map(String::as_str)
        .filter(|&k| k != PROMPT_KEY)
        .collect();
    if unread.is_empty() {
        return;
    }
    unread.sort_unstable();
    // a poisoned lock only costs a repeated warning
    let first = WARNED
        .lock()
        .map_or(true, |mut w| w.insert(path.to_path_buf()));
    if first {
        errln!(
            "warning: {}: ignoring {} tensor(s) that no prompt method reads: {} (only \
             `{PROMPT_KEY}` is read)",
            path.display(),
            unread.len(),
            unread.join(", ")
        );
    }
}

/// The mean of `n` rows of width `d` (row-major), summed in f64.
fn mean_rows(data: &[f32], d: usize, n: usize) -> Vec<f32> {
    let mut acc = vec![0f64; d];
    for row in data.chunks_exact(d) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x as f64;
        }
    }
    acc.iter().map(|&a| (a / n.max(1) as f64) as f32).collect()
}
