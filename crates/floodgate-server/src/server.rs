//! Binding, serving and stopping: the HTTP and gRPC listeners over one [`AppState`].

use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Binds both addresses and starts serving on the current tokio runtime.
    pub async fn start(
        state: Arc<AppState>,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
    ) -> Result<Server, ServeError> {
        let http_listener =
            TcpListener::bind(http_addr).await.map_err(|source| ServeError::Bind { addr: http_addr, source })?;
        let grpc_listener =
            TcpListener::bind(grpc_addr).await.map_err(|source| ServeError::Bind { addr: grpc_addr, source })?;
        let http_addr = http_listener.local_addr().map_err(|source| ServeError::Bind { addr: http_addr, source })?;
        let grpc_addr = grpc_listener.local_addr().map_err(|source| ServeError::Bind { addr: grpc_addr, source })?;
        let shutdown = CancellationToken::new();

        let app = http::router(state.clone());
        let stop = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(http_listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(ServeError::Http)
        });

        let svc = Rls::new(state.clone()).into_server();
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let stop = shutdown.clone();
        let grpc = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
                .map_err(ServeError::Grpc)
        });
        tracing::info!(%http_addr, %grpc_addr, store = state.backend_name(), "floodgate serving");
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
