//! TLS on the real binary: HTTPS and gRPC over TLS with certificates made at run time (rcgen), rotation on
//! SIGHUP and on a file change, mutual TLS refusing a client without a certificate, and bad files refused at
//! start. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{KillOnDrop, free_port, temp_dir, until};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const CONFIG: &str = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 2}\n";

/// A CA that signs leaf certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// A leaf for `localhost` and 127.0.0.1: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self, cn: &str) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A client configuration trusting `ca`, with a client certificate when given, offering `alpn`.
fn client_config(ca: &Ca, client: Option<(String, String)>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// An HTTPS/1.1 `GET path`: the served certificate and the response's text, or the error.
async fn https_get(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await.map_err(|e| e.to_string())?;
    let served = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned().ok_or("no certificate")?;
    if text.is_empty() {
        return Err("empty answer".into());
    }
    Ok((served.into_owned(), text))
}

/// A gRPC client over TLS to `port`.
async fn grpc_client(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> RateLimitServiceClient<tonic::transport::Channel> {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel =
        tonic::transport::Endpoint::from_static("http://localhost").connect_with_connector(connector).await.unwrap();
    RateLimitServiceClient::new(channel)
}

/// Starts `floodgate serve` with `extra` arguments; returns it with its HTTP and gRPC ports.
fn serve(extra: &[&std::ffi::OsStr]) -> (KillOnDrop, u16, u16) {
    let dir = temp_dir();
    let config = write(&dir, "config.yaml", CONFIG);
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .arg("--config")
        .arg(&config)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), http, grpc)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_grpc_over_tls_and_the_certificate_rotates_without_restart() {
    let ca = Ca::new("test CA");
    let dir = temp_dir();
    let (cert_a, key_a, der_a) = ca.leaf("first");
    let cert = write(&dir, "server.crt", &cert_a);
    let key = write(&dir, "server.key", &key_a);
    let (child, http, grpc) = serve(&["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()]);
    let h1 = client_config(&ca, None, &[b"http/1.1"]);
    until(20, "HTTPS up", || async { https_get(http, h1.clone(), "/healthz").await.is_ok() }).await;
    let (served, text) = https_get(http, h1.clone(), "/healthz").await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("ok\n"), "{text}");
    assert_eq!(served, der_a);

    // Plain text on the TLS port gets no HTTP answer, and the failed handshake is counted.
    let mut plain = TcpStream::connect(("127.0.0.1", http)).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain text was served: {:?}", String::from_utf8_lossy(&answer));
    let (_, metrics) = https_get(http, h1.clone(), "/metrics").await.unwrap();
    assert!(metric(&metrics, "floodgate_tls_handshake_failures_total").is_some_and(|n| n >= 1), "{metrics}");

    // gRPC over TLS (HTTP/2 by ALPN): two OK, then OVER_LIMIT.
    let mut client = grpc_client(grpc, client_config(&ca, None, &[b"h2"])).await;
    let codes: Vec<i32> = {
        let mut codes = Vec::new();
        for _ in 0..3 {
            let req = common::request("d", vec![common::desc(&[("k", "v")])]);
            codes.push(client.should_rate_limit(req).await.unwrap().into_inner().overall_code);
        }
        codes
    };
    assert_eq!(codes, [Code::Ok as i32, Code::Ok as i32, Code::OverLimit as i32]);

    // Rotation on SIGHUP: the key first, then the certificate; new connections get the new certificate.
    let (cert_b, key_b, der_b) = ca.leaf("second");
    std::fs::write(&key, key_b).unwrap();
    std::fs::write(&cert, cert_b).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap().success());
    until(10, "the second certificate served", || async {
        https_get(http, h1.clone(), "/healthz").await.is_ok_and(|(served, _)| served == der_b)
    })
    .await;

    // Rotation when the files change, with no signal.
    let (cert_c, key_c, der_c) = ca.leaf("third");
    std::fs::write(&key, key_c).unwrap();
    std::fs::write(&cert, cert_c).unwrap();
    until(15, "the third certificate served", || async {
        https_get(http, h1.clone(), "/healthz").await.is_ok_and(|(served, _)| served == der_c)
    })
    .await;

    // A broken pair is refused and counted; the third certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap().success());
    until(10, "the refused reload counted", || async {
        let Ok((_, m)) = https_get(http, h1.clone(), "/metrics").await else { return false };
        metric(&m, "floodgate_tls_reload_failures_total").is_some_and(|n| n >= 1)
    })
    .await;
    let (served, _) = https_get(http, h1.clone(), "/healthz").await.unwrap();
    assert_eq!(served, der_c);
    // The old connection's answers kept working: the gRPC client still answers.
    let req = common::request("d", vec![common::desc(&[("k", "w")])]);
    assert_eq!(client.should_rate_limit(req).await.unwrap().into_inner().overall_code, Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_clients_with_a_certificate_of_the_ca() {
    let (server_ca, client_ca, other_ca) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("other CA"));
    let dir = temp_dir();
    let (cert_pem, key_pem, _) = server_ca.leaf("server");
    let cert = write(&dir, "server.crt", &cert_pem);
    let key = write(&dir, "server.key", &key_pem);
    let ca = write(&dir, "clients.pem", &client_ca.pem());
    let (_child, http, grpc) = serve(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--tls-client-ca".as_ref(),
        ca.as_os_str(),
    ]);
    let (client_cert, client_key, _) = client_ca.leaf("client");
    let good = client_config(&server_ca, Some((client_cert, client_key)), &[b"http/1.1"]);
    until(20, "HTTPS up", || async { https_get(http, good.clone(), "/healthz").await.is_ok() }).await;
    let (_, text) = https_get(http, good.clone(), "/readyz").await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    let none = client_config(&server_ca, None, &[b"http/1.1"]);
    assert!(https_get(http, none, "/healthz").await.is_err(), "a client without a certificate was served");
    let (other_cert, other_key) = {
        let (c, k, _) = other_ca.leaf("stranger");
        (c, k)
    };
    let stranger = client_config(&server_ca, Some((other_cert, other_key)), &[b"http/1.1"]);
    assert!(https_get(http, stranger, "/healthz").await.is_err(), "a certificate of another CA was accepted");

    // gRPC with the client certificate.
    let (client_cert, client_key, _) = client_ca.leaf("grpc client");
    let mut client = grpc_client(grpc, client_config(&server_ca, Some((client_cert, client_key)), &[b"h2"])).await;
    let req = common::request("d", vec![common::desc(&[("k", "v")])]);
    assert_eq!(client.should_rate_limit(req).await.unwrap().into_inner().overall_code, Code::Ok as i32);
}

#[test]
fn bad_tls_files_are_refused_at_start_with_the_file_named() {
    let dir = temp_dir();
    let ca = Ca::new("CA");
    let (cert_pem, _, _) = ca.leaf("a");
    let (_, other_key, _) = ca.leaf("b");
    let cert = write(&dir, "server.crt", &cert_pem);
    let wrong_key = write(&dir, "wrong.key", &other_key);
    let missing = dir.join("missing.key");
    let config = write(&dir, "config.yaml", CONFIG);
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), missing.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing.key"), "{err}");
    let out = run(&["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), wrong_key.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.to_lowercase().contains("key"), "{err}");
    let out = run(&["--tls-cert".as_ref(), cert.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-key"), "a certificate without a key: {err}");
}

/// `redis-server` with TLS only (no plain port) on a free loopback port, its certificate signed by `ca`.
fn redis_tls(ca: &Ca, dir: &Path) -> (KillOnDrop, u16) {
    let (cert, key, _) = ca.leaf("redis");
    let cert = write(dir, "redis.crt", &cert);
    let key = write(dir, "redis.key", &key);
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .args(["--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    (KillOnDrop(child), port)
}

/// `rediss://` with `--redis-ca`: the server counts in a Redis it reaches over TLS only; without the CA (the
/// system's roots do not know it) it refuses to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_ca_of_its_own() {
    let dir = temp_dir();
    let ca = Ca::new("redis CA");
    let (_redis, port) = redis_tls(&ca, &dir);
    let ca_file = write(&dir, "redis-ca.pem", &ca.pem());
    let url = format!("rediss://127.0.0.1:{port}/");
    let config = write(&dir, "config.yaml", CONFIG);
    let (http, grpc) = (free_port(), free_port());
    let start = Instant::now();
    let server = loop {
        let mut child = Command::new(BIN)
            .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
            .args(["--redis", &url, "--redis-ca"])
            .arg(&ca_file)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        match child.try_wait().unwrap() {
            // Redis may not listen yet: the server refuses to start without it.
            Some(_) if start.elapsed() < Duration::from_secs(10) => continue,
            Some(status) => panic!("serve --redis rediss:// exited: {status}"),
            None => break KillOnDrop(child),
        }
    };
    let mut client = {
        let mut tries = 0;
        loop {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}")).unwrap();
            match RateLimitServiceClient::connect(endpoint).await {
                Ok(c) => break c,
                Err(_) if tries < 50 => tries += 1,
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut codes = Vec::new();
    for _ in 0..3 {
        let req = common::request("d", vec![common::desc(&[("k", "tls")])]);
        codes.push(client.should_rate_limit(req).await.unwrap().into_inner().overall_code);
    }
    assert_eq!(codes, [Code::Ok as i32, Code::Ok as i32, Code::OverLimit as i32]);
    // The counter is in that Redis, read over TLS.
    let keys = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca_file)
        .args(["-p", &port.to_string(), "--scan", "--pattern", "floodgate*"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&keys.stdout).trim().is_empty(), "no floodgate key in the TLS Redis");
    drop(server);

    // Without the CA the certificate is not trusted: the server says so and exits.
    let out = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--redis", &url, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Redis"), "{err}");
    // A CA with a plain redis:// URL would be ignored: refused.
    let out = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1/"])
        .arg("--redis-ca")
        .arg(&ca_file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("rediss://"), "{err}");
}
