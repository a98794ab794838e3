//! Binding, serving and stopping: the HTTP and gRPC listeners over one [`AppState`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http;
use crate::rls::Rls;
use crate::state::AppState;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    /// A gRPC thread or its runtime could not be started.
    #[error("cannot start a gRPC thread: {0}")]
    Runtime(std::io::Error),
    /// A server task panicked or was cancelled.
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running server: both listeners bound and serving.
#[derive(Debug)]
pub struct Server {
    /// The HTTP address actually bound (useful with port 0).
    pub http_addr: SocketAddr,
    /// The gRPC address actually bound.
    pub grpc_addr: SocketAddr,
    /// The shared state (for reloads).
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    http: JoinHandle<Result<(), ServeError>>,
    grpc: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Binds both addresses and starts serving: HTTP on the current tokio runtime, gRPC on one single-threaded
    /// runtime per core (see [`start_with`](Self::start_with)).
    pub async fn start(
        state: Arc<AppState>,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
    ) -> Result<Server, ServeError> {
        Self::start_with(state, http_addr, grpc_addr, default_grpc_threads()).await
    }

    /// Binds both addresses and starts serving. HTTP runs on the current tokio runtime. gRPC runs on
    /// `grpc_threads` threads, each with its own single-threaded runtime and its own `SO_REUSEPORT` listener on
    /// the same address, so the kernel spreads connections over the threads and every request is served start
    /// to end on one thread (no work stealing, no cross-thread wake-ups: the lowest tail latency we measured on
    /// a small machine). `grpc_threads = 0` serves gRPC on the current runtime instead.
    pub async fn start_with(
        state: Arc<AppState>,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
        grpc_threads: usize,
    ) -> Result<Server, ServeError> {
        Self::start_limited(state, http_addr, grpc_addr, grpc_threads, crate::conn::Limits::default()).await
    }

    /// [`start_with`](Self::start_with), with the connection bounds of each port (see [`crate::conn`]).
    pub async fn start_limited(
        state: Arc<AppState>,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
        grpc_threads: usize,
        limits: crate::conn::Limits,
    ) -> Result<Server, ServeError> {
        let http_listener =
            TcpListener::bind(http_addr).await.map_err(|source| ServeError::Bind { addr: http_addr, source })?;
        let http_addr = http_listener.local_addr().map_err(|source| ServeError::Bind { addr: http_addr, source })?;
        let shutdown = CancellationToken::new();

        let svc = Rls::new(state.clone()).into_server();
        let (reporter, health) = crate::health::grpc_service();
        let (grpc, grpc_addr) = if grpc_threads == 0 {
            let grpc_listener =
                TcpListener::bind(grpc_addr).await.map_err(|source| ServeError::Bind { addr: grpc_addr, source })?;
            let bound = grpc_listener.local_addr().map_err(|source| ServeError::Bind { addr: grpc_addr, source })?;
            let incoming = crate::conn::incoming(grpc_listener, crate::conn::Gate::new(limits, shutdown.clone()));
            let task = tokio::spawn(serve_grpc(svc, health, incoming, state.tls.clone(), shutdown.clone()));
            (task, bound)
        } else {
            let gate = crate::conn::Gate::new(limits, shutdown.clone());
            per_core_grpc(svc, health, grpc_addr, grpc_threads, shutdown.clone(), gate, state.tls.clone())?
        };

        tokio::spawn(crate::health::report_grpc(state.clone(), reporter, shutdown.clone()));
        let app = http::router(state.clone());
        let gate = crate::conn::Gate::new(limits, shutdown.clone());
        let http = tokio::spawn(serve_http(http_listener, app, shutdown.clone(), gate, state.tls.clone()));
        if let Some(tls) = &state.tls {
            tokio::spawn(tls.clone().watch(shutdown.clone()));
        }
        let tls = state.tls.is_some();
        tracing::info!(%http_addr, %grpc_addr, grpc_threads, tls, store = state.backend_name(), "floodgate serving");
        Ok(Server { http_addr, grpc_addr, state, shutdown, http, grpc })
    }

    /// A token that stops the server (gracefully: in-flight requests finish) when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish, and waits for both servers.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until both servers have stopped (after [`shutdown_token`](Self::shutdown_token) is cancelled, or an
    /// error). If one fails, the other is stopped too.
    pub async fn wait(self) -> Result<(), ServeError> {
        let Server { shutdown, http, grpc, .. } = self;
        let guard = shutdown.clone().drop_guard();
        let (h, g) = tokio::join!(
            async {
                let r = http.await;
                shutdown.cancel();
                r
            },
            async {
                let r = grpc.await;
                shutdown.cancel();
                r
            }
        );
        drop(guard);
        h??;
        g??;
        Ok(())
    }
}

/// One gRPC thread per core.
pub fn default_grpc_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

type HealthService = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;
type GrpcService =
    envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer<Rls>;

fn per_core_grpc(
    svc: GrpcService,
    health: HealthService,
    addr: SocketAddr,
    threads: usize,
    shutdown: CancellationToken,
    gate: Arc<crate::conn::Gate>,
    tls: Option<Arc<crate::tls::Tls>>,
) -> Result<(JoinHandle<Result<(), ServeError>>, SocketAddr), ServeError> {
    let bind_err = |source| ServeError::Bind { addr, source };
    // The first listener fixes the port (when asked for port 0); the others share it.
    let first = reuseport_listener(addr).map_err(bind_err)?;
    let bound = first.local_addr().map_err(bind_err)?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport_listener(bound).map_err(bind_err)?);
    }
    let mut done = Vec::with_capacity(threads);
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let svc = svc.clone();
        let health = health.clone();
        let stop = shutdown.clone();
        let gate = gate.clone();
        let tls = tls.clone();
        let spawned = std::thread::Builder::new().name(format!("floodgate-grpc-{i}")).spawn(move || {
            let result =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Http).and_then(
                    |rt| {
                        rt.block_on(async move {
                            let listener = TcpListener::from_std(listener).map_err(ServeError::Runtime)?;
                            let incoming = crate::conn::incoming(listener, gate);
                            serve_grpc(svc, health, incoming, tls, stop).await
                        })
                    },
                );
            let _ = tx.send(result);
        });
        if let Err(e) = spawned {
            shutdown.cancel();
            return Err(ServeError::Runtime(e));
        }
        done.push(rx);
    }
    let task = tokio::spawn(async move {
        let mut first_error = Ok(());
        for rx in done {
            let r = rx.await.unwrap_or(Ok(()));
            if r.is_err() {
                shutdown.cancel();
                if first_error.is_ok() {
                    first_error = r;
                }
            }
        }
        first_error
    });
    Ok((task, bound))
}

/// Serves RLS and gRPC health on `incoming` (over TLS when `tls` is set) until `stop`.
async fn serve_grpc<S>(
    svc: GrpcService,
    health: HealthService,
    incoming: S,
    tls: Option<Arc<crate::tls::Tls>>,
    stop: CancellationToken,
) -> Result<(), ServeError>
where
    S: futures_util::Stream<Item = std::io::Result<crate::conn::Guarded<tokio::net::TcpStream>>> + Send + 'static,
{
    let router = grpc_builder().add_service(svc).add_service(health);
    match tls {
        None => router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await,
        Some(tls) => {
            router.serve_with_incoming_shutdown(crate::tls::incoming(incoming, tls), stop.cancelled_owned()).await
        }
    }
    .map_err(ServeError::Grpc)
}

/// The gRPC server with its layers.
type GrpcServer = tonic::transport::Server<
    tower::layer::util::Stack<
        tower::util::MapResponseLayer<fn(GrpcResponse) -> GrpcResponse>,
        tower::layer::util::Identity,
    >,
>;
type GrpcResponse = axum::http::Response<tonic::body::Body>;

/// The gRPC server's HTTP/2 settings: at most 256 streams per connection, and keep-alive pings that find a
/// dead peer; a request that is not a valid protobuf answers `INVALID_ARGUMENT`, not `INTERNAL`.
fn grpc_builder() -> GrpcServer {
    tonic::transport::Server::builder()
        .max_concurrent_streams(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(tower::util::MapResponseLayer::new(
            decode_errors_are_invalid_argument as fn(GrpcResponse) -> GrpcResponse,
        ))
}

/// tonic answers a request body that fails to decode with `INTERNAL` (13); it is the caller's error, so it is
/// `INVALID_ARGUMENT` (3). Such answers carry their status in the headers (a trailers-only response).
fn decode_errors_are_invalid_argument(mut res: GrpcResponse) -> GrpcResponse {
    let headers = res.headers_mut();
    let decode_error = headers.get("grpc-status").is_some_and(|s| s == "13")
        && headers.get("grpc-message").and_then(|m| m.to_str().ok()).is_some_and(|m| m.contains("decode"));
    if decode_error {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("3"));
    }
    res
}

/// The longest a client may take to send a request's headers (HTTP/1) before its connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP accept loop: hyper with a header read timeout, connections bounded and timed by `gate` (see
/// [`crate::conn`]), and a graceful shutdown that lets in-flight requests finish.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
    gate: Arc<crate::conn::Gate>,
    tls: Option<Arc<crate::tls::Tls>>,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(stream) = gate.admit(stream) else {
            tracing::debug!(%peer, "too many HTTP connections: closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let Some(tls) = &tls else {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
            continue;
        };
        // The handshake runs in the connection's task, so a slow client delays only itself.
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let Some(stream) = tls.accept(stream, crate::tls::Alpn::Http).await else { return };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
