//! The three tasks: what a row becomes (token ids, [MASK] position, class or target), how a
//! batch turns into a loss and a prompt gradient, and how rows are scored for evaluation and
//! prediction.
//!
//! - `pet` (BERT with a masked-LM head): the template holds `{text}` and one `[MASK]`; the loss
//!   is the cross-entropy over the verbalizer tokens at the [MASK] (PET).
//! - `cls` (any BERT): mean or [CLS] pooling of the real tokens, then a K x d linear head that
//!   trains with the prompt (PEFT's SEQ_CLS keeps its classifier trainable).
//! - `seq2seq` (T5): each label maps to a target text, or the data gives free targets. Scores
//!   rank the label targets by log-likelihood (Lester et al.'s rank classification); greedy
//!   decoding is there for free targets.

use super::model::Model;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::bert::{self, Bert};
use crate::models::heads::{self, ClsHead, Decoder, Pooling};
use crate::models::t5::{self, T5};
use crate::models::{Model as Net, Objective, Recompute, TokenBatch};
use crate::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const TEXT_SLOT: &str = "{text}";
pub const MASK_SLOT: &str = "[MASK]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Pet,
    Cls,
    Seq2Seq,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Pet => "pet",
            TaskKind::Cls => "cls",
            TaskKind::Seq2Seq => "seq2seq",
        }
    }

    /// PEFT's task_type for adapter_config.json. `pet` and `cls` prompts say
    /// FEATURE_EXTRACTION: PEFT then loads them onto any BERT (BertForMaskedLM for `pet`,
    /// BertModel for `cls`) without asking for a classifier of its own; the `cls` head is in
    /// head.safetensors.
    pub fn peft_task_type(self) -> &'static str {
        match self {
            TaskKind::Pet | TaskKind::Cls => "FEATURE_EXTRACTION",
            TaskKind::Seq2Seq => "SEQ_2_SEQ_LM",
        }
    }
}

impl std::str::FromStr for TaskKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pet" => Ok(TaskKind::Pet),
            "cls" => Ok(TaskKind::Cls),
            "seq2seq" => Ok(TaskKind::Seq2Seq),
            _ => Err(Error::arg(
                "--task",
                format!("\"{s}\": expected pet, cls or seq2seq"),
            )),
        }
    }
}

/// How `seq2seq` predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// score every label's target text, pick the most likely
    Rank,
    /// generate token by token, taking the most likely each time
    Greedy,
}

impl std::str::FromStr for Decode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rank" => Ok(Decode::Rank),
            "greedy" => Ok(Decode::Greedy),
            _ => Err(Error::arg(
                "--decode",
                format!("\"{s}\": expected rank or greedy"),
            )),
        }
    }
}

/// Everything that defines a task, independent of the tokenizer; saved as `task.json` next
/// to a prompt so that `eval` and `predict` need no task flags.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub kind: TaskKind,
    /// `{text}` with optional words around it; for `pet` also exactly one `[MASK]`
    pub template: String,
    /// class names in score order; empty with free targets
    pub labels: Vec<String>,
    /// per label: the verbalizer word (`pet`) or the target text (`seq2seq`); unused by `cls`
    pub label_words: Vec<String>,
    pub pooling: Pooling,
    /// `seq2seq`: the label field is the target text itself
    pub free_targets: bool,
    /// tokens per row, specials included; longer rows lose the end of their text
    pub max_len: usize,
    /// `seq2seq`: tokens per target, </s> included
    pub max_target_len: usize,
    pub decode: Decode,
}

impl TaskSpec {
    /// A spec with the usual defaults: PET's `{text} It was [MASK].`, labels as their own
    /// words, mean pooling, 128 tokens, rank classification.
    pub fn new(kind: TaskKind, labels: &[&str]) -> TaskSpec {
        TaskSpec {
            kind,
            template: if kind == TaskKind::Pet {
                format!("{TEXT_SLOT} It was {MASK_SLOT}.")
            } else {
                TEXT_SLOT.into()
            },
            labels: labels.iter().map(|s| s.to_string()).collect(),
            label_words: if kind == TaskKind::Cls {
                Vec::new()
            } else {
                labels.iter().map(|s| s.to_string()).collect()
            },
            pooling: Pooling::Mean,
            free_targets: false,
            max_len: 128,
            max_target_len: 32,
            decode: Decode::Rank,
        }
    }

    /// The `task.json` object.
    pub fn to_json(&self) -> Value {
        let verbalizer: Vec<Value> = self
            .labels
            .iter()
            .zip(&self.label_words)
            .map(|(l, w)| json!([l, w]))
            .collect();
        json!({
            "task": self.kind.name(),
            "template": self.template,
            "labels": self.labels,
            "verbalizer": verbalizer,
            "pooling": match self.pooling { Pooling::Mean => "mean", Pooling::Cls => "cls" },
            "free_targets": self.free_targets,
            "max_len": self.max_len,
            "max_target_len": self.max_target_len,
            "decode": match self.decode { Decode::Rank => "rank", Decode::Greedy => "greedy" },
        })
    }

    /// Reads the object written by `to_json`; `path` is for messages.
    pub fn from_json(v: &Value, path: &Path) -> Result<TaskSpec> {
        let s = |k: &str| -> Result<String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(String::from)
                .ok_or_else(|| Error::file(path, format!("missing string `{k}`")))
        };
        let n = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| Error::file(path, format!("missing integer `{k}`")))
        };
        let labels: Vec<String> = v
            .get("labels")
            .and_then(|x| x.as_array())
            .ok_or_else(|| Error::file(path, "missing list `labels`"))?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| Error::file(path, "`labels` must hold strings"))
            })
            .collect::<Result<_>>()?;
        let mut label_words = Vec::new();
        for pair in v
            .get("verbalizer")
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default()
        {
            match pair.as_array().map(|p| p.as_slice()) {
                Some([Value::String(_), Value::String(w)]) => label_words.push(w.clone()),
                _ => {
                    return Err(Error::file(
                        path,
                        "`verbalizer` must hold [label, word] pairs",
                    ))
                }
            }
        }
        Ok(TaskSpec {
            kind: s("task")?.parse()?,
            template: s("template")?,
            labels,
            label_words,
            pooling: s("pooling")?.parse()?,
            free_targets: v
                .get("free_targets")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            max_len: n("max_len")?,
            max_target_len: n("max_target_len")?,
            decode: s("decode")?.parse()?,
        })
    }

    /// Number of classes (0 with free targets).
    pub fn k(&self) -> usize {
        if self.free_targets {
            0
        } else {
            self.labels.len()
        }
    }
}

/// Parses `--verbalizer`: `label=word,label=word`, or a JSON object `{"label": "word"}` when
/// words hold commas. Keeps the order given.
pub fn parse_verbalizer(s: &str) -> Result<Vec<(String, String)>> {
    let s = s.trim();
    if s.starts_with('{') {
        let v: serde_json::Map<String, Value> = serde_json::from_str(s)
            .map_err(|e| Error::arg("--verbalizer", format!("not a valid JSON object: {e}")))?;
        // serde_json's map is sorted; recover the order of appearance from the text
        let mut pairs: Vec<(usize, String, String)> = v
            .iter()
            .map(|(k, w)| {
                let pos = s
                    .find(&serde_json::to_string(k).unwrap_or_default())
                    .unwrap_or(usize::MAX);
                (pos, k.clone(), w.as_str().unwrap_or_default().to_string())
            })
            .collect();
        pairs.sort();
        return Ok(pairs.into_iter().map(|(_, k, w)| (k, w)).collect());
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((l, w)) if !l.trim().is_empty() && !w.trim().is_empty() => {
                Ok((l.trim().to_string(), w.trim().to_string()))
            }
            _ => Err(Error::arg(
                "--verbalizer",
                format!("\"{pair}\": expected label=word, e.g. positive=great,negative=terrible"),
            )),
        })
        .collect()
}

/// One encoded row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// token ids with the model's special tokens, at most max_len
    pub ids: Vec<i32>,
    /// `pet`: index of [MASK] in `ids`
    pub mask_pos: usize,
    /// class index (None: no label, or free targets)
    pub label: Option<usize>,
    /// `seq2seq`: the target ids (</s> included), empty when unknown
    pub target: Vec<i32>,
    pub line: usize,
    /// the text was cut to max_len
    pub truncated: bool,
}

/// An encoded data file.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    /// rows whose text was cut to max_len
    pub truncated: usize,
    /// free targets cut to max_target_len
    pub truncated_targets: usize,
}

impl Encoded {
    pub fn lens(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.ids.len()).collect()
    }
}

/// A right-padded batch ready for a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: TokenBatch,
    /// (B) `pet`: [MASK] index per row
    pub mask_pos: Vec<i32>,
    /// (B) class index per row, -100 when unknown
    pub labels: Vec<i32>,
    /// (B, L) `seq2seq` targets, -100 padded; empty otherwise
    pub targets: Vec<i32>,
    pub l: usize,
    /// real tokens in the batch (input plus target), for tokens/s
    pub real_tokens: usize,
}

/// The trainable state: the prompt (P, d) on the backend, and the `cls` head.
pub struct Params<B: Backend> {
    pub prompt: B::Buf,
    pub p: usize,
    pub d: usize,
    pub head: Option<ClsHead>,
}

/// Gradients of `Params`: the prompt's is added into (zero it first), the head's overwritten.
pub struct Grads<B: Backend> {
    pub prompt: B::Buf,
    pub head_weight: Vec<f32>,
    pub head_bias: Vec<f32>,
}

impl<B: Backend> Grads<B> {
    pub fn zeros(be: &B, params: &Params<B>) -> Result<Grads<B>> {
        let (kw, kb) = params
            .head
            .as_ref()
            .map_or((0, 0), |h| (h.weight.len(), h.bias.len()));
        Ok(Grads {
            prompt: be.zeros(DType::F32, params.p * params.d)?,
            head_weight: vec![0.0; kw],
            head_bias: vec![0.0; kb],
        })
    }
}

/// A task resolved against a model's tokenizer.
#[derive(Clone, Debug)]
pub struct Task {
    pub spec: TaskSpec,
    /// template text before and after `{text}` (with the tokenizer's mask token in place)
    before: String,
    after: String,
    mask_id: Option<i32>,
    /// `pet`: one token per label
    pub verbalizer_ids: Vec<i32>,
    /// `seq2seq`: target ids per label, </s> included
    pub label_targets: Vec<Vec<i32>>,
    pad_id: i32,
    eos_id: i32,
}

impl Task {
    /// Checks the spec against the model and resolves its tokens.
    ///
    /// ```
    /// use softprompt::{CpuBackend, train::{Model, Task, TaskKind, TaskSpec}};
    /// let be = CpuBackend::<f32>::new();
    /// let model = Model::load(&be, "tests/fixtures/bert_mlm".as_ref()).unwrap();
    /// let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    /// spec.label_words = vec!["bad".into(), "great".into()];
    /// spec.max_len = 48; // the fixture BERT has 64 positions
    /// let task = Task::new(spec.clone(), &model).unwrap();
    /// assert_eq!(task.verbalizer_ids.len(), 2);
    /// // a word of two pieces cannot be a verbalizer token
    /// spec.label_words[1] = "wonderful".into();
    /// let err = Task::new(spec, &model).unwrap_err().to_string();
    /// assert!(err.contains("2 pieces"), "{err}");
    /// ```
    pub fn new<B: Backend>(spec: TaskSpec, model: &Model<B>) -> Result<Task> {
        let tok = &model.tokenizer;
        job(spec.kind, model)?;
        if spec.template.matches(TEXT_SLOT).count() != 1 {
            return Err(Error::arg(
                "--template",
                format!("{:?} must hold {TEXT_SLOT} exactly once", spec.template),
            ));
        }
        let masks = spec.template.matches(MASK_SLOT).count();
        let mut mask_id = None;
        let mut template = spec.template.clone();
        if spec.kind == TaskKind::Pet {
            if masks != 1 {
                return Err(Error::arg("--template", format!("{:?} must hold {MASK_SLOT} exactly once for --task pet, e.g. \"{{text}} It was [MASK].\"", spec.template)));
            }
            let (token, id) = mask_token(tok)?;
            template = template.replace(MASK_SLOT, &token);
            mask_id = Some(id);
        } else if masks != 0 {
            return Err(Error::arg(
                "--template",
                format!("{MASK_SLOT} is for --task pet only ({:?})", spec.template),
            ));
        }
        let (before, after) = template
            .split_once(TEXT_SLOT)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or_default();
        if spec.max_len < 2 {
            return Err(Error::arg("--max-len", "must be at least 2"));
        }
        if spec.kind == TaskKind::Seq2Seq && spec.max_target_len < 1 {
            return Err(Error::arg("--max-target-len", "must be at least 1"));
        }
        if let Some(limit) = model.max_tokens(0) {
            if spec.max_len > limit {
                return Err(Error::arg(
                    "--max-len",
                    format!("{} exceeds the model's {limit} positions", spec.max_len),
                ));
            }
        }
        let (pad_id, eos_id) = match &model.net {
            Net::Bert(m) => (m.cfg.pad_token_id as i32, -1),
            Net::T5(m) => (m.cfg.pad_token_id as i32, m.cfg.eos_token_id as i32),
        };
        let mut task = Task {
            before,
            after,
            mask_id,
            verbalizer_ids: Vec::new(),
            label_targets: Vec::new(),
            pad_id,
            eos_id,
            spec,
        };
        task.resolve_labels(tok)?;
        Ok(task)
    }

    fn resolve_labels(&mut self, tok: &Tokenizer) -> Result<()> {
        let spec = &self.spec;
        if spec.free_targets {
            if spec.kind != TaskKind::Seq2Seq {
                return Err(Error::arg(
                    "--free-targets",
                    "only --task seq2seq has free targets",
                ));
            }
            return Ok(());
        }
        if spec.labels.len() < 2 {
            return Err(Error::arg(
                "--labels",
                format!(
                    "a classifier needs at least 2 labels, got {:?}",
                    spec.labels
                ),
            ));
        }
        for (i, l) in spec.labels.iter().enumerate() {
            if spec.labels[..i].contains(l) {
                return Err(Error::arg("--labels", format!("label {l:?} appears twice")));
            }
        }
        if spec.kind == TaskKind::Cls {
            return Ok(());
        }
        if spec.label_words.len() != spec.labels.len() {
            return Err(Error::arg(
                "--verbalizer",
                format!(
                    "{} labels but {} label words",
                    spec.labels.len(),
                    spec.label_words.len()
                ),
            ));
        }
        for (label, word) in spec.labels.iter().zip(&spec.label_words) {
            match spec.kind {
                TaskKind::Pet => {
                    let ids = tok.encode(word, false)?;
                    if ids.len() != 1 {
                        let pieces: Vec<String> = ids
                            .iter()
                            .map(|&i| tok.decode(&[i], false).unwrap_or_default())
                            .collect();
                        return Err(Error::arg(
                            "--verbalizer",
                            format!("label {label:?}: the word {word:?} tokenizes to {} pieces {pieces:?}; a PET verbalizer word must be a single token", ids.len()),
                        ));
                    }
                    self.verbalizer_ids.push(ids[0]);
                }
                _ => {
                    let ids = tok.encode(word, true)?;
                    if ids.len() > spec.max_target_len {
                        return Err(Error::arg("--verbalizer", format!("label {label:?}: the target {word:?} has {} tokens, more than --max-target-len {}", ids.len(), spec.max_target_len)));
                    }
                    self.label_targets.push(ids);
                }
            }
        }
        Ok(())
    }

    /// Token ids that stand for the labels, for CLASS_LABELS initialisation.
    pub fn label_token_ids(&self, tok: &Tokenizer) -> Result<Vec<i32>> {
        match self.spec.kind {
            TaskKind::Pet => Ok(self.verbalizer_ids.clone()),
            TaskKind::Seq2Seq if !self.spec.free_targets => Ok(self
                .label_targets
                .iter()
                .flat_map(|t| t.iter().copied().filter(|&i| i != self.eos_id))
                .collect()),
            _ => {
                let mut ids = Vec::new();
                for l in &self.spec.labels {
                    ids.extend(tok.encode(l, false)?);
                }
                Ok(ids)
            }
        }
    }

    /// Encodes every row: fills the template, tokenizes, cuts the text to max_len, and maps the
    /// label. An unknown label is an error naming the file and line.
    pub fn encode(&self, tok: &Tokenizer, data: &super::data::Dataset) -> Result<Encoded> {
        let mut enc = Encoded {
            path: data.path.clone(),
            rows: Vec::with_capacity(data.examples.len()),
            truncated: 0,
            truncated_targets: 0,
        };
        for ex in &data.examples {
            let at = |e: Error| Error::data(&data.path, ex.line, e.to_string());
            let (ids, mask_pos, cut) = self.encode_text(tok, &ex.text).map_err(at)?;
            enc.truncated += cut as usize;
            let mut row = Row {
                ids,
                mask_pos,
                label: None,
                target: Vec::new(),
                line: ex.line,
                truncated: cut,
            };
            if let Some(label) = &ex.label {
                if self.spec.free_targets {
                    let mut t = tok.encode(label, true).map_err(at)?;
                    if t.len() > self.spec.max_target_len {
                        let last = *t.last().unwrap_or(&self.eos_id);
                        t.truncate(self.spec.max_target_len - 1);
                        t.push(last);
                        enc.truncated_targets += 1;
                    }
                    row.target = t;
                } else {
                    let k = self.spec.labels.iter().position(|l| l == label).ok_or_else(|| {
                        Error::data(&data.path, ex.line, format!("unknown label {label:?}: expected one of {:?} (set them with --labels)", self.spec.labels))
                    })?;
                    row.label = Some(k);
                    if let Some(t) = self.label_targets.get(k) {
                        row.target = t.clone();
                    }
                }
            }
            enc.rows.push(row);
        }
        Ok(enc)
    }

    /// (ids, [MASK] index, truncated) of one text.
    fn encode_text(&self, tok: &Tokenizer, text: &str) -> Result<(Vec<i32>, usize, bool)> {
        let full = format!("{}{}{}", self.before, text, self.after);
        let crate::tokenizer::TokenSpans {
            ids,
            offsets,
            special,
        } = tok.encode_with_offsets(&full)?;
        let span = (self.before.len(), self.before.len() + text.len());
        let mut cut = false;
        let ids = if ids.len() > self.spec.max_len {
            let excess = ids.len() - self.spec.max_len;
            let text_tokens: Vec<usize> = (0..ids.len())
                .filter(|&i| !special[i] && offsets[i].0 < span.1 && offsets[i].1 > span.0)
                .collect();
            if text_tokens.len() < excess {
                return Err(Error::arg("--max-len", format!("{} tokens cannot hold the template and special tokens ({} tokens without the text)", self.spec.max_len, ids.len() - text_tokens.len())));
            }
            let drop: std::collections::BTreeSet<usize> = text_tokens[text_tokens.len() - excess..]
                .iter()
                .copied()
                .collect();
            cut = true;
            ids.iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, &id)| id)
                .collect()
        } else {
            ids
        };
        let mut mask_pos = 0;
        if let Some(m) = self.mask_id {
            let found: Vec<usize> = ids
                .iter()
                .enumerate()
                .filter(|(_, &id)| id == m)
                .map(|(i, _)| i)
                .collect();
            if found.len() != 1 {
                return Err(Error::arg(
                    "--template",
                    format!(
                        "the row has {} mask tokens after filling the template: expected exactly 1",
                        found.len()
                    ),
                ));
            }
            mask_pos = found[0];
        }
        Ok((ids, mask_pos, cut))
    }

    /// A right-padded batch of `rows` (indices into `enc`).
    pub fn batch(&self, enc: &Encoded, rows: &[u32]) -> Batch {
        let b = rows.len();
        let t = rows
            .iter()
            .map(|&i| enc.rows[i as usize].ids.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let l = rows
            .iter()
            .map(|&i| enc.rows[i as usize].target.len())
            .max()
            .unwrap_or(0);
        let mut batch = Batch {
            tokens: TokenBatch {
                b,
                t,
                ids: vec![self.pad_id; b * t],
                mask: vec![0; b * t],
                type_ids: None,
            },
            mask_pos: Vec::with_capacity(b),
            labels: Vec::with_capacity(b),
            targets: vec![crate::cpu::loss::IGNORE_INDEX; b * l],
            l,
            real_tokens: 0,
        };
        for (bi, &i) in rows.iter().enumerate() {
            let row = &enc.rows[i as usize];
            batch.tokens.ids[bi * t..bi * t + row.ids.len()].copy_from_slice(&row.ids);
            batch.tokens.mask[bi * t..bi * t + row.ids.len()]
                .iter_mut()
                .for_each(|m| *m = 1);
            batch.mask_pos.push(row.mask_pos as i32);
            batch.labels.push(
                row.label
                    .map_or(crate::cpu::loss::IGNORE_INDEX, |k| k as i32),
            );
            batch.targets[bi * l..bi * l + row.target.len()].copy_from_slice(&row.target);
            batch.real_tokens += row.ids.len() + row.target.len();
        }
        batch
    }

    /// A fresh `cls` head (zeros: plain softmax regression at the start), None for other tasks.
    pub fn new_head(&self, d: usize) -> Option<ClsHead> {
        (self.spec.kind == TaskKind::Cls).then(|| {
            let k = self.spec.labels.len();
            ClsHead {
                k,
                c: d,
                weight: vec![0.0; k * d],
                bias: vec![0.0; k],
            }
        })
    }

    /// Forward and backward of one batch: returns the mean loss, adds d loss / d prompt into
    /// `grads.prompt` and writes the head's gradients.
    pub fn loss_and_grad<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        grads: &mut Grads<B>,
        batch: &Batch,
        recompute: Recompute,
    ) -> Result<f64> {
        let objective = match job(self.spec.kind, model)? {
            Job::Pet(_) => {
                check_labels(&batch.labels)?;
                Objective::Pet {
                    mask_positions: &batch.mask_pos,
                    verbalizer_ids: &self.verbalizer_ids,
                    labels: &batch.labels,
                }
            }
            Job::Cls(_) => Objective::Cls {
                head: cls_head(params)?,
                pooling: self.spec.pooling,
                labels: &batch.labels,
            },
            Job::Seq2Seq(_) => {
                if batch.l == 0 {
                    return Err(Error::arg(
                        "--task seq2seq",
                        "training needs targets: the batch has none",
                    ));
                }
                Objective::Seq2Seq {
                    labels: &batch.targets,
                    l: batch.l,
                }
            }
        };
        let mut acct = MemoryAccountant::new();
        let out = model.net.train_step(
            be,
            &mut acct,
            &mut grads.prompt,
            &params.prompt,
            &batch.tokens,
            params.p,
            &objective,
            recompute,
            None,
        )?;
        if let Some((weight, bias)) = out.head_grads {
            grads.head_weight = weight;
            grads.head_bias = bias;
        }
        Ok(out.loss)
    }

    /// Per-label scores (B, K): log-probabilities over the labels (`pet`, `cls`), or each
    /// label target's log-likelihood (`seq2seq`, rank classification). Forward only.
    pub fn scores<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        match job(self.spec.kind, model)? {
            Job::Pet(m) | Job::Cls(m) => self.class_scores(be, m, params, batch),
            Job::Seq2Seq(m) => self.rank_scores(be, m, params, batch),
        }
    }

    /// `pet` and `cls`: log-probabilities over the labels (B, K).
    fn class_scores<B: Backend>(
        &self,
        be: &B,
        m: &Bert<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        let (b, t, p) = (batch.tokens.b, batch.tokens.t, params.p);
        let mut acct = MemoryAccountant::new();
        let inp = bert::upload_inputs(be, &m.cfg, &batch.tokens, p)?;
        let (hidden, _acts) =
            m.encoder_fwd(be, &mut acct, &params.prompt, &inp, Recompute::Layer, None)?;
        let logits = if self.spec.kind == TaskKind::Pet {
            let rows = heads::pet_rows(&batch.mask_pos, b, t, p)?;
            let h = heads::mlm_head_fwd_bwd(
                be,
                m,
                &hidden,
                &rows,
                &vec![0; b],
                Decoder::Rows(&self.verbalizer_ids),
                true,
            )?;
            h.logits.unwrap_or_default()
        } else {
            let head = cls_head(params)?;
            let c = m.cfg.hidden_size;
            let pool_w =
                heads::upload_pool_weights(be, &batch.tokens.mask, b, t, p, self.spec.pooling)?;
            let mut pooled = be.zeros(be.act_dtype(), b * c)?;
            be.mean_pool_fwd(&mut pooled, &hidden, &pool_w, b, p + t, c)?;
            head.logits(&be.download(&pooled)?, b)
        };
        Ok(log_softmax_rows(&logits, self.spec.labels.len()))
    }

    /// `seq2seq`: each label target's log-likelihood (B, K), for rank classification.
    fn rank_scores<B: Backend>(
        &self,
        be: &B,
        m: &T5<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<f32>> {
        let (b, p) = (batch.tokens.b, params.p);
        let mut acct = MemoryAccountant::new();
        if self.spec.free_targets {
            return Err(Error::arg(
                "--free-targets",
                "free targets have no label scores: use greedy decoding",
            ));
        }
        let k = self.label_targets.len();
        let mut scores = vec![0.0f32; b * k];
        let mut enc_out = None;
        for (ki, target) in self.label_targets.iter().enumerate() {
            let l = target.len();
            let labels: Vec<i32> = (0..b).flat_map(|_| target.iter().copied()).collect();
            let inp = t5::upload_inputs(be, &m.cfg, &batch.tokens, p, &labels, l)?;
            if enc_out.is_none() {
                enc_out = Some(
                    m.encoder_fwd(be, &mut acct, &params.prompt, &inp, Recompute::Layer, None)?
                        .0,
                );
            }
            let enc = enc_out
                .as_ref()
                .ok_or_else(|| Error::Device("encoder output missing".into()))?;
            let (dec_out, _acts) =
                m.decoder_fwd(be, &mut acct, enc, &inp, Recompute::Layer, None)?;
            let losses = m.lm_row_losses(be, &dec_out, &labels, b * l)?;
            for bi in 0..b {
                scores[bi * k + ki] = -losses[bi * l..(bi + 1) * l]
                    .iter()
                    .map(|&x| x as f64)
                    .sum::<f64>() as f32;
            }
        }
        Ok(scores)
    }

    /// `seq2seq`: greedy decoding of at most max_target_len tokens per row; returns the ids
    /// (ending with </s> when it was produced) and their summed log-probability.
    pub fn greedy<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<(Vec<i32>, f32)>> {
        let Net::T5(m) = &model.net else {
            return Err(Error::arg(
                "--decode greedy",
                "greedy decoding needs a T5 model",
            ));
        };
        let (b, p, v) = (batch.tokens.b, params.p, m.cfg.vocab_size);
        let mut acct = MemoryAccountant::new();
        let mut out: Vec<(Vec<i32>, f32)> = vec![(Vec::new(), 0.0); b];
        let mut done = vec![false; b];
        let mut enc_out = None;
        for step in 0..self.spec.max_target_len.max(1) {
            let l = step + 1;
            // labels whose right shift is [start, generated...]
            let mut labels = vec![self.pad_id; b * l];
            for (bi, (ids, _)) in out.iter().enumerate() {
                labels[bi * l..bi * l + ids.len()].copy_from_slice(ids);
            }
            let inp = t5::upload_inputs(be, &m.cfg, &batch.tokens, p, &labels, l)?;
            if enc_out.is_none() {
                enc_out = Some(
                    m.encoder_fwd(be, &mut acct, &params.prompt, &inp, Recompute::Layer, None)?
                        .0,
                );
            }
            let enc = enc_out
                .as_ref()
                .ok_or_else(|| Error::Device("encoder output missing".into()))?;
            let (dec_out, _acts) =
                m.decoder_fwd(be, &mut acct, enc, &inp, Recompute::Layer, None)?;
            let idx: Vec<i32> = (0..b).map(|bi| (bi * l + step) as i32).collect();
            let logits = m.lm_logits(be, &dec_out, &idx)?;
            for bi in 0..b {
                if done[bi] {
                    continue;
                }
                let row = &logits[bi * v..(bi + 1) * v];
                let best = argmax(row);
                out[bi].0.push(best as i32);
                out[bi].1 += log_softmax_rows(row, v)[best];
                done[bi] = best as i32 == self.eos_id;
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        Ok(out)
    }

    /// Predictions for a batch: the class index per row (rank or argmax) with its scores, or
    /// for free targets the decoded ids.
    pub fn predict<B: Backend>(
        &self,
        be: &B,
        model: &Model<B>,
        params: &Params<B>,
        batch: &Batch,
    ) -> Result<Vec<Prediction>> {
        if self.spec.free_targets
            || (self.spec.kind == TaskKind::Seq2Seq && self.spec.decode == Decode::Greedy)
        {
            let decoded = self.greedy(be, model, params, batch)?;
            return Ok(decoded
                .into_iter()
                .map(|(ids, logp)| {
                    let class = self.label_targets.iter().position(|t| *t == ids);
                    Prediction {
                        class,
                        scores: Vec::new(),
                        ids,
                        score: logp,
                    }
                })
                .collect());
        }
        let k = self.spec.labels.len();
        let scores = self.scores(be, model, params, batch)?;
        Ok(scores
            .chunks(k)
            .map(|s| {
                let c = argmax(s);
                Prediction {
                    class: Some(c),
                    scores: s.to_vec(),
                    ids: Vec::new(),
                    score: s[c],
                }
            })
            .collect())
    }

    /// The class of row `i` for scoring (free targets: None).
    pub fn gold(&self, row: &Row) -> Option<usize> {
        row.label
    }
}

/// The model behind a task: BERT runs `pet` and `cls`, T5 runs `seq2seq`.
enum Job<'m, B: Backend> {
    Pet(&'m Bert<B>),
    Cls(&'m Bert<B>),
    Seq2Seq(&'m T5<B>),
}

/// The model × task match, written once: the model that runs `kind`, or an error that says
/// which task fits instead.
fn job<B: Backend>(kind: TaskKind, model: &Model<B>) -> Result<Job<'_, B>> {
    match (kind, &model.net) {
        (TaskKind::Pet, Net::Bert(_)) if !model.has_mlm_head() => Err(Error::arg(
            "--task pet",
            format!(
                "{} has no masked-LM head (cls.predictions.*): use --task cls",
                model.dir.display()
            ),
        )),
        (TaskKind::Pet, Net::Bert(m)) => Ok(Job::Pet(m)),
        (TaskKind::Cls, Net::Bert(m)) => Ok(Job::Cls(m)),
        (TaskKind::Seq2Seq, Net::T5(m)) => Ok(Job::Seq2Seq(m)),
        (TaskKind::Pet | TaskKind::Cls, Net::T5(_)) => Err(Error::arg(
            "--task",
            format!("{} is a T5 model: use --task seq2seq", model.dir.display()),
        )),
        (TaskKind::Seq2Seq, Net::Bert(_)) => Err(Error::arg(
            "--task seq2seq",
            format!(
                "{} is a BERT model: use --task pet or cls",
                model.dir.display()
            ),
        )),
    }
}

/// One row's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// the predicted class (greedy decoding: the label whose target was produced, if any)
    pub class: Option<usize>,
    /// per-label scores (log-probabilities or log-likelihoods); empty for greedy decoding
    pub scores: Vec<f32>,
    /// greedy decoding: the generated ids
    pub ids: Vec<i32>,
    /// the score of the prediction
    pub score: f32,
}

fn mask_token(tok: &Tokenizer) -> Result<(String, i32)> {
    for t in ["[MASK]", "<mask>"] {
        if let Some(id) = tok.token_to_id(t) {
            return Ok((t.to_string(), id));
        }
    }
    Err(Error::file(
        tok.path(),
        "the tokenizer has no mask token ([MASK] or <mask>)",
    ))
}

fn check_labels(labels: &[i32]) -> Result<()> {
    if labels.iter().any(|&l| l < 0) {
        return Err(Error::arg(
            "training data",
            "every training row needs a label",
        ));
    }
    Ok(())
}

/// Row-wise log-softmax of (rows, k) logits, in f64.
pub fn log_softmax_rows(logits: &[f32], k: usize) -> Vec<f32> {
    logits
        .chunks(k.max(1))
        .flat_map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            row.iter().map(move |&x| (x as f64 - lse) as f32)
        })
        .collect()
}

/// Index of the largest value, the first on ties.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// `cls`: the trained classifier head.
fn cls_head<B: Backend>(params: &Params<B>) -> Result<&crate::models::heads::ClsHead> {
    params
        .head
        .as_ref()
        .ok_or_else(|| Error::arg("--task cls", "the classifier head is missing"))
}
