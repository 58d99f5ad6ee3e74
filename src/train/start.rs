//! How every run starts, the single-task `Trainer` (trainer.rs) and the multi-task one
//! (multitask.rs) alike: the checks made before anything is allocated or written, the
//! prompt's init and its random stream, the settings hashed into checkpoints, and the state
//! of a fresh run or of a resumed one.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::batch::LabelUse;
use super::checkpoint::{self, Checkpoint, TrainState, CHECKPOINT_FILE};
use super::data;
use super::encode::Encoded;
use super::encoder::HostEncoder;
use super::eval::check_labelled;
use super::model::Model;
use super::optim::Optimizer;
use super::ptuning::{self, Method};
use super::spec::TaskKind;
use super::step::Params;
use super::task::Task;
use super::trainer::{encoder_width, table_width, TrainConfig};
use crate::backend::{Backend, DType};
use crate::error::{BatchSetting, Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::prompt::{PromptInit, PromptTable};
use crate::rng::Rng;
use serde_json::{json, Value};
use std::path::Path;

/// The random stream a prompt's init draws from for a run's `seed` (the data order draws from
/// another).
pub(crate) fn prompt_init_rng(seed: u64) -> Rng {
    Rng::new(seed ^ 0x5052_4f4d_5054_u64)
}

/// The init with what it needs from the task filled in: class labels' token ids. Labels a
/// caller gave must be the task's (they were replaced by them without a word).
pub(crate) fn resolve_init<B: Backend>(
    init: &PromptInit,
    task: &Task,
    model: &Model<B>,
) -> Result<PromptInit> {
    Ok(match init {
        PromptInit::ClassLabels { labels, from_first } => {
            let pieces = task.class_label_pieces(&model.tokenizer)?;
            if !labels.is_empty() && *labels != pieces {
                let msg = format!(
                    "PromptInit::ClassLabels lists the labels and pieces {labels:?}, but the \
                     task's labels and their words give {pieces:?}: leave `labels` empty (the \
                     task fills them) or give the task's"
                );
                return Err(crate::error::Error::arg("init", msg));
            }
            PromptInit::ClassLabels {
                labels: pieces,
                from_first: *from_first,
            }
        }
        other => other.clone(),
    })
}

/// Refuses an init that cannot do what it says for a fresh prompt: class labels of a task
/// without labels (free targets), which drew sample-vocab's rows without a word. A recorded
/// run resumes as it was (its prompt comes from its checkpoint).
pub(crate) fn check_fresh_init(init: &PromptInit) -> Result<()> {
    match init {
        PromptInit::ClassLabels { labels, .. } if labels.is_empty() => {
            Err(crate::error::Error::arg(
                "--init",
                "class-labels fills prompt rows with the labels' words, and this task has no \
                 labels (free targets): choose another init (sample-vocab draws the same rows \
                 without the labels)",
            ))
        }
        _ => Ok(()),
    }
}

/// What a run (or a task of a multi-task run) trains, as it starts: the table on the device
/// (a prompt, or under prefix tuning the prefix), its PEFT facts, and the host encoder whose
/// output the table is (P-tuning's, a prefix projection), with the one that gave the best
/// table so far (a resumed run's).
pub(super) struct Trained<B: Backend> {
    pub params: Params<B>,
    /// the table's PEFT facts (init name and text)
    pub table: PromptTable,
    pub encoder: Option<HostEncoder>,
    pub best_encoder: Option<HostEncoder>,
}

/// A fresh run's table (and head) for `cfg` (its init resolved), drawn from `cfg.seed`'s
/// init stream: prompt rows from the init, a prefix N(0, 1) as PEFT's embedding, or the
/// output of a fresh encoder.
pub(super) fn fresh_trained<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    cfg: &TrainConfig,
) -> Result<Trained<B>> {
    check_fresh_init(&cfg.init)?;
    // separate streams: the prompt's init, and the data order
    let mut rng = prompt_init_rng(cfg.seed);
    let (p, d) = (cfg.prompt_len, model.hidden_size());
    let width = table_width(&cfg.method, model);
    let (table, encoder) =
        match cfg
            .method
            .encoder_spec(p, encoder_width(&cfg.method, model), width)
        {
            // PEFT's prefix is an nn.Embedding: N(0, 1)
            None if width != d => {
                let data = (0..p * width).map(|_| rng.normal() as f32).collect();
                (PromptTable::from_data(p, width, data)?, None)
            }
            None => (model.init_prompt(be, p, &cfg.init, &mut rng)?, None),
            Some(c) => {
                let enc = HostEncoder::init(c, &mut rng)?;
                (
                    PromptTable::from_data(p, width, enc.forward()?.0)?,
                    Some(enc),
                )
            }
        };
    let params = Params {
        prompt: be.upload(DType::F32, &table.data)?,
        p: table.p,
        d: table.d,
        head: task.new_head(d).map(|h| h.upload(be)).transpose()?,
        prefix: cfg.method.prefix_spec(p),
    };
    Ok(Trained {
        params,
        table,
        encoder,
        best_encoder: None,
    })
}

/// The table's PEFT facts a checkpoint's settings record (init name and text), over `data`
/// (P x width).
pub(super) fn checkpoint_table(
    ck: &Checkpoint,
    p: usize,
    width: usize,
    data: Vec<f32>,
) -> Result<PromptTable> {
    let mut table = PromptTable::from_data(p, width, data)?;
    let facts = InitFacts::of_checkpoint(ck);
    table.init = facts.kind.to_string();
    table.init_text = facts.text.map(String::from);
    Ok(table)
}

/// How a prompt table was initialised, as the settings hash records it.
pub(super) struct InitFacts<'a> {
    pub kind: &'a str,
    pub text: Option<&'a str>,
}

impl<'a> InitFacts<'a> {
    pub fn of_table(table: &'a PromptTable) -> Self {
        InitFacts {
            kind: &table.init,
            text: table.init_text.as_deref(),
        }
    }

    /// The facts a checkpoint's settings hold (RANDOM where an old one holds none).
    pub fn of_checkpoint(ck: &'a Checkpoint) -> Self {
        let text = |k: &str| ck.state.config.get(k).and_then(|v| v.as_str());
        InitFacts {
            kind: text("init").unwrap_or("RANDOM"),
            text: text("init_text"),
        }
    }
}

/// A resumed run's table, head and encoders read from checkpoint `ck` (whose settings are
/// `cfg`'s), each checked against its shape.
pub(super) fn checkpoint_trained<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    cfg: &TrainConfig,
    ck: &Checkpoint,
) -> Result<Trained<B>> {
    let (p, d, width) = (
        cfg.prompt_len,
        model.hidden_size(),
        table_width(&cfg.method, model),
    );
    let prompt = ck.get_shaped("prompt", &[p, width], "P x d")?.to_vec();
    let table = checkpoint_table(ck, p, width, prompt)?;
    let head = task
        .new_head(d)
        .map(|mut h| -> Result<_> {
            h.weight = ck
                .get_shaped("head.weight", &[h.k, d], "labels x d")?
                .to_vec();
            h.bias = ck.get_shaped("head.bias", &[h.k], "labels")?.to_vec();
            h.upload(be)
        })
        .transpose()?;
    let params = Params {
        prompt: be.upload(DType::F32, &table.data)?,
        p,
        d: width,
        head,
        prefix: cfg.method.prefix_spec(p),
    };
    let (encoder, best_encoder) =
        match cfg
            .method
            .encoder_spec(p, encoder_width(&cfg.method, model), width)
        {
            None => (None, None),
            Some(c) => {
                let best = ck.tensors.contains_key("best.prompt");
                (
                    Some(ptuning::from_checkpoint(c, ck, "encoder.")?),
                    best.then(|| ptuning::from_checkpoint(c, ck, "best.encoder."))
                        .transpose()?,
                )
            }
        };
    Ok(Trained {
        params,
        table,
        encoder,
        best_encoder,
    })
}

/// Everything that can be checked before a byte is allocated or written: the settings'
/// ranges, flags that would do nothing, the prompt and rows against the model's positions,
/// and the memory of a training and an evaluation step against the machine's.
pub(super) fn precheck<B: Backend>(
    be: &B,
    model: &Model<B>,
    task: &Task,
    train: &Encoded,
    evals: [Option<&Encoded>; 2],
    cfg: &TrainConfig,
) -> Result<()> {
    cfg.validate()?;
    model.net.check_recompute(cfg.recompute)?;
    check_placement(&cfg.method, model)?;
    // without a dev split nothing is evaluated during the run: these flags would do nothing
    if evals[0].is_none() {
        if cfg.patience.is_some() {
            return Err(Error::arg(
                "cfg.patience",
                "early stopping needs a dev split: pass `dev`",
            ));
        }
        if cfg.eval_every > 0 {
            return Err(Error::arg(
                "cfg.eval_every",
                "evaluating during the run needs a dev split: pass `dev`",
            ));
        }
    }
    // a rate of 0 freezes the prompt: the run trains something only through a cls head with
    // a rate of its own
    let head_trains = task.spec.kind == TaskKind::Cls && cfg.optim.head_lr.is_some_and(|h| h > 0.0);
    if cfg.optim.lr <= 0.0 && !head_trains {
        return Err(Error::arg(
            "cfg.optim.lr",
            format!(
                "{} trains nothing: expected a number > 0 (0 freezes the prompt, which makes \
                 sense only beside a cls head trained by `cfg.optim.head_lr` > 0)",
                cfg.optim.lr
            ),
        ));
    }
    model.check_lengths(cfg.prompt_len, Some(task.spec.max_len))?;
    // a causal row's target follows its text: a target past the positions trained silently
    super::room::check_room(task, model, cfg.prompt_len, super::room::Placing::Train)?;
    // rows made by hand: a row without a label failed in its batch, named by its place there
    task.check_labels(&train.rows, LabelUse::Step)?;
    let longest = |enc: &Encoded| {
        let ids = enc.rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let target = enc.rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
        (enc.rows.len(), cfg.prompt_len + ids, target)
    };
    let (rows, tokens, target) = longest(train);
    model.check_step_memory(
        be,
        rows.min(cfg.batch_size),
        tokens,
        target,
        BatchSetting::Train,
    )?;
    for enc in evals.into_iter().flatten() {
        // a dev or test row with a label past the task's failed at the first evaluation,
        // after steps and a checkpoint were written
        check_labelled(task, enc)?;
        let (rows, tokens, target) = longest(enc);
        let rows = rows.min(cfg.eval_batch_size);
        model.check_forward_memory(be, rows, tokens, target, BatchSetting::Eval)?;
    }
    Ok(())
}

/// `cfg.optim.head_lr` (--head-lr) is the rate of a cls task's head: with no cls task among
/// `kinds` nothing would read it. Checked for fresh runs: a run that recorded it resumes.
pub(super) fn check_head_lr(
    kinds: impl IntoIterator<Item = TaskKind>,
    cfg: &TrainConfig,
) -> Result<()> {
    if cfg.optim.head_lr.is_some() && !kinds.into_iter().any(|k| k == TaskKind::Cls) {
        return Err(Error::arg(
            "cfg.optim.head_lr",
            "sets the rate of a cls task's head, and no task of this run is cls: leave it out",
        ));
    }
    Ok(())
}

/// `--prefix-placement peft` differs from `papers` only on T5: elsewhere it would only look
/// like a choice.
fn check_placement<B: Backend>(method: &Method, model: &Model<B>) -> Result<()> {
    match method {
        Method::Prefix(pre)
            if pre.placement == crate::models::Placement::Peft && model.arch_name() != "t5" =>
        {
            Err(Error::arg(
                "--prefix-placement",
                format!(
                    "peft: only T5 has a choice of placement (PEFT's reading of the blocks); {} \
                     puts one block in front of every layer's keys either way: leave it at papers",
                    model.arch_name()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Fails on an empty training file, or on a row that does not fit next to the prompt.
pub(super) fn check_rows<B: Backend>(
    model: &Model<B>,
    train: &Encoded,
    prompt_len: usize,
) -> Result<()> {
    if train.rows.is_empty() {
        return Err(Error::data(&train.path, 1, "no training rows"));
    }
    if let Some(limit) = model.max_tokens(prompt_len) {
        if let Some(r) = train.rows.iter().find(|r| r.ids.len() > limit) {
            return Err(Error::data(&train.path, r.line, format!("{} tokens + a prompt of {} exceed the model's positions: lower --max-len to {limit}", r.ids.len(), prompt_len)));
        }
    }
    Ok(())
}

/// A run's steps per epoch over `train_rows` rows, and its total steps (`max_steps`, or its
/// epochs').
pub(super) fn step_counts(cfg: &TrainConfig, train_rows: usize) -> (u64, u64) {
    let steps_per_epoch = train_rows.div_ceil(cfg.batch_size.max(1)) as u64;
    let total = (cfg.max_steps).unwrap_or(cfg.epochs.saturating_mul(steps_per_epoch));
    (steps_per_epoch, total)
}

/// A fresh run's state: step 0, the first epoch's plan drawn from `cfg.seed`.
pub(super) fn fresh_state(
    cfg: &TrainConfig,
    lens: &[usize],
    config: Value,
    hash: String,
) -> TrainState {
    let mut rng = Rng::new(cfg.seed);
    let plan = data::epoch_plan(lens, cfg.batch_size, cfg.bucket_pool, &mut rng);
    TrainState {
        format: checkpoint::CHECKPOINT_FORMAT,
        step: 0,
        epoch: 1,
        plan,
        pos: 0,
        rng,
        best: None,
        best_test: None,
        best_step: 0,
        evals_since_best: 0,
        done: false,
        config_hash: hash,
        config,
        threads: cfg.threads,
        device: String::new(),
        kernels: String::new(),
        log_window: Default::default(),
        eval_window: Default::default(),
    }
}

/// The state of checkpoint `ck`, whose settings must hash to `hash` and whose plan must hold
/// the `rows` training rows: the optimizer's state goes into `opt`, and the best prompt (and head) so far comes back with the state.
#[allow(clippy::type_complexity)]
pub(super) fn resumed_state<B: Backend>(
    be: &B,
    ck: Checkpoint,
    opt: &mut Optimizer<B>,
    params: &Params<B>,
    (config, hash): (Value, String),
    (cfg, rows): (&TrainConfig, usize),
    out: &Path,
) -> Result<(TrainState, Option<(Vec<f32>, Option<HostClsHead>)>)> {
    if ck.state.config_hash != hash {
        // settings equal but for the model folder's spelling (a checkpoint written before
        // the path was made canonical) resume
        let diff = settings_diff(&ck.state.config, &config);
        if !diff.is_empty() {
            return Err(other_settings(out, &diff));
        }
    }
    let path = out.join(CHECKPOINT_FILE);
    ck.state
        .check_progress(&path, cfg.optim.schedule.total, cfg.patience)?;
    ck.state.check_plan(&path, rows, cfg.batch_size)?;
    ck.state
        .check_best(&path, ck.tensors.contains_key("best.prompt"))?;
    ck.check_second_moments(&path)?;
    // a state of another size is the checkpoint's fault (bad input, exit 2), not a size
    // mismatch inside the engine (exit 1, the code of a diverged run)
    let opt_state = |n: &str| -> Result<Vec<f32>> {
        match ck.tensors.get(n) {
            Some((_, d)) => Ok(d.clone()),
            None => Err(Error::file(&path, format!("the optimizer's tensor `{n}` is missing: the checkpoint belongs to another run or is corrupt"))),
        }
    };
    opt.load_state(be, ck.state.step, &opt_state)
        .map_err(|e| match e {
            Error::Shape {
                what,
                expected,
                got,
            } => Error::file(
                &path,
                format!(
                    "the optimizer's tensor `{what}` has {got} values, expected {expected} for \
                     this model, task and optimizer: the checkpoint belongs to another run or \
                     is corrupt"
                ),
            ),
            e => e,
        })?;
    let best = match ck.tensors.contains_key("best.prompt") {
        true => {
            let p = ck.get_shaped("best.prompt", &[params.p, params.d], "P x d")?;
            let head = params
                .head
                .as_ref()
                .map(|h| -> Result<HostClsHead> {
                    Ok(HostClsHead {
                        k: h.k,
                        c: h.c,
                        weight: ck
                            .get_shaped("best.head.weight", &[h.k, h.c], "labels x d")?
                            .to_vec(),
                        bias: ck.get_shaped("best.head.bias", &[h.k], "labels")?.to_vec(),
                    })
                })
                .transpose()?;
            Some((p.to_vec(), head))
        }
        false => None,
    };
    Ok((ck.state, best))
}

/// The model folder as the settings record it: canonical, so that `./x/` and `/abs/x` are
/// one folder to a resume.
pub(super) fn model_key(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.display().to_string()
}

/// The keys whose values differ between a checkpoint's settings `ck` and a run's `now`, a
/// `model` spelled another way for the same folder not among them, nor `recompute`: what
/// backward keeps or recomputes changes no number (every mode gives the same losses and
/// prompt bit for bit), so a run may resume under another to fit a smaller memory.
pub(super) fn settings_diff(ck: &Value, now: &Value) -> Vec<String> {
    let (mut ck, mut now) = (ck.clone(), now.clone());
    for o in [&mut ck, &mut now]
        .into_iter()
        .filter_map(Value::as_object_mut)
    {
        o.remove("recompute");
    }
    // `epochs` counts nothing where both runs set `max_steps`: a resume naming other epochs
    // (or none) was refused (hostile pass 28, F2)
    let steps_set = |v: &Value| v.get("max_steps").is_some_and(|m| !m.is_null());
    if steps_set(&ck) && steps_set(&now) {
        for o in [&mut ck, &mut now]
            .into_iter()
            .filter_map(Value::as_object_mut)
        {
            o.remove("epochs");
        }
    }
    // a checkpoint of an earlier build hashed no dev or test rows: it resumes as it did
    if let (Some(c), Some(n)) = (ck.as_object(), now.as_object_mut()) {
        for key in ["dev_rows", "test_rows"]
            .into_iter()
            .filter(|k| !c.contains_key(*k))
        {
            n.remove(key);
        }
    }
    let now = &now;
    let spelled = |v: &Value| {
        v.get("model")
            .and_then(Value::as_str)
            .map(Path::new)
            .map(model_key)
    };
    if let (Some(a), Some(b), Some(o)) = (spelled(&ck), spelled(now), ck.as_object_mut()) {
        if a == b {
            o.insert(
                "model".into(),
                now.get("model").cloned().unwrap_or_default(),
            );
        }
    }
    let mut diff = super::settings_diff::config_diff(&ck, now);
    // the rows are encoded by the task: another template changes them, and the file was
    // blamed (hostile pass 25, F7)
    // (a key of the task, `task.template: ...`, or the task whole)
    let task_changed = (diff.iter()).any(|d| d.starts_with("task: ") || d.starts_with("task."));
    for d in diff.iter_mut().filter(|d| d.contains("_rows: ")) {
        // a hash says nothing of why: the split given once only, the file, or how it is read
        d.push_str(match d.contains("null") {
            true => " (the split is given in one run and not the other)",
            false if task_changed => {
                " (a hash of the rows as the task encodes them, which changed with the task)"
            }
            false => {
                " (a hash of the rows as read: the file changed, or it is read another way: \
                 its quoting, format, fields or max_len)"
            }
        });
    }
    diff
}

/// Refuses a checkpoint whose prefix projection is not `width` wide (PEFT's token_dim,
/// `trainer::encoder_width`): releases before 2026-12-07 built it the model's width on a
/// grouped-query model and on a T5 whose heads x d_kv is not d_model, another network than
/// PEFT's (hostile pass 28, F1); its resume was refused as "other settings" to resume with
/// the same flags, or by a bare tensor shape (review 22). Only a projection the model's
/// width `d` wide, of a run on this model folder, is taken for one: another model's
/// checkpoint is the settings' to name (reviews 23 and 24: another model of the same width
/// was told of an earlier release).
pub(super) fn check_projection_width<B: Backend>(
    ck: &Checkpoint,
    method: &Method,
    model: &Model<B>,
    path: &Path,
) -> Result<()> {
    let Method::Prefix(pre) = method else {
        return Ok(());
    };
    let (width, d) = (method.encoder_width(&model.net), model.hidden_size());
    let saved_model = ck.state.config.get("model").and_then(Value::as_str);
    let same_model = saved_model.map(|m| model_key(Path::new(m))) == Some(model_key(&model.dir));
    let saved = ck.tensors.get("encoder.embedding.weight");
    match saved.and_then(|(shape, _)| shape.get(1)) {
        Some(&w) if pre.projection && w != width && w == d && same_model => Err(Error::file(
            path,
            format!(
                "the run's prefix projection is {w} wide, where this release builds it {width} \
                 wide, PEFT's token_dim (the keys' and values' width): releases before \
                 2026-12-07 built it the model's width on a grouped-query model or a T5 whose \
                 heads x d_kv is not d_model, another network than PEFT's, which this release \
                 does not continue: train again (set `cfg.overwrite` to replace it, or train \
                 into another `out`); the run's saved prompt (adapter_model.safetensors) still \
                 evaluates and predicts"
            ),
        )),
        _ => Ok(()),
    }
}

/// A hash of the rows as encoded: ids, label, target, [MASK] position.
pub(super) fn rows_hash(rows: &Encoded) -> String {
    let mut text = String::new();
    for r in &rows.rows {
        text.push_str(&format!(
            "{:?}{:?}{:?}{};",
            r.ids, r.label, r.target, r.mask_pos
        ));
    }
    checkpoint::fnv1a(&text)
}

/// The error of a resume whose settings differ from the checkpoint's, naming each difference.
pub(super) fn other_settings(out: &Path, diff: &[String]) -> Error {
    Error::file(out.join(CHECKPOINT_FILE), format!("the checkpoint was written with other settings; resume with the same flags, or train into a new `out`. Differences: {}", diff.join("; ")))
}

/// The settings that shape the numbers, as one JSON object (hashed into checkpoints).
pub(super) fn settings_json<B: Backend>(
    cfg: &TrainConfig,
    task: &Task,
    (train, dev, test): (&Encoded, Option<&Encoded>, Option<&Encoded>),
    model: &Model<B>,
    init: InitFacts,
) -> Value {
    let o = &cfg.optim;
    let mut settings = json!({
        "model": model_key(&model.dir),
        "task": task.spec.to_json(),
        // the rows themselves, so that a changed file (or one read another way: its quoting)
        // is noticed; the dev rows pick the kept prompt and the early stop, and the kept
        // prompt's test score is carried in the checkpoint
        "train_rows": rows_hash(train),
        "dev_rows": dev.map(rows_hash),
        "test_rows": test.map(rows_hash),
        "prompt_len": cfg.prompt_len,
        "init": init.kind,
        "init_text": init.text,
        "init_spec": format!("{:?}", cfg.init),
        "optimizer": o.kind.name(),
        "lr": o.lr, "head_lr": o.head_lr, "weight_decay": o.weight_decay,
        "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps, "decay_rate": o.decay_rate, "clip_threshold": o.clip_threshold,
        "schedule": format!("{:?}", o.schedule.kind), "warmup": o.schedule.warmup,
        "max_grad_norm": o.max_grad_norm,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs, "max_steps": cfg.max_steps,
        "eval_every": cfg.eval_every, "patience": cfg.patience,
        "seed": cfg.seed,
        "recompute": format!("{:?}", cfg.recompute),
        "bucket_pool": cfg.bucket_pool,
    });
    // only the other methods add a key: prompt tuning's hash stays the one of earlier
    // checkpoints
    let method = cfg
        .method
        .settings(cfg.prompt_len, encoder_width(&cfg.method, model));
    if let (false, Some(obj)) = (method.is_null(), settings.as_object_mut()) {
        obj.insert("method".into(), method);
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::settings_diff;
    use serde_json::json;

    /// Rows whose hash changed with the task (another template) are said to be the task's
    /// doing, not the file's (hostile pass 25, F7).
    #[test]
    fn rows_changed_with_the_task_blame_the_task() {
        let ck = json!({"task": {"template": "{text}"}, "train_rows": "aa"});
        let now = json!({"task": {"template": "Q: {text}"}, "train_rows": "bb"});
        let diff = settings_diff(&ck, &now);
        assert!(
            diff.iter().any(|d| d.starts_with("task.template: ")),
            "{diff:?}"
        );
        let rows = diff.iter().find(|d| d.starts_with("train_rows: ")).unwrap();
        assert!(rows.ends_with("which changed with the task)"), "{rows}");
        let same_task = json!({"task": {"template": "{text}"}, "train_rows": "bb"});
        let diff = settings_diff(&ck, &same_task);
        assert!(diff[0].contains("the file changed"), "{diff:?}");
    }

    /// `epochs` is no difference where both runs set `max_steps`, which overrides it; it is
    /// where either does not (hostile pass 28, F2).
    #[test]
    fn epochs_differ_only_where_they_count() {
        let run = |epochs: u64, steps: Option<u64>| json!({"epochs": epochs, "max_steps": steps});
        assert_eq!(
            settings_diff(&run(3, Some(4)), &run(1, Some(4))),
            Vec::<String>::new()
        );
        assert_eq!(settings_diff(&run(3, Some(4)), &run(1, Some(5))).len(), 1);
        let diff = settings_diff(&run(3, None), &run(1, Some(3)));
        assert!(diff.iter().any(|d| d.starts_with("epochs: ")), "{diff:?}");
    }
}
