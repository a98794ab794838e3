//! The hit path: `ClusterStore` against the core's `MemoryStore`, fixed window, on the same key set.
//!
//! `cargo bench -p floodgate-cluster --bench hit`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floodgate::{MemoryStore, Policy};
use floodgate_cluster::ClusterStore;

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("user:{i}").into_bytes()).collect()
}

fn bench(c: &mut Criterion) {
    let policy = Policy::fixed_window(1 << 40, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    for n in [1_000usize, 100_000] {
        let ks = keys(n);
        let mut g = c.benchmark_group(format!("hit_fixed_window_{n}_keys"));
        g.throughput(Throughput::Elements(1));
        let memory = MemoryStore::builder().cleanup_interval(None).build();
        let mut i = 0usize;
        g.bench_function("memory", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(memory.hit_sync(&ks[i][..], &policy, 1))
            })
        });
        let cluster = ClusterStore::builder().node_id("bench").build();
        let mut i = 0usize;
        g.bench_function("cluster", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(cluster.hit_sync(&ks[i], &policy, 1))
            })
        });
        // With replication draining the changed keys as it would every few ms (here every 10 000 hits).
        let cluster = ClusterStore::builder().node_id("bench").build();
        let (mut i, mut since) = (0usize, 0u32);
        g.bench_function("cluster_with_replication_drain", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                since += 1;
                if since == 10_000 {
                    since = 0;
                    black_box(cluster.take_dirty());
                }
                black_box(cluster.hit_sync(&ks[i], &policy, 1))
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
