//! The progress bar of `predict` and `eval`: the rows scored of all, with their rate and the
//! time left, on stderr while it is a terminal (never into a pipe or a log file), unless
//! `--no-progress`. A long file ran for minutes without a sign of life.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::AtomicBool;

/// Never set: `predict` and `eval` end at Ctrl-C as any command does (the `_until` calls are
/// taken for their callback).
static NEVER: AtomicBool = AtomicBool::new(false);

/// `run` (an `_until` call, given its callback and stop flag) under a bar over `rows` rows,
/// cleared before it returns.
pub(super) fn scoring<T>(
    rows: usize,
    show: bool,
    run: impl FnOnce(&mut dyn FnMut(usize), &AtomicBool) -> T,
) -> T {
    let bar = RowsBar::new(rows, show);
    let out = run(&mut |done| bar.set(done), &NEVER);
    bar.clear();
    out
}

struct RowsBar(ProgressBar);

impl RowsBar {
    /// A bar over `rows` rows; `show` false (`--no-progress`) draws nothing.
    fn new(rows: usize, show: bool) -> RowsBar {
        let pb = ProgressBar::new(rows as u64);
        if !show {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:28.cyan/blue} {pos}/{len} rows, {per_sec} [{elapsed_precise} < ETA {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        RowsBar(pb)
    }

    /// The rows done so far (the engine's callback after each batch).
    fn set(&self, done: usize) {
        self.0.set_position(done as u64);
    }

    /// Cleared before the command prints its results or an error.
    fn clear(&self) {
        self.0.finish_and_clear();
    }
}
