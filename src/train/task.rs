//! A task resolved against a model: the spec checked against the architecture, the template
//! split around `{text}`, and the label words turned into token ids. Rows, batches, the loss
//! and the scores build on it (`encode`, `step`, `decode`, `causal`). The four tasks:
//!
//! - `pet` (BERT with a masked-LM head): the template holds `{text}` and one `[MASK]`; the loss
//!   is the cross-entropy over the verbalizer tokens at the [MASK] (PET).
//! - `cls` (any BERT): mean or [CLS] pooling of the real tokens, then a K x d linear head that
//!   trains with the prompt (PEFT's SEQ_CLS keeps its classifier trainable).
//! - `seq2seq` (T5): each label maps to a target text, or the data gives free targets. Scores
//!   rank the label targets by log-likelihood (Lester et al.'s rank classification); greedy
//!   decoding is there for free targets.
//! - `causal` (BLOOM, Llama): the target text follows the filled template, as in PEFT's causal
//!   LM guide; the loss covers the target tokens only. Rank classification as for `seq2seq`,
//!   and greedy generation with the KV cache for free targets.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::encode::Row;
use super::model::{Model, MAX_TOKENS};
use super::spec::{TargetEnd, TaskKind, TaskSpec, MASK_SLOT, TEXT_SLOT};
use crate::backend::Backend;
use crate::config::DecoderConfig;
use crate::error::{Error, Result};
use crate::models::bert::Bert;
use crate::models::decoder::Decoder;
use crate::models::t5::T5;
use crate::models::Model as Net;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;

/// A task resolved against a model's tokenizer.
#[derive(Clone, Debug)]
pub struct Task {
    pub spec: TaskSpec,
    /// template text before and after `{text}` (with the tokenizer's mask token in place)
    pub(super) before: String,
    pub(super) after: String,
    pub(super) mask_id: Option<i32>,
    /// `pet`: one token per label
    pub verbalizer_ids: Vec<i32>,
    /// `seq2seq`, `causal`: target ids per label, the end token included
    pub label_targets: Vec<Vec<i32>>,
    pub(super) pad_id: i32,
    pub(super) eos_id: i32,
    /// the token that ends every target: T5's </s>, or what `causal`'s `target_end` names
    /// (None: `none`, or `eos` on a model without one)
    pub(super) end_id: Option<i32>,
    /// the model it was resolved against (the API refuses the task on another model, naming
    /// both); every row it encodes carries it
    pub model: std::sync::Arc<super::model_id::ModelId>,
    /// the model's embedding rows: a hand-made row's ids must index them
    pub(super) vocab: usize,
    /// the tokens greedy generation stops at: `causal`'s (`stop_ids`), each of which ends a
    /// generated row as the targets' end token does (`Task::target_of`); `seq2seq`'s end token
    pub(super) stops: Vec<i32>,
}

impl Task {
    /// Whether this task runs on `model`: a task made for another kind of model is refused
    /// saying which task fits, before its rows meet that model's tokenizer (where a `pet`
    /// row found no [MASK]).
    pub fn check_model<B: Backend>(&self, model: &Model<B>) -> Result<()> {
        job(self.spec.kind, model).map(drop)
    }

    /// Checks the spec against the model and resolves its tokens.
    ///
    /// ```
    /// use softprompt::internals::{CpuBackend, train::{Model, Task, TaskKind, TaskSpec}};
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
        // before any message quotes it: a 60 MB template aborted the process (hostile pass 24)
        crate::train::encode_text::check_tokenize_bytes(&spec.template, "--template")?;
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
        // every task saves max_target_len and task.json refuses 0, so refuse it up front
        // (a pet run with --max-target-len 0 trained, then failed blaming task.json)
        if spec.max_target_len < 1 {
            return Err(Error::arg("--max-target-len", "must be at least 1"));
        }
        if spec.max_target_len > MAX_TOKENS {
            return Err(Error::arg(
                "--max-target-len",
                format!(
                    "{} exceeds this engine's cap of {MAX_TOKENS} target tokens",
                    spec.max_target_len
                ),
            ));
        }
        // a causal row's targets take positions too: its max_len is checked beside them and
        // the prompt (`room::check_room`), which a check of the text alone here preceded with
        // advice too large to run
        let causal = spec.kind == TaskKind::Causal;
        model.check_lengths(0, Some(spec.max_len).filter(|_| !causal))?;
        let (pad_id, eos_id) = match &model.net {
            Net::Bert(m) => (m.cfg.pad_token_id as i32, -1),
            Net::T5(m) => (m.cfg.pad_token_id as i32, m.cfg.eos_token_id as i32),
            // the padding of a decoder's batches: within the table, whatever config.json says
            Net::Bloom(m) | Net::Llama(m) => (
                m.pad_id(),
                m.cfg.eos_token_ids.first().map_or(-1, |&e| e as i32),
            ),
        };
        let end_id = end_token(&spec, model, eos_id)?;
        let mut task = Task {
            stops: Vec::new(),
            before,
            after,
            mask_id,
            verbalizer_ids: Vec::new(),
            label_targets: Vec::new(),
            pad_id,
            eos_id,
            end_id,
            spec,
            model: model.identity.clone(),
            vocab: model.net.vocab_size(),
        };
        let template = task.template_ids(tok)?;
        (task.check_in_table(
            tok,
            &template,
            &format!("the template {:?}", task.spec.template),
        ))
        .map_err(|msg| Error::arg("--template", msg))?;
        task.resolve_labels(tok)?;
        // a task whose predictions are generated needs the stop tokens: refused here, not
        // at its first prediction (a dev evaluation after training steps, a served request)
        if let (true, Net::Bloom(m) | Net::Llama(m)) = (task.decodes_greedily(), &model.net) {
            task.stop_ids(&m.cfg)?;
        }
        if let (TaskKind::Causal, Net::Bloom(m) | Net::Llama(m)) = (task.spec.kind, &model.net) {
            // a task that ranks (its stop tokens unread) is refused nothing here
            task.stops = task.stop_ids(&m.cfg).unwrap_or_default();
        }
        if task.spec.kind == TaskKind::Seq2Seq && task.eos_id >= 0 {
            // T5 generates until its end token (`t5_greedy`'s ends)
            task.stops = vec![task.eos_id];
        }
        task.check_generable()?;
        Ok(task)
    }

    /// Under greedy decoding of labels, a label whose target holds a stop token before its
    /// end could never be generated: generation stops at that token (every row of it scored
    /// a miss and nothing said why; hostile pass 18, N5).
    fn check_generable(&self) -> Result<()> {
        if !self.decodes_greedily() {
            return Ok(());
        }
        for (label, target) in self.spec.labels.iter().zip(&self.label_targets) {
            if let Some((at, id)) = self.stop_inside(target) {
                return Err(Error::arg("--decode", format!("greedy: label {label:?}'s target (ids {target:?}) holds the stop token {id} at position {at}, before its end: generation stops there, so it could never produce this label; give the label a target without that token (--verbalizer), or score the labels with --decode rank")));
            }
        }
        Ok(())
    }

    /// The first stop token of `target` before its last token, and where: greedy generation
    /// stops there, so it could never produce `target` whole.
    fn stop_inside(&self, target: &[i32]) -> Option<(usize, i32)> {
        let (_, body) = target.split_last()?;
        body.iter()
            .enumerate()
            .find(|(_, id)| self.stops.contains(id))
            .map(|(at, &id)| (at, id))
    }

    /// How many of `rows`, generated greedily, hold a target with a stop token before its
    /// end, and the first one's line: each is a miss whatever the prompt learns. Free targets
    /// are data, so they are counted for a warning; a label's target is refused
    /// (`check_generable`).
    pub fn stops_inside_targets(&self, rows: &[Row]) -> Option<(usize, usize)> {
        if !self.decodes_greedily() {
            return None;
        }
        let mut inside = rows
            .iter()
            .filter(|r| self.stop_inside(&r.target).is_some());
        let first = inside.next()?.line;
        Some((1 + inside.count(), first))
    }

    /// Checks `ids`, what `what` encodes to, against the model's embedding table: a
    /// tokenizer may hold added tokens past it (a pad token a fine-tune added without
    /// resizing the embeddings), which load, as transformers loads them, and are refused
    /// here where something uses one, naming the token (the embedding refused the batch,
    /// naming an id alone). The message, for the caller's error.
    pub(super) fn check_in_table(
        &self,
        tok: &Tokenizer,
        ids: &[i32],
        what: &str,
    ) -> std::result::Result<(), String> {
        let Some(&id) = ids.iter().find(|&&id| id < 0 || id as usize >= self.vocab) else {
            return Ok(());
        };
        Err(format!(
            "{what} encodes to the token {:?} (id {id}), past the model's embedding table of \
             {} rows (vocab_size in its config.json): the tokenizer added it, and the model \
             has no embedding for it; leave it out",
            tok.decode(&[id], false).unwrap_or_default(),
            self.vocab
        ))
    }

    fn resolve_labels(&mut self, tok: &Tokenizer) -> Result<()> {
        let spec = &self.spec;
        if spec.free_targets {
            if !spec.kind.has_targets() {
                return Err(Error::arg(
                    "--free-targets",
                    "only --task seq2seq and --task causal have free targets",
                ));
            }
            return Ok(());
        }
        if spec.labels.len() < 2 {
            // a task whose labels carry words names where they come from (a cls prompt
            // predicted as --task pet was told "a classifier needs..."; hostile pass 35, F5)
            let what = match spec.kind {
                TaskKind::Cls => "a classifier needs at least 2 labels".to_string(),
                kind => format!(
                    "a {} task needs at least 2 labels, each with its word (--verbalizer \
                     LABEL=WORD,LABEL=WORD)",
                    kind.name()
                ),
            };
            return Err(Error::arg(
                "--labels",
                format!("{what}, got {:?}", spec.labels),
            ));
        }
        super::label_twins::check_label_list(&spec.labels, "--labels")?;
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
        // the labels so far by their token (pet) or target: found by hashing, as a search of
        // them per label took seconds for tens of thousands of labels (hostile pass 19)
        let mut by_token: HashMap<i32, usize> = HashMap::new();
        let mut by_target: HashMap<Vec<i32>, usize> = HashMap::new();
        for (k, (label, word)) in spec.labels.iter().zip(&spec.label_words).enumerate() {
            // a label that is its own word came from no --verbalizer the user gave: named as
            // such, with the flag that maps it (review 27, F16)
            let own = match label == word {
                true => " (with no --verbalizer word for it, a label is its own word: map it, e.g. --verbalizer LABEL=WORD,...)",
                false => "",
            };
            match spec.kind {
                TaskKind::Pet => {
                    let ids = tok.encode(word, false)?;
                    let &[id] = ids.as_slice() else {
                        let pieces: Vec<String> = ids
                            .iter()
                            .map(|&i| tok.decode(&[i], false).unwrap_or_default())
                            .collect();
                        return Err(Error::arg(
                            "--verbalizer",
                            format!("label {label:?}: the word {word:?} tokenizes to {} pieces {pieces:?}; a PET verbalizer word must be a single token{own}", ids.len()),
                        ));
                    };
                    if tok.is_special(id) && tok.unk_id() != Some(id) {
                        return Err(Error::arg("--verbalizer", format!("label {label:?}: the word {word:?} is the special token {:?} (id {id}): the model never predicts it at the mask; pick an ordinary word", tok.decode(&[id], false).unwrap_or_default())));
                    }
                    if tok.unk_id() == Some(id) {
                        return Err(Error::arg("--verbalizer", format!("label {label:?}: the word {word:?} is not in the model's vocabulary (it tokenizes to the unknown token): its score would never move; pick a word the vocabulary holds{own}")));
                    }
                    if let Some(&j) = by_token.get(&id) {
                        return Err(Error::arg("--verbalizer", format!("labels {:?} and {label:?} share the token {:?} (id {id}): the two could never be told apart; give each label its own word", spec.labels.get(j).map_or("", |l| l.as_str()), tok.decode(&[id], false).unwrap_or_default())));
                    }
                    let what = format!("label {label:?}: the word {word:?}");
                    (self.check_in_table(tok, &[id], &what))
                        .map_err(|msg| Error::arg("--verbalizer", msg))?;
                    self.verbalizer_ids.push(id);
                    by_token.insert(id, k);
                }
                _ => {
                    let ids = self.target_ids(tok, word)?;
                    let what = format!("label {label:?}: the target {word:?}");
                    (self.check_in_table(tok, &ids, &what))
                        .map_err(|msg| Error::arg("--verbalizer", msg))?;
                    // the bound is what the user may have just set (the target's words may
                    // be the data's labels, with no --verbalizer at all)
                    if ids.len() > spec.max_target_len {
                        return Err(Error::arg("--max-target-len", format!("label {label:?}: the target {word:?} has {} tokens, more than {}: raise it, or give the label a shorter target", ids.len(), spec.max_target_len)));
                    }
                    if ids.is_empty() {
                        return Err(Error::arg("--verbalizer", format!("label {label:?}: the target {word:?} has no tokens (--target-end none adds no end token): its score would be 0 on every row, above every other label's; give it a target text")));
                    }
                    if let Some(&j) = by_target.get(&ids) {
                        return Err(Error::arg("--verbalizer", format!("labels {:?} and {label:?} have the same target {word:?} (ids {ids:?}): their scores would always tie; give each label its own target", spec.labels.get(j).map_or("", |l| l.as_str()))));
                    }
                    by_target.insert(ids.clone(), k);
                    self.label_targets.push(ids);
                }
            }
        }
        self.check_not_prefix()
    }

    /// No label's target may start another's: a score is the sum of its tokens'
    /// log-probabilities, so the longer target scores the shorter's plus a log-probability (at
    /// most 0) and could never win. Checked between neighbours in sorted order (a target that
    /// starts another starts each target sorted between the two), not between every pair.
    fn check_not_prefix(&self) -> Result<()> {
        let mut order: Vec<usize> = (0..self.label_targets.len()).collect();
        order.sort_by(|&a, &b| self.label_targets.get(a).cmp(&self.label_targets.get(b)));
        for pair in order.windows(2) {
            let [a, b] = [pair.first(), pair.get(1)].map(|i| i.copied().unwrap_or(0));
            let (Some(short), Some(long)) = (self.label_targets.get(a), self.label_targets.get(b))
            else {
                continue;
            };
            if long.starts_with(short) {
                let name = |i: usize| self.spec.labels.get(i).map_or("", |l| l.as_str());
                let (first, second) = (name(a.min(b)), name(a.max(b)));
                return Err(Error::arg("--verbalizer", format!("labels {first:?} and {second:?}: one's target (ids {short:?}) begins the other's (ids {long:?}), whose score is the shorter's plus a log-probability, so it could never win; give the labels targets that differ, or end each with a token (--target-end eos or pad)")));
            }
        }
        Ok(())
    }

    /// A target text's ids: T5's tokenizer appends </s>; a causal LM's target is the text
    /// without special tokens, then the end token `target_end` names (so that generation
    /// stops): PEFT's guide appends the pad token and so labels it, counted in the loss.
    pub fn target_ids(&self, tok: &Tokenizer, text: &str) -> Result<Vec<i32>> {
        if self.spec.kind != TaskKind::Causal {
            return tok.encode(text, true);
        }
        let mut ids = tok.encode(text, false)?;
        ids.extend(self.end_id);
        Ok(ids)
    }

    /// `causal` under `--target-end eos` on a model whose config.json names no
    /// `eos_token_id`: each target ends with nothing, as under `none`, and generation stops
    /// at its length bound (or at a stop token of generation_config.json, which no target
    /// teaches). Not an error: PEFT scores such a model's targets the same
    /// way (`tests/causal_target_end.rs`, the Mistral fixture), so callers say so instead.
    pub fn eos_missing(&self) -> bool {
        self.spec.kind == TaskKind::Causal
            && self.spec.target_end == TargetEnd::Eos
            && self.eos_id < 0
    }

    /// `causal`: the tokens greedy generation stops at: the pad token under `--target-end pad`
    /// (the guide's `generate(eos_token_id=pad)`), else the model's stop tokens, all of them
    /// (generation_config.json's `eos_token_id` as transformers' `generate` reads it, else
    /// config.json's; Llama 3.1 instruct lists several), and under `eos` the targets' end
    /// token too, should generation_config.json leave it out: the prompt learnt to end there.
    pub fn stop_ids(&self, cfg: &DecoderConfig) -> Result<Vec<i32>> {
        if let (TargetEnd::Pad, Some(pad)) = (self.spec.target_end, self.end_id) {
            return Ok(vec![pad]);
        }
        if let Some((path, msg)) = &cfg.stop_token_error {
            return Err(Error::config(
                path,
                format!("{msg} (greedy generation reads its stop tokens from this file)"),
            ));
        }
        let mut stop: Vec<i32> = cfg.stop_token_ids.iter().map(|&e| e as i32).collect();
        if let (TargetEnd::Eos, Some(end)) = (self.spec.target_end, self.end_id) {
            if !stop.contains(&end) {
                stop.push(end);
            }
        }
        Ok(stop)
    }

    /// A free target cut to `max_target_len` tokens, keeping its end token; whether it was cut.
    pub(super) fn cut_target(&self, t: &mut Vec<i32>) -> bool {
        let max = self.spec.max_target_len;
        if t.len() <= max {
            return false;
        }
        let end = self.end_id.filter(|&e| t.last() == Some(&e));
        t.truncate(max - usize::from(end.is_some()));
        t.extend(end);
        true
    }

    /// Each label with the token ids of the word that stands for it, for CLASS_LABELS
    /// initialisation: pet's verbalizer token, seq2seq's and causal's target (without the end token), else the
    /// label's own pieces.
    pub fn class_label_pieces(&self, tok: &Tokenizer) -> Result<Vec<(String, Vec<i32>)>> {
        let spec = &self.spec;
        let mut out = Vec::with_capacity(spec.labels.len());
        for (i, label) in spec.labels.iter().enumerate() {
            let ids = match spec.kind {
                TaskKind::Pet => self.verbalizer_ids.get(i).map(|&id| vec![id]),
                TaskKind::Seq2Seq | TaskKind::Causal if !spec.free_targets => {
                    self.label_targets.get(i).map(|t| {
                        t.iter()
                            .copied()
                            .filter(|&id| Some(id) != self.end_id)
                            .collect()
                    })
                }
                TaskKind::Cls | TaskKind::Seq2Seq | TaskKind::Causal => None,
            };
            let ids = match ids {
                Some(ids) => ids,
                None => tok.encode(label, false)?,
            };
            out.push((label.clone(), ids));
        }
        Ok(out)
    }
}

/// The token that ends each target: T5's end-of-sequence token; for `causal` the model's
/// end-of-sequence token (`eos`), the tokenizer's pad token as transformers reads it, else
/// config.json's `pad_token_id` (`pad`; none is an error naming the flag and the files), or
/// nothing (`none`).
fn end_token<B: Backend>(spec: &TaskSpec, model: &Model<B>, eos_id: i32) -> Result<Option<i32>> {
    let eos = (eos_id >= 0).then_some(eos_id);
    if spec.kind != TaskKind::Causal && spec.target_end != TargetEnd::Eos {
        return Err(Error::arg(
            "--target-end",
            format!("is for --task causal only, not {}", spec.kind.name()),
        ));
    }
    let cfg = match (spec.kind, &model.net) {
        (TaskKind::Causal, Net::Bloom(m) | Net::Llama(m)) => &m.cfg,
        (TaskKind::Seq2Seq, _) => return Ok(eos),
        _ => return Ok(None),
    };
    match spec.target_end {
        TargetEnd::Eos => Ok(eos),
        TargetEnd::None => Ok(None),
        TargetEnd::Pad => pad_end(model, cfg).map(Some),
    }
}

/// `--target-end pad`'s token: the tokenizer's pad token as transformers reads it, else
/// config.json's `pad_token_id`. It is a target token the model must predict, so it must be
/// a row of the vocabulary: a pad token added to the tokenizer without resizing the
/// embeddings, which padding alone may be (`check_decoder_token_ids` in `config_decoder.rs`),
/// is refused.
fn pad_end<B: Backend>(model: &Model<B>, cfg: &DecoderConfig) -> Result<i32> {
    let d = model.dir.display();
    let (id, from) = match (model.tokenizer.pad_id()?, cfg.pad_token_id) {
        (Some(id), _) => (
            id as i64,
            format!("the tokenizer's pad token (beside {d}/tokenizer.json)"),
        ),
        (None, Some(id)) => (id as i64, format!("`pad_token_id` in {d}/config.json")),
        (None, None) => {
            return Err(Error::arg(
                "--target-end",
                format!(
                    "pad: the model has no pad token (no `pad_token` in {d}/tokenizer_config.json \
                     or {d}/special_tokens_map.json, no `pad_token_id` in {d}/config.json): use \
                     --target-end eos (PEFT's guide pads with the end-of-sequence token when \
                     the tokenizer has no pad token), or name one in tokenizer_config.json"
                ),
            ))
        }
    };
    // vocab_size is at most i32::MAX (config.json's sizes are), so a row's id is an i32
    if (0..cfg.vocab_size as i64).contains(&id) {
        return Ok(id as i32);
    }
    Err(Error::arg(
        "--target-end",
        format!(
            "pad: the pad token, {from}, is id {id}, outside the vocabulary (vocab_size {} in \
             {d}/config.json): a target cannot end with it; use --target-end eos, or resize the \
             embeddings to hold it",
            cfg.vocab_size
        ),
    ))
}

/// The model behind a task: BERT runs `pet` and `cls`, T5 runs `seq2seq`, BLOOM and Llama
/// run `causal`.
pub(super) enum Job<'m, B: Backend> {
    Pet(&'m Bert<B>),
    Cls(&'m Bert<B>),
    Seq2Seq(&'m T5<B>),
    Causal(&'m Decoder<B>),
}

/// The model × task match, written once: the model that runs `kind`, or an error that says
/// which task fits instead.
pub(super) fn job<B: Backend>(kind: TaskKind, model: &Model<B>) -> Result<Job<'_, B>> {
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
        (TaskKind::Causal, Net::Bloom(m) | Net::Llama(m)) => Ok(Job::Causal(m)),
        (_, Net::T5(_)) => Err(Error::arg(
            "--task",
            format!("{} is a T5 model: use --task seq2seq", model.dir.display()),
        )),
        (_, Net::Bloom(_) | Net::Llama(_)) => Err(Error::arg(
            "--task",
            format!(
                "{} is a decoder-only model: use --task causal",
                model.dir.display()
            ),
        )),
        (TaskKind::Seq2Seq | TaskKind::Causal, Net::Bert(_)) => Err(Error::arg(
            "--task",
            format!(
                "{} is a BERT model: use --task pet or cls",
                model.dir.display()
            ),
        )),
    }
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
