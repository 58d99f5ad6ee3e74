//! The positions a `causal` row takes: its prompt, its text (up to max_len tokens) and what
//! the task places after the text, as each use lays a row out. A decoder has no position
//! table: its rows are bounded by its sliding window, or else by this engine's cap
//! (`MAX_TOKENS`). A max_len that counts only the prompt and the text let the targets run
//! past the cap without a word (and past a window into an "unsupported" error).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model::Model;
use super::spec::{Decode, TaskKind};
use super::task::Task;
use crate::backend::Backend;
use crate::error::{sum_text, Error, Result};

/// A use of a task's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placing {
    /// a training step: the whole target follows the text (`causal::joined`), and a dev
    /// split under greedy decoding generates up to max_target_len tokens
    Train,
    /// rank scoring: the text, then every target but its last token (the last is only
    /// predicted, `Decoder::rank_losses`). Greedy decoding is bounded by the rows it
    /// generates behind (`Decoder::check_reach`), not here.
    Score,
}

/// The positions a `causal` task places after a row's text when used as `placing` says
/// (0 for the other tasks, whose targets take no positions of the row).
pub(crate) fn after_row(task: &Task, placing: Placing) -> usize {
    let spec = &task.spec;
    if spec.kind != TaskKind::Causal {
        return 0;
    }
    let longest = (task.label_targets.iter()).map(Vec::len).max().unwrap_or(0);
    let greedy = spec.free_targets || spec.decode == Decode::Greedy;
    match (placing, greedy) {
        (Placing::Train, true) => longest.max(spec.max_target_len),
        (Placing::Train, false) => longest,
        (Placing::Score, true) => 0,
        (Placing::Score, false) => longest.saturating_sub(1),
    }
}

/// The room a `causal` task on `model` has behind a prompt of `p` rows, used as `placing`
/// says (None for the other tasks).
pub(crate) struct Room {
    /// the most tokens a row's text may hold
    pub fits: usize,
    /// the positions the task places after the text
    pub after: usize,
    /// what bounds the row, and its size, worded for messages
    pub limit: usize,
    pub what: String,
    /// the targets, worded for messages: "and targets of up to 3 tokens"
    pub targets: String,
}

pub(crate) fn text_room<B: Backend>(
    task: &Task,
    model: &Model<B>,
    p: usize,
    placing: Placing,
) -> Option<Room> {
    if task.spec.kind != TaskKind::Causal {
        return None;
    }
    let (limit, what) = model.position_limit();
    let after = after_row(task, placing);
    let longest = (task.label_targets.iter()).map(Vec::len).max().unwrap_or(0);
    let targets = match (placing, after) {
        (_, 0) => String::new(),
        (Placing::Train, k) => format!(" and targets of up to {k} tokens"),
        // the last target token is only predicted: it takes no position
        (Placing::Score, k) => format!(
            " and targets of up to {longest} tokens (scoring places {k} of them after the row)"
        ),
    };
    Some(Room {
        fits: limit.saturating_sub(p).saturating_sub(after),
        after,
        limit,
        what,
        targets,
    })
}

/// A `causal` task's max_len next to a prompt of `p` rows, with what it places after the
/// text, fits the model's positions; the error names --max-len and the largest that fits.
pub(crate) fn check_room<B: Backend>(
    task: &Task,
    model: &Model<B>,
    p: usize,
    placing: Placing,
) -> Result<()> {
    let Some(room) = text_room(task, model, p, placing) else {
        return Ok(());
    };
    let n = task.spec.max_len;
    if n <= room.fits {
        return Ok(());
    }
    let Room {
        fits,
        after,
        limit,
        what,
        targets,
    } = room;
    let need = sum_text(&[p, n, after]);
    let head = format!(
        "{n} tokens next to a prompt of {p} rows{targets} need {need} positions, but {what} \
         holds {limit}"
    );
    // max_len is 2 at least (a token of text and an end)
    let advice = match fits {
        0 | 1 => "no --max-len fits: shorten the prompt or the targets".to_string(),
        _ => format!("use --max-len {fits} or less"),
    };
    Err(Error::arg("--max-len", format!("{head}: {advice}")))
}
