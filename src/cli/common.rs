//! Flags shared by `train`, `eval` and `predict`: the device, the data fields and the task.

use softprompt::device::DeviceKind;
use softprompt::models::heads::Pooling;
use softprompt::train::data::{DataSpec, Dataset, Format};
use softprompt::train::spec::{parse_verbalizer, Decode, TaskKind, TaskSpec, TEXT_SLOT};
use softprompt::train::Model;
use softprompt::{Backend, Error, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// cpu, cuda (cuda:N) or emu (the CUDA kernels on the CPU emulator; build with --features emu)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and activations on cuda and emu: bf16; f32 (float32 kernels and GEMMs, for
    /// exact checks); or mixed (bf16 weights, float32 activations: ReLU masks as in float32). The
    /// CPU always computes in float32
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// CPU threads (0: all cores); the same count gives bit-identical results
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The CPU's GEMM path: gemm (the default), or openblas in a build with that feature
    /// (also SOFTPROMPT_GEMM); the same path gives bit-identical results
    #[arg(long)]
    pub gemm: Option<String>,
}

/// `--gemm`: selects the CPU's GEMM path for this process.
pub fn select_gemm(flag: Option<&str>) -> Result<()> {
    match flag {
        Some(s) => softprompt::device::gemm_path::select(
            softprompt::device::gemm_path::GemmPath::parse(s)?,
        ),
        None => Ok(()),
    }
}

impl DeviceArgs {
    /// Parses the device and sets up the thread pool.
    pub fn setup(&self) -> Result<DeviceKind> {
        select_gemm(self.gemm.as_deref())?;
        let kind = DeviceKind::parse(&self.device, &self.precision)?;
        // more threads than this is a typo, and spawning them would hang the machine
        const MAX_THREADS: usize = 1024;
        if self.threads > MAX_THREADS {
            return Err(Error::arg(
                "--threads",
                format!(
                    "{} is out of range: expected 0 (all cores) to {MAX_THREADS}",
                    self.threads
                ),
            ));
        }
        if self.threads > 0 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .build_global()
                .map_err(|e| Error::arg("--threads", e.to_string()))?;
        }
        Ok(kind)
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// jsonl, tsv or csv (default: from the file extension)
    #[arg(long)]
    pub format: Option<String>,
    /// the field (JSON key or column name) holding the text
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// the field holding the label (or the target text, with --free-targets)
    #[arg(long, default_value = "label")]
    pub label_field: String,
}

impl DataArgs {
    pub fn load(&self, path: &Path, require_label: bool) -> Result<Dataset> {
        let spec = DataSpec {
            format: self
                .format
                .as_deref()
                .map(str::parse::<Format>)
                .transpose()?,
            text_field: self.text_field.clone(),
            label_field: self.label_field.clone(),
            require_label,
        };
        Dataset::load(path, &spec)
    }
}

/// Task flags. In `eval` and `predict` each one given overrides the prompt's task.json.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TaskArgs {
    /// pet (BERT with a masked-LM head), cls (BERT, pooling + linear head), seq2seq (T5) or
    /// causal (BLOOM, Llama, Mistral, Qwen2: the target text follows the template); default:
    /// from the model
    #[arg(long)]
    pub task: Option<String>,
    /// the text around the input, with {text} once; pet also needs one [MASK],
    /// e.g. "{text} It was [MASK]." or "[MASK]满意。{text}"
    #[arg(long)]
    pub template: Option<String>,
    /// the labels in order, comma-separated (default: the verbalizer's, else the sorted
    /// labels of the data)
    #[arg(long)]
    pub labels: Option<String>,
    /// label=word pairs: pet's one-token words, or seq2seq's and causal's target texts, e.g.
    /// positive=great,negative=terrible (or a JSON object)
    #[arg(long)]
    pub verbalizer: Option<String>,
    /// cls pooling: mean or cls
    #[arg(long)]
    pub pooling: Option<String>,
    /// seq2seq, causal: the label field holds free target texts
    #[arg(long)]
    pub free_targets: bool,
    /// tokens per row, special tokens included; longer texts are cut (and counted)
    #[arg(long)]
    pub max_len: Option<usize>,
    /// seq2seq, causal: tokens per target (causal: the most tokens generated)
    #[arg(long)]
    pub max_target_len: Option<usize>,
    /// seq2seq and causal prediction: rank (score each label's target) or greedy
    #[arg(long)]
    pub decode: Option<String>,
}

impl TaskArgs {
    /// The spec: `base` (task.json) or defaults for the model, with the given flags on top.
    /// `data` supplies the labels when nothing else does.
    /// `prompt_len` bounds the default max_len by the model's positions.
    pub fn spec<B: Backend>(
        &self,
        base: Option<TaskSpec>,
        model: &Model<B>,
        data: Option<&Dataset>,
        prompt_len: usize,
    ) -> Result<TaskSpec> {
        // first, so that a prompt too long for the model is named as such (the default
        // --max-len below is what room the prompt leaves)
        model.check_lengths(prompt_len, None)?;
        let mut spec = self.base_spec(base, model, prompt_len)?;
        self.apply_flags(&mut spec)?;
        // --max-len next to this prompt (Task::new checks it alone, not knowing the prompt)
        model.check_lengths(prompt_len, Some(spec.max_len))?;
        let verbalizer = self
            .verbalizer
            .as_deref()
            .map(parse_verbalizer)
            .transpose()?;
        if spec.free_targets {
            spec.labels.clear();
            spec.label_words.clear();
            return Ok(spec);
        }
        self.set_labels(&mut spec, verbalizer.as_deref(), data)?;
        if spec.kind != TaskKind::Cls {
            set_label_words(&mut spec, verbalizer.as_deref())?;
        }
        if !spec.template.contains(TEXT_SLOT) {
            return Err(Error::arg(
                "--template",
                format!("{:?} must hold {TEXT_SLOT}", spec.template),
            ));
        }
        Ok(spec)
    }

    /// `base` when it is of the asked task, else the defaults of the task the flag or the
    /// model names.
    fn base_spec<B: Backend>(
        &self,
        base: Option<TaskSpec>,
        model: &Model<B>,
        prompt_len: usize,
    ) -> Result<TaskSpec> {
        let kind: TaskKind = match (&self.task, &base) {
            (Some(t), _) => t.parse()?,
            (None, Some(b)) => b.kind,
            (None, None) => match model.arch_name() {
                "t5" => TaskKind::Seq2Seq,
                "bloom" | "llama" => TaskKind::Causal,
                _ if model.has_mlm_head() => TaskKind::Pet,
                _ => TaskKind::Cls,
            },
        };
        Ok(match base {
            Some(b) if b.kind == kind => b,
            _ => {
                let mut s = TaskSpec::new(kind, &[]);
                if let Some(limit) = model.max_tokens(prompt_len) {
                    s.max_len = s.max_len.min(limit);
                }
                s
            }
        })
    }

    /// The flags that set one field each.
    fn apply_flags(&self, spec: &mut TaskSpec) -> Result<()> {
        if let Some(t) = &self.template {
            spec.template = t.clone();
        }
        if self.free_targets {
            spec.free_targets = true;
        }
        if let Some(p) = &self.pooling {
            spec.pooling = p.parse::<Pooling>()?;
        }
        if let Some(n) = self.max_len {
            spec.max_len = n;
        }
        if let Some(n) = self.max_target_len {
            spec.max_target_len = n;
        }
        if let Some(d) = &self.decode {
            spec.decode = d.parse::<Decode>()?;
        }
        Ok(())
    }

    /// The labels: --labels, else the verbalizer's, else the spec's, else those of `data`.
    fn set_labels(
        &self,
        spec: &mut TaskSpec,
        verbalizer: Option<&[(String, String)]>,
        data: Option<&Dataset>,
    ) -> Result<()> {
        let labels: Option<Vec<String>> = self.labels.as_ref().map(|l| {
            l.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        });
        if let Some(labels) = labels {
            spec.labels = labels;
            spec.label_words.clear();
        } else if let Some(v) = verbalizer {
            // the verbalizer gives the labels: one it lacks is its fault, not --labels'
            if let Some(ex) = data.and_then(|d| {
                d.examples.iter().find(|e| {
                    e.label.as_ref().is_some_and(|l| {
                        spec.kind != TaskKind::Cls && !v.iter().any(|(k, _)| k == l)
                    })
                })
            }) {
                let label = ex.label.clone().unwrap_or_default();
                return Err(Error::arg(
                    "--verbalizer",
                    format!(
                        "has no word for the label {label:?} ({}:{}): add {label}=WORD",
                        data.map(|d| d.path.display().to_string())
                            .unwrap_or_default(),
                        ex.line
                    ),
                ));
            }
            if v.len() < 2 {
                return Err(Error::arg(
                    "--verbalizer",
                    format!("gives {} label(s); a classifier needs at least 2", v.len()),
                ));
            }
            spec.labels = v.iter().map(|(l, _)| l.clone()).collect();
            spec.label_words.clear();
        } else if spec.labels.is_empty() {
            let mut found: Vec<String> = data
                .map(|d| d.examples.iter().filter_map(|e| e.label.clone()).collect())
                .unwrap_or_default();
            found.sort();
            found.dedup();
            spec.labels = found;
            spec.label_words.clear();
        }
        Ok(())
    }
}

/// `pet` and `seq2seq`: each label's word from the verbalizer, or the label itself.
fn set_label_words(spec: &mut TaskSpec, verbalizer: Option<&[(String, String)]>) -> Result<()> {
    match verbalizer {
        Some(v) => {
            spec.label_words = spec
                .labels
                .iter()
                .map(|l| {
                    v.iter()
                        .find(|(k, _)| k == l)
                        .map(|(_, w)| w.clone())
                        .ok_or_else(|| {
                            Error::arg("--verbalizer", format!("no word for label {l:?}"))
                        })
                })
                .collect::<Result<_>>()?;
        }
        None if spec.label_words.len() != spec.labels.len() => {
            spec.label_words = spec.labels.clone()
        }
        None => {}
    }
    Ok(())
}

/// The model folder: the flag, else the first of `recorded` (the places task.json points
/// at) that holds a config.json, else PEFT's base_model_name_or_path when it names a
/// folder (as is, or next to the adapter or a folder above it). The error lists every path
/// tried.
pub fn resolve_model(
    flag: Option<&Path>,
    recorded: &[PathBuf],
    adapter_dir: &Path,
    peft_base: Option<&str>,
) -> Result<PathBuf> {
    if let Some(m) = flag {
        return Ok(m.to_path_buf());
    }
    let mut tries: Vec<PathBuf> = Vec::new();
    tries.extend(recorded.iter().cloned());
    if let Some(base) = peft_base {
        tries.push(PathBuf::from(base));
        let mut dir = Some(adapter_dir);
        while let Some(d) = dir {
            tries.push(d.join(base));
            dir = d.parent();
        }
    }
    let mut seen = std::collections::HashSet::new();
    tries.retain(|p| seen.insert(p.clone()));
    if let Some(found) = tries.iter().find(|p| p.join("config.json").is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = tries.iter().map(|p| p.display().to_string()).collect();
    Err(Error::arg(
        "--model",
        if tried.is_empty() {
            format!(
                "{} does not say which model it belongs to: pass --model DIR",
                adapter_dir.display()
            )
        } else {
            format!(
                "no model folder (with a config.json) for {} at {}: pass --model DIR",
                adapter_dir.display(),
                tried.join(", ")
            )
        },
    ))
}

/// Prints an error the way every subcommand does, and gives the exit code.
pub fn fail(e: &Error) -> i32 {
    eprintln!("error: {e}");
    match e {
        // what the user handed us (flags, files, models) is at fault
        Error::Arg { .. }
        | Error::Data { .. }
        | Error::File { .. }
        | Error::Io { .. }
        | Error::Config { .. }
        | Error::Tensor { .. }
        | Error::Tokenizer { .. }
        | Error::Unsupported(_)
        | Error::Device(_) => 2,
        _ => 1,
    }
}

/// The workload flags `bench` and `profile` share (the same as scripts/bench_torch.py's).
#[derive(clap::Args, Clone, Debug)]
pub struct WorkloadArgs {
    /// bert-base, bert-large, t5-base, t5-large, t5-xl, t5-xxl, bloom-560m, bloom-7b1,
    /// llama-3.2-1b, llama-3.2-3b, llama-3.1-8b or qwen2.5-7b (random frozen weights, the real
    /// shapes; the 7-8B ones on a GPU only)
    #[arg(long)]
    pub preset: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Real tokens per row (the prompt comes on top)
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// T5 decoder length; decoder-only presets: labelled tokens at the end of each row
    #[arg(long, default_value_t = 8)]
    pub target_len: usize,
    /// Prompt rows P
    #[arg(long, default_value_t = 20)]
    pub prompt: usize,
    /// cpu, cuda or emu (a build with --features emu; for checks, not timing)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and activations on cuda and emu: bf16, f32 (float32 kernels and GEMMs), or
    /// mixed (bf16 weights, float32 activations)
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// none (keep nonlinear state) or layer (keep layer inputs, recompute in backward)
    #[arg(long, default_value = "none")]
    pub recompute: String,
    /// BERT objective: pet or mlm
    #[arg(long, default_value = "pet")]
    pub objective: String,
    /// The CPU's GEMM path: gemm (the default), or openblas in a build with that feature
    #[arg(long)]
    pub gemm: Option<String>,
}

impl WorkloadArgs {
    /// The device and the workload these flags describe.
    pub fn parse(&self) -> Result<(DeviceKind, softprompt::bench::Workload)> {
        select_gemm(self.gemm.as_deref())?;
        let w = softprompt::bench::Workload {
            batch: self.batch,
            seq: self.seq,
            target_len: self.target_len,
            prompt: self.prompt,
            recompute: self.recompute.parse()?,
            objective: self.objective.clone(),
        };
        Ok((DeviceKind::parse(&self.device, &self.precision)?, w))
    }
}
