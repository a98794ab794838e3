//! # floodgate-server
//!
//! The `floodgate` binary's library: a rate-limit server over any [`floodgate::Store`] (the in-memory store by
//! default) that speaks
//!
//! - Envoy's rate limit service, RLS v3 gRPC ([`rls`]), with configs in the format of Envoy's reference
//!   ratelimit service ([`config`]);
//! - an HTTP JSON API ([`http`]): hit, inspect, reset, list limits, reload; plus `/metrics` ([`metrics`]),
//!   `/healthz` (liveness), `/readyz` (readiness, [`health`]) and `/openapi.json`; the standard gRPC health
//!   service on the RLS port.
//!
//! [`server::Server::start`] runs both on the current tokio runtime, which is how the tests run it in-process:
//!
//! ```no_run
//! use std::sync::Arc;
//! use floodgate::MemoryStore;
//! use floodgate_server::{server::Server, state::{AppState, Backend, ConfigSource}};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let state = AppState::new(ConfigSource::Builtin, Backend::Memory(MemoryStore::new()), None, false)?;
//! let server = Server::start(Arc::new(state), "127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?).await?;
//! println!("HTTP on {}, gRPC on {}", server.http_addr, server.grpc_addr);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod conn;
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod json_rls;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod otlp;
pub mod process_metrics;
pub mod rls;
pub mod server;
pub mod state;
pub mod store_metrics;
pub mod tls;
pub mod upstream;
pub mod yaml;
