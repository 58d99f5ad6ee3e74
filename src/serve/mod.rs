//! `softprompt serve`: an HTTP server over one frozen model and many prompts.
//!
//! Built over the library's public API only (`softprompt::Model` and friends), outside the
//! engine. Requests go through a channel, bounded by `--max-queue`, to the engine's thread
//! (`worker.rs`), whose
//! batcher (`batcher.rs`) puts the requests that arrive within a window into one batch,
//! whatever their prompts, and runs it with one call (`predict.rs`); each request is answered
//! over its own oneshot. The HTTP side (`routes.rs`, axum over tokio) never touches the model.
//! SIGTERM or Ctrl-C stops the listener, lets the requests in flight finish (for at most the
//! grace period), and exits 0; a second signal exits 1 at once.

mod batcher;
mod body;
mod conn;
mod error;
mod listen;
mod metrics;
mod predict;
mod registry;
mod routes;
mod worker;

pub use batcher::Policy;
pub use listen::ConnLimits;
pub use registry::{check_name, prompts_in};

use error::ApiError;
use metrics::Metrics;
use softprompt::{Device, Error, Precision, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `--device`: a device, or auto (the first GPU when one works, else the CPU).
#[derive(Clone, Copy, Debug)]
pub enum DeviceChoice {
    Given(Device),
    /// the GPU's precision, should there be one
    Auto(Precision),
}

/// What a request may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    /// characters (not bytes) per text
    pub max_text_chars: usize,
    /// texts per request: one request's rows run in one engine batch, so a huge one would
    /// hold up every other client's behind it
    pub max_texts: usize,
    /// how long a request's body may take to arrive
    pub body_timeout: Duration,
}

impl Limits {
    /// 400 for no texts, more than `max_texts`, or a text over the limit, naming its index.
    fn check_texts(&self, texts: &[String]) -> std::result::Result<(), ApiError> {
        if texts.is_empty() {
            return Err(ApiError::bad_request(
                "\"texts\" is empty: give at least one text to predict",
            ));
        }
        if texts.len() > self.max_texts {
            return Err(ApiError::bad_request(format!(
                "\"texts\" holds {} texts, more than the server's --max-texts ({}): send them in \
                 several requests",
                texts.len(),
                self.max_texts
            )));
        }
        let long = texts.iter().enumerate().find_map(|(i, t)| {
            let n = t.chars().count();
            (n > self.max_text_chars).then_some((i, n))
        });
        match long {
            Some((i, n)) => Err(ApiError::bad_request(format!(
                "texts[{i}] has {n} characters, more than the server's --max-text-chars ({})",
                self.max_text_chars
            ))),
            None => Ok(()),
        }
    }
}

/// Everything the command line sets.
pub struct Settings {
    pub model: PathBuf,
    /// (name, prompt folder) to load at start
    pub prompts: Vec<(String, PathBuf)>,
    pub device: DeviceChoice,
    pub host: String,
    pub port: u16,
    pub policy: Policy,
    pub limits: Limits,
    /// requests that may wait for the engine before new ones get 503
    pub max_queue: usize,
    pub conns: ConnLimits,
    /// how long requests in flight may take after SIGTERM or Ctrl-C
    pub shutdown_grace: Duration,
    /// the hidden `--debug-hold-engine`: the engine takes nothing until a line on stdin
    pub hold_engine: bool,
}

/// Loads the model and the prompts, serves until SIGTERM or Ctrl-C, then finishes the
/// requests in flight. Prints `listening on http://ADDR` on stdout once it accepts requests.
pub fn run(s: Settings) -> Result<()> {
    if let Some(warning) = crate::open_files::raise_for(s.conns.max_connections) {
        errln!("{warning}");
    }
    let metrics = Arc::new(Metrics::new());
    let engine = worker::start(&s, metrics.clone())?;
    errln!(
        "serving {} prompt(s) on {} with {} on {} (batches of up to {} rows, window {} ms, {})",
        engine.catalog.list().len(),
        s.model.display(),
        engine.device,
        s.host,
        s.policy.max_rows,
        s.policy.window.as_millis(),
        if s.policy.mix_prompts {
            "prompts mixed"
        } else {
            "one prompt per batch"
        }
    );
    // told when the signal comes: the batch gathering runs at once (called once, the sender
    // then dropped, so that the engine still sees its channel close)
    let wake = engine.tx.clone();
    let stopping = move || {
        let _ = wake.send(worker::Msg::Stopping);
    };
    let shared = Arc::new(routes::Shared {
        tx: engine.tx,
        catalog: engine.catalog,
        metrics: metrics.clone(),
        limits: s.limits,
        model: s.model.clone(),
        device: engine.device,
        waiting: engine.waiting,
        engine_running: engine.running,
    });
    // the engine has its own thread; the runtime only moves bytes
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("the tokio runtime", e))?;
    let app = routes::router(shared);
    let served = rt.block_on(async {
        let listener = listen::bind(&s.host, s.port).await?;
        listen::serve(listener, app, s.conns, s.shutdown_grace, metrics, stopping).await
    });
    if let Err(e @ Error::Interrupted(_)) = served {
        // requests were dropped (past the grace, or at a second signal): nothing is left to
        // wait for, and the engine's thread (mid-batch, or held) ends with the process
        rt.shutdown_background();
        return Err(e);
    }
    // tasks left on the runtime hold senders to the engine: dropping them lets it end
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(release) = engine.release {
        let _ = release.send(true);
    }
    match engine.thread.join() {
        Err(_) => Err(Error::Device("the engine's thread panicked".into())),
        // the server answered 503 meanwhile; its exit says the engine failed too
        Ok(false) => Err(Error::Device(
            "the engine's thread ended before the server stopped".into(),
        )),
        Ok(true) => served,
    }
}
