//! A minimal Envoy RLS v3 client: sends one `ShouldRateLimit` and prints the answer (no grpcurl needed).
//!
//! ```sh
//! cargo run -p floodgate-server --example rls_client -- 127.0.0.1:8081 default user=alice
//! cargo run -p floodgate-server --example rls_client -- 127.0.0.1:8081 edge path=/login user=bob
//! ```
//!
//! Arguments: the server's address, the domain, then the `key=value` entries of one descriptor.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, rate_limit::Unit};
use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, rate_limit_service_client::RateLimitServiceClient,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rls_client ADDR DOMAIN KEY=VALUE...";
    let addr = args.next().ok_or(usage)?;
    let domain = args.next().ok_or(usage)?;
    let entries = args
        .map(|kv| match kv.split_once('=') {
            Some((key, value)) => Ok(Entry { key: key.into(), value: value.into() }),
            None => Err(format!("{kv:?} is not KEY=VALUE")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = RateLimitServiceClient::connect(format!("http://{addr}")).await?;
    let request = RateLimitRequest {
        domain,
        descriptors: vec![RateLimitDescriptor { entries, ..Default::default() }],
        hits_addend: 0,
    };
    let answer = client.should_rate_limit(request).await?.into_inner();
    let code = |c: i32| Code::try_from(c).map_or("?", |c| c.as_str_name());
    println!("overall: {}", code(answer.overall_code));
    for (i, s) in answer.statuses.iter().enumerate() {
        let limit = s.current_limit.as_ref().map_or("none".to_owned(), |l| {
            format!("{}/{}", l.requests_per_unit, Unit::try_from(l.unit).map_or("?", |u| u.as_str_name()))
        });
        let reset = s.duration_until_reset.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
        println!("  [{i}] {} limit={limit} remaining={} reset_in={reset:.3}s", code(s.code), s.limit_remaining);
    }
    Ok(())
}
