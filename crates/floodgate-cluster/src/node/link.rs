//! One link: the mutual challenge-response handshake, registration (one link per pair of nodes), and the
//! reader, which merges what the peer sends until the link ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use super::broadcast::write_link;
use super::secure::{PeerIo, secure};
use super::{Link, STATE_SYNCING, STATE_UP, Shared, wall_ms};
use crate::frame::{self, Frame, FrameError, Hello, PROTOCOL_VERSION, Role};

fn fetch_max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

pub(super) enum LinkEnd {
    /// The link ran (or was refused as a duplicate) with this peer.
    Peer(Arc<str>),
    /// The peer is this node.
    SelfLink,
    /// Connection or handshake failed.
    Failed,
}

pub(super) type Wire = Framed<PeerIo, tokio_util::codec::LengthDelimitedCodec>;

async fn next_frame(shared: &Shared, wire: &mut Wire, within: Duration) -> Result<Frame, String> {
    match tokio::time::timeout(within, wire.next()).await {
        Err(_) => Err(format!("silent for {within:?}")),
        Ok(None) => Err("closed".into()),
        Ok(Some(Err(e))) => Err(format!("read: {e}")),
        Ok(Some(Ok(bytes))) => {
            shared.stats.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Frame::decode(&bytes).map_err(|e: FrameError| {
                shared.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                format!("malformed frame: {e}")
            })
        }
    }
}

pub(super) async fn send(shared: &Shared, wire: &mut futures_util::stream::SplitSink<Wire, Bytes>, f: &Frame) -> bool {
    let bytes = f.encode().freeze();
    let n = bytes.len() as u64;
    if let Frame::Entries(e) = f {
        shared.stats.entries_sent.fetch_add(e.keys.iter().map(|k| k.counts.len() as u64).sum(), Ordering::Relaxed);
    }
    match wire.send(bytes).await {
        Ok(()) => {
            shared.stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(_) => false,
    }
}

/// What a finished handshake learned about the peer.
struct Peer {
    id: Arc<str>,
    /// Where other nodes can reach the peer.
    advertised: String,
    skew_ms: i64,
}

/// TLS when configured, the handshake, registration, then the link's reader (here) and writer (a task) until
/// either ends.
pub(super) async fn run_link(shared: Arc<Shared>, stream: TcpStream, address: String, dialed: bool) -> LinkEnd {
    let _ = stream.set_nodelay(true);
    let Some(io) = secure(&shared, stream, &address, dialed).await else {
        return LinkEnd::Failed;
    };
    let mut wire = Framed::new(io, frame::codec());
    let peer = match handshake(&shared, &mut wire, &address, dialed).await {
        Ok(peer) => peer,
        Err(end) => return end,
    };
    if shared.blocked.lock().contains(&*peer.id) {
        return LinkEnd::Peer(peer.id);
    }
    if dialed && let Some(slot) = shared.dialing.lock().get_mut(&address) {
        *slot = Some(peer.id.clone());
    }
    let Some(link) = register(&shared, &peer, dialed) else {
        debug!(peer = %peer.id, "cluster: keeping the existing link");
        return LinkEnd::Peer(peer.id);
    };
    info!(peer = %peer.id, %address, dialed, "cluster: link up; syncing");
    let (sink, stream) = wire.split();
    let writer = tokio::spawn(write_link(shared.clone(), link.clone(), sink));
    let reason = read_link(&shared, &link, stream).await;
    link.close.cancel();
    // The writer may be waiting on a slow peer's socket: it is not waited for.
    writer.abort();
    {
        let mut links = shared.links.lock();
        if links.get(&peer.id).is_some_and(|l| l.serial == link.serial) {
            links.remove(&peer.id);
        }
    }
    shared.update_split_limit();
    info!(peer = %peer.id, %address, %reason, "cluster: link down");
    LinkEnd::Peer(peer.id)
}

/// The mutual challenge-response: both send a hello with a fresh nonce, then an HMAC with the cluster secret
/// over both hellos; each checks the other's. Logs and exports the clock skew seen.
async fn handshake(shared: &Shared, wire: &mut Wire, address: &str, dialed: bool) -> Result<Peer, LinkEnd> {
    let hs = shared.config.handshake_timeout;
    let mut nonce = [0u8; 32];
    if getrandom::fill(&mut nonce).is_err() {
        warn!("cluster: no randomness for a handshake nonce");
        return Err(LinkEnd::Failed);
    }
    let mine = Hello {
        version: PROTOCOL_VERSION,
        node_id: shared.id.to_string(),
        nonce,
        wall_ms: wall_ms(&*shared.clock),
        listen_port: shared.listen_port,
    };
    if wire.send(Frame::Hello(mine.clone()).encode().freeze()).await.is_err() {
        return Err(LinkEnd::Failed);
    }
    let theirs = match next_frame(shared, wire, hs).await {
        Ok(Frame::Hello(h)) => h,
        Ok(_) | Err(_) => {
            debug!(%address, "cluster: handshake failed: no hello");
            return Err(LinkEnd::Failed);
        }
    };
    let skew_ms = theirs.wall_ms as i64 - wall_ms(&*shared.clock) as i64;
    if theirs.version != PROTOCOL_VERSION || theirs.node_id.is_empty() {
        warn!(%address, version = theirs.version, "cluster: peer speaks another protocol version or has no id");
        return Err(LinkEnd::Failed);
    }
    if *theirs.node_id == *shared.id {
        return Err(if dialed { LinkEnd::SelfLink } else { LinkEnd::Failed });
    }
    let (my_role, their_role, dialer, acceptor) = if dialed {
        (Role::Dialer, Role::Acceptor, &mine, &theirs)
    } else {
        (Role::Acceptor, Role::Dialer, &theirs, &mine)
    };
    let mac = frame::proof(&shared.secret, my_role, dialer, acceptor);
    if wire.send(Frame::Auth { mac }.encode().freeze()).await.is_err() {
        return Err(LinkEnd::Failed);
    }
    let ok = match next_frame(shared, wire, hs).await {
        Ok(Frame::Auth { mac }) => frame::verify(&shared.secret, their_role, dialer, acceptor, &mac),
        _ => false,
    };
    let id: Arc<str> = theirs.node_id.clone().into();
    if !ok {
        shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        warn!(%address, peer = %id, "cluster: peer failed authentication; link refused");
        return Err(LinkEnd::Failed);
    }
    fetch_max(&shared.stats.max_clock_skew_ms, skew_ms.unsigned_abs());
    if skew_ms.unsigned_abs() > 1_000 {
        warn!(peer = %id, skew_ms, "cluster: large clock skew with a peer");
    } else {
        debug!(peer = %id, skew_ms, "cluster: clock skew with a peer");
    }
    // Where other nodes can reach the peer: the address dialed, or the address the link came from with the
    // port the peer listens on.
    let advertised = if dialed {
        address.to_owned()
    } else {
        address
            .parse::<SocketAddr>()
            .map_or_else(|_| address.to_owned(), |a| SocketAddr::new(a.ip(), theirs.listen_port).to_string())
    };
    Ok(Peer { id, advertised, skew_ms })
}

/// Registers the link: one link per peer. When both nodes dialed at once, both keep the link dialed by the
/// lower id; `None` when the existing link is the one to keep.
fn register(shared: &Shared, peer: &Peer, dialed: bool) -> Option<Arc<Link>> {
    let link = Arc::new(Link {
        serial: shared.serial.fetch_add(1, Ordering::Relaxed),
        peer: peer.id.clone(),
        advertised: peer.advertised.clone(),
        dialed,
        state: AtomicU8::new(STATE_SYNCING),
        lag_ms: AtomicI64::new(-1),
        skew_ms: peer.skew_ms,
        pending: Mutex::new(HashMap::new()),
        wake: Notify::new(),
        close: shared.shutdown.child_token(),
    });
    let mut links = shared.links.lock();
    if let Some(old) = links.get(&peer.id) {
        let preferred_dialed_by_me = *shared.id < *peer.id;
        let new_preferred = dialed == preferred_dialed_by_me;
        let old_preferred = old.dialed == preferred_dialed_by_me;
        if old_preferred && !new_preferred {
            return None;
        }
        old.close.cancel();
    }
    links.insert(peer.id.clone(), link.clone());
    Some(link)
}

/// The reader: merges the peer's entries, marks the link up at the end of its sync, learns the peers it
/// names; returns why the link ended (silence past the peer timeout, a close, a malformed frame).
async fn read_link(shared: &Arc<Shared>, link: &Link, mut stream: SplitStream<Wire>) -> String {
    let started = Instant::now();
    let mut budget = Budget { left: shared.config.peer_key_budget, refill_at: Instant::now() + Duration::from_secs(1) };
    loop {
        let next = tokio::select! {
            _ = link.close.cancelled() => return "closed by this node".to_string(),
            n = tokio::time::timeout(shared.config.peer_timeout, stream.next()) => n,
        };
        let bytes = match next {
            Err(_) => return format!("silent for {:?}", shared.config.peer_timeout),
            Ok(None) => return "closed by the peer".into(),
            Ok(Some(Err(e))) => return format!("read: {e}"),
            Ok(Some(Ok(b))) => b,
        };
        shared.stats.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match Frame::decode(&bytes) {
            Ok(Frame::Entries(e)) => merge_entries(shared, link, &e, &mut budget),
            Ok(Frame::SyncEnd) => {
                if link.state.swap(STATE_UP, Ordering::AcqRel) != STATE_UP {
                    let ms = started.elapsed().as_millis() as u64;
                    shared.stats.syncs_completed.fetch_add(1, Ordering::Relaxed);
                    shared.stats.last_sync_ms.store(ms, Ordering::Relaxed);
                    info!(peer = %link.peer, sync_ms = ms, "cluster: sync received; link up");
                    shared.mark_synced();
                    shared.update_split_limit();
                }
            }
            Ok(Frame::Ping) => {}
            Ok(Frame::Peers(addrs)) => {
                for a in addrs {
                    shared.add_peer(a, true);
                }
            }
            Ok(other) => {
                shared.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                return format!("unexpected frame after the handshake: {other:?}");
            }
            Err(e) => {
                shared.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                return format!("malformed frame: {e}");
            }
        }
    }
}

/// Merges one frame of entries (new counters within the per-peer budget), counts what it did, and measures
/// the replication lag once the link is up.
fn merge_entries(shared: &Shared, link: &Link, e: &frame::Entries, budget: &mut Budget) {
    let (mut applied, mut refused, mut received) = (0, 0, 0);
    for kc in &e.keys {
        received += kc.counts.len() as u64;
        let o = shared.store.merge(kc, || budget.take(shared.config.peer_key_budget));
        applied += o.applied;
        refused += o.refused;
    }
    let s = &shared.stats;
    s.entries_received.fetch_add(received, Ordering::Relaxed);
    s.merges_applied.fetch_add(applied, Ordering::Relaxed);
    s.entries_refused.fetch_add(refused, Ordering::Relaxed);
    if link.state.load(Ordering::Relaxed) == STATE_UP && !e.keys.is_empty() {
        let lag = (wall_ms(&*shared.clock) as i64 - e.sent_ms as i64 + link.skew_ms).max(0);
        link.lag_ms.store(lag, Ordering::Relaxed);
        fetch_max(&s.max_lag_ms, lag as u64);
    }
}

struct Budget {
    left: u64,
    refill_at: Instant,
}

impl Budget {
    fn take(&mut self, per_second: u64) -> bool {
        let now = Instant::now();
        if now >= self.refill_at {
            self.left = per_second;
            self.refill_at = now + Duration::from_secs(1);
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}
