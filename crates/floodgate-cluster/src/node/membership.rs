//! Membership: which addresses a node dials (configured, found in DNS, or told by linked peers), the dial
//! loop with its backoff, and the listener that accepts peers' links.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::Shared;
use super::link::{LinkEnd, run_link};
use crate::frame;

impl Shared {
    /// Starts dialing `addr` unless it is dialed already or is this node. A `learned` peer (told by another
    /// node) is forgotten after [`FORGET_AFTER`] of failed dials; a configured one is dialed until shutdown.
    pub(super) fn add_peer(self: &Arc<Self>, addr: String, learned: bool) {
        if self.shutdown.is_cancelled() || self.own_addrs.lock().contains(&addr) {
            return;
        }
        {
            let mut dialing = self.dialing.lock();
            if dialing.contains_key(&addr) || (learned && dialing.len() >= frame::MAX_PEERS_PER_FRAME) {
                return;
            }
            dialing.insert(addr.clone(), None);
        }
        tokio::spawn(dial_loop(self.clone(), addr, learned));
    }

    /// The addresses of every linked peer but `except`.
    pub(super) fn peer_addrs(&self, except: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.links.lock().values().filter(|l| *l.peer != *except).map(|l| l.advertised.clone()).collect();
        v.sort();
        v
    }

    fn linked(&self, id: &str) -> bool {
        self.links.lock().contains_key(id)
    }
}

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = run_link(shared, stream, addr.to_string(), false).await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "cluster: accept failed");
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
}

/// The longest a TCP connect to a peer may take before it is given up and dialed again after the backoff.
const CONNECT_WITHIN: Duration = Duration::from_millis(500);

/// How long a learned peer is dialed without success before it is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

async fn dial_loop(shared: Arc<Shared>, addr: String, learned: bool) {
    let (min, max) = (shared.config.reconnect_min, shared.config.reconnect_max.max(shared.config.reconnect_min));
    let mut backoff = min;
    let mut last_good = Instant::now();
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        if learned && last_good.elapsed() > FORGET_AFTER {
            info!(%addr, "cluster: forgetting a peer that has not answered for {FORGET_AFTER:?}");
            shared.dialing.lock().remove(&addr);
            return;
        }
        let known = shared.dialing.lock().get(&addr).cloned().flatten();
        let already = known.as_ref().is_some_and(|id| shared.linked(id));
        if !already {
            // A connect waits at most CONNECT_WITHIN: a SYN lost to a split would wait for the kernel's
            // retransmission (a second or more) where the next dial after the backoff is sooner.
            let within = shared.config.handshake_timeout.min(CONNECT_WITHIN);
            let connected = tokio::time::timeout(within, TcpStream::connect(&addr)).await;
            if let Ok(Ok(stream)) = connected {
                let started = Instant::now();
                match run_link(shared.clone(), stream, addr.clone(), true).await {
                    LinkEnd::SelfLink => {
                        debug!(%addr, "cluster: that address is this node; not dialing it again");
                        shared.own_addrs.lock().insert(addr.clone());
                        shared.dialing.lock().remove(&addr);
                        return;
                    }
                    LinkEnd::Peer(id) => {
                        last_good = Instant::now();
                        shared.dialing.lock().insert(addr.clone(), Some(id));
                        if started.elapsed() > max {
                            backoff = min;
                        }
                    }
                    LinkEnd::Failed => {}
                }
            }
            debug!(%addr, ?backoff, "cluster: will dial again");
        } else {
            backoff = min;
            last_good = Instant::now();
        }
        // Jitter of up to a quarter, so that nodes restarted together do not dial in step.
        let jitter = Duration::from_micros(crate::store::random_u64() % (backoff.as_micros() as u64 / 4 + 1));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(if already { min.max(Duration::from_millis(100)) } else { backoff + jitter }) => {}
        }
        if !already {
            backoff = (backoff * 2).min(max);
        }
    }
}
