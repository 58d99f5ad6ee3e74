//! The clock of a metrics line's rates (`steps_per_s`, `tokens_per_s`): the steps this
//! process timed since the line before, and the time they took. A resumed run's window holds
//! steps from before the kill, which no clock here saw (the first line after `--resume` said
//! up to twice the real rate), and the evaluations and saves between steps are no step's time
//! (the line after a dev evaluation said less; in a multi-task run, a task listed after
//! another's evaluation said less than the task it stepped with).
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub(crate) struct RateClock {
    start: Instant,
    /// the time since `start` that was no step's (evaluations, saves)
    left_out: Duration,
    steps: u64,
    tokens: u64,
}

impl RateClock {
    pub(crate) fn new() -> RateClock {
        RateClock {
            start: Instant::now(),
            left_out: Duration::ZERO,
            steps: 0,
            tokens: 0,
        }
    }

    /// One step timed, with its tokens.
    pub(crate) fn add(&mut self, tokens: usize) {
        self.steps += 1;
        self.tokens += tokens as u64;
    }

    /// `d` of the time since the start was no step's.
    pub(crate) fn leave_out(&mut self, d: Duration) {
        self.left_out += d;
    }

    /// (steps/s, tokens/s) over the steps timed since the start; the clock starts again.
    pub(crate) fn take_rates(&mut self) -> (f64, f64) {
        let spent = self.start.elapsed().saturating_sub(self.left_out);
        let secs = spent.as_secs_f64().max(1e-9);
        let rates = (self.steps as f64 / secs, self.tokens as f64 / secs);
        *self = RateClock::new();
        rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time left out is not counted, and the steps are those added since the last rates.
    #[test]
    fn rates_count_the_steps_timed_in_the_time_they_took() {
        let mut c = RateClock::new();
        c.add(10);
        c.add(30);
        std::thread::sleep(Duration::from_millis(40));
        c.leave_out(Duration::from_millis(20));
        let (steps, tokens) = c.take_rates();
        // 2 steps in at least 20 ms of step time (40 ms or more elapsed, 20 left out); a
        // clock that left nothing out says at most 2 / 0.04 = 50
        assert!(steps > 0.0 && steps <= 100.0, "{steps}");
        assert!((tokens / steps - 20.0).abs() < 1e-9, "{tokens} {steps}");
        let (steps, _) = c.take_rates();
        assert_eq!(steps, 0.0);
        // more left out than elapsed: no step time, not a negative one (a clock that left
        // nothing out says 1 / 0.05 s = 20 at most)
        std::thread::sleep(Duration::from_millis(50));
        c.add(1);
        c.leave_out(Duration::from_secs(3600));
        assert!(c.take_rates().0 > 1e6);
    }
}
