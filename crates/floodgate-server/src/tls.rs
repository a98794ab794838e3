//! TLS for the gRPC and HTTP listeners (rustls): a certificate chain and its key from PEM files, and optionally a
//! CA whose client certificates are required (mutual TLS). The files are read again on SIGHUP and when they
//! change ([`Tls::watch`]), so a certificate rotates without a restart; a set of files that does not load (say,
//! a certificate written before its key) is refused, counted and logged, and the previous one stays in use.
//!
//! ```no_run
//! use floodgate_server::tls::{Tls, TlsFiles};
//!
//! let tls = Tls::load(TlsFiles {
//!     cert: "/etc/floodgate/tls/server.crt".into(),
//!     key: "/etc/floodgate/tls/server.key".into(),
//!     client_ca: None,
//! })?;
//! assert_eq!(tls.stats().reloads, 0);
//! # Ok::<(), floodgate_server::tls::TlsError>(())
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The largest PEM file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// The longest a TLS handshake may take before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Tls::watch`] looks at the files.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Where the certificate, its key and the client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The certificate's private key, PEM: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: PathBuf,
    /// CA certificates, PEM: when set, a client must present a certificate they signed (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
}

/// Why a set of TLS files could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is larger than [`MAX_PEM_BYTES`].
    #[error("{}: larger than {MAX_PEM_BYTES} bytes, not a PEM file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file holds no PEM item of the kind expected, or a malformed one.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the material (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not make a verifier.
    #[error("{}: {what}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// Counts of what the TLS layer did, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// Successful reloads of changed files (not the first load).
    pub reloads: u64,
    /// Reloads refused (the previous certificate stayed in use).
    pub reload_failures: u64,
    /// Handshakes that failed or timed out (a client without a valid certificate under mutual TLS, a port scan,
    /// a plain-text client).
    pub handshake_failures: u64,
}

/// The ALPN protocols a listener offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The HTTP API: HTTP/2 and HTTP/1.1.
    Http,
}

/// The listeners' TLS configuration, replaced whole on each successful reload.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    /// The gRPC and the HTTP listener's configurations, replaced together.
    configs: RwLock<(Arc<ServerConfig>, Arc<ServerConfig>)>,
    /// The files' (modification time, length) at the last load tried, to notice a change.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    handshake_failures: AtomicU64,
}

impl Tls {
    /// Loads the files. Fails if any is missing, malformed, or if the key does not match the certificate.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let seen = stamps(&files);
        let configs = configs(&files)?;
        Ok(Arc::new(Tls {
            files,
            configs: RwLock::new(configs),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
        }))
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again. On success the new certificate serves every later handshake; on failure the old
    /// one stays and the error is returned (and counted in [`TlsStats::reload_failures`]).
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen.lock() = stamps(&self.files);
        match configs(&self.files) {
            Ok(configs) => {
                *self.configs.write() = configs;
                self.reloads.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// [`reload`](Self::reload), logged: what `why` (e.g. `"SIGHUP"`) asked for and how it went.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(why, cert = %self.files.cert.display(), "TLS certificate reloaded"),
            Err(e) => tracing::error!(why, error = %e, "TLS reload refused; the previous certificate stays in use"),
        }
    }

    /// Reloads whenever a file's modification time or length changes, looking every [`WATCH_EVERY`], until
    /// `stop` is cancelled. A change that does not load is retried at the next change only.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = stamps(&self.files);
            if *self.seen.lock() != now {
                self.reload_logged("files changed");
            }
        }
    }

    /// What the TLS layer has counted.
    pub fn stats(&self) -> TlsStats {
        TlsStats {
            reloads: self.reloads.load(Relaxed),
            reload_failures: self.reload_failures.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
        }
    }

    /// Completes the server side of a handshake on `io` within [`HANDSHAKE_TIMEOUT`], with the certificate in
    /// force now. A failure is counted and logged at debug (a scan or a plain-text client is not news).
    pub async fn accept<IO>(&self, io: IO, alpn: Alpn) -> Option<TlsConn<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = match alpn {
            Alpn::Grpc => self.configs.read().0.clone(),
            Alpn::Http => self.configs.read().1.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(TlsConn(stream)),
            Ok(Err(e)) => {
                self.handshake_failures.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.handshake_failures.fetch_add(1, Relaxed);
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

impl prometheus_client::collector::Collector for TlsStats {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::counter;
        counter(&mut enc, "floodgate_tls_reloads_total", "TLS certificate reloads that took effect.", self.reloads)?;
        counter(
            &mut enc,
            "floodgate_tls_reload_failures_total",
            "TLS reloads refused (the previous certificate stayed).",
            self.reload_failures,
        )?;
        counter(
            &mut enc,
            "floodgate_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            self.handshake_failures,
        )
    }
}

/// The two listeners' configurations from one set of files.
fn configs(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsError> {
    // ring, not aws-lc-rs: no C library to build (CI minutes on two cores). rustls marks ring's provider
    // deprecated because it offers no post-quantum key exchange; TLS 1.3 with X25519 stays the default here.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_pem(&files.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { path: files.cert.clone(), what: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: files.cert.clone(), what: "no CERTIFICATE in the file".into() });
    }
    let key = read_pem(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| TlsError::Pem { path: files.key.clone(), what: format!("no private key: {e}") })?;
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read_pem(path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::ClientCa { path: path.clone(), what: e.to_string() })?;
                roots.add(cert).map_err(|e| TlsError::ClientCa { path: path.clone(), what: e.to_string() })?;
            }
            if roots.is_empty() {
                return Err(TlsError::ClientCa { path: path.clone(), what: "no CERTIFICATE in the file".into() });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa { path: path.clone(), what: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut http = builder.with_single_cert(certs, key)?;
    let mut grpc = http.clone();
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(grpc), Arc::new(http)))
}

/// A PEM file's bytes, refusing anything larger than [`MAX_PEM_BYTES`] (a file an operator names is read whole:
/// a wrong path must not make the server read gigabytes).
///
/// ```
/// let missing = floodgate_server::tls::read_pem("/nonexistent/ca.pem".as_ref()).unwrap_err();
/// assert!(missing.to_string().starts_with("/nonexistent/ca.pem: "));
/// ```
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { path: path.to_owned() });
    }
    std::fs::read(path).map_err(read)
}

/// Each file's (modification time, length), `None` where it cannot be read.
fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// A connection after its TLS handshake.
#[derive(Debug)]
pub struct TlsConn<IO>(tokio_rustls::server::TlsStream<IO>);

impl<IO> TlsConn<IO> {
    /// The connection under the TLS layer.
    pub fn get_ref(&self) -> &IO {
        self.0.get_ref().0
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for TlsConn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

/// The gRPC listener's connections after their handshakes: each handshake runs in a task of its own, so a slow
/// or silent client delays only itself.
pub fn incoming<S, IO>(
    connections: S,
    tls: Arc<Tls>,
) -> impl futures_util::Stream<Item = io::Result<TlsConn<IO>>> + Send + 'static
where
    S: futures_util::Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<TlsConn<IO>>>(64);
    tokio::spawn(async move {
        let mut connections = std::pin::pin!(connections);
        while let Some(conn) = connections.next().await {
            let Ok(io) = conn else { continue };
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                if let Some(conn) = tls.accept(io, Alpn::Grpc).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}
