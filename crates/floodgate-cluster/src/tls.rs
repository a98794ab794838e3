//! Optional mutual TLS between cluster peers ([`ClusterTls`]), with rustls.
//!
//! When a node's [`ClusterConfig::tls`](crate::ClusterConfig::tls) is set, every link, dialled or accepted, is
//! wrapped in TLS before the challenge-response with the cluster secret, which stays: TLS proves that the
//! peer holds a certificate signed by the cluster CA (and encrypts the link), the HMAC still proves that it
//! knows the cluster secret.
//!
//! - **Both sides present a certificate**, the node's own, and verify the other's chain against the cluster
//!   CA: the accepting side with rustls' `WebPkiClientVerifier`, the dialling side with its server verifier.
//! - **The name checked.** Peers are dialled by IP address or DNS name, found in static lists, DNS records or
//!   other peers' lists, so the dialling side does not check the address it dialled: it checks that the
//!   peer's certificate carries a fixed DNS subject alternative name, [`DEFAULT_SERVER_NAME`]
//!   (`floodgate-cluster`) unless [`ClusterTls::with_server_name`] sets another. Every node's certificate
//!   must carry that name; if it carries an extended key usage, it must allow both `serverAuth` and
//!   `clientAuth`, since each node is the server of the links it accepts and the client of those it dials.
//! - **A failure** (a certificate from another CA, a peer without TLS, a handshake longer than
//!   [`handshake_timeout`](crate::ClusterConfig::handshake_timeout)) closes that link only, is counted in
//!   [`ClusterStats::tls_handshake_failures`](crate::ClusterStats::tls_handshake_failures), and is logged:
//!   at warn at most once every 10 s, at debug otherwise.
//!
//! ```no_run
//! use floodgate_cluster::{ClusterConfig, ClusterTls};
//! use std::path::Path;
//!
//! let mut config = ClusterConfig::new("0.0.0.0:7946".parse()?, b"a long shared secret".to_vec());
//! config.tls = Some(ClusterTls::from_pem_files(
//!     Path::new("/etc/floodgate/cluster/node.crt"),
//!     Path::new("/etc/floodgate/cluster/node.key"),
//!     Path::new("/etc/floodgate/cluster/ca.crt"),
//! )?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The DNS name every node's certificate carries (as a subject alternative name), checked by the dialling
/// side unless [`ClusterTls::with_server_name`] sets another.
pub const DEFAULT_SERVER_NAME: &str = "floodgate-cluster";

/// The largest PEM file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Why a cluster TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterTlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_PEM_BYTES`].
    #[error("{}: larger than {MAX_PEM_BYTES} bytes, not a PEM file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A PEM input holds no item of the kind expected, or a malformed one.
    #[error("{what}: {why}")]
    Pem {
        /// Which input: a file's path, or "certificate", "key", "CA".
        what: String,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the material (e.g. a key that does not match the certificate, or a CA it cannot use).
    #[error("cluster TLS configuration: {0}")]
    Rustls(String),
    /// The name to check in peers' certificates is not a valid DNS name.
    #[error("invalid cluster TLS server name {0:?}: a DNS name is expected")]
    ServerName(String),
}

/// Mutual TLS for a node's links: its certificate and key, and the cluster CA every peer's certificate must
/// chain to (see the [module documentation](self)). Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Loads the node's certificate chain (PEM, leaf first), its private key (PEM: PKCS#8, PKCS#1 or SEC1)
    /// and the cluster CA certificates (PEM). Each file is at most [`MAX_PEM_BYTES`].
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<ClusterTls, ClusterTlsError> {
        let name = |p: &Path| p.display().to_string();
        build((&read_pem(cert)?, &name(cert)), (&read_pem(key)?, &name(key)), (&read_pem(ca)?, &name(ca)))
    }

    /// As [`from_pem_files`](Self::from_pem_files), from PEM text already in memory.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<ClusterTls, ClusterTlsError> {
        build((cert, "certificate"), (key, "key"), (ca, "CA"))
    }

    /// From rustls configurations made elsewhere: `server` serves accepted links (it should require and
    /// verify client certificates), `client` dials (it should present a client certificate and verify the
    /// server's). Nothing is checked here.
    pub fn from_configs(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> ClusterTls {
        ClusterTls { server, client, server_name: ServerName::DnsName(default_name()) }
    }

    /// Checks `name` rather than [`DEFAULT_SERVER_NAME`] in peers' certificates.
    pub fn with_server_name(mut self, name: &str) -> Result<ClusterTls, ClusterTlsError> {
        let dns = rustls::pki_types::DnsName::try_from(name.to_owned())
            .map_err(|_| ClusterTlsError::ServerName(name.to_owned()))?;
        self.server_name = ServerName::DnsName(dns);
        Ok(self)
    }

    /// The DNS name checked in peers' certificates.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }
}

fn default_name() -> rustls::pki_types::DnsName<'static> {
    // A constant that is a valid DNS name: `from_str` cannot fail on it, but is not unwrapped either.
    rustls::pki_types::DnsName::try_from(DEFAULT_SERVER_NAME)
        .unwrap_or_else(|_| unreachable!("{DEFAULT_SERVER_NAME} is a DNS name"))
}

/// The server and client configurations from PEM inputs, each with the name its errors give.
fn build(cert: (&[u8], &str), key: (&[u8], &str), ca: (&[u8], &str)) -> Result<ClusterTls, ClusterTlsError> {
    let pem = |what: &str, why: String| ClusterTlsError::Pem { what: what.to_owned(), why };
    let rustls_err = |e: rustls::Error| ClusterTlsError::Rustls(e.to_string());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.0).collect::<Result<_, _>>().map_err(|e| pem(cert.1, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert.1, "no CERTIFICATE in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key.0).map_err(|e| pem(key.1, format!("no private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.0) {
        let c = c.map_err(|e| pem(ca.1, e.to_string()))?;
        roots.add(c).map_err(|e| pem(ca.1, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem(ca.1, "no CERTIFICATE in it".into()));
    }
    let roots = Arc::new(roots);
    // ring, not aws-lc-rs: no C library to build (as the server's TLS). rustls marks ring's provider deprecated
    // because it offers no post-quantum key exchange; TLS 1.3 with X25519 stays the default here.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| ClusterTlsError::Rustls(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key_der.clone_key())
        .map_err(rustls_err)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key_der)
        .map_err(rustls_err)?;
    Ok(ClusterTls::from_configs(Arc::new(server), Arc::new(client)))
}

/// A PEM file's bytes, refusing anything larger than [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, ClusterTlsError> {
    let read = |source| ClusterTlsError::Read { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_PEM_BYTES {
        return Err(ClusterTlsError::TooLarge { path: path.to_owned() });
    }
    std::fs::read(path).map_err(read)
}
