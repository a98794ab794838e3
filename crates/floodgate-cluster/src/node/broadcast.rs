//! Broadcast: the changed entries a node counted, drained from the store every batch interval into each
//! link's queue (coalesced per key: only the latest count waits), and each link's writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;

use super::link::{Wire, send};
use super::{Link, Shared, wall_ms};
use crate::frame::{self, Frame};
use crate::store::KeyCounts;

/// Drains the store's changed keys every `batch_interval` into every link's queue; sweeps once a second.
pub(super) async fn replicate_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.batch_interval.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dirty = shared.store.take_dirty();
        if !dirty.is_empty() {
            let links: Vec<Arc<Link>> = shared.links.lock().values().cloned().collect();
            for l in &links {
                let mut pending = l.pending.lock();
                for kc in &dirty {
                    if let Some((_, c)) = kc.counts.first() {
                        let slot = pending.entry(kc.key.clone()).or_insert(0);
                        *slot = (*slot).max(*c);
                    }
                }
                drop(pending);
                l.wake.notify_one();
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            shared.store.sweep();
        }
    }
}

/// The writer: the full state, `SyncEnd`, then this node's changed entries as they come (coalesced per key
/// while the peer is slow), and a ping when idle.
pub(super) async fn write_link(
    shared: Arc<Shared>,
    link: Arc<Link>,
    mut sink: futures_util::stream::SplitSink<Wire, Bytes>,
) {
    let now_ms = wall_ms(&*shared.clock);
    for f in frame::batches(shared.store.snapshot(), now_ms) {
        if link.close.is_cancelled() || !send(&shared, &mut sink, &f).await {
            link.close.cancel();
            return;
        }
    }
    if !send(&shared, &mut sink, &Frame::SyncEnd).await {
        link.close.cancel();
        return;
    }
    let ping = shared.config.ping_interval;
    let mut told: Vec<String> = Vec::new();
    loop {
        let addrs = shared.peer_addrs(&link.peer);
        if addrs != told {
            if !send(&shared, &mut sink, &Frame::Peers(addrs.clone())).await {
                link.close.cancel();
                return;
            }
            told = addrs;
        }
        let idle = tokio::select! {
            _ = link.close.cancelled() => break,
            _ = link.wake.notified() => false,
            _ = tokio::time::sleep(ping) => true,
        };
        let pending = std::mem::take(&mut *link.pending.lock());
        let frames = if pending.is_empty() {
            if idle { vec![Frame::Ping] } else { Vec::new() }
        } else {
            let own = shared.id.clone();
            let keys: Vec<KeyCounts> =
                pending.into_iter().map(|(key, c)| KeyCounts { key, counts: vec![(own.clone(), c)] }).collect();
            frame::batches(keys, wall_ms(&*shared.clock))
        };
        for f in &frames {
            if !send(&shared, &mut sink, f).await {
                link.close.cancel();
                return;
            }
        }
    }
    let _ = sink.close().await;
}
