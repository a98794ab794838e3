//! A link's transport: plain TCP, or TCP wrapped in mutual TLS ([`ClusterTls`]) before the challenge-response;
//! a TLS failure is counted and logged without flooding the log.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Shared;
use crate::tls::ClusterTls;

/// The least time between two TLS failures logged at warn (the others are logged at debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A link's byte stream.
pub(super) enum PeerIo {
    /// No TLS configured.
    Plain(TcpStream),
    /// After a completed mutual TLS handshake.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// Wraps `stream` in TLS when the node has a TLS configuration: as the client on a dialled link, as the server
/// on an accepted one, within the handshake timeout. `None` when the handshake failed (counted and logged).
pub(super) async fn secure(shared: &Shared, stream: TcpStream, address: &str, dialed: bool) -> Option<PeerIo> {
    let Some(tls) = &shared.config.tls else {
        return Some(PeerIo::Plain(stream));
    };
    let within = shared.config.handshake_timeout;
    let done = tokio::time::timeout(within, handshake(tls, stream, dialed)).await;
    let why = match done {
        Ok(Ok(s)) => return Some(PeerIo::Tls(Box::new(s))),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no TLS handshake within {within:?}"),
    };
    let failures = shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed) + 1;
    if warn_now(shared) {
        warn!(%address, dialed, error = %why, failures, "cluster: TLS handshake with a peer failed; link closed \
              (further failures within {WARN_EVERY:?} are logged at debug)");
    } else {
        debug!(%address, dialed, error = %why, failures, "cluster: TLS handshake with a peer failed; link closed");
    }
    None
}

async fn handshake(
    tls: &ClusterTls,
    stream: TcpStream,
    dialed: bool,
) -> io::Result<tokio_rustls::TlsStream<TcpStream>> {
    if dialed {
        let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
        Ok(connector.connect(tls.server_name.clone(), stream).await?.into())
    } else {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        Ok(acceptor.accept(stream).await?.into())
    }
}

/// Whether a TLS failure may be logged at warn: the first, then at most one every [`WARN_EVERY`].
fn warn_now(shared: &Shared) -> bool {
    let mut last = shared.tls_warned_at.lock();
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

impl AsyncRead for PeerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerIo::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerIo::Plain(s) => s.is_write_vectored(),
            PeerIo::Tls(s) => s.is_write_vectored(),
        }
    }
}
