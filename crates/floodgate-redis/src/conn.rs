//! A single Redis over plain TCP or a Unix socket: one multiplexed connection whose death is seen as it happens.
//!
//! redis-rs's `ConnectionManager` learns that its connection died only from the next command, which fails (over
//! RESP2 it gets no disconnection notice): the first call after Redis restarted while idle, a `CLIENT KILL` or
//! Redis's idle `timeout` paid for it. Here the store runs the connection's driver task itself, and the driver
//! ends as soon as it reads the socket's end (it polls the socket even while idle): that marks the connection
//! dead, and the next call opens a fresh connection before it sends anything. Nothing is ever retried after it
//! was handed to a connection (it may have run: a script run twice would count a hit twice); a call that meets
//! a connection dying under it fails as before. A peer that vanishes without closing is found by TCP keepalive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisResult, Value};

/// Probes after 15 s idle; on Linux every 5 s, 3 times (a silent peer is dropped after about 30 s).
fn keepalive() -> socket2::TcpKeepalive {
    let k = socket2::TcpKeepalive::new().with_time(Duration::from_secs(15));
    #[cfg(target_os = "linux")]
    let k = k.with_interval(Duration::from_secs(5)).with_retries(3);
    k
}

/// One live connection and whether its driver has ended.
struct Live {
    conn: MultiplexedConnection,
    dead: Arc<AtomicBool>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Where a watched Redis listens.
enum Addr {
    Tcp(String, u16),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(host, port) => write!(f, "{host}:{port}"),
            #[cfg(unix)]
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The connection of a single Redis reached by `redis://host:port` or `unix:///path` (`redis+unix://`).
pub(crate) struct Watched {
    client: redis::Client,
    addr: Addr,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Live>>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// Connections opened after the first (counted in `RedisStats::reconnects`).
    pub(crate) reconnects: AtomicU64,
    opened: AtomicBool,
    /// Connection attempts made, and the last one's failure and when it ended: callers that waited for an
    /// attempt share its outcome, and none starts within `RETRY_GAP` of a failure (no connection storm at a
    /// Redis that refuses, no queue of attempts at one that does not answer).
    attempts: AtomicU64,
    last_failure: Mutex<Option<(std::time::Instant, String)>>,
}

/// The least time between a failed connection attempt and the next.
const RETRY_GAP: Duration = Duration::from_millis(10);

impl Watched {
    /// `None` unless the client's address is plain TCP or a Unix socket (TLS goes through `ConnectionManager`).
    pub(crate) fn new(client: &redis::Client, timeout: Duration, connect_timeout: Duration) -> Option<Watched> {
        let addr = match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            #[cfg(unix)]
            redis::ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => return None,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout));
        Some(Watched {
            client: client.clone(),
            addr,
            config,
            connect_timeout,
            current: Mutex::new(None),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            reconnects: AtomicU64::new(0),
            opened: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        })
    }

    fn alive(&self) -> Option<Arc<Live>> {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|l| !l.dead.load(Ordering::Acquire)).cloned()
    }

    /// The live connection, or a fresh one. The attempt runs in a task of its own, one at a time, so a caller
    /// that gives up (its timeout) does not cancel it; its error is the caller's.
    async fn live(self: &Arc<Self>) -> RedisResult<Arc<Live>> {
        if let Some(live) = self.alive() {
            return Ok(live);
        }
        let this = self.clone();
        let seen = self.attempts.load(Ordering::Acquire);
        let attempt = tokio::spawn(async move {
            let _one = this.connecting.clone().lock_owned().await;
            if let Some(live) = this.alive() {
                return Ok(live);
            }
            {
                let last = this.last_failure.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((at, e)) = last.as_ref()
                    && (this.attempts.load(Ordering::Acquire) != seen || at.elapsed() < RETRY_GAP)
                {
                    return Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        format!("not connected to redis: {e}"),
                    )));
                }
            }
            this.attempts.fetch_add(1, Ordering::AcqRel);
            let live = match this.open().await {
                Ok(live) => Arc::new(live),
                Err(e) => {
                    *this.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((std::time::Instant::now(), e.to_string()));
                    return Err(e);
                }
            };
            *this.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if this.opened.swap(true, Ordering::Relaxed) {
                this.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr = %this.addr, "floodgate-redis: connected again");
            }
            *this.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
            Ok(live)
        });
        attempt.await.map_err(|e| redis::RedisError::from(std::io::Error::other(format!("connect task: {e}"))))?
    }

    async fn open(&self) -> RedisResult<Live> {
        let settings = self.client.get_connection_info().redis_settings();
        let connect = async {
            match &self.addr {
                Addr::Tcp(host, port) => {
                    let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    // A peer that vanished without closing (a host down, a partition) is found by TCP keepalive:
                    // the socket errs, the driver ends, and the connection is replaced before the next call.
                    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive())?;
                    let (conn, driver) =
                        MultiplexedConnection::new_with_config(settings, stream, self.config.clone()).await?;
                    Ok::<_, redis::RedisError>((
                        conn,
                        Box::pin(driver) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
                    ))
                }
                #[cfg(unix)]
                Addr::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    let (conn, driver) =
                        MultiplexedConnection::new_with_config(settings, stream, self.config.clone()).await?;
                    Ok((conn, Box::pin(driver) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>))
                }
            }
        };
        let (conn, driver) = tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to redis took over {:?}", self.connect_timeout),
            ))
        })??;
        let dead = Arc::new(AtomicBool::new(false));
        let flag = dead.clone();
        let driver = tokio::spawn(async move {
            driver.await;
            flag.store(true, Ordering::Release);
        });
        Ok(Live { conn, dead, driver })
    }

    /// Opens the first connection now (a store that is not lazy).
    pub(crate) async fn connect(self: &Arc<Self>) -> RedisResult<()> {
        self.live().await.map(|_| ())
    }

    pub(crate) async fn query(self: &Arc<Self>, cmd: &Cmd) -> RedisResult<Value> {
        let live = self.live().await?;
        live.conn.clone().send_packed_command(cmd).await
    }
}

/// The store's connection: a watched single Redis, a single Redis over TLS, or a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single Redis over plain TCP or a Unix socket, its connection watched ([`Watched`]).
    Watched(Arc<Watched>),
    /// A single Redis over TLS.
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends one command (a script call) and turns an error reply into an error.
    pub(crate) async fn query(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Watched(c) => c.query(cmd).await?.extract_error(),
            Conn::Single(c) => c.clone().req_packed_command(cmd).await?.extract_error(),
            Conn::Cluster(c) => c.clone().req_packed_command(cmd).await?.extract_error(),
        }
    }
}
