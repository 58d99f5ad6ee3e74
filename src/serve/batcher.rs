//! Dynamic batching: the requests that arrive within a window share one engine batch, up to a
//! number of rows, whatever their prompts; or, for the baseline the load benchmark compares
//! against, one prompt at a time with the same window.
//!
//! The window opens when a batch's oldest request arrived, so a request that waited behind
//! the previous batch is not made to wait a second window: what is already queued joins it at
//! once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How batches are made.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// the most rows in a batch (a single larger request still runs, alone)
    pub max_rows: usize,
    /// how long after the oldest request arrived a batch still takes new ones
    pub window: Duration,
    /// false: a batch holds one prompt's requests only
    pub mix_prompts: bool,
}

/// A request waiting for a batch.
pub trait Pending {
    fn prompt(&self) -> &str;
    /// rows it adds to a batch
    fn rows(&self) -> usize;
    fn arrived(&self) -> Instant;
}

/// What the source of requests gives.
pub enum Next<J> {
    Job(J),
    /// nothing came before the deadline
    Timeout,
    /// nothing more will ever come
    Closed,
    /// the server stopped taking connections: the batch gathering closes now, and later
    /// ones wait out no window (a request held for the rest of a long window at shutdown was
    /// dropped past the grace; hostile pass 34, F8)
    Stopping,
}

/// Requests taken from the source that wait for a later batch (another prompt's, without
/// mixing, or ones that did not fit), oldest first.
pub struct Batcher<J> {
    policy: Policy,
    backlog: VecDeque<J>,
}

impl<J: Pending> Batcher<J> {
    pub fn new(policy: Policy) -> Batcher<J> {
        Batcher {
            policy,
            backlog: VecDeque::new(),
        }
    }

    /// The next batch, oldest request first: the backlog's matching requests, then those
    /// `recv` gives before the oldest one's window closes, while they fit. `recv(deadline)`
    /// waits for the next request until `deadline`, or for ever with None. None once the
    /// source is closed and nothing waits.
    pub fn next_batch(
        &mut self,
        recv: &mut impl FnMut(Option<Instant>) -> Next<J>,
    ) -> Option<Vec<J>> {
        let head = match self.backlog.pop_front() {
            Some(j) => j,
            None => loop {
                match recv(None) {
                    Next::Job(j) => break j,
                    Next::Timeout => continue,
                    Next::Stopping => self.policy.window = Duration::ZERO,
                    Next::Closed => return None,
                }
            },
        };
        let deadline = head.arrived() + self.policy.window;
        let only = (!self.policy.mix_prompts).then(|| head.prompt().to_string());
        let mut rows = head.rows();
        let mut batch = vec![head];
        for j in std::mem::take(&mut self.backlog) {
            if admits(&self.policy, only.as_deref(), rows, &j) {
                rows += j.rows();
                batch.push(j);
            } else {
                self.backlog.push_back(j);
            }
        }
        while rows < self.policy.max_rows {
            match recv(Some(deadline)) {
                Next::Job(j) if admits(&self.policy, only.as_deref(), rows, &j) => {
                    rows += j.rows();
                    batch.push(j);
                }
                Next::Job(j) => self.backlog.push_back(j),
                Next::Stopping => {
                    self.policy.window = Duration::ZERO;
                    break;
                }
                Next::Timeout | Next::Closed => break,
            }
        }
        Some(batch)
    }
}

/// `j` may join a batch of `rows` rows (of prompt `only`, when set).
fn admits<J: Pending>(policy: &Policy, only: Option<&str>, rows: usize, j: &J) -> bool {
    only.is_none_or(|p| p == j.prompt()) && rows + j.rows() <= policy.max_rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct J {
        prompt: &'static str,
        rows: usize,
        at: Instant,
        id: usize,
    }

    impl Pending for J {
        fn prompt(&self) -> &str {
            self.prompt
        }
        fn rows(&self) -> usize {
            self.rows
        }
        fn arrived(&self) -> Instant {
            self.at
        }
    }

    /// A source of jobs (prompt, rows, arrival in ms after t0) on a simulated clock: a job
    /// comes when it has arrived by the deadline, else the call times out; Closed once all
    /// have come.
    fn source(jobs: &[(&'static str, usize, u64)]) -> impl FnMut(Option<Instant>) -> Next<J> {
        let t0 = Instant::now();
        let mut q: VecDeque<J> = (jobs.iter().enumerate())
            .map(|(id, &(prompt, rows, ms))| J {
                prompt,
                rows,
                at: t0 + Duration::from_millis(ms),
                id,
            })
            .collect();
        move |deadline| match (q.front(), deadline) {
            (None, _) => Next::Closed,
            (Some(j), Some(d)) if j.at > d => Next::Timeout,
            _ => q.pop_front().map_or(Next::Closed, Next::Job),
        }
    }

    /// A stop heard while a batch gathers closes it at once, and the next batch's window is
    /// none: its deadline is its head's arrival.
    #[test]
    fn a_stop_closes_the_gathering_batch() {
        let t0 = Instant::now();
        let job = |id, ms| J {
            prompt: "a",
            rows: 1,
            at: t0 + Duration::from_millis(ms),
            id,
        };
        let mut script = VecDeque::from([
            Next::Job(job(0, 0)),
            Next::Stopping,
            Next::Job(job(1, 1)),
            Next::Timeout,
        ]);
        let mut deadlines = Vec::new();
        let mut recv = |d: Option<Instant>| {
            deadlines.push(d);
            script.pop_front().unwrap_or(Next::Closed)
        };
        let window = Duration::from_secs(20);
        let mut b = Batcher::new(Policy {
            max_rows: 8,
            window,
            mix_prompts: true,
        });
        let ids = |batch: Option<Vec<J>>| batch.map(|b| b.iter().map(|j| j.id).collect::<Vec<_>>());
        assert_eq!(ids(b.next_batch(&mut recv)), Some(vec![0]));
        assert_eq!(ids(b.next_batch(&mut recv)), Some(vec![1]));
        assert_eq!(ids(b.next_batch(&mut recv)), None);
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        assert_eq!(deadlines, [None, Some(t0 + window), None, at(1), None]);
    }

    fn batches(policy: Policy, jobs: &[(&'static str, usize, u64)]) -> Vec<Vec<usize>> {
        let mut recv = source(jobs);
        let mut b = Batcher::new(policy);
        std::iter::from_fn(|| b.next_batch(&mut recv))
            .map(|batch| batch.iter().map(|j| j.id).collect())
            .collect()
    }

    fn policy(max_rows: usize, mix_prompts: bool) -> Policy {
        Policy {
            max_rows,
            window: Duration::from_millis(10),
            mix_prompts,
        }
    }

    const JOBS: &[(&str, usize, u64)] = &[
        ("a", 1, 0),
        ("b", 2, 1),
        ("a", 1, 2),
        ("c", 1, 9),
        ("b", 1, 11), // after the first window
        ("a", 1, 12),
    ];

    #[test]
    fn mixed_batches_take_every_prompt_within_the_window() {
        assert_eq!(
            batches(policy(8, true), JOBS),
            vec![vec![0, 1, 2, 3], vec![4, 5]]
        );
    }

    #[test]
    fn one_prompt_at_a_time_defers_the_others_oldest_first() {
        // window of job 0: a's jobs 0 and 2; then b (job 1, its window already closed) takes
        // b's job 4 from the queue; then c; then a's job 5
        assert_eq!(
            batches(policy(8, false), JOBS),
            vec![vec![0, 2], vec![1, 4], vec![3], vec![5]]
        );
    }

    #[test]
    fn rows_never_pass_the_limit_and_a_large_request_runs_alone() {
        let jobs = [
            ("a", 2, 0),
            ("b", 2, 1),
            ("a", 1, 2),
            ("c", 9, 3),
            ("b", 2, 4),
        ];
        // 2+2 then 1 would fit (5 > 4: no); c's 9 rows exceed the limit and run alone
        assert_eq!(
            batches(policy(4, true), &jobs),
            vec![vec![0, 1], vec![2, 4], vec![3]]
        );
    }

    #[test]
    fn a_full_batch_does_not_wait_for_the_window() {
        let jobs = [("a", 1, 0), ("b", 1, 0), ("c", 1, 100)];
        assert_eq!(batches(policy(2, true), &jobs), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn a_closed_source_ends_after_the_backlog() {
        let jobs = [("a", 1, 0), ("b", 1, 0), ("a", 1, 0)];
        assert_eq!(batches(policy(8, false), &jobs), vec![vec![0, 2], vec![1]]);
        assert!(batches(policy(8, true), &[]).is_empty());
    }
}
