//! Test harness: own `redis-server` processes on free loopback ports, stopped by pid.
//!
//! Every server runs under a small `sh` watchdog that kills it when this test process exits, so servers shared
//! through statics (which are never dropped) do not outlive the run. Servers owned by a test are killed by their
//! `Drop`. If `redis-server` is missing, the harness panics with how to install it: it never skips.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const INSTALL: &str = "redis-server (and redis-cli) not found: install them with `apt-get install -y redis-server` \
     (Debian/Ubuntu) and run the tests again";

/// Panics with the install hint unless `redis-server` and `redis-cli` run.
pub fn require_redis() {
    for bin in ["redis-server", "redis-cli"] {
        let ok = Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(ok.is_ok_and(|s| s.success()), "{INSTALL}");
    }
}

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A free loopback port whose cluster bus port (port + 10000) is free too. Each test process starts in its own
/// block of 100 ports (by pid), so concurrent test processes rarely even try the same port; `try_spawn` then
/// checks that the server answering is the one it started.
pub fn free_port() -> u16 {
    let block = std::process::id() % 300;
    let _ = NEXT_PORT.compare_exchange(0, 20_000 + block * 100, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..2_000 {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let p = 20_000 + (p - 20_000) % 30_000;
        let Ok(port) = u16::try_from(p) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found");
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "floodgate-redis-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// One `redis-server` on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    watchdog: Option<Child>,
    pid: Option<u32>,
}

impl RedisServer {
    /// A plain server (no persistence).
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A server with extra arguments, on a free port (another one if a concurrent process took it first).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        require_redis();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = temp_dir(&port.to_string());
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
                "--loglevel",
                "warning",
                "--logfile",
                "redis.log",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut server = RedisServer { port, dir, args, watchdog: None, pid: None };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let pidfile = self.dir.join("pid");
        let _ = std::fs::remove_file(&pidfile);
        let script = r#"redis-server "$@" & r=$!; echo $r > "$FG_PIDFILE"
while kill -0 "$FG_TESTPID" 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done
kill -9 $r 2>/dev/null"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&self.args)
            .current_dir(&self.dir)
            .env("FG_PIDFILE", &pidfile)
            .env("FG_TESTPID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn sh for redis-server: {e}"))?;
        self.watchdog = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()) {
                break pid;
            }
            if Instant::now() > deadline {
                return Err("redis-server did not start".to_owned());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.pid = Some(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                // Ours, or another process's server that took the port first (then ours has exited)?
                return match server_pid(self.port) {
                    Some(p) if p != pid => {
                        self.pid = None;
                        if let Some(mut w) = self.watchdog.take() {
                            let _ = w.kill();
                            let _ = w.wait();
                        }
                        Err(format!("port {} is another process's redis-server", self.port))
                    }
                    _ => Ok(()),
                };
            }
            // Exited already (the port was taken by someone else, say)?
            if !Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        self.kill();
        Err(format!("redis-server on port {} not ready; log:\n{log}", self.port))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL by pid, and wait until the port is closed.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing (a hung Redis).
    pub fn pause(&self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
        }
    }

    /// SIGCONT: the paused server answers again.
    pub fn resume(&self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
    }

    /// Starts it again on the same port and directory (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p port args...`.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    // A password-protected server answers -NOAUTH: it is up all the same.
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// The `process_id` a server reports in `INFO server` (None if it cannot be read, e.g. it wants a password).
fn server_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(rest) = text.split("process_id:").nth(1)
            && let Some(line) = rest.split("\r\n").next().filter(|_| rest.contains("\r\n"))
        {
            return line.trim().parse().ok();
        }
        if text.starts_with('-') {
            return None;
        }
    }
    None
}

/// A 6-node Redis Cluster: 3 masters, 3 replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six fresh nodes and joins them. `redis-cli --cluster create` now and then fails on a loaded machine
    /// (a node slow to answer while another test process starts its own cluster): then the nodes are dropped and
    /// the whole thing starts again on new ports, at most three times, and the last failure is reported in full.
    pub fn start() -> RedisCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(e) => {
                    eprintln!("cluster start failed, trying again: {e}");
                    failures.push(e);
                }
            }
        }
        panic!("cluster did not start in 3 tries:\n{}", failures.join("\n---\n"));
    }

    fn try_start() -> Result<RedisCluster, String> {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| format!("run redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create {addrs:?} exited with {}:\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_healthy(Duration::from_secs(30));
        Ok(cluster)
    }

    /// Waits until every live node says the cluster is ok and every replica's link is up.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.pid.is_some()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let repl = n.cli(&["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster not healthy within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The index of the node that is master for `key`'s slot now.
    pub fn master_of(&self, key: &[u8]) -> usize {
        let key = String::from_utf8_lossy(key).into_owned();
        let slot: u16 = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", &key]).trim().parse().expect("keyslot");
        for (i, n) in self.nodes.iter().enumerate() {
            if n.pid.is_none() {
                continue;
            }
            let repl = n.cli(&["INFO", "replication"]);
            if !repl.contains("role:master") {
                continue;
            }
            let slots = n.cli(&["CLUSTER", "NODES"]);
            let me = slots.lines().find(|l| l.contains("myself")).unwrap_or_default().to_owned();
            for range in me.split_whitespace().skip(8) {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                    && (a..=b).contains(&slot)
                {
                    return i;
                }
            }
        }
        panic!("no master for slot {slot}");
    }
}
