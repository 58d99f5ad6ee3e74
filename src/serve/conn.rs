//! One connection as the shutdown and the metrics see it: idle (between requests), in a head
//! (bytes of a request head came, no request yet), or serving a request (from its complete
//! head to its answer). At shutdown only a request holds the server: hyper's graceful shutdown
//! closes an idle connection at once but waited for a head part-way in until the header
//! timeout, so with `--shutdown-grace-s` below `--header-timeout-ms` a client that had sent
//! half a head made the server exit 1, saying requests were dropped, with none in flight.
//! Once the server stops, a connection with no request reads what has come, then the end of
//! its stream: the requests pipelined before the stop are answered, and hyper drops a head
//! part-way in as a client that went away.

use super::metrics::Metrics;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// `app` for hyper, marking the connection as serving while a request runs.
pub fn service(
    app: axum::Router,
    track: Arc<Track>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Send {
    let inner = TowerToHyperService::new(app);
    hyper::service::service_fn(move |req: Request<Incoming>| {
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

/// The connection's socket: bytes read with no request under way begin a head, and once the
/// server stops, a connection with no request reads the end of its stream when nothing more
/// has come.
pub struct Stream {
    io: TcpStream,
    track: Arc<Track>,
}

impl Stream {
    pub fn new(io: TcpStream, track: Arc<Track>) -> Stream {
        Stream { io, track }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let phase = self.track.phase();
        let ending = phase != Phase::Request && self.track.stopping.load(Ordering::Acquire);
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
