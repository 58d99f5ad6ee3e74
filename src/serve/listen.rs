//! The listener: accepts connections (at most `--max-connections` at once) and serves each
//! with hyper, which closes one whose request head does not arrive within
//! `--header-timeout-ms` (idle keep-alive connections and slow clients alike). `axum::serve`
//! gives hyper no timer, so that timeout never fired and a client trickling bytes held its
//! connection, and a file descriptor, for ever. `conn.rs` follows each connection's phase.

use super::conn::{self, Track};
use super::metrics::Metrics;
use hyper_util::rt::{TokioIo, TokioTimer};
use softprompt::{Error, Result};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, Semaphore};

/// What the listener allows a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// connections served at once; more wait in the kernel's backlog
    pub max_connections: usize,
    /// from a connection's readiness for a request to the end of its head
    pub header_timeout: Duration,
    /// how long an answer may wait for a client that reads none of it
    pub write_timeout: Duration,
}

/// Binds host:port, or the error names the flag at fault.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener> {
    TcpListener::bind((host, port)).await.map_err(|e| {
        // a name that resolves to nothing, or an address not on this machine, is the
        // host's fault (both blamed --port); a port in use or reserved is the port's
        let flag = match e.kind() {
            std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied => "--port",
            _ => "--host",
        };
        Error::arg(flag, format!("cannot listen on {host}:{port}: {e}"))
    })
}

/// Serves `app` on `listener` until a signal, then closes the connections with no request
/// (idle, or part-way through a head) at once and waits for those with a request under way,
/// at most `grace` (a client that never finishes its request must not keep the server up for
/// ever).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    grace: Duration,
    metrics: Arc<Metrics>,
    on_stop: impl FnOnce(),
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("the listening socket", e))?;
    // before the line below: a script that signals as soon as it reads it gets the graceful stop
    let mut signals = Signals::new();
    let mut out = std::io::stdout();
    // tests and scripts read the port (--port 0 picks one) from this line
    let _ = writeln!(out, "listening on http://{addr}").and_then(|_| out.flush());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // each connection holds a receiver: once all are dropped, every connection has ended
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = Arc::new(AtomicBool::new(false));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = signals.next() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = signals.next() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // out of file descriptors, or a connection reset before it was taken: the
                // listener itself is fine, so wait a little rather than spin
                errln!("note: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let track = Track::new(stopping.clone(), metrics.clone());
        let (stream, client) = conn::Stream::new(stream, track.clone(), limits.write_timeout);
        let service = conn::service(app.clone(), track, client);
        let stream = TokioIo::new(stream);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // a client that shut its write side after its request still reads the answer
                .half_close(true);
            let conn = builder.serve_connection(stream, service);
            tokio::pin!(conn);
            let stopped = tokio::select! {
                _ = conn.as_mut() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopped {
                // no graceful_shutdown: it ended the connection after the request under way,
                // dropping those pipelined behind it. The stream ends once what came is
                // read (`conn::Stream`): an idle connection closes at once, one in a head
                // drops it, and the requests that came are answered first.
                let _ = conn.await;
            }
            drop(stop);
            drop(slot);
        });
    }
    drop(listener);
    errln!("shutting down: no new connections; finishing the requests in flight");
    on_stop();
    // before the connections hear of the stop: each then reads its stream's end at once
    stopping.store(true, Ordering::Release);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    tokio::select! {
        done = tokio::time::timeout(grace, stop_tx.closed()) => if done.is_err() {
            return Err(Error::Interrupted(format!(
                "requests were still in flight {} s after the signal (--shutdown-grace-s): \
                 they were dropped",
                grace.as_secs()
            )));
        },
        () = signals.next() => return Err(Error::Interrupted(format!(
            "a second SIGTERM or Ctrl-C during the shutdown: {} connection(s) still open \
             were dropped, with any request they were serving",
            stop_tx.receiver_count()
        ))),
    }
    errln!("stopped: every request in flight was answered");
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), watched from the start to the exit: the first stops the
/// server gracefully, a second during the grace ends it at once, as most servers do (once
/// tokio handles a signal its default action, the end of the process, is gone: the second
/// was ignored until the grace ran out). A signal that cannot be watched never fires.
struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        tokio::select! {
            _ = next_of(&mut self.term) => {},
            _ = next_of(&mut self.int) => {},
        }
    }
}

async fn next_of(s: &mut Option<Signal>) {
    if let Some(s) = s {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending::<()>().await
}
