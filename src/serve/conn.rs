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
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

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
/// end of its stream when nothing more has come. A write that the socket takes nothing of for
/// `write_timeout` fails, which ends the connection: a client that pipelined requests and read
/// none of the answers held its connection (a slot of --max-connections) for ever, as hyper
/// has no write timeout.
pub struct Stream {
    io: Arc<TcpStream>,
    track: Arc<Track>,
    write_timeout: Duration,
    /// running while a write waits for the client to read (None: the last one went through)
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Stream {
    /// The stream and the `Client` its requests carry.
    pub fn new(io: TcpStream, track: Arc<Track>, write_timeout: Duration) -> (Stream, Client) {
        let io = Arc::new(io);
        (
            Stream {
                io: io.clone(),
                track,
                write_timeout,
                stalled: None,
            },
            Client(io),
        )
    }

    /// `polled`, a write's poll, failed with TimedOut once the writes have waited
    /// `write_timeout` with nothing taken.
    fn within_timeout(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.write_timeout;
        let stalled = (self.stalled).get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of its answers for --write-timeout-ms",
        )))
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
        let this = self.get_mut();
        let polled = write_shared(&this.io, cx, |io| io.try_write(buf));
        this.within_timeout(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = write_shared(&this.io, cx, |io| io.try_write_vectored(bufs));
        this.within_timeout(cx, polled)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The whole of `buf` written, or the first error (tokio's write_all is in a feature the
    /// build leaves out).
    async fn write_all(stream: &mut Stream, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, buf)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// A client that reads nothing: the writes fill the sockets' buffers, then the next one
    /// fails with TimedOut after the write timeout (it waited for ever: hostile pass 12).
    #[test]
    fn a_write_the_client_never_reads_times_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let track = Track::new(Arc::new(AtomicBool::new(false)), Arc::new(Metrics::new()));
            let timeout = Duration::from_millis(300);
            let (mut stream, _) = Stream::new(accepted, track, timeout);
            let chunk = vec![7u8; 1 << 20];
            let start = Instant::now();
            let mut last_taken = start;
            let err = loop {
                match write_all(&mut stream, &chunk).await {
                    Ok(()) => last_taken = Instant::now(),
                    Err(e) => break e,
                }
                assert!(start.elapsed() < Duration::from_secs(30), "never timed out");
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
            // the timeout runs from the write that found the buffers full
            assert!(
                last_taken.elapsed() >= timeout,
                "{:?}",
                last_taken.elapsed()
            );
            drop(client);
        });
    }
}
