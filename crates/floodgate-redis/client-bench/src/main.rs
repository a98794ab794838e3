//! redis-rs vs fred on the store's GCRA script (EVALSHA), one caller and 50 callers on one connection, against
//! the same redis-server. Best of 3 alternating rounds; bounded call counts. Needs `redis-server` on PATH.

#[path = "../../tests/it/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::Policy;
use floodgate_redis::ScriptSource;
use fred::prelude::*;

const CALLS_1: u64 = 30_000;
const CALLS_50: u64 = 150_000;

#[derive(Clone)]
struct Call {
    sha: String,
    keys: Vec<String>,
    args: Vec<String>,
}

async fn redis_rs(conn: &redis::aio::MultiplexedConnection, call: &Call, callers: u64, total: u64) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (mut conn, call) = (conn.clone(), call.clone());
            tokio::spawn(async move {
                for _ in 0..total / callers {
                    let v: Vec<i64> = redis::cmd("EVALSHA")
                        .arg(&call.sha)
                        .arg(2)
                        .arg(&call.keys)
                        .arg(&call.args)
                        .query_async(&mut conn)
                        .await
                        .expect("redis-rs evalsha");
                    assert_eq!(v[0], 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (total / callers * callers) as f64 / start.elapsed().as_secs_f64()
}

async fn fred(client: &Arc<Client>, call: &Call, callers: u64, total: u64) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, call) = (client.clone(), call.clone());
            tokio::spawn(async move {
                for _ in 0..total / callers {
                    let v: Vec<i64> = client
                        .evalsha(call.sha.clone(), call.keys.clone(), call.args.clone())
                        .await
                        .expect("fred evalsha");
                    assert_eq!(v[0], 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (total / callers * callers) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let server = support::RedisServer::start();
    let policy = Policy::gcra(1_000_000_000, Duration::from_secs(1)).expect("policy");
    let script = ScriptSource::for_algorithm(policy.algorithm());
    assert!(server.cli(&["SCRIPT", "LOAD", script.source()]).contains(script.sha()));
    let call = Call {
        sha: script.sha().to_owned(),
        keys: vec!["b:{u}:gcra".into(), "b:{u}".into()],
        args: ["h", "1", "-1", "0", "1", "-1"]
            .into_iter()
            .map(String::from)
            .chain([policy.meter_unit(), policy.meter_drain(), policy.capacity()].map(|n| n.to_string()))
            .collect(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let rs = redis::Client::open(server.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis-rs connect");
        let config = Config::from_url(&server.url()).expect("fred config");
        let fc = Arc::new(Builder::from_config(config).build().expect("fred client"));
        fc.init().await.expect("fred connect");
        let mut best = [0f64; 4];
        for round in 0..3 {
            let r = [
                redis_rs(&rs, &call, 1, CALLS_1).await,
                fred(&fc, &call, 1, CALLS_1).await,
                redis_rs(&rs, &call, 50, CALLS_50).await,
                fred(&fc, &call, 50, CALLS_50).await,
            ];
            eprintln!(
                "round {round}: redis-rs c=1 {:.0}/s, fred c=1 {:.0}/s, redis-rs 50 {:.0}/s, fred 50 {:.0}/s",
                r[0], r[1], r[2], r[3]
            );
            for (b, x) in best.iter_mut().zip(r) {
                *b = b.max(x);
            }
        }
        println!("| client | 1 caller | 50 callers, one connection |");
        println!("|---|---|---|");
        println!("| redis-rs 1.8 (MultiplexedConnection) | {:.0} EVALSHA/s | {:.0} EVALSHA/s |", best[0], best[2]);
        println!("| fred 10.1 | {:.0} EVALSHA/s | {:.0} EVALSHA/s |", best[1], best[3]);
        println!("| redis-rs / fred | {:.2} | {:.2} |", best[0] / best[1], best[2] / best[3]);
    });
}
