//! An own `redis-server` on a free loopback port, killed by pid when dropped (and by a watchdog when the test
//! process exits). Panics with how to install it when `redis-server` is missing: it never skips.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    pid: Option<u32>,
    watchdog: Option<Child>,
    dir: std::path::PathBuf,
}

fn free_port() -> u16 {
    // Bind port 0 and let it go: a concurrent process may take it, so start() retries.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("addr").port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let ok = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "redis-server not found: install it with `apt-get install -y redis-server` and run the tests again"
        );
        for attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("floodgate-upstream-{}-{port}-{attempt}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let pidfile = dir.join("pid");
            let script = r#"redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning & r=$!
echo $r > "$FG_PIDFILE"
while kill -0 "$FG_TESTPID" 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done
kill -9 $r 2>/dev/null"#;
            let child = Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(port.to_string())
                .current_dir(&dir)
                .env("FG_PIDFILE", &pidfile)
                .env("FG_TESTPID", std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sh");
            let mut server = RedisServer { port, pid: None, watchdog: Some(child), dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if server.pid.is_none() {
                    server.pid = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok());
                }
                if server.pid.is_some() && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(server);
        }
        panic!("could not start redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
