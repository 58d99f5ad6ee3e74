//! A frozen model on a device chosen at run time, and everything a prompt does with it:
//! one training step, evaluation, prediction, generation, saving.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checks::{bind, check_model, check_rows, checked, fit};
use super::prompt::Prompt;
use super::task::{head_order_warning, head_spec, resolve, Task, TaskOptions};
use super::until::NEVER;
use crate::backend::{Backend, DeviceKind, Storage};
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::error::{BatchSetting, Error, Result};
use crate::models::decoder::PromptPlacement;
use crate::models::Recompute;
use crate::prompt::PromptInit;
use crate::train::batch::LabelUse;
use crate::train::data::Dataset;
use crate::train::encode::{Encoded, Row};
use crate::train::encode_text::BYTES_PER_TOKEN;
use crate::train::room::Placing;
use crate::train::start::{prompt_init_rng, resolve_init};
use crate::train::{self, EvalMetrics, Grads, Prediction};
use std::path::{Path, PathBuf};

/// The backend and the model loaded onto it: one variant per backend type, so the generic
/// engine stays inside and the device is picked at run time.
pub(crate) enum Engine {
    Cpu(CpuBackend<f32>, train::Model<CpuBackend<f32>>),
    Cuda(CudaBackend, train::Model<CudaBackend>),
}

/// Runs `$body` with `$be` (the backend) and `$m` (the model) bound, whatever the device.
macro_rules! on_engine {
    ($engine:expr, |$be:ident, $m:ident| $body:expr) => {
        match $engine {
            Engine::Cpu($be, $m) => $body,
            Engine::Cuda($be, $m) => $body,
        }
    };
}
pub(crate) use on_engine;

/// The most bytes [`Model::tokenize`] takes: what `Model::encode` reads of one text of a row
/// of `MAX_TOKENS` tokens, the most positions a row may hold.
pub(crate) use crate::train::encode_text::MAX_TOKENIZE_BYTES;

/// A frozen Hugging Face model folder (BERT, T5, BLOOM, Llama, Mistral, Qwen2) with its
/// tokenizer, loaded onto a device.
pub struct Model {
    pub(crate) engine: Engine,
    /// what backward keeps between forward and backward (see [`Recompute`])
    pub recompute: Recompute,
}

/// The loss and the gradients of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// the mean loss over the batch
    pub loss: f64,
    /// d loss / d prompt, (P, d) row-major
    pub prompt_grad: Vec<f32>,
    /// `cls`: d loss / d head weight (K, d) and bias (K)
    pub head_grad: Option<(Vec<f32>, Vec<f32>)>,
    /// real tokens in the batch (inputs and targets)
    pub tokens: usize,
}

/// One generated continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// the new text, special tokens and the stop token that ended it left out
    pub text: String,
    /// the new token ids, ending with the stop token when one was produced
    pub ids: Vec<i32>,
    /// the summed log-probability of the new tokens
    pub logprob: f64,
    /// the text was cut to the task's max_len before generating (as a prediction's
    /// `truncated`)
    pub truncated: bool,
}

impl StepOutput {
    /// Every gradient in the order of [`Prompt::params_mut`]: the prompt's, then the `cls`
    /// head's weight and bias.
    pub fn grads(&self) -> impl Iterator<Item = &f32> {
        let head = (self.head_grad.iter()).flat_map(|(w, b)| w.iter().chain(b.iter()));
        self.prompt_grad.iter().chain(head)
    }
}

impl Model {
    /// Loads the folder `dir` (config.json, the safetensors weights, tokenizer.json) onto
    /// `device`: `Device::Cpu`, `Device::Cuda(ordinal, precision)` or, in a build with the
    /// `emu` feature, `Device::Emu(precision)`. `Device::parse("cuda:0", "bf16")` reads the
    /// command line's forms. The environment's variables are checked first, as the command
    /// line checks them (docs/rust.md, "Environment"): a `SOFTPROMPT_GEMM` whose library does
    /// not load is an error naming it.
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let model = Model::open("tests/fixtures/bert_mlm", Device::parse("cpu", "f32")?)?;
    /// assert_eq!((model.arch(), model.hidden_size()), ("bert", 48));
    /// assert_eq!(model.device_name(), "cpu");
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, device: DeviceKind) -> Result<Model> {
        let dir = dir.as_ref();
        crate::cpu::threads::check_process()?;
        let engine = match device {
            DeviceKind::Cpu => {
                let be = CpuBackend::<f32>::new();
                let m = train::Model::load(&be, dir)?;
                Engine::Cpu(be, m)
            }
            DeviceKind::Cuda(n, precision) => {
                let be = CudaBackend::cuda_with(n, precision)?;
                let m = train::Model::load(&be, dir)?;
                Engine::Cuda(be, m)
            }
            DeviceKind::Emu(precision) => {
                let be = crate::device::emu_backend(precision)?;
                let m = train::Model::load(&be, dir)?;
                Engine::Cuda(be, m)
            }
        };
        Ok(Model {
            engine,
            recompute: Recompute::None,
        })
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> &Path {
        on_engine!(&self.engine, |_be, m| &m.dir)
    }

    /// The fingerprint of its config.json and tokenizer file, with its folder, that every
    /// task, encoded row and prompt made on it carries.
    pub(crate) fn identity(&self) -> std::sync::Arc<train::ModelId> {
        on_engine!(&self.engine, |_be, m| m.identity.clone())
    }

    /// `bert`, `t5`, `bloom` or `llama` (Llama, Mistral and Qwen2 share one stack).
    pub fn arch(&self) -> &'static str {
        on_engine!(&self.engine, |_be, m| m.arch_name())
    }

    /// Fails with `Error::Unsupported` unless the model can generate (a decoder-only model:
    /// BLOOM, Llama, Mistral, Qwen2), saying so.
    pub fn check_generates(&self) -> Result<()> {
        match self.arch() {
            "bert" | "t5" => Err(cannot_generate(self.arch())),
            _ => Ok(()),
        }
    }

    /// The most positions a row may take, prompt rows included, and what sets it, worded
    /// for messages as the command line's `--max-len` errors word it: BERT's position table
    /// (`max_position_embeddings` in its config.json), or this engine's cap for models
    /// without one (T5, the decoders).
    pub fn position_limit(&self) -> (usize, String) {
        on_engine!(&self.engine, |_be, m| m.position_limit())
    }

    /// d, the width of a prompt row.
    pub fn hidden_size(&self) -> usize {
        on_engine!(&self.engine, |_be, m| m.hidden_size())
    }

    /// The device, as the command line prints it (`cpu`, `cuda:0 (bf16)`, ...).
    pub fn device_name(&self) -> String {
        on_engine!(&self.engine, |be, _m| be.name())
    }

    /// The CPU kernels that shape the results (`gemm/avx512`); empty off the CPU.
    pub fn kernels(&self) -> String {
        on_engine!(&self.engine, |be, _m| be.kernels())
    }

    /// (kernel name, launches so far) of every kernel on this device; empty on the CPU
    /// (`internals::kernel_launches`).
    pub(crate) fn kernel_launches(&self) -> Vec<(&'static str, usize)> {
        match &self.engine {
            Engine::Cpu(..) => Vec::new(),
            Engine::Cuda(be, _) => be.launch_counts(),
        }
    }

    /// The token ids of `text` as the model's tokenizer gives them, special tokens included.
    /// A text of more than 2 MiB (`MAX_TOKENIZE_BYTES`) is an error naming the limit (the
    /// tokenizer keeps about 500 bytes a token: a 60 MB text aborted the process).
    pub fn tokenize(&self, text: &str) -> Result<Vec<i32>> {
        if text.len() > MAX_TOKENIZE_BYTES {
            return Err(Error::arg(
                "text",
                format!(
                    "is {} bytes, more than the {MAX_TOKENIZE_BYTES} Model::tokenize takes \
                     ({BYTES_PER_TOKEN} bytes for each of the {} positions a row may hold, \
                     as Model::encode reads a text): tokenize it in parts",
                    text.len(),
                    crate::models::MAX_TOKENS
                ),
            ));
        }
        on_engine!(&self.engine, |_be, m| m.tokenizer.encode(text, true))
    }

    /// Text of token ids, special tokens left out. An id outside the vocabulary is an error
    /// naming it (such ids were dropped without a word). The vocabulary is the larger of the
    /// tokenizer's and the model's embedding table: a model may generate an id of a padded
    /// table (T5's 32128 rows over its tokenizer's 32100), which decodes to nothing.
    pub fn detokenize(&self, ids: &[i32]) -> Result<String> {
        on_engine!(&self.engine, |_be, m| {
            let tok = &m.tokenizer;
            let n = (tok.max_id().map_or(0, |i| i as usize + 1))
                .max(tok.vocab_size())
                .max(m.net.vocab_size());
            let bad = ids
                .iter()
                .enumerate()
                .find(|(_, &id)| id < 0 || id as usize >= n);
            if let Some((i, id)) = bad {
                return Err(Error::arg(
                    "ids",
                    format!(
                        "id {id} (at index {i}) is outside the vocabulary of {n} ids: expected \
                         0 to {}",
                        n.saturating_sub(1)
                    ),
                ));
            }
            tok.decode(ids, true)
        })
    }

    /// The task a new prompt of `prompt_len` rows trains: the options over the model's
    /// defaults, the labels from `data` when nothing else gives them.
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let model = Model::open("tests/fixtures/t5_v1_1", Device::Cpu)?;
    /// let data = Dataset::from_pairs("mem", [("good film", Some("pos")), ("bad", Some("neg"))]);
    /// let opts = TaskOptions { template: Some("review: {text}".into()), ..Default::default() };
    /// let task = model.task(&opts, Some(&data), 10)?;
    /// assert_eq!(task.kind(), TaskKind::Seq2Seq); // T5's default
    /// assert_eq!(task.labels(), ["neg", "pos"]); // sorted, from the data
    /// assert_eq!(task.spec().label_words, ["neg", "pos"]); // the targets
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn task(
        &self,
        opts: &TaskOptions,
        data: Option<&Dataset>,
        prompt_len: usize,
    ) -> Result<Task> {
        if prompt_len == 0 {
            // new_prompt and train refuse 0 rows: a task for them is of no use
            return Err(Error::arg(
                "prompt_len",
                "is 0: expected at least 1 (the rows of the prompt the task is for)",
            ));
        }
        on_engine!(&self.engine, |_be, m| {
            let spec = resolve(opts, None, m, data, prompt_len)?;
            let inner = train::Task::new(spec, m)?;
            let given = opts.max_len.is_some();
            let inner = super::task::fit_positions(inner, m, prompt_len, given, Placing::Train)?;
            match opts.max_len {
                None => check_room(&inner, m, prompt_len)?,
                // a max_len the template fills trained on no text at all, and its prompt's
                // every later use was refused (hostile pass 33, F4)
                Some(_) => check_given_room(&inner, m, prompt_len)?,
            }
            Ok(Task {
                inner,
                warning: None,
            })
        })
    }

    /// The task of a saved prompt: its task.json (or, for a folder without one, the model's
    /// defaults, and for `cls` the labels in the order its head.safetensors records them)
    /// with the options on top. A `cls` head that records no labels, in a folder without
    /// task.json, is read in the order of the labels sorted unless `opts` names them: see
    /// [`Task::warning`].
    pub fn task_for(
        &self,
        prompt: &Prompt,
        opts: &TaskOptions,
        data: Option<&Dataset>,
    ) -> Result<Task> {
        // the cls task its head's labels make, if it is the task asked (other tasks read no
        // head), and whether there is one: it explains a refusal of the labels below
        let head = on_engine!(&self.engine, |_be, m| {
            let head = (prompt.head_labels(), prompt.head_task());
            head_spec(opts, head, m, prompt.rows())
        });
        let head_read = head.is_some();
        // the task a head records stands for task.json in a folder without one: its max_len
        // is kept as recorded, and a refusal of its settings names the file (review 16)
        let head_task = prompt
            .head_task()
            .filter(|_| head_read && prompt.task.is_none());
        // a closure, so that `?` ends the resolution rather than the method
        let resolved: Result<Task> = on_engine!(&self.engine, |_be, m| (|| {
            fit(prompt, m)?;
            let base = prompt.task.clone().or(head);
            let spec = resolve(opts, base, m, data, prompt.rows())?;
            let warning = head_order_warning(prompt, &spec, opts.labels.is_some());
            let task = train::Task::new(spec, m)?;
            let causal = task.spec.kind == train::TaskKind::Causal;
            m.check_lengths(prompt.rows(), Some(task.spec.max_len).filter(|_| !causal))?;
            // a default max_len leaves rank scoring's targets room; one given (the flag, or
            // task.json's) is checked where rows are scored (`predict`, `predict_mixed`), as
            // `generate` places no target
            let task = match opts.max_len.is_some() || prompt.task.is_some() || head_task.is_some()
            {
                true => task,
                false => super::task::fit_positions(task, m, prompt.rows(), false, Placing::Score)?,
            };
            // a max_len the template fills failed every row of every use
            task.check_text_room(&m.tokenizer)?;
            Ok(Task {
                inner: task,
                warning,
            })
        })());
        // a setting of the task a head records is named as that file's, as task.json's are
        // (the labels have their own words below)
        let resolved = match (resolved, head_task, prompt.dir()) {
            (Err(e), Some(recorded), Some(dir)) if !is_arg(&e, "--labels") => {
                let head = dir.join(train::checkpoint::HEAD_FILE);
                Err(blame_saved(e, opts, recorded, &head))
            }
            (resolved, _, _) => resolved,
        };
        // "give the labels" only to a caller who gave none (review 14, R14-9)
        let unlabelled = opts.labels.is_none() && opts.verbalizer.is_none();
        match (resolved, prompt.saved_task(), prompt.dir()) {
            (Err(e), Some(saved), Some(dir)) => {
                Err(blame_saved(e, opts, saved, &dir.join("task.json")))
            }

            // the labels of a folder without task.json are those its head records
            (Err(Error::Arg { flag, msg }), None, Some(dir)) if flag == "--labels" && head_read => {
                let why = format!(
                    "{msg} ({} holds no task.json; its head.safetensors records the labels \
                     in the order of its rows)",
                    dir.display()
                );
                Err(Error::arg(flag, why))
            }
            // a PEFT folder records no labels: "--labels: ... got []" did not say why
            (Err(Error::Arg { flag, msg }), None, Some(dir))
                if flag == "--labels" && unlabelled =>
            {
                let why = format!(
                    "{msg}: {} holds no task.json (a PEFT folder): give the labels with \
                     --verbalizer (pet, seq2seq, causal) or --labels (cls)",
                    dir.display()
                );
                Err(Error::arg(flag, why))
            }
            // a prompt made in memory records no task either (hostile pass 23, F6)
            (Err(Error::Arg { flag, msg }), None, None) if flag == "--labels" && unlabelled => {
                let why = format!(
                    "{msg}: the prompt, made in memory, records no task: give the labels with \
                     --verbalizer (pet, seq2seq, causal) or --labels (cls)"
                );
                Err(Error::arg(flag, why))
            }
            (r, _, _) => r,
        }
    }

    /// A new prompt of `rows` rows for `task`, initialised as `init` says from the stream
    /// `seed` gives (the same prompt `train` starts from with that seed); a `cls` task's head
    /// starts at zero.
    pub fn new_prompt(
        &self,
        task: &Task,
        rows: usize,
        init: &PromptInit,
        seed: u64,
    ) -> Result<Prompt> {
        crate::cpu::threads::enter_compute()?;
        on_engine!(&self.engine, |be, m| {
            check_model(task, m)?;
            let init = resolve_init(init, &task.inner, m)?;
            crate::train::start::check_fresh_init(&init)?;
            let table = m.init_prompt(be, rows, &init, &mut prompt_init_rng(seed))?;
            let mut prompt = Prompt::from_table(table);
            prompt.head = task.inner.new_head(m.hidden_size());
            prompt.task = Some(task.inner.spec.clone());
            prompt.model = Some(m.identity.clone());
            Ok(prompt)
        })
    }

    /// Encodes a data set for `task`: the template filled, tokenized, cut to max_len, the
    /// labels mapped. An unknown label is an error naming the file and line.
    pub fn encode(&self, task: &Task, data: &Dataset) -> Result<Encoded> {
        self.encode_until(task, data, &mut |_| {}, &NEVER)
    }

    /// One training step's numbers on `rows` (one batch): the mean loss and the gradients of
    /// the prompt (and the `cls` head). Nothing is updated: a custom loop applies them. The
    /// numbers are as computed, as PyTorch's: a loss or gradient that overflowed is NaN or
    /// infinite, for the loop to check (`train` stops on one, naming the step).
    pub fn step(&self, task: &Task, prompt: &Prompt, rows: &[Row]) -> Result<StepOutput> {
        crate::cpu::threads::enter_compute()?;
        if rows.is_empty() {
            return Err(Error::arg(
                "rows",
                "is empty: a step needs at least one row",
            ));
        }
        let enc = Encoded {
            path: PathBuf::from("the batch"),
            rows: rows.to_vec(),
            truncated: 0,
            truncated_targets: 0,
        };
        let all: Vec<u32> = (0..rows.len() as u32).collect();
        let recompute = self.recompute;
        on_engine!(&self.engine, |be, m| {
            // the task's model first, then the rows': each names what is another model's
            check_model(task, m)?;
            check_rows(rows, task, prompt.rows(), m, "rows")?;
            task.inner.check_labels(rows, LabelUse::Step)?;
            // as evaluate and train check theirs: 400,000 rows in one step grew past the
            // machine's memory until the kernel killed the process (hostile pass 24, F2)
            m.check_batch_memory(be, rows, prompt.rows(), BatchSetting::Rows)?;
            let batch = task.inner.batch(&enc, &all)?;
            m.net.check_recompute(recompute)?;
            let params = bind(be, m, task, prompt)?;
            let mut grads = Grads::zeros(be, &params)?;
            let loss = task
                .inner
                .loss_and_grad(be, m, &params, &mut grads, &batch, recompute)?;
            super::mixed::step_output(be, loss, &grads, batch.real_tokens)
        })
    }

    /// Accuracy and macro-F1 on the labelled rows of `data`, and every row's prediction, in
    /// batches of `batch_size` rows.
    pub fn evaluate(
        &self,
        task: &Task,
        prompt: &Prompt,
        data: &Encoded,
        batch_size: usize,
    ) -> Result<(EvalMetrics, Vec<Prediction>)> {
        self.evaluate_until(task, prompt, data, batch_size, &mut |_| {}, &NEVER)
    }

    /// Every row's prediction (the class and per-label scores, or the generated target), in
    /// file order.
    pub fn predict(
        &self,
        task: &Task,
        prompt: &Prompt,
        data: &Encoded,
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        self.predict_until(task, prompt, data, batch_size, &mut |_| {}, &NEVER)
    }

    /// Greedy generation behind the prompt on a decoder-only model, the texts through the
    /// task's template in left-padded batches of 64 (each row gives the tokens it gives alone),
    /// with the KV cache. Each row stops at the task's stop token (the model's
    /// end-of-sequence tokens, or the pad token under `--target-end pad`) or after
    /// `max_new_tokens`.
    ///
    /// ```
    /// use softprompt::prelude::*;
    /// let model = Model::open("tests/fixtures/bloom", Device::Cpu)?;
    /// let task = model.task(&TaskOptions { free_targets: true, ..Default::default() }, None, 4)?;
    /// let prompt = model.new_prompt(&task, 4, &PromptInit::Text("once upon".into()), 0)?;
    /// let texts = ["a story".to_string(), "the end of a much longer story".to_string()];
    /// let out = model.generate(&task, &prompt, &texts, 5, PromptPlacement::BeforeTokens)?;
    /// // batched generation gives each row what it gives alone
    /// let alone = model.generate(&task, &prompt, &texts[1..], 5, PromptPlacement::BeforeTokens)?;
    /// assert_eq!(out[1].ids, alone[0].ids);
    /// assert!(out.iter().all(|g| g.ids.len() <= 5));
    /// # Ok::<(), softprompt::Error>(())
    /// ```
    pub fn generate(
        &self,
        task: &Task,
        prompt: &Prompt,
        texts: &[String],
        max_new_tokens: usize,
        placement: PromptPlacement,
    ) -> Result<Vec<Generation>> {
        self.generate_until(
            task,
            prompt,
            texts,
            max_new_tokens,
            placement,
            &mut |_| {},
            &NEVER,
        )
    }

    /// Checks `prompt` against this model and `task` as every use of the two together does,
    /// without running anything: its width (or a prefix adapter's layout) fits the model, its
    /// values are finite, and for `cls` it has a head with one output per label of the task.
    /// [`Model::task_for`] checks the width alone; a server that loads a prompt once checks
    /// the rest here rather than failing every request on it.
    pub fn check_prompt(&self, task: &Task, prompt: &Prompt) -> Result<()> {
        on_engine!(&self.engine, |_be, m| checked(m, task, prompt).map(|_| ()))
    }
}

/// Whether `e` is an argument error about `flag`.
fn is_arg(e: &Error, flag: &str) -> bool {
    matches!(e, Error::Arg { flag: f, .. } if f == flag)
}

/// An error about a task setting the user did not pass names the prompt's task.json, where
/// the value came from, instead of the flag. `serve` (its `registry.rs`) reads this wording
/// to name the file's key to a client, who passes no flags.
fn blame_saved(e: Error, opts: &TaskOptions, saved: &train::TaskSpec, task_json: &Path) -> Error {
    let Error::Arg { flag, msg } = &e else {
        return e;
    };
    // a task of another kind than the file's starts from that kind's defaults: nothing came
    // from the file (hostile pass 35, F5)
    if opts.task.is_some_and(|t| t != saved.kind) {
        return e;
    }
    // the value task.json holds, given again, changes nothing (review 15, R15-2)
    let target_end = opts.target_end.is_some_and(|t| t != saved.target_end);
    let given = match flag.as_str() {
        "--task" => opts.task.is_some(),
        "--template" => opts.template.is_some(),
        "--labels" => opts.labels.is_some(),
        "--verbalizer" => opts.verbalizer.is_some(),
        "--pooling" => opts.pooling.is_some(),
        "--max-len" => opts.max_len.is_some(),
        "--max-target-len" => opts.max_target_len.is_some(),
        // a label target the user gave that greedy decoding cannot produce (task.rs's
        // `check_generable`) is the user's flag's doing, not task.json's
        "--decode" => opts.decode.is_some() || opts.verbalizer.is_some() || target_end,
        "--target-end" => target_end,
        _ => true,
    };
    if given {
        return e;
    }
    Error::file(
        task_json,
        format!("{msg} (the setting comes from this file; {flag} overrides it)"),
    )
}

/// With the default max_len (what the model's positions leave next to the prompt), a row
/// must still have room for text beside the template: else the prompt is what is too long.
fn check_room<B: Backend>(task: &train::Task, model: &train::Model<B>, p: usize) -> Result<()> {
    if task.check_text_room(&model.tokenizer).is_ok() {
        return Ok(());
    }
    // the advice: max_len is the model's, so the prompt or the template must give way
    let fixed = task.template_tokens(&model.tokenizer)?;
    Err(room_refusal(p, task.spec.max_len, fixed))
}

/// A max_len given must hold the template and a token of text; where no max_len the
/// positions beside the prompt allow would, the prompt or the template must give way (the
/// advice was a --max-len that the position check refused in turn; verification 32, R1-a).
fn check_given_room<B: Backend>(
    task: &train::Task,
    model: &train::Model<B>,
    p: usize,
) -> Result<()> {
    let Err(e) = task.check_text_room(&model.tokenizer) else {
        return Ok(());
    };
    let fixed = task.template_tokens(&model.tokenizer)?;
    let room = model.position_limit().0.saturating_sub(p);
    if room > fixed {
        return Err(e);
    }
    // neither flag alone: the pair that works, where one does (the prompt's advice alone
    // was refused in turn for the --max-len given; verification 33, N5)
    let max_len = task.spec.max_len;
    let most = (p + room).saturating_sub(fixed + 1);
    match max_len <= fixed && most > 0 {
        true => Err(Error::arg(
            "--max-len",
            format!(
                "{max_len} tokens cannot hold the template and special tokens ({fixed} tokens \
                 without the text) and a token of text, and {p} rows of prompt leave {room} of \
                 the model's positions for a row: use --max-len {} or more with --prompt-len \
                 {most} or less",
                fixed + 1
            ),
        )),
        false => Err(room_refusal(p, room, fixed)),
    }
}

/// The refusal of a prompt of `p` rows that leaves `room` positions for a row whose template
/// and special tokens take `fixed`: a shorter prompt, or where none leaves room, a shorter
/// template.
fn room_refusal(p: usize, room: usize, fixed: usize) -> Error {
    let most = (p + room).saturating_sub(fixed + 1);
    if most == 0 {
        // no prompt length leaves room: the template is what is too long
        return Error::arg(
            "--template",
            format!(
                "with its special tokens it takes {fixed} tokens without the text, and the \
                 model has {} positions for a row and its prompt: shorten the template",
                p + room
            ),
        );
    }
    Error::arg(
        "--prompt-len",
        format!(
            "{p} rows leave {room} of the model's positions for a row, and the template with \
             its special tokens takes {fixed} without the text: use --prompt-len {most} or less"
        ),
    )
}

/// The refusal of generation on a model of `arch`, which has no decoder-only stack.
pub(crate) fn cannot_generate(arch: &str) -> Error {
    Error::Unsupported(format!(
        "generate needs a decoder-only model (BLOOM, Llama, Mistral, Qwen2), not {arch}"
    ))
}
