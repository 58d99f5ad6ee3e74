//! The progress bar of `predict` and `eval`: the rows scored of all, with their rate and the
//! time left, on stderr while it is a terminal (never into a pipe or a log file), unless
//! `--no-progress`. A long file ran for minutes without a sign of life.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use softprompt::internals::stdout::DrawnBar;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Never set: `predict` and `eval` end at Ctrl-C as any command does (the `_until` calls are
/// taken for their callback).
static NEVER: AtomicBool = AtomicBool::new(false);

/// `run` (an `_until` call, given its callback and stop flag) under a bar over rows of
/// `lens` tokens, cleared before it returns.
pub(super) fn scoring<T>(
    lens: &[usize],
    show: bool,
    run: impl FnOnce(&mut dyn FnMut(usize), &AtomicBool) -> T,
) -> T {
    let bar = RowsBar::new(lens, show);
    let out = run(&mut |done| bar.set(done), &NEVER);
    bar.clear();
    out
}

/// The bar, its registration while drawn (a warning written meanwhile hides it), and the
/// work of the rows done first.
struct RowsBar {
    bar: ProgressBar,
    _drawn: Option<DrawnBar>,
    /// work[k]: the tokens of the k shortest rows (one a row at least). Rows run shortest
    /// first, so a bar of rows promised the end long before it (ETA 0 with 82% of the time
    /// to come; hostile pass 19): the bar and its ETA go by this, the text says rows.
    work: Vec<u64>,
    start: Instant,
}

impl RowsBar {
    /// A bar over rows of `lens` tokens; `show` false (`--no-progress`) draws nothing.
    fn new(lens: &[usize], show: bool) -> RowsBar {
        let mut sorted: Vec<u64> = lens.iter().map(|&n| n.max(1) as u64).collect();
        sorted.sort_unstable();
        let work: Vec<u64> = std::iter::once(0)
            .chain(sorted.iter().scan(0u64, |sum, &n| {
                *sum += n;
                Some(*sum)
            }))
            .collect();
        let pb = ProgressBar::new(work.last().copied().unwrap_or(0));
        if !show {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        let drawn = show.then(|| DrawnBar::new(&pb));
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:28.cyan/blue} {msg} [{elapsed_precise} < ETA {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let bar = RowsBar {
            bar: pb,
            _drawn: drawn,
            work,
            start: Instant::now(),
        };
        bar.say(0);
        bar
    }

    /// The rows done so far (the engine's callback after each batch).
    fn set(&self, done: usize) {
        let at = self
            .work
            .get(done)
            .or(self.work.last())
            .copied()
            .unwrap_or(0);
        self.say(done);
        self.bar.set_position(at);
    }

    /// "12/400 rows, 3.1 rows/s" (indicatif's own rate printed four decimals).
    fn say(&self, done: usize) {
        let rows = self.work.len().saturating_sub(1);
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        self.bar
            .set_message(format!("{done}/{rows} rows, {rate:.1} rows/s"));
    }

    /// Cleared before the command prints its results or an error.
    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows run shortest first: the bar (and its ETA) moves by their tokens, the text by rows.
    #[test]
    fn the_bar_moves_by_the_tokens_of_the_rows_done() {
        let bar = RowsBar::new(&[5, 1, 3, 0], false);
        assert_eq!(bar.bar.length(), Some(10));
        bar.set(2);
        // the two shortest: an empty row counts one token, then the row of 1
        assert_eq!(bar.bar.position(), 2);
        assert!(
            bar.bar.message().starts_with("2/4 rows, "),
            "{}",
            bar.bar.message()
        );
        bar.set(3);
        assert_eq!(bar.bar.position(), 5);
        bar.set(4);
        assert_eq!(bar.bar.position(), 10);
    }
}
