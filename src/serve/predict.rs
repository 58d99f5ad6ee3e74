//! One engine batch: each request's texts encoded for its prompt, every row predicted in one
//! call whatever its prompt, and each request answered with its own predictions.

use super::error::ApiError;
use super::metrics::Metrics;
use super::registry::Entry;
use super::worker::Queued;
use crate::prediction_json::prediction_json;
use serde_json::Value;
use softprompt::{Dataset, Error, Model, Prompt, Row, Task};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Instant;

/// A request with its texts encoded.
type Ready = (Queued, Vec<Row>);

/// Runs `batch` (`batch_size`: the engine's most rows per forward pass) and answers every
/// request in it. When the batch fails as a whole, each request runs again alone, so one
/// request's bad input cannot fail the others.
pub fn run_batch(model: &Model, batch: Vec<Queued>, batch_size: usize, metrics: &Metrics) {
    let start = Instant::now();
    let mut ready: Vec<Ready> = Vec::with_capacity(batch.len());
    for q in batch {
        metrics.queued(start.saturating_duration_since(q.job.arrived));
        match encode(model, &q) {
            Ok(rows) => ready.push((q, rows)),
            Err(e) => {
                let _ = q.job.reply.send(Err(e));
            }
        }
    }
    let rows: usize = ready.iter().map(|(_, r)| r.len()).sum();
    if rows == 0 {
        return;
    }
    // the rows and real tokens of the requests answered: a failed request's were not predicted
    let mut answered = Answered::default();
    match guarded(|| predict_requests(model, &ready, batch_size)) {
        Ok(answers) => {
            for ((q, rs), answer) in ready.into_iter().zip(answers) {
                answered.add(&rs);
                let _ = q.job.reply.send(Ok(answer));
            }
        }
        Err(e) if ready.len() == 1 => {
            for (q, _) in ready {
                let _ = q.job.reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            metrics.split();
            let requests = ready.len();
            let mut failed = 0;
            for item in ready {
                let answer =
                    guarded(|| predict_requests(model, std::slice::from_ref(&item), batch_size));
                let answer = answer.and_then(|mut a| {
                    a.pop()
                        .ok_or_else(|| ApiError::internal("the engine gave no answer"))
                });
                failed += usize::from(answer.is_err());
                if answer.is_ok() {
                    answered.add(&item.1);
                }
                let _ = item.0.job.reply.send(answer);
            }
            if failed == 0 && !e.by_size {
                // no request's input was at fault, nor the batch's size: the combined batch
                // is what failed
                errln!(
                    "warning: a batch of {requests} requests failed as one but each ran \
                     alone (a bug: please report it): {}",
                    e.msg
                );
            }
        }
    }
    metrics.batch(rows, start.elapsed());
    metrics.predicted(answered.rows, answered.tokens);
}

/// The rows and real tokens of the requests a batch answered.
#[derive(Default)]
struct Answered {
    rows: usize,
    tokens: usize,
}

impl Answered {
    fn add(&mut self, rows: &[Row]) {
        self.rows += rows.len();
        self.tokens += rows.iter().map(|r| r.ids.len()).sum::<usize>();
    }
}

/// The request's texts as rows of its prompt's task (cut to its max_len, flagged when cut).
fn encode(model: &Model, q: &Queued) -> std::result::Result<Vec<Row>, ApiError> {
    let texts = q.job.texts.iter().map(|t| (t.as_str(), None::<&str>));
    let data = Dataset::from_pairs("the request", texts);
    let enc =
        guarded(|| (model.encode(&q.entry.task, &data)).map_err(|e| text_error(model, q, &e)))?;
    Ok(enc.rows)
}

/// The engine's error about one of the request's texts, named as the request names it
/// (`texts[i]`, not "the request:line"). A row the prompt's max_len cannot hold named the
/// `--max-len` flag, which a request cannot pass: it is said in terms of the prompt's task
/// and the model's position limit instead.
fn text_error(model: &Model, q: &Queued, e: &softprompt::Error) -> ApiError {
    let softprompt::Error::Data { line, msg, .. } = e else {
        return ApiError::from_predict(e);
    };
    let i = line.saturating_sub(1);
    let Some(why) = msg.strip_prefix("invalid argument --max-len: ") else {
        return ApiError::bad_request(format!("texts[{i}]: {msg}"));
    };
    let (limit, what) = model.position_limit();
    ApiError::bad_request(format!(
        "texts[{i}] does not fit prompt \"{}\": {why}; its task allows {} tokens a row \
         (its max_len) beside its {} prompt rows, within {what}, which holds \
         {limit} positions",
        q.job.prompt,
        q.entry.task.spec().max_len,
        q.entry.prompt.rows(),
    ))
}

/// Every request's predictions as JSON objects, in request order: one engine call over all
/// their rows, each row naming its prompt.
fn predict_requests(
    model: &Model,
    reqs: &[Ready],
    batch_size: usize,
) -> std::result::Result<Vec<Vec<Value>>, ApiError> {
    let mut entries: Vec<&Rc<Entry>> = Vec::new();
    let mut rows: Vec<(usize, Row)> = Vec::new();
    for (q, rs) in reqs {
        let job = match entries.iter().position(|e| Rc::ptr_eq(e, &q.entry)) {
            Some(j) => j,
            None => {
                entries.push(&q.entry);
                entries.len() - 1
            }
        };
        rows.extend(rs.iter().map(|r| (job, r.clone())));
    }
    let jobs: Vec<(&Task, &Prompt)> = entries.iter().map(|e| (&e.task, &e.prompt)).collect();
    // one engine pass per batch of rows whatever their prompts (the prompt table, #17)
    let preds = (model.predict_mixed(&jobs, &rows, batch_size)).map_err(|e| match &e {
        Error::Overflow { row, msg, .. } => overflowed(reqs, *row, msg),
        Error::StepMemory { .. } => too_large(&e),
        _ => ApiError::from_predict(&e),
    })?;
    if preds.len() != rows.len() {
        return Err(ApiError::internal(format!(
            "the engine gave {} predictions for {} rows",
            preds.len(),
            rows.len()
        )));
    }
    let mut preds = preds.iter();
    let mut answers = Vec::with_capacity(reqs.len());
    for (q, rs) in reqs {
        let labels = q.entry.task.labels();
        let answer = (rs.iter().zip(preds.by_ref()).enumerate())
            .map(|(i, (row, p))| {
                let json = prediction_json(model, labels, p, row.truncated);
                json.map(Value::Object).map_err(|e| match e {
                    Error::NonFinite(msg) => non_finite(q, i, &msg),
                    e => ApiError::from_predict(&e),
                })
            })
            .collect::<std::result::Result<Vec<Value>, ApiError>>()?;
        answers.push(answer);
    }
    Ok(answers)
}

/// The 400 of a batch whose step would not fit the host's memory (`e`, a `StepMemory`): the
/// engine's advice names the batch_size argument, which serve's client has not; its rows per
/// engine pass are --max-batch's (or fewer, the texts queued), a request's texts at most
/// --max-texts.
fn too_large(e: &Error) -> ApiError {
    let need = e.step_memory_need().unwrap_or_else(|| e.to_string());
    let refused = ApiError::bad_request(format!(
        "the engine batch does not fit the server's memory: {need}: send fewer or shorter \
         texts, or start the server with a lower --max-batch (the most texts in one engine \
         batch) or --max-texts (the most in one request)"
    ));
    ApiError {
        by_size: true,
        ..refused
    }
}

/// The 500 of a request whose scores are not finite numbers (the model overflows on its
/// prompt's values: the client is not at fault), naming its prompt and text `i`.
fn non_finite(q: &Queued, i: usize, msg: &str) -> ApiError {
    ApiError::internal(format!(
        "prompt \"{}\" scores texts[{i}] with numbers that are not finite, so no label can be \
         chosen: {msg}",
        q.job.prompt
    ))
}

/// `non_finite` of the engine's row `row` (the requests' texts in order): its request's
/// prompt and text.
fn overflowed(reqs: &[Ready], row: usize, msg: &str) -> ApiError {
    let mut first = 0;
    for (q, rs) in reqs {
        if row < first + rs.len() {
            return non_finite(q, row - first, msg);
        }
        first += rs.len();
    }
    ApiError::internal(format!(
        "row {row} of {first} has numbers that are not finite: {msg}"
    ))
}

/// Runs `f`, turning a panic (a bug: the library does not panic on input) into a 500 rather
/// than the end of the engine's thread.
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, ApiError>,
) -> std::result::Result<T, ApiError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(ApiError::internal(
            "the engine panicked on this request (a bug: please report it)",
        ))
    })
}
