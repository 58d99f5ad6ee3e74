//! Flags shared by several commands: the device, the data fields and the task (`train`,
//! `eval`, `predict`), the method (`train`, `bench`, `profile`), the workload (`bench`,
//! `profile`).

use softprompt::internals::device::DeviceKind;
use softprompt::{
    DataSpec, Dataset, Error, Format, Method, Model, Quoting, Result, Task, TaskOptions,
};
use std::path::Path;

#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// cpu, cuda (cuda:N) or emu (the CUDA kernels on the CPU emulator; build with --features
    /// emu); serve also takes auto (the first GPU when there is one, else the CPU)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and activations on cuda and emu: bf16; f32 (float32 kernels and GEMMs, for
    /// exact checks); or mixed (bf16 weights, float32 activations: ReLU masks as in float32). The
    /// CPU always computes in float32 (it warns when given another). Default: bf16
    #[arg(long)]
    pub precision: Option<String>,
    /// CPU threads (0: all cores); the same count on the same CPU gives bit-identical results
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The CPU's GEMM path: gemm, openblas in a build with that feature, or mkl where Intel
    /// MKL is installed (pip install mkl, or SOFTPROMPT_MKL: the library or its folder); also
    /// SOFTPROMPT_GEMM. Default: mkl on an Intel CPU where MKL is installed, else gemm. The
    /// same path on the same CPU gives bit-identical results
    #[arg(long)]
    pub gemm: Option<String>,
}

impl DeviceArgs {
    /// Parses the device, then sets up the CPU: the environment checked, the thread pool
    /// sized, the GEMM path chosen, in that order (cpu/threads.rs).
    pub fn setup(&self) -> Result<DeviceKind> {
        let kind = DeviceKind::parse(&self.device, self.precision())?;
        softprompt::internals::cpu::threads::setup(self.threads, self.gemm.as_deref())?;
        warn_cpu_precision(kind, self.precision.as_deref());
        Ok(kind)
    }

    /// `--precision`, or its default.
    pub fn precision(&self) -> &str {
        self.precision.as_deref().unwrap_or("bf16")
    }
}

/// `--precision bf16` (or mixed) given with `--device cpu` was taken without a word, and the
/// run computed in float32: it still runs, saying so.
pub fn warn_cpu_precision(kind: DeviceKind, given: Option<&str>) {
    let float32 = |p: &str| matches!(p.parse(), Ok(softprompt::Precision::F32));
    if let (DeviceKind::Cpu, Some(p)) = (kind, given.filter(|&p| !float32(p))) {
        errln!("warning: --precision {p} applies on cuda and emu: the CPU computes in float32");
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// jsonl, tsv or csv, for every data file of the command (default: each file's extension)
    #[arg(long)]
    pub format: Option<String>,
    /// TSV and CSV quoting: minimal (a field that starts with a quote is quoted, as Python's
    /// csv and pandas write it) or none (quotes are text and a record ends at its line's end,
    /// as in GLUE's TSV files). JSON lines files read as they are; none is refused when no
    /// file read is a TSV or CSV. Default: minimal
    #[arg(long)]
    pub quoting: Option<String>,
    /// the field (JSON key or column name) holding the text
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// the field holding the label (or the target text, with --free-targets)
    #[arg(long, default_value = "label")]
    pub label_field: String,
}

impl DataArgs {
    /// The one data file of a command (eval, predict).
    pub fn load(&self, path: &Path, require_label: bool) -> Result<Dataset> {
        self.load_among(path, &[path], require_label)
    }

    /// `path`, one of the command's data `files` (train's --train, --dev, --test): --quoting
    /// is for the TSV and CSV files among them (`DataSpec::for_file`).
    pub fn load_among(&self, path: &Path, files: &[&Path], require_label: bool) -> Result<Dataset> {
        let spec = DataSpec {
            format: self
                .format
                .as_deref()
                .map(str::parse::<Format>)
                .transpose()?,
            quoting: (self.quoting.as_deref())
                .map(str::parse::<Quoting>)
                .transpose()?,
            text_field: self.text_field.clone(),
            label_field: self.label_field.clone(),
            require_label,
        };
        // as --output says it: "-: No such file or directory" did not say why
        if path.as_os_str() == "-" && !path.exists() {
            return Err(Error::file(
                path,
                "\"-\" is not standard input here: name the data file (/dev/stdin with \
                 --format passes a stream)",
            ));
        }
        Dataset::load(path, &spec.for_file(path, files))
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
    /// e.g. "{text} It was [MASK]." or "[MASK]满意。{text}" (default: pet "{text} It was
    /// [MASK].", else "{text}")
    #[arg(long)]
    pub template: Option<String>,
    /// the labels in order, comma-separated (default: the verbalizer's, else the sorted
    /// labels of the data)
    #[arg(long)]
    pub labels: Option<String>,
    /// label=word pairs: pet's one-token words, or seq2seq's and causal's target texts, e.g.
    /// positive=great,negative=terrible (or a JSON object, or task.json's [[label, word], ...];
    /// default: each label is its own word)
    #[arg(long)]
    pub verbalizer: Option<String>,
    /// cls pooling: mean or cls (default mean)
    #[arg(long)]
    pub pooling: Option<String>,
    /// seq2seq, causal: the label field holds free target texts
    #[arg(long)]
    pub free_targets: bool,
    /// tokens per row, special tokens included; longer texts are cut (and counted) (default
    /// 128, or what the model's position table leaves beside the prompt)
    #[arg(long)]
    pub max_len: Option<usize>,
    /// seq2seq, causal: tokens per target (causal: the most tokens generated) (default 32)
    #[arg(long)]
    pub max_target_len: Option<usize>,
    /// seq2seq and causal prediction: rank (score each label's target; the default) or greedy
    #[arg(long)]
    pub decode: Option<String>,
    /// causal: the token after each target, labelled and counted in the loss, and where
    /// generation stops: eos (the model's end-of-sequence token; the default), pad (the
    /// tokenizer's pad token, as PEFT's causal-LM guide appends `tokenizer.pad_token_id` and
    /// generates with `eos_token_id=pad`) or none (the target text alone). Recorded in
    /// task.json, so eval, predict, generate and serve use it
    #[arg(long)]
    pub target_end: Option<String>,
}

impl TaskArgs {
    /// The library's task options these flags give.
    pub fn options(&self) -> Result<TaskOptions> {
        Ok(TaskOptions {
            task: self.task.as_deref().map(str::parse).transpose()?,
            template: self.template.clone(),
            labels: self.labels.as_deref().map(TaskOptions::labels_from_str),
            verbalizer: self
                .verbalizer
                .as_deref()
                .map(TaskOptions::verbalizer_from_str)
                .transpose()?,
            pooling: self.pooling.as_deref().map(str::parse).transpose()?,
            free_targets: self.free_targets,
            max_len: self.max_len,
            max_target_len: self.max_target_len,
            decode: self.decode.as_deref().map(str::parse).transpose()?,
            target_end: self.target_end.as_deref().map(str::parse).transpose()?,
        })
    }
}

/// The training method and PEFT's names for its settings (`train`, `bench`, `profile`).
#[derive(clap::Args, Clone, Debug)]
pub struct MethodArgs {
    /// prompt (the rows are trained), p-tuning (they come out of PEFT's prompt encoder,
    /// which is trained) or prefix (key and value rows in front of every attention layer)
    #[arg(long, default_value = "prompt")]
    pub method: String,
    /// prefix: the table is the output of PEFT's projection (embedding, Linear, Tanh,
    /// Linear), which is trained
    #[arg(long)]
    pub prefix_projection: bool,
    /// prefix: papers (every self-attention layer, T5's encoder and decoder; the default) or
    /// peft (PEFT's T5 reading: decoder only, block 2l mod N; T5 only)
    #[arg(long)]
    pub prefix_placement: Option<String>,
    /// p-tuning: the encoder, mlp or lstm (PEFT's encoder_reparameterization_type; default mlp)
    #[arg(long)]
    pub encoder_reparameterization: Option<String>,
    /// p-tuning, prefix with --prefix-projection: the encoder's hidden size (default: the
    /// model's width; the prefix projection's, PEFT's token_dim, the keys' width)
    #[arg(long)]
    pub encoder_hidden_size: Option<usize>,
    /// p-tuning: the LSTM's layers (default 2; PEFT's MLP always has its three linears)
    #[arg(long)]
    pub encoder_num_layers: Option<usize>,
}

impl Default for MethodArgs {
    /// The command line's defaults: prompt tuning, no method flag set.
    fn default() -> Self {
        MethodArgs {
            method: "prompt".into(),
            prefix_projection: false,
            prefix_placement: None,
            encoder_reparameterization: None,
            encoder_hidden_size: None,
            encoder_num_layers: None,
        }
    }
}

impl MethodArgs {
    /// `--method` and the flags of its settings (`Method::from_flags`).
    pub fn method(&self) -> Result<Method> {
        Method::from_flags(
            &self.method,
            self.prefix_projection,
            self.prefix_placement.as_deref(),
            self.encoder_reparameterization.as_deref(),
            self.encoder_hidden_size,
            self.encoder_num_layers,
        )
    }
}

/// The API's names of the settings the command line sets by flag: the library's errors name
/// the field an API user set (`Model::task`'s `prompt_len`, `cfg.batch_size`), the command
/// line's the flag.
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("out", "--out"),
    ("dev", "--dev"),
    ("model", "--model"),
    ("prompt_len", "--prompt-len"),
    ("batch_size", "--batch-size"),
    ("cfg.prompt_len", "--prompt-len"),
    ("cfg.batch_size", "--batch-size"),
    ("cfg.eval_batch_size", "--eval-batch-size"),
    ("cfg.bucket_pool", "--bucket-pool"),
    ("cfg.epochs", "--epochs"),
    ("cfg.max_steps", "--max-steps"),
    ("cfg.patience", "--patience"),
    ("cfg.eval_every", "--eval-every"),
    ("cfg.optim.lr", "--lr"),
    ("cfg.optim.head_lr", "--head-lr"),
    ("cfg.optim.weight_decay", "--weight-decay"),
    ("cfg.optim.max_grad_norm", "--max-grad-norm"),
    ("cfg.optim.decay_rate", "--decay-rate"),
    ("from_first", "--init-vocab-first"),
];

/// The output folder's refusals (`train::outdir`) in the API's words, and the command
/// line's: the words are quoted there, so that only they are replaced.
const OUT_WORDS: [(&str, &str); 4] = [
    ("set `cfg.resume`", "pass --resume"),
    ("set `cfg.overwrite`", "pass --overwrite"),
    ("`cfg.overwrite`", "--overwrite"),
    // a resume's rows-hash difference (train::start::settings_diff)
    (
        "its quoting, format, fields or max_len",
        "--quoting, --format, --text-field / --label-field or --max-len",
    ),
];

/// An argument error's advice in the API's words, and the command line's.
const ARG_WORDS: [(&str, &str); 3] = [
    ("pass `dev`", "pass --dev"),
    (
        "trained by `cfg.optim.head_lr` > 0",
        "trained by --head-lr > 0",
    ),
    (
        "name it with Prompt::set_model (the command line: --model)",
        "pass --model DIR",
    ),
];

/// `msg` with the folder's word `out` as the flag: a task may be named `out` too ("task
/// `out`: ...", "tasks `a` and `out`", "`out` is given twice", "`out` and `Out` differ"),
/// and keeps its name.
fn out_as_flag(msg: &str) -> String {
    let mut said = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find("`out`") {
        let (head, tail) = rest.split_at(i);
        said.push_str(head);
        let after = &tail["`out`".len()..];
        let task = ["task ", "tasks ", "` and "]
            .iter()
            .any(|t| head.ends_with(t))
            || [" is given twice", " and `"]
                .iter()
                .any(|t| after.starts_with(t));
        said.push_str(if task { "`out`" } else { "--out" });
        rest = after;
    }
    said + rest
}

/// A file's or folder's refusal in the command line's words.
fn file_as_flags(msg: String) -> String {
    out_as_flag(&(OUT_WORDS.iter()).fold(msg, |m, (api, flag)| m.replace(api, flag)))
}

/// `e` in the command line's words: an API field it names becomes its flag.
pub fn as_flags(e: Error) -> Error {
    match e {
        Error::File { path, msg } => Error::File {
            path,
            msg: file_as_flags(msg),
        },
        Error::Folder { path, msg, state } => Error::Folder {
            path,
            msg: file_as_flags(msg),
            state,
        },
        Error::Arg { flag, msg } => {
            let named = FIELD_FLAGS.iter().find(|(field, _)| *field == flag);
            // the advice's own phrases only: a task may be named `dev` or `out` too
            let msg = (ARG_WORDS.iter()).fold(msg, |m, (api, flag)| m.replace(api, flag));
            let msg = out_as_flag(&msg);
            Error::Arg {
                flag: named.map_or(flag, |(_, f)| f.to_string()),
                msg,
            }
        }
        e @ Error::Io { .. } => e.reword_doing(out_as_flag),
        mut e @ Error::StepMemory { .. } => {
            if let Error::StepMemory { flags, .. } = &mut e {
                *flags = true;
            }
            e
        }
        e => e,
    }
}

/// One warning line when any of `tasks` is `causal` under `--target-end eos` on a model
/// whose config.json names no end-of-sequence token (`Task::eos_missing`): its targets end
/// with nothing and generation runs to its bound, which is PEFT's reading too, so it is
/// allowed, but a user who meant an end token would not otherwise know.
pub fn warn_eos_missing<'a>(model: &Model, tasks: impl IntoIterator<Item = &'a Task>) {
    if tasks.into_iter().any(Task::eos_missing) {
        errln!(
            "warning: {} has no eos_token_id: --target-end eos (the default) ends each causal \
             target with no token, so generation stops at its length bound (or at a stop token \
             of generation_config.json, which no target teaches); pass --target-end none to \
             say so and silence this, or --target-end pad",
            model.dir().join("config.json").display()
        );
    }
}

/// One warning line when rows of `enc` hold free targets that greedy generation could never
/// produce (a stop token before the end): each is scored a miss, and nothing else says why.
pub fn warn_stops_inside(task: &Task, enc: &softprompt::Encoded) {
    if let Some((n, line)) = task.stops_inside_targets(enc) {
        errln!(
            "warning: {}: {n} row(s) (the first at line {line}) hold a target with a stop \
             token before its end: generation stops at that token, so each is scored a miss",
            enc.path.display()
        );
    }
}

/// A split's line: "N rows, M truncated to K tokens", and ", C targets cut to L" when
/// targets were cut (--max-target-len: every split says so, the train split too, where it
/// said nothing).
pub fn rows_line(enc: &softprompt::Encoded, spec: &softprompt::TaskSpec) -> String {
    format!(
        "{} rows, {} truncated to {} tokens{}",
        enc.rows.len(),
        enc.truncated,
        spec.max_len,
        targets_cut(enc, spec)
    )
}

/// ", C targets cut to L" when C > 0, else nothing.
pub fn targets_cut(enc: &softprompt::Encoded, spec: &softprompt::TaskSpec) -> String {
    match enc.truncated_targets {
        0 => String::new(),
        n => format!(", {n} targets cut to {}", spec.max_target_len),
    }
}

/// Prints an error the way every subcommand does, and gives the exit code.
pub fn fail(e: Error) -> i32 {
    let e = as_flags(e);
    errln!("error: {e}");
    match e {
        // what the user handed us (flags, files, models) is at fault
        Error::Arg { .. }
        | Error::Data { .. }
        | Error::File { .. }
        | Error::HostMemory { .. }
        | Error::Folder { .. }
        | Error::Io { .. }
        | Error::Config { .. }
        | Error::Tensor { .. }
        | Error::Tokenizer { .. }
        | Error::Unsupported(_)
        | Error::Overflow { .. }
        | Error::StepMemory { .. }
        | Error::Device(_) => 2,
        _ => 1,
    }
}

/// `e`, when it is an `Overflow` of one of `data`'s rows (in file order), saying the row's
/// line in the data file, where the user looks for it.
pub fn at_line(e: Error, data: &Dataset) -> Error {
    e.map_overflow(|row, job, msg| {
        let line = data.examples.get(row).map_or(row + 1, |ex| ex.line);
        (row, job, format!("({}:{line}) {msg}", data.path.display()))
    })
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
    /// (8; BERT presets read none)
    #[arg(long)]
    pub target_len: Option<usize>,
    /// Prompt rows P
    #[arg(long, default_value_t = 20)]
    pub prompt: usize,
    /// cpu, cuda or emu (a build with --features emu; for checks, not timing)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and activations on cuda and emu: bf16, f32 (float32 kernels and GEMMs), or
    /// mixed (bf16 weights, float32 activations); the CPU computes in float32 (it warns when
    /// given another). Default: bf16
    #[arg(long)]
    pub precision: Option<String>,
    /// none (keep nonlinear state), mlp (none, less a decoder's gated-MLP up branch, recomputed
    /// in backward: Llama family), mlp:K (mlp in the first K layers only, K from 1 to the
    /// model's layer count) or layer (keep layer inputs, recompute each layer in
    /// backward)
    #[arg(long, default_value = "none")]
    pub recompute: String,
    /// BERT objective: pet (the default), mlm or cls (a two-label head on mean-pooled
    /// states); T5 and decoder presets read none
    #[arg(long)]
    pub objective: Option<String>,
    /// The CPU's GEMM path: gemm (the gemm crate), openblas in a build with that feature, or
    /// mkl where Intel MKL is installed (pip install mkl, or SOFTPROMPT_MKL); by default mkl on
    /// an Intel CPU where MKL loads, else gemm (SOFTPROMPT_GEMM overrides the default)
    #[arg(long)]
    pub gemm: Option<String>,
    #[command(flatten)]
    pub method: MethodArgs,
}

impl WorkloadArgs {
    /// The device and the workload these flags describe.
    pub fn parse(&self) -> Result<(DeviceKind, softprompt::internals::bench::Workload)> {
        softprompt::internals::cpu::threads::setup(0, self.gemm.as_deref())?;
        self.check_read()?;
        let w = softprompt::internals::bench::Workload {
            batch: self.batch,
            seq: self.seq,
            target_len: self.target_len.unwrap_or(8),
            prompt: self.prompt,
            recompute: self.recompute.parse()?,
            objective: self.objective.clone().unwrap_or_else(|| "pet".into()),
            method: self.method.method()?,
        };
        let given = self.precision.as_deref();
        let kind = DeviceKind::parse(&self.device, given.unwrap_or("bf16"))?;
        warn_cpu_precision(kind, given);
        Ok((kind, w))
    }

    /// A flag the preset's task does not read is refused (a T5 or decoder run given
    /// `--objective mlm` timed its own objective, exit 0, and reported "seq2seq").
    fn check_read(&self) -> Result<()> {
        use softprompt::internals::bench::Preset;
        let preset = Preset::by_name(&self.preset)?;
        let (flag, given, reads) = match preset {
            Preset::Bert(_) => (
                "--target-len",
                self.target_len.is_some(),
                "pet, mlm or cls, no target",
            ),
            Preset::T5(_) => ("--objective", self.objective.is_some(), "seq2seq"),
            Preset::Decoder(_) => ("--objective", self.objective.is_some(), "causal"),
        };
        if given {
            return Err(softprompt::Error::arg(
                flag,
                format!(
                    "the {} preset does not read it (it trains {reads})",
                    self.preset
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The folder's word becomes --out; a task named `out` keeps its name.
    #[test]
    fn a_task_named_out_keeps_its_name() {
        let e = softprompt::Error::file(
            "r/checkpoint.safetensors",
            "task `out` was trained with other settings; or train into another `out`",
        );
        assert_eq!(
            super::as_flags(e).to_string(),
            "r/checkpoint.safetensors: task `out` was trained with other settings; or train \
             into another --out"
        );
    }

    /// A task named like a field (`dev`, `out`, `model`) keeps its name in an argument error;
    /// the advice's own words become flags.
    #[test]
    fn task_names_stay_and_advice_becomes_flags() {
        use softprompt::Error;
        let said = |flag: &str, msg: &str| super::as_flags(Error::arg(flag, msg)).to_string();
        for name in ["dev", "out", "model", "cfg.epochs"] {
            let twice = format!("`{name}` is given twice: each task needs its own name");
            assert_eq!(
                said("task name", &twice),
                format!("invalid argument task name: {twice}")
            );
            let case = format!("`{name}` and `X` differ only in case: their folders under `out`");
            let want = format!("`{name}` and `X` differ only in case: their folders under --out");
            assert_eq!(
                said("task name", &case),
                format!("invalid argument task name: {want}")
            );
            let tagged = format!("task `{name}`: early stopping needs a dev split: pass `dev`");
            let want = format!("task `{name}`: early stopping needs a dev split: pass --dev");
            assert_eq!(
                said("cfg.patience", &tagged),
                format!("invalid argument --patience: {want}")
            );
        }
    }
}
