//! Training, evaluation and prediction on real data. The command line (`softprompt train`,
//! `eval`, `predict`) is a thin layer over this module.
//!
//! The pieces, in the order a run uses them:
//! - [`Model`]: a frozen model folder (BERT or T5) with its tokenizer;
//! - [`data::Dataset`]: a jsonl/tsv/csv file of texts and labels;
//! - [`Task`]: `pet`, `cls` or `seq2seq`, resolved against the tokenizer; it encodes rows,
//!   builds right-padded batches, and computes a batch's loss and prompt gradient
//!   ([`Task::loss_and_grad`]) or its per-label scores ([`Task::scores`]);
//! - [`optim::Optimizer`]: AdamW or Lester's Adafactor over the prompt (and the `cls` head);
//! - [`Trainer`]: the loop: bucketed deterministic batches, schedules, clipping, evaluation on
//!   a dev split, the best prompt, early stopping, metrics, atomic checkpoints and resume.
//!
//! One training step by hand, on the committed PET fixture:
//!
//! ```
//! use softprompt::internals::{CpuBackend, backend::DType, backend::traits::*, rng::Rng, prompt::PromptInit};
//! use softprompt::internals::models::Recompute;
//! use softprompt::internals::train::{Model, Task, TaskSpec, TaskKind, Params, Grads, evaluate, predict_all};
//! use softprompt::internals::train::{optimizer_shapes, optimizer_step};
//! use softprompt::internals::train::checkpoint::{save_prompt_dir, load_prompt_dir};
//! use softprompt::internals::train::data::{Dataset, DataSpec};
//! use softprompt::internals::train::optim::{OptimConfig, Optimizer};
//!
//! let be = CpuBackend::<f32>::new();
//! let model = Model::load(&be, "tests/fixtures/bert_mlm".as_ref()).unwrap();
//! let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
//! spec.label_words = vec!["bad".into(), "great".into()];
//! spec.max_len = 48; // the fixture has 64 positions, and the prompt takes 4
//! let task = Task::new(spec, &model).unwrap();
//! let data = Dataset::parse("mem.jsonl".as_ref(),
//!     "{\"text\": \"The movie was great.\", \"label\": \"positive\"}\n\
//!      {\"text\": \"Terrible plot.\", \"label\": \"negative\"}\n", &DataSpec::default()).unwrap();
//! let enc = task.encode(&model.tokenizer, &data).unwrap();
//!
//! // a prompt of 4 rows, initialised from a text
//! let table = model.init_prompt(&be, 4, &PromptInit::Text("great movie".into()), &mut Rng::new(0)).unwrap();
//! let mut params = Params { prompt: be.upload(DType::F32, &table.data).unwrap(), p: 4, d: 48, head: None, prefix: None };
//!
//! // loss and prompt gradient of one batch
//! let batch = task.batch(&enc, &[0, 1]).unwrap();
//! let mut grads = Grads::zeros(&be, &params).unwrap();
//! let loss = task.loss_and_grad(&be, &model, &params, &mut grads, &batch, Recompute::None).unwrap();
//! assert!(loss > 0.0);
//!
//! // one AdamW step (clipped to norm 1), then the loss is lower
//! let mut opt = Optimizer::new(&be, OptimConfig::adamw(0.05, 0.0), &optimizer_shapes(&params)).unwrap();
//! let (lr, grad_norm) = optimizer_step(&be, &mut opt, &mut params, grads, Some(1.0)).unwrap();
//! assert!(lr == 0.05 && grad_norm > 0.0);
//! let mut g2 = Grads::zeros(&be, &params).unwrap();
//! let loss2 = task.loss_and_grad(&be, &model, &params, &mut g2, &batch, Recompute::None).unwrap();
//! assert!(loss2 < loss, "{loss2} >= {loss}");
//!
//! // evaluate: accuracy and macro-F1, and per-row predictions with per-label scores
//! let (metrics, preds) = evaluate(&be, &model, &task, &params, &enc, 8).unwrap();
//! assert_eq!(metrics.examples, 2);
//! assert_eq!(preds[0].scores.len(), 2);
//!
//! // save (PEFT layout + task.json), load again, and predict the same
//! let out = std::env::temp_dir().join(format!("sp_doc_prompt_{}", std::process::id()));
//! let mut saved = table.clone();
//! saved.data = be.download(&params.prompt).unwrap();
//! let info = model.adapter_info(task.spec.kind.peft_task_type());
//! save_prompt_dir(&out, &saved, (None, None), &task.spec, &model.dir, &info, serde_json::json!({})).unwrap();
//! let back = load_prompt_dir(&out).unwrap();
//! assert_eq!(back.prompt.data, saved.data);
//! assert_eq!(back.task.as_ref(), Some(&task.spec));
//! let head = back.head.map(|h| h.upload(&be)).transpose().unwrap();
//! let reloaded = Params { prompt: be.upload(DType::F32, &back.prompt.data).unwrap(), p: 4, d: 48, head, prefix: None };
//! assert_eq!(predict_all(&be, &model, &task, &reloaded, &enc, 8).unwrap(), preds);
//! ```
//!
//! The files, each importing only those before it: `spec` (the task's definition and
//! `task.json`) → `task` (resolved against a tokenizer; the model × task match) → `encode`
//! (rows) → `batch` (batches of them) → `step` (the trainable state, loss and gradient) →
//! `decode` (scores and predictions) → `eval`; `update` (the optimizer step); `trainer`
//! (settings, start and resume) → `run` (the loop).

pub mod batch;
pub mod causal;
pub mod checkpoint;
pub mod data;
pub mod data_formats;
pub mod decode;
pub mod encode;
pub(crate) mod encode_text;
pub mod encoder;
pub mod eval;
mod head_file;
pub mod label_twins;
pub mod metrics;
pub mod mixed;
mod mixed_grads;
pub mod mixed_greedy;
mod mixed_groups;
pub mod mixed_lm;
pub mod mixed_prefix;
pub mod model;
pub mod model_id;
pub mod multitask;
pub mod multitask_ckpt;
pub mod multitask_run;
pub mod optim;
mod out_aside;
mod out_lock;
pub mod outdir;
mod prompt_advice;
mod prompt_dir;
pub mod ptuning;
pub(crate) mod rate_clock;
pub(crate) mod room;
pub mod run;
pub mod save;
pub mod save_lock;
pub mod settings_diff;
pub mod spec;
pub mod start;
pub mod step;
pub mod task;
mod task_record;
pub mod trainer;
pub mod update;

pub use batch::Batch;
pub use decode::Prediction;
pub use encode::Encoded;
pub use eval::{evaluate, evaluate_until, predict_all, predict_until};
pub use metrics::EvalMetrics;
pub use model::Model;
pub use model_id::ModelId;
pub use multitask::{MultiTrainer, TaskJob};
pub use ptuning::{Method, PTuning, PrefixTuning};
pub use spec::{Decode, TargetEnd, TaskKind, TaskSpec};
pub use step::{Grads, Params};
pub use task::Task;
pub use trainer::{Event, StepInfo, Summary, TrainConfig, Trainer};
pub use update::{encoder_optimizer_shapes, encoder_step, optimizer_shapes, optimizer_step};
