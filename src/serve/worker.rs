//! The engine's thread. The model, the prompt table and the batcher live here and nowhere
//! else: the HTTP side sends each request through one channel (bounded by `Waiting`) and
//! hears back over a oneshot, so the model is never shared across async tasks.

use super::batcher::{Batcher, Next, Pending, Policy};
use super::error::ApiError;
use super::metrics::Metrics;
use super::predict::run_batch;
use super::registry::{Catalog, Entry, Loaded, PromptInfo, Registry};
use super::{DeviceChoice, Settings};
use serde_json::Value;
use softprompt::{Device, Error, Model, Prompt, Result};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// Where the engine's answer to a message goes.
pub type Reply<T> = oneshot::Sender<std::result::Result<T, ApiError>>;

/// A message to the engine's thread.
pub enum Msg {
    Predict(Job),
    /// a prompt folder read on the HTTP side, to check against the model and add
    Load {
        name: String,
        path: PathBuf,
        prompt: Box<Prompt>,
        reply: Reply<Loaded>,
    },
    Unload {
        name: String,
        reply: Reply<PromptInfo>,
    },
    /// the server stopped taking connections (`batcher::Next::Stopping`)
    Stopping,
}

/// The requests waiting for the engine: every message in its channel, and the predictions
/// taken off it by the batcher but not yet in a running batch (the backlog, and the batch
/// still gathering within its window). The channel's bound alone let the batcher drain it
/// into an unbounded backlog, so `--max-queue` bounded nothing; the channel itself is
/// unbounded, and this count bounds it.
#[derive(Clone, Debug)]
pub struct Waiting {
    count: Arc<AtomicUsize>,
    max: usize,
}

impl Waiting {
    /// Counts one more request; false (and nothing counted) when `max` already wait.
    pub fn enter(&self) -> bool {
        let max = self.max;
        (self.count)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// `n` requests stopped waiting (ran, or were answered without running).
    pub fn leave(&self, n: usize) {
        self.count.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A prediction request: the texts for one prompt, answered with one JSON object per text.
pub struct Job {
    pub prompt: String,
    pub texts: Vec<String>,
    pub arrived: Instant,
    pub reply: Reply<Vec<Value>>,
}

/// A request the engine accepted, holding its prompt (an unload cannot take it away).
pub struct Queued {
    pub job: Job,
    pub entry: Rc<Entry>,
}

impl Pending for Queued {
    fn prompt(&self) -> &str {
        &self.job.prompt
    }
    fn rows(&self) -> usize {
        self.job.texts.len()
    }
    fn arrived(&self) -> Instant {
        self.job.arrived
    }
}

/// The running engine: the channel to it, its thread, and what it loaded.
pub struct Engine {
    pub tx: Sender<Msg>,
    /// true when the engine served until the server stopped; false when it ended before
    pub thread: JoinHandle<bool>,
    pub catalog: Catalog,
    /// the device, as the command line prints it
    pub device: String,
    pub waiting: Waiting,
    /// `--debug-hold-engine`'s release: the server's exit sends it (true: serve)
    pub release: Option<Sender<bool>>,
    /// true while the engine's thread runs its loop (`/health` says so)
    pub running: Arc<AtomicBool>,
}

/// Clears `running` when the engine's thread leaves its loop, however it leaves it (a
/// panic included): `/health` answered "ok" over an engine that had died, every prediction
/// then refused as if the server were shutting down.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Starts the engine's thread: the model and the settings' prompts are loaded there, and
/// an error in either is returned here before anything listens.
pub fn start(s: &Settings, metrics: Arc<Metrics>) -> Result<Engine> {
    // std's bounded channel allocated its `--max-queue` slots at start (80 bytes each, 80 MB
    // at a million); this one allocates as it fills, and `Waiting` bounds it
    let (tx, rx) = channel();
    let waiting = Waiting {
        count: Arc::default(),
        max: s.max_queue,
    };
    let queue = waiting.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let catalog = Catalog::default();
    let (model_dir, device, prompts) = (s.model.clone(), s.device, s.prompts.clone());
    let (policy, cat) = (s.policy, catalog.clone());
    let (release, hold) = hold(s.hold_engine)?.unzip();
    let running = Arc::new(AtomicBool::new(true));
    let guard = Running(running.clone());
    let thread = std::thread::Builder::new()
        .name("softprompt-engine".into())
        .spawn(move || {
            let _running = guard;
            let setup = (|| {
                let model = open_model(&model_dir, device)?;
                let mut registry = Registry::new(cat);
                for (name, path) in &prompts {
                    let loaded = (registry.check_new(name))
                        .and_then(|()| Prompt::load(path).map_err(|e| ApiError::from_load(&e)))
                        .and_then(|prompt| registry.load(&model, name, path, prompt));
                    loaded.map_err(|e| {
                        // the registry's messages name the prompt themselves
                        let named = format!("prompt \"{name}\"");
                        match e.msg.starts_with(&named) {
                            true => Error::file(path, e.msg),
                            false => Error::file(path, format!("{named}: {}", e.msg)),
                        }
                    })?;
                }
                metrics.set_prompts(registry.len());
                Ok((model, registry))
            })();
            match setup {
                Ok((model, registry)) => {
                    let _ = ready_tx.send(Ok(model.device_name()));
                    if let Some(hold) = hold {
                        // a line on stdin, or the server's exit (`Engine::release`)
                        if !hold.recv().unwrap_or(true) {
                            errln!("--debug-hold-engine: the engine's thread ends");
                            return false;
                        }
                        errln!("--debug-hold-engine: released");
                    }
                    serve_loop(&model, registry, &rx, policy, &metrics, &queue);
                    true
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    false
                }
            }
        })
        .map_err(|e| Error::io("the engine's thread", e))?;
    let device = ready_rx
        .recv()
        .map_err(|_| Error::Device("the engine's thread ended while loading".into()))??;
    Ok(Engine {
        tx,
        thread,
        catalog,
        device,
        waiting,
        release,
        running,
    })
}

/// `--debug-hold-engine`: the engine waits for a line or the end of stdin, messages piling
/// up in the queue meanwhile (the tests of a full queue and of SIGTERM with requests in
/// flight); the line `end-engine` ends the engine's thread instead, as a failure would (the
/// test of `/health` over a stopped engine). Stdin is read on a thread of its own, and the
/// server's exit releases the hold too: the engine's thread blocked on stdin, and the exit
/// joined it, so a server whose stdin stayed open never exited. Returns the release and the
/// engine's end of it when held.
fn hold(on: bool) -> Result<Option<(Sender<bool>, Receiver<bool>)>> {
    if !on {
        return Ok(None);
    }
    errln!("--debug-hold-engine: the engine takes no request until a line on stdin");
    let (release, held) = std::sync::mpsc::channel();
    let line = release.clone();
    // left blocked on stdin at exit if no line comes: the process ends it
    std::thread::Builder::new()
        .name("softprompt-hold".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = std::io::stdin().read_line(&mut text);
            let _ = line.send(text.trim() != "end-engine");
        })
        .map_err(|e| Error::io("the --debug-hold-engine thread", e))?;
    Ok(Some((release, held)))
}

/// `--device`: as given, or with auto the first GPU when one works, else the CPU.
fn open_model(dir: &Path, device: DeviceChoice) -> Result<Model> {
    match device {
        DeviceChoice::Given(d) => Model::open(dir, d),
        DeviceChoice::Auto(precision) => match Model::open(dir, Device::Cuda(0, precision)) {
            Ok(m) => Ok(m),
            Err(e) => {
                errln!(
                    "note: --device auto: no GPU to use ({e}); serving on the CPU, which \
                     computes in float32"
                );
                Model::open(dir, Device::Cpu)
            }
        },
    }
}

/// Batches and runs requests until every sender is gone (the server stopped), then answers
/// what is still queued and returns.
fn serve_loop(
    model: &Model,
    mut registry: Registry,
    rx: &Receiver<Msg>,
    policy: Policy,
    metrics: &Metrics,
    waiting: &Waiting,
) {
    let mut batcher = Batcher::new(policy);
    loop {
        let mut recv = |deadline| receive(rx, deadline, model, &mut registry, metrics, waiting);
        let Some(batch) = batcher.next_batch(&mut recv) else {
            return;
        };
        waiting.leave(batch.len());
        // a request whose client reset its connection (its handler dropped the answer's
        // receiver) is not run: its answer would have gone nowhere
        let (gone, batch): (Vec<Queued>, Vec<Queued>) =
            batch.into_iter().partition(|q| q.job.reply.is_closed());
        metrics.cancelled(gone.len());
        run_batch(model, batch, policy.max_rows, metrics);
    }
}

/// The next prediction request (waiting until `deadline`, or for ever). Loads and unloads
/// are done on the way, in the order they came; a request for a prompt not loaded is answered
/// at once.
fn receive(
    rx: &Receiver<Msg>,
    deadline: Option<Instant>,
    model: &Model,
    registry: &mut Registry,
    metrics: &Metrics,
    waiting: &Waiting,
) -> Next<Queued> {
    loop {
        let msg = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match msg {
            Ok(Msg::Predict(job)) => match registry.get(&job.prompt) {
                Some(entry) => return Next::Job(Queued { job, entry }),
                None => {
                    waiting.leave(1);
                    let _ = job.reply.send(Err(registry.unknown(&job.prompt)));
                }
            },
            Ok(Msg::Load {
                name,
                path,
                prompt,
                reply,
            }) => {
                waiting.leave(1);
                let _ = reply.send(registry.load(model, &name, &path, *prompt));
                metrics.set_prompts(registry.len());
            }
            Ok(Msg::Unload { name, reply }) => {
                waiting.leave(1);
                let _ = reply.send(registry.unload(&name));
                metrics.set_prompts(registry.len());
            }
            Ok(Msg::Stopping) => return Next::Stopping,
            Err(RecvTimeoutError::Timeout) => return Next::Timeout,
            Err(RecvTimeoutError::Disconnected) => return Next::Closed,
        }
    }
}
