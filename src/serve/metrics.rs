//! The server's Prometheus metrics (text format 0.0.4): requests by route and status, rows per
//! engine batch, queue time, request latency, and the engine's tokens and seconds (their ratio
//! is its throughput in tokens/s).

use super::conn::Phase;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Rows per batch: powers of two up to a large --max-batch.
const ROW_BUCKETS: &[f64] = &[1., 2., 4., 8., 16., 32., 64., 128., 256., 512.];
/// Seconds, from a fast queue to a slow request on a big model.
const SECOND_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1., 2.5, 5., 10., 30.,
];

/// A Prometheus histogram: per-bucket counts (made cumulative when written), sum and count.
struct Histogram {
    bounds: &'static [f64],
    // counts[i]: observations in (bounds[i-1], bounds[i]]; those above the last bound only
    // in `count`
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            if let Some(c) = self.counts.get_mut(i) {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

struct Inner {
    /// (route, status) -> requests answered
    requests: BTreeMap<(&'static str, u16), u64>,
    batch_rows: Histogram,
    queue_seconds: Histogram,
    latency_seconds: Histogram,
    batches: u64,
    rows: u64,
    tokens: u64,
    engine_seconds: f64,
    prompts: usize,
    /// prediction requests dropped unrun: their client had gone
    cancelled: u64,
    /// batches that failed as one and ran again a request at a time
    splits: u64,
    /// open connections by `Phase`
    connections: [u64; 3],
}

/// Every metric, behind one lock: each request takes it a few times, far from a contention
/// point next to an engine batch.
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The route a successful request's latency is measured on.
pub const PREDICT_ROUTE: &str = "/v1/predict";

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                batch_rows: Histogram::new(ROW_BUCKETS),
                queue_seconds: Histogram::new(SECOND_BUCKETS),
                latency_seconds: Histogram::new(SECOND_BUCKETS),
                batches: 0,
                rows: 0,
                tokens: 0,
                engine_seconds: 0.0,
                prompts: 0,
                cancelled: 0,
                splits: 0,
                connections: [0; 3],
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // a panic elsewhere while holding the lock leaves numbers that are still worth showing
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// One answered request; a successful prediction's time also goes into the latency
    /// histogram.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.with(|m| {
            *m.requests.entry((route, status)).or_default() += 1;
            if route == PREDICT_ROUTE && status == 200 {
                m.latency_seconds.observe(took.as_secs_f64());
            }
        });
    }

    /// How long a request waited between its arrival and its batch's start.
    pub fn queued(&self, waited: Duration) {
        self.with(|m| m.queue_seconds.observe(waited.as_secs_f64()));
    }

    /// One batch the batcher gathered: its rows, and the engine's time on it (its passes of
    /// at most --max-batch rows, and a failed batch's runs a request at a time).
    pub fn batch(&self, rows: usize, took: Duration) {
        self.with(|m| {
            m.batch_rows.observe(rows as f64);
            m.batches += 1;
            m.engine_seconds += took.as_secs_f64();
        });
    }

    /// The rows of a batch's requests that were answered, and their real tokens (a failed
    /// request's rows were counted as predicted).
    pub fn predicted(&self, rows: usize, tokens: usize) {
        self.with(|m| {
            m.rows += rows as u64;
            m.tokens += tokens as u64;
        });
    }

    /// `n` prediction requests the engine dropped unrun, their clients gone.
    pub fn cancelled(&self, n: usize) {
        self.with(|m| m.cancelled += n as u64);
    }

    /// An engine batch that failed as a whole: its requests ran again one at a time.
    pub fn split(&self) {
        self.with(|m| m.splits += 1);
    }

    pub fn set_prompts(&self, n: usize) {
        self.with(|m| m.prompts = n);
    }

    /// A connection left phase `from` (None: it was accepted) for `to` (None: it ended).
    pub fn connection(&self, from: Option<Phase>, to: Option<Phase>) {
        self.with(|m| {
            if let Some(n) = from.and_then(|p| m.connections.get_mut(p as usize)) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = to.and_then(|p| m.connections.get_mut(p as usize)) {
                *n += 1;
            }
        });
    }

    /// Everything in Prometheus' text format.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            let name = "softprompt_requests_total";
            let _ = writeln!(
                out,
                "# HELP {name} HTTP requests answered, by route and status.\n# TYPE {name} counter"
            );
            for ((route, status), n) in &m.requests {
                let _ = writeln!(out, "{name}{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
            let name = "softprompt_connections";
            let _ = writeln!(
                out,
                "# HELP {name} Open connections: idle, part-way through a request head, or \
                 serving a request (this scrape's own among them).\n# TYPE {name} gauge"
            );
            for (phase, n) in Phase::ALL.iter().zip(m.connections) {
                let _ = writeln!(out, "{name}{{state=\"{}\"}} {n}", phase.name());
            }
            let hists = [
                (
                    &m.batch_rows,
                    "softprompt_batch_rows",
                    "Rows (texts) per batch: the requests gathered in one window, run in engine passes of at most --max-batch rows (a request of more texts runs alone).",
                ),
                (
                    &m.queue_seconds,
                    "softprompt_queue_seconds",
                    "Time from a request's arrival to the start of its batch.",
                ),
                (
                    &m.latency_seconds,
                    "softprompt_request_seconds",
                    "Latency of successful /v1/predict requests.",
                ),
            ];
            for (h, name, help) in hists {
                h.write(&mut out, name, help);
            }
            let tokens_per_s = match m.engine_seconds > 0.0 {
                true => m.tokens as f64 / m.engine_seconds,
                false => 0.0,
            };
            let scalars = [
                (
                    "softprompt_batches_total",
                    "counter",
                    "Batches run: the requests gathered in one window, one engine call each.",
                    m.batches as f64,
                ),
                (
                    "softprompt_rows_total",
                    "counter",
                    "Rows (texts) predicted: those of the requests answered.",
                    m.rows as f64,
                ),
                (
                    "softprompt_tokens_total",
                    "counter",
                    "Real tokens predicted, of the requests answered (prompt rows not counted).",
                    m.tokens as f64,
                ),
                (
                    "softprompt_engine_seconds_total",
                    "counter",
                    "Time the engine spent on batches.",
                    m.engine_seconds,
                ),
                (
                    "softprompt_tokens_per_second",
                    "gauge",
                    "softprompt_tokens_total over softprompt_engine_seconds_total.",
                    tokens_per_s,
                ),
                (
                    "softprompt_requests_cancelled_total",
                    "counter",
                    "Prediction requests not run: their client reset its connection first.",
                    m.cancelled as f64,
                ),
                (
                    "softprompt_batches_split_total",
                    "counter",
                    "Batches that failed as one and ran again a request at a time \
                     (a request's bad input fails only that request).",
                    m.splits as f64,
                ),
                (
                    "softprompt_prompts_loaded",
                    "gauge",
                    "Prompts being served.",
                    m.prompts as f64,
                ),
            ];
            for (name, kind, help, v) in scalars {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        for rows in [1, 3, 3, 1000] {
            m.batch(rows, Duration::from_millis(250));
            m.predicted(rows, 10 * rows);
        }
        let text = m.render();
        assert!(
            text.contains("softprompt_batch_rows_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("softprompt_batch_rows_bucket{le=\"2\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("softprompt_batch_rows_bucket{le=\"4\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("softprompt_batch_rows_bucket{le=\"512\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("softprompt_batch_rows_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("softprompt_batch_rows_sum 1007\n"), "{text}");
        assert!(text.contains("softprompt_tokens_total 10070\n"), "{text}");
        // 10070 tokens over 4 x 250 ms
        assert!(
            text.contains("softprompt_tokens_per_second 10070\n"),
            "{text}"
        );
        // a batch whose requests all failed: its rows were gathered, none predicted; its
        // engine time counts
        m.batch(5, Duration::from_millis(1000));
        m.predicted(0, 0);
        let text = m.render();
        assert!(text.contains("softprompt_batch_rows_sum 1012\n"), "{text}");
        assert!(text.contains("softprompt_rows_total 1007\n"), "{text}");
        assert!(
            text.contains("softprompt_tokens_per_second 5035\n"),
            "{text}"
        );
    }

    #[test]
    fn only_successful_predictions_are_timed() {
        let m = Metrics::new();
        m.request(PREDICT_ROUTE, 200, Duration::from_millis(30));
        m.request(PREDICT_ROUTE, 404, Duration::from_millis(1));
        m.request("/health", 200, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("softprompt_requests_total{route=\"/v1/predict\",status=\"404\"} 1\n")
        );
        assert!(text.contains("softprompt_requests_total{route=\"/health\",status=\"200\"} 1\n"));
        assert!(
            text.contains("softprompt_request_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("softprompt_request_seconds_bucket{le=\"0.025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("softprompt_request_seconds_bucket{le=\"0.05\"} 1\n"),
            "{text}"
        );
    }
}
