//! Starts a server in-process on loopback ports chosen by the OS.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use floodgate::MemoryStore;
use floodgate_server::server::Server;
use floodgate_server::state::{AppState, Backend, ConfigSource};
use tonic::transport::Channel;

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub grpc: SocketAddr,
    pub config: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new empty directory, its own for each call, under cargo's temporary directory for integration tests
/// (`target/tmp`): what the tests leave goes with the target directory, not into the system's `/tmp`.
pub fn temp_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("floodgate-server-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh config file holding `yaml`.
pub fn write_config(yaml: &str) -> PathBuf {
    let path = temp_dir().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

pub async fn start(yaml: &str) -> TestServer {
    start_with(yaml, None, false).await
}

pub async fn start_with(yaml: &str, token: Option<&str>, strict: bool) -> TestServer {
    start_opts(yaml, token, strict, floodgate_server::server::default_grpc_threads()).await
}

/// `grpc_threads = 0` serves gRPC on the test's own runtime; otherwise on that many per-core threads.
pub async fn start_opts(yaml: &str, token: Option<&str>, strict: bool, grpc_threads: usize) -> TestServer {
    start_tuned(yaml, token, strict, grpc_threads, |_| {}).await
}

/// A server over `backend` (e.g. a Redis store).
pub async fn start_on(yaml: &str, backend: Backend) -> TestServer {
    let config = write_config(yaml);
    let state = AppState::new(ConfigSource::Path(config.clone()), backend, None, false).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start_with(Arc::new(state), any, any, 1).await.unwrap();
    TestServer { base: format!("http://{}", server.http_addr), grpc: server.grpc_addr, server, config }
}

/// A child process killed when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A redis-server on `port` (loopback, no persistence), killed on drop; fails, saying how to install it, when it
/// is missing.
pub fn redis_on(port: u16) -> KillOnDrop {
    assert!(
        std::process::Command::new("redis-server").arg("--version").output().is_ok(),
        "redis-server is not installed: `apt-get install -y redis-server` (scripts/test does it for you)"
    );
    KillOnDrop(
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A redis-server on a free loopback port (no persistence), killed on drop.
pub struct RedisChild {
    pub port: u16,
    _child: KillOnDrop,
}

impl RedisChild {
    pub fn start() -> RedisChild {
        let port = free_port();
        RedisChild { port, _child: redis_on(port) }
    }

    /// A store on this Redis, once it answers (within 10 s).
    pub async fn store(&self) -> floodgate_redis::RedisStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let built = floodgate_redis::RedisStore::builder()
                .url(&format!("redis://127.0.0.1:{}/", self.port))
                .prefix(format!("fgtest{}", COUNTER.fetch_add(1, Ordering::Relaxed)))
                .build()
                .await;
            match built {
                Ok(store) => return store,
                Err(e) if std::time::Instant::now() > deadline => panic!("redis did not start: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}

/// A server whose state `tune` adjusts before it starts (e.g. `reference_counting`).
pub async fn start_tuned(
    yaml: &str,
    token: Option<&str>,
    strict: bool,
    grpc_threads: usize,
    tune: impl FnOnce(&mut AppState),
) -> TestServer {
    let config = write_config(yaml);
    let mut state = AppState::new(
        ConfigSource::Path(config.clone()),
        Backend::Memory(MemoryStore::new()),
        token.map(str::to_owned),
        strict,
    )
    .unwrap();
    tune(&mut state);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start_with(Arc::new(state), any, any, grpc_threads).await.unwrap();
    TestServer { base: format!("http://{}", server.http_addr), grpc: server.grpc_addr, server, config }
}

impl TestServer {
    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.grpc)).await.unwrap()
    }
}

/// A descriptor of `(key, value)` entries.
pub fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries.iter().map(|(k, v)| Entry { key: (*k).into(), value: (*v).into() }).collect(),
        ..Default::default()
    }
}

pub fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest { domain: domain.into(), descriptors, hits_addend: 0 }
}

/// The address of a server's gRPC port, for tests that start the server themselves.
#[allow(dead_code)]
pub struct TestServerAddrs {
    pub grpc: SocketAddr,
}

#[allow(dead_code)]
impl TestServerAddrs {
    /// Whether an RLS call on a fresh connection is answered OK within 2 s.
    pub async fn rls_ok(&self) -> bool {
        let call = async {
            let mut c = RateLimitServiceClient::connect(format!("http://{}", self.grpc)).await.ok()?;
            c.should_rate_limit(request("none", vec![desc(&[("k", "v")])])).await.ok()
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), call).await.ok().flatten().is_some()
    }
}

/// Checks `value` against an OpenAPI 3.1 schema (the subset openapi.json uses: `$ref`, `type` (one or a list,
/// `"null"` included), `oneOf`, `required`, `properties`, `additionalProperties: false`, `enum`).
pub fn conforms(value: &serde_json::Value, schema: &serde_json::Value, api: &serde_json::Value, at: &str) {
    if let Err(e) = check(value, schema, api, at) {
        panic!("{e}");
    }
}

pub fn check(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    api: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(value, &api["components"]["schemas"][name], api, at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options.iter().filter(|o| check(value, o, api, at).is_ok()).count();
        return if fits == 1 { Ok(()) } else { Err(format!("{at}: {value} fits {fits} of {options:?}")) };
    }
    let types: Vec<&str> = match &schema["type"] {
        serde_json::Value::String(t) => vec![t.as_str()],
        serde_json::Value::Array(ts) => ts.iter().filter_map(serde_json::Value::as_str).collect(),
        _ => vec![],
    };
    let fits = |t: &str| match t {
        "null" => value.is_null(),
        "object" => value.is_object(),
        "integer" => value.is_u64() || value.is_i64(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| fits(t)) {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap_or_default()) {
                return Err(format!("{at}: required {r} missing in {value}"));
            }
        }
        for (k, v) in obj {
            match schema["properties"].get(k) {
                Some(s) => check(v, s, api, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == false => {
                    return Err(format!("{at}: {k} is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} not in {options:?}"));
    }
    Ok(())
}

/// The schema of a route's JSON answer with `status`.
pub fn answer_schema<'a>(api: &'a serde_json::Value, method: &str, path: &str, status: u16) -> &'a serde_json::Value {
    &api["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]["schema"]
}

/// Polls `f` every 100 ms until it returns true, for at most `secs`.
pub async fn until<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut f: impl FnMut() -> F) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < std::time::Duration::from_secs(secs), "{what}: not within {secs} s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
