//! Batches: encoded rows right-padded into a [`Batch`] for a model, and the checks a batch
//! or a step makes of hand-made rows and their labels ([`LabelUse`]).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::encode::{Encoded, Row};
use super::spec::TaskKind;
use super::task::Task;
use crate::backend::IGNORE_INDEX;
use crate::error::{Error, Result};
use crate::models::TokenBatch;
use std::path::Path;

/// A right-padded batch ready for a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: TokenBatch,
    /// (B) `pet`: [MASK] index per row
    pub mask_pos: Vec<i32>,
    /// (B) class index per row, -100 when unknown
    pub labels: Vec<i32>,
    /// (B, L) `seq2seq` and `causal` targets, -100 padded; empty otherwise (`causal` appends
    /// them to the row's tokens: `causal::joined`)
    pub targets: Vec<i32>,
    pub l: usize,
    /// real tokens in the batch (input plus target), for tokens/s
    pub real_tokens: usize,
}

/// What a row's label is checked for ([`Task::check_label`]): what the row must hold, and
/// how a refusal names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelUse {
    /// evaluation, or a mixed batch's labels: a label, where there is one, is the task's
    Score,
    /// a training step: a `pet` or `cls` row needs a label too
    Step,
    /// a row of a mixed training step, of job `job`: as `Step`, and a row without a label is
    /// named with its job (its own job's share of the batch numbers it otherwise, a number
    /// the caller could not find)
    MixedStep { job: usize },
}

/// Where checked rows came from, for a refusal to name: a data file (its line), or an
/// argument of the API holding rows made by hand (no file, so no line).
#[derive(Clone, Copy, Debug)]
enum RowsFrom<'a> {
    File(&'a Path),
    Arg(&'a str),
}

impl RowsFrom<'_> {
    /// A fault of `row` said in `msg` (which names the row).
    fn fault(self, row: &Row, msg: String) -> Error {
        match self {
            RowsFrom::File(path) => Error::data(path, row.line, msg),
            RowsFrom::Arg(flag) => Error::arg(flag, msg),
        }
    }
}

impl Task {
    /// A right-padded batch of `rows` (indices into `enc`); an index past `enc` is an error.
    pub fn batch(&self, enc: &Encoded, rows: &[u32]) -> Result<Batch> {
        self.batch_of(enc, rows, true)
    }

    /// `batch` for rows of several jobs that this task pads for: a `pet` row's [MASK]
    /// position is only checked to lie within its ids (a `cls` job's row holds no mask
    /// token), the API having checked each row against its own job's task (`check_hand_row`).
    pub(crate) fn batch_of_jobs(&self, enc: &Encoded, rows: &[u32]) -> Result<Batch> {
        self.batch_of(enc, rows, false)
    }

    /// `batch`, with `own` when every row is this task's.
    fn batch_of(&self, enc: &Encoded, rows: &[u32], own: bool) -> Result<Batch> {
        let picked: Vec<&Row> = rows
            .iter()
            .map(|&i| {
                enc.rows.get(i as usize).ok_or_else(|| {
                    Error::data(
                        &enc.path,
                        0,
                        format!("batch row {i} is past the {} encoded rows", enc.rows.len()),
                    )
                })
            })
            .collect::<Result<_>>()?;
        for (&i, row) in rows.iter().zip(&picked) {
            self.check_row_at(RowsFrom::File(&enc.path), i as usize, row, own)?;
        }
        let b = picked.len();
        let t = picked.iter().map(|r| r.ids.len()).max().unwrap_or(1).max(1);
        let l = picked.iter().map(|r| r.target.len()).max().unwrap_or(0);
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
            targets: vec![IGNORE_INDEX; b * l],
            l,
            real_tokens: 0,
        };
        // every row fits: t and l are the maxima over the rows
        for (bi, row) in picked.iter().enumerate() {
            let (n, m) = (row.ids.len(), row.target.len());
            if let Some(ids) = batch.tokens.ids.get_mut(bi * t..bi * t + n) {
                ids.copy_from_slice(&row.ids);
            }
            if let Some(mask) = batch.tokens.mask.get_mut(bi * t..bi * t + n) {
                mask.fill(1);
            }
            if let Some(targets) = batch.targets.get_mut(bi * l..bi * l + m) {
                targets.copy_from_slice(&row.target);
            }
            batch.mask_pos.push(row.mask_pos as i32);
            batch
                .labels
                .push(row.label.map_or(IGNORE_INDEX, |k| k as i32));
            batch.real_tokens += n + m;
        }
        Ok(batch)
    }

    /// A row the encoder could not have made (the API takes hand-made rows): no token ids,
    /// or a PET [MASK] position outside them, would score padding without a word.
    fn check_row_at(&self, at: RowsFrom<'_>, i: usize, row: &Row, own: bool) -> Result<()> {
        if row.ids.is_empty() {
            let msg = format!(
                "row {} has no token ids: a row needs at least one token",
                i + 1
            );
            return Err(at.fault(row, msg));
        }
        for (field, ids) in [("ids", &row.ids), ("targets", &row.target)] {
            let v = self.vocab;
            if let Some((j, id)) = ids
                .iter()
                .enumerate()
                .find(|(_, &id)| id < 0 || id as usize >= v)
            {
                // the embedding refused it as a tensor error (a corrupt file) naming no row
                return Err(Error::arg(
                    field,
                    format!(
                        "row {} has token id {id} at index {j}, outside the model's {v} ids \
                         (0 to {})",
                        i + 1,
                        v.saturating_sub(1)
                    ),
                ));
            }
        }
        if self.spec.kind == TaskKind::Pet {
            self.check_mask_pos(at, i, row, own)?;
        }
        Ok(())
    }

    /// Row `i` (from 0) of the API's argument `flag`, made by hand or for this task: ids,
    /// and for `pet` its [MASK] position holding the mask token, as `batch` checks them; a
    /// hand-made row's fields this task's kind has no use for are refused
    /// (`check_unused_fields`).
    pub(crate) fn check_hand_row(&self, flag: &str, i: usize, row: &Row) -> Result<()> {
        self.check_row_at(RowsFrom::Arg(flag), i, row, true)?;
        match row.model {
            None => self.check_unused_fields(flag, i, row),
            Some(_) => Ok(()),
        }
    }

    /// A hand-made row (Python's `Encoded.from_ids`, `Row::new`) holding a field its task's
    /// kind never reads: a `pet` or `cls` row's target, or a [MASK] position on a task other
    /// than `pet`, was ignored without a word. A position of 0 is `Row::new`'s default, not
    /// told apart from one given.
    fn check_unused_fields(&self, flag: &str, i: usize, row: &Row) -> Result<()> {
        let kind = self.spec.kind;
        let unused = if !kind.has_targets() && !row.target.is_empty() {
            format!(
                "row {} has a target (targets), but a {} task scores its labels, not \
                 targets: leave targets out",
                i + 1,
                kind.name()
            )
        } else if kind != TaskKind::Pet && row.mask_pos != 0 {
            format!(
                "row {} has a [MASK] position (mask_positions) {}, but a {} task has none: \
                 leave mask_positions out (they are for pet tasks)",
                i + 1,
                row.mask_pos,
                kind.name()
            )
        } else {
            return Ok(());
        };
        Err(Error::arg(flag, unused))
    }

    /// A `pet` row's [MASK] position holds the mask token: a hand-made row (`Row::new`,
    /// Python's `Encoded.from_ids` without `mask_positions`) left at 0 scored its first
    /// token, [CLS], without a word, and one past its ids scored padding. Without `token`
    /// only the latter is checked.
    fn check_mask_pos(&self, from: RowsFrom<'_>, i: usize, row: &Row, token: bool) -> Result<()> {
        let at = row.mask_pos;
        let fault = |msg: String| Err(from.fault(row, format!("row {}: {msg}", i + 1)));
        let Some(&id) = row.ids.get(at) else {
            return fault(format!(
                "its [MASK] position (mask_positions) {at} is past its {} \
                 token ids",
                row.ids.len()
            ));
        };
        match self.mask_id {
            Some(m) if token && id != m => {
                let found = (row.ids.iter().position(|&x| x == m))
                    .map_or("its ids hold none".to_string(), |j| format!("it is at {j}"));
                fault(format!(
                    "its [MASK] position (mask_positions) {at} holds token \
                     id {id}, not the mask token (id {m}): expected the index of the mask \
                     token in its ids ({found})"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Row `i` (from 0) of hand-made rows (or a batch) has a label this task can use: none
    /// past its labels (a step refused one as an id outside the head's table, but evaluate
    /// counted it as a wrong prediction), and in a `pet` or `cls` training step one at all (a
    /// row without was scored as id -100 outside the head's table, a corrupt-file error
    /// naming no row). Not in `batch`: a mixed batch's rows carry the labels of their own
    /// tasks.
    pub fn check_label(&self, i: usize, label: Option<usize>, usage: LabelUse) -> Result<()> {
        let n = self.spec.labels.len();
        let needed =
            usage != LabelUse::Score && matches!(self.spec.kind, TaskKind::Pet | TaskKind::Cls);
        match label {
            Some(k) if k >= n => Err(Error::arg(
                "label",
                format!(
                    "row {} has label {k}, but the task has {n} labels: expected 0 to {}",
                    i + 1,
                    n.saturating_sub(1)
                ),
            )),
            None if needed => {
                // a mixed step's row: its place among all the rows passed, and its job
                let job = match usage {
                    LabelUse::MixedStep { job } => {
                        format!(" (of job {job}, a {} task)", self.spec.kind.name())
                    }
                    _ => String::new(),
                };
                Err(Error::arg(
                    "label",
                    format!(
                        "row {}{job} has no label: every row of a training step needs one",
                        i + 1
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// [`Task::check_label`] and [`Task::check_target`] on every row of `rows`, numbered
    /// from 1 in that order.
    pub fn check_labels(&self, rows: &[Row], usage: LabelUse) -> Result<()> {
        (rows.iter().enumerate()).try_for_each(|(i, row)| {
            self.check_label(i, row.label, usage)?;
            self.check_target(i, !row.target.is_empty(), usage)
        })
    }

    /// Row `i` (from 0) of a `seq2seq` or `causal` training step has a target (`has`): a
    /// row without one (made by hand with a label but no target) added nothing to the loss
    /// or the gradient, without a word, while its tokens were counted.
    pub(crate) fn check_target(&self, i: usize, has: bool, usage: LabelUse) -> Result<()> {
        let kind = self.spec.kind;
        if has || usage == LabelUse::Score || !kind.has_targets() {
            return Ok(());
        }
        let job = match usage {
            LabelUse::MixedStep { job } => format!(" (of job {job}, a {} task)", kind.name()),
            _ => String::new(),
        };
        // a label task's encoder gives a labelled row its label's target words
        let fill = match self.spec.free_targets {
            true => "its target text's ids",
            false => "its label's target, as Model::encode gives it",
        };
        Err(Error::arg(
            "targets",
            format!(
                "row {}{job} has no target: every row of a {} training step needs one \
                 ({fill})",
                i + 1,
                kind.name()
            ),
        ))
    }

    /// The class of row `i` for scoring (free targets: None).
    pub fn gold(&self, row: &Row) -> Option<usize> {
        row.label
    }
}
