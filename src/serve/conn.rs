//! One connection as the shutdown and the metrics see it: idle (between requests), in a head
//! (bytes of a request head came, no request yet), or serving a request (from its complete
//! head to its answer). At shutdown only a request holds the server: hyper's graceful shutdown
//! closes an idle connection at once but waited for a head part-way in until the header
//! timeout, so with `--shutdown-grace-s` below `--header-timeout-ms` a client that had sent
//! half a head made the server exit 1, saying requests were dropped, with none in flight.
//! Once the server stops, a connection with no request reads what has come, then the end of
//! its stream: the requests pipelined before the stop are answered, and hyper drops a head
//! part-way in as a client that went away.
//!
//! With half-close on, hyper reads nothing while it serves a request, so a client that went
//! away went unseen until its answer was written. The socket is shared with the request
//! (`Client`), whose handler watches it for a reset while the engine works.

use super::metrics::Metrics;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where a connection is, for `softprompt_connections{state}`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Idle = 0,
    Head = 1,
    Request = 2,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Idle, Phase::Head, Phase::Request];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Head => "head",
            Phase::Request => "request",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Request,
        }
    }
}

/// A connection's phase, shared by its stream and its service; counted in the metrics from
/// its accept to its end.
pub struct Track {
    phase: AtomicU8,
    /// the server's: set once the signal came
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Track {
    pub fn new(stopping: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Arc<Track> {
        metrics.connection(None, Some(Phase::Idle));
        Arc::new(Track {
            phase: AtomicU8::new(Phase::Idle as u8),
            stopping,
            metrics,
        })
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set(&self, to: Phase) {
        let from = Phase::from_u8(self.phase.swap(to as u8, Ordering::AcqRel));
        if from != to {
            self.metrics.connection(Some(from), Some(to));
        }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        self.metrics.connection(Some(self.phase()), None);
    }
}

/// The request a connection serves, from its complete head until its answer is made (the
/// answers are whole bodies, written in the poll that makes them); the connection is idle
/// again when this drops.
struct Serving(Arc<Track>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.set(Phase::Idle);
    }
}

/// The connection a request came on, in the request's extensions: its handler can tell
/// whether the client is still there.
#[derive(Clone)]
pub struct Client(Arc<TcpStream>);

impl Client {
    /// Resolves once the client resets the connection (an abortive close), and never when
    /// it sends anything else: the next request pipelined, or the end of its stream, which
    /// under half-close is a client still waiting for its answer (a client that closed its
    /// socket sends the same end, so only a reset says that it is gone before its answer is
    /// written). Call it once the request's body is read, or the body's bytes are what it
    /// sees.
    pub async fn reset(&self) {
        let mut byte = [0u8; 1];
        if let Err(e) = self.0.peek(&mut byte).await {
            let gone = [
                io::ErrorKind::ConnectionReset,
                io::ErrorKind::ConnectionAborted,
            ];
            if gone.contains(&e.kind()) {
                return;
            }
        }
        std::future::pending().await
    }
}

/// `app` for hyper, marking the connection as serving while a request runs.
pub fn service(
    app: axum::Router,
    track: Arc<Track>,
    client: Client,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Send {
    let inner = TowerToHyperService::new(app);
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(client.clone());
        track.set(Phase::Request);
        let serving = Serving(track.clone());
        let answer = hyper::service::Service::call(&inner, req);
        async move {
            let answer = answer.await;
            drop(serving);
            answer
        }
    })
}

/// The connection's socket, shared with its requests (`Client`): bytes read with no request
/// under way begin a head, and once the server stops, a connection with no request reads the
/// end of its stream when nothing more has come.
pub struct Stream {
    io: Arc<TcpStream>,
    track: Arc<Track>,
}

impl Stream {
    /// The stream and the `Client` its requests carry.
    pub fn new(io: TcpStream, track: Arc<Track>) -> (Stream, Client) {
        let io = Arc::new(io);
        (
            Stream {
                io: io.clone(),
                track,
            },
            Client(io),
        )
    }
}

/// `poll_read` on a shared socket (tokio reads an owned one only): wait until it is
/// readable, then read what it holds.
fn read_shared(
    io: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        ready!(io.poll_read_ready(cx))?;
        // WouldBlock clears the readiness: the next poll waits again
        match io.try_read(buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// `poll_write` on a shared socket: `write` is `try_write` or `try_write_vectored`.
fn write_shared(
    io: &TcpStream,
    cx: &mut Context<'_>,
    write: impl Fn(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(io.poll_write_ready(cx))?;
        match write(io) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let phase = self.track.phase();
        let ending = phase != Phase::Request && self.track.stopping.load(Ordering::Acquire);
        let before = buf.filled().len();
        let read = read_shared(&self.io, cx, buf);
        if ending && read.is_pending() {
            // what came is read (requests pipelined before the stop are answered), then the
            // stream ends: nothing more is waited for
            return Poll::Ready(Ok(()));
        }
        if phase == Phase::Idle && buf.filled().len() > before {
            self.track.set(Phase::Head);
        }
        read
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        write_shared(&self.io, cx, |io| io.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        write_shared(&self.io, cx, |io| io.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // a socket buffers nothing in user space
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // what tokio's owned stream does; shared, it is done on the descriptor
        // SAFETY: shutdown(2) on this stream's own descriptor, open while `self.io` lives
        let rc = unsafe { libc::shutdown(self.io.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        })
    }
}
