//! Connection guards for both listeners: a cap on open connections, a deadline for a connection's first byte,
//! an idle timeout, and shedding of silent connections when the cap is near and on shutdown.
//!
//! A connection that has sent nothing yet holds a slot but costs the server nothing else, so it is what goes
//! first: when fewer than a tenth of the slots are free, every connection that has been silent for longer than
//! [`SHED_GRACE`] since it was accepted is closed at once. A flood of silent sockets therefore never locks real
//! callers out, and a caller that sends its request as soon as it connects is never shed. On shutdown, silent
//! connections close at once and the others once they have been idle for [`SHUTDOWN_IDLE`], so a stalled peer
//! cannot make shutdown wait for the whole drain time.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A silent connection younger than this is not shed (its request may be on the way).
pub const SHED_GRACE: Duration = Duration::from_millis(200);
/// After shutdown starts, a connection idle this long is closed.
pub const SHUTDOWN_IDLE: Duration = Duration::from_secs(1);

/// The bounds of one listener's connections.
///
/// ```
/// use floodgate_server::conn::Limits;
/// let l = Limits::default();
/// assert_eq!((l.max_connections, l.first_byte.as_secs(), l.idle.as_secs()), (10_000, 10, 60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most connections open at once; past it a new connection is closed at once.
    pub max_connections: usize,
    /// A connection that sends no byte within this is closed.
    pub first_byte: Duration,
    /// A connection that sends and receives nothing for this long while the server waits for it (between
    /// requests, or in the middle of a request's headers or body) is closed.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 10_000, first_byte: Duration::from_secs(10), idle: Duration::from_secs(60) }
    }
}

/// Admits connections of one listener (or of several that share one bound) under [`Limits`].
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Cancelled to close the silent connections accepted so far; replaced by a fresh one each time.
    shed: Mutex<CancellationToken>,
    stop: CancellationToken,
    /// Connections closed because the cap was reached, and silent connections shed.
    refused: std::sync::atomic::AtomicU64,
}

impl Gate {
    /// A gate with `limits`, whose connections wind down when `stop` is cancelled.
    pub fn new(limits: Limits, stop: CancellationToken) -> Arc<Gate> {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Arc::new(Gate { limits, slots, shed: Mutex::new(CancellationToken::new()), stop, refused: Default::default() })
    }

    /// Connections refused because every slot was taken by a connection that was not silent.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections.max(1) - self.slots.available_permits()
    }

    /// Admits `io` (a connection just accepted), or `None` if every slot is taken: the caller drops it.
    pub fn admit<IO>(&self, io: IO) -> Option<Guarded<IO>> {
        let max = self.limits.max_connections.max(1);
        if self.slots.available_permits() <= max / 10 {
            // Near the cap: close the silent connections (those past their grace).
            let mut shed = self.shed.lock();
            shed.cancel();
            *shed = CancellationToken::new();
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        };
        let now = Instant::now();
        Some(Guarded {
            io,
            limits: self.limits,
            accepted: now,
            last: now,
            seen: false,
            stopping: false,
            sleep: Box::pin(tokio::time::sleep_until(now + self.limits.first_byte)),
            shed: Some(Box::pin(self.shed.lock().clone().cancelled_owned())),
            stop: Some(Box::pin(self.stop.clone().cancelled_owned())),
            _permit: permit,
        })
    }
}

/// A connection under a [`Gate`]: reads and writes pass through, and a read that waits past a deadline fails
/// with [`io::ErrorKind::TimedOut`], which makes the server close the connection.
pub struct Guarded<IO> {
    io: IO,
    limits: Limits,
    accepted: Instant,
    /// The last read or write that moved bytes.
    last: Instant,
    /// Whether a byte was ever read.
    seen: bool,
    stopping: bool,
    sleep: Pin<Box<Sleep>>,
    shed: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _permit: OwnedSemaphorePermit,
}

impl<IO> std::fmt::Debug for Guarded<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("seen", &self.seen).field("stopping", &self.stopping).finish()
    }
}

impl<IO> Guarded<IO> {
    /// The connection itself.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn timeout(&self) -> Duration {
        match (self.seen, self.stopping) {
            (_, true) => SHUTDOWN_IDLE,
            (false, false) => self.limits.first_byte,
            (true, false) => self.limits.idle,
        }
    }

    /// Called while a read waits: whether the connection must be closed now.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(stop) = &mut self.stop
            && stop.as_mut().poll(cx).is_ready()
        {
            self.stop = None;
            self.stopping = true;
            if !self.seen {
                return true;
            }
        }
        if !self.seen
            && let Some(shed) = &mut self.shed
            && shed.as_mut().poll(cx).is_ready()
        {
            if self.accepted.elapsed() >= SHED_GRACE {
                return true;
            }
            self.shed = None;
        }
        loop {
            let deadline = self.last.max(self.accepted) + self.timeout();
            if Instant::now() >= deadline {
                return true;
            }
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle past its deadline")
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.seen = true;
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.expired(cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
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

impl tonic::transport::server::Connected for Guarded<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The accepted connections of `listener` admitted by `gate`, as tonic's `serve_with_incoming` takes them.
/// Accept errors (out of file descriptors and the like) are logged and retried after a short pause.
pub fn incoming(
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
) -> impl futures_util::Stream<Item = io::Result<Guarded<tokio::net::TcpStream>>> {
    futures_util::stream::unfold((listener, gate), |(listener, gate)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match gate.admit(stream) {
                        Some(conn) => return Some((Ok(conn), (listener, gate))),
                        None => tracing::debug!(%peer, "too many gRPC connections: closing a new one"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_its_first_byte_deadline() {
        let stop = CancellationToken::new();
        let gate = Gate::new(
            Limits { max_connections: 100, first_byte: Duration::from_secs(10), idle: Duration::from_secs(60) },
            stop,
        );
        let (client, server) = tokio::io::duplex(64);
        let mut conn = gate.admit(server).unwrap_or_else(|| panic!("refused"));
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let err = conn.read(&mut buf).await.err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_connection_is_closed_when_idle_and_each_byte_restarts_the_clock() {
        let gate = Gate::new(
            Limits { max_connections: 100, first_byte: Duration::from_secs(10), idle: Duration::from_secs(60) },
            CancellationToken::new(),
        );
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = gate.admit(server).unwrap_or_else(|| panic!("refused"));
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) => return Some(e.kind()),
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        client.write_all(b"x").await.unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client.write_all(b"x").await.unwrap_or_else(|e| panic!("{e}"));
        }
        let kind = reader.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kind, Some(io::ErrorKind::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(155 + 60));
    }

    #[tokio::test(start_paused = true)]
    async fn near_the_cap_silent_connections_are_shed_and_talking_ones_kept() {
        let gate = Gate::new(
            Limits { max_connections: 10, first_byte: Duration::from_secs(10), idle: Duration::from_secs(60) },
            CancellationToken::new(),
        );
        let (mut talker_client, talker) = tokio::io::duplex(64);
        let mut talker = gate.admit(talker).unwrap_or_else(|| panic!("refused"));
        talker_client.write_all(b"GET").await.unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 8];
        assert_eq!(talker.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")), 3);
        let mut silent = Vec::new();
        for _ in 0..8 {
            let (c, s) = tokio::io::duplex(64);
            silent.push((c, gate.admit(s).unwrap_or_else(|| panic!("refused"))));
        }
        tokio::time::sleep(SHED_GRACE).await;
        // One slot of ten left: the next admission sheds the silent ones.
        let (_c, _newcomer) = tokio::io::duplex(64);
        let newcomer = gate.admit(_newcomer);
        assert!(newcomer.is_some());
        for (_c, s) in &mut silent {
            let kind = s.read(&mut buf).await.err().map(|e| e.kind());
            assert_eq!(kind, Some(io::ErrorKind::TimedOut));
        }
        drop(silent);
        assert_eq!(gate.open(), 2);
        // The talker is untouched.
        talker_client.write_all(b"x").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(talker.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn on_shutdown_silent_connections_close_at_once() {
        let stop = CancellationToken::new();
        let gate = Gate::new(Limits::default(), stop.clone());
        let (_c, s) = tokio::io::duplex(64);
        let mut conn = gate.admit(s).unwrap_or_else(|| panic!("refused"));
        let start = Instant::now();
        stop.cancel();
        let mut buf = [0u8; 8];
        let kind = conn.read(&mut buf).await.err().map(|e| e.kind());
        assert_eq!(kind, Some(io::ErrorKind::TimedOut));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
