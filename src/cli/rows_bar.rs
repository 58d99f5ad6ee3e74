//! The progress bar of `predict` and `eval`: the rows scored of all, with their rate and the
//! time left, on stderr while it is a terminal (never into a pipe or a log file), unless
//! `--no-progress`. A long file ran for minutes without a sign of life.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use softprompt::internals::stdout::DrawnBar;
use std::fmt::Write;
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

/// The bar, and its registration while drawn (a warning written meanwhile hides it).
struct RowsBar {
    bar: ProgressBar,
    _drawn: Option<DrawnBar>,
}

impl RowsBar {
    /// A bar over `rows` rows; `show` false (`--no-progress`) draws nothing.
    fn new(rows: usize, show: bool) -> RowsBar {
        let pb = ProgressBar::new(rows as u64);
        if !show {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        let drawn = show.then(|| DrawnBar::new(&pb));
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:28.cyan/blue} {pos}/{len} rows, {rate} [{elapsed_precise} < ETA {eta_precise}]",
            )
            // indicatif's {per_sec} prints 4 decimals
            .map(|style| style.with_key("rate", |s: &ProgressState, w: &mut dyn Write| {
                let _ = write!(w, "{:.1} rows/s", s.per_sec());
            }))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        RowsBar {
            bar: pb,
            _drawn: drawn,
        }
    }

    /// The rows done so far (the engine's callback after each batch).
    fn set(&self, done: usize) {
        self.bar.set_position(done as u64);
    }

    /// Cleared before the command prints its results or an error.
    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
