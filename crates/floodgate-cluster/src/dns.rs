//! DNS discovery: a name re-resolved at min(record TTL, a cap); every A/AAAA record is a peer (as Elixir's
//! `dns_cluster` does). An empty or failed answer keeps the last good set.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use tracing::{debug, info, warn};

use crate::node::DnsHooks;

/// Splits `NAME:PORT` (or `[v6]:PORT`) into its name and port.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// The peers a DNS answer names: every address with the port.
pub(crate) fn peers_of(ips: impl IntoIterator<Item = IpAddr>, port: u16) -> BTreeSet<String> {
    ips.into_iter().map(|ip| SocketAddr::new(ip, port).to_string()).collect()
}

/// Resolves `name` (`NAME:PORT`) again and again until shutdown, adding every address found as a peer. The
/// delay between two resolutions is the answer's TTL, at most the cap and at least one second; after a failure
/// or an empty answer, the last good set stays and the next try is after the cap's tenth.
pub(crate) async fn discover(hooks: DnsHooks, name: String) {
    let Some((host, port)) = split_host_port(&name) else {
        return;
    };
    let cap = hooks.cap().max(Duration::from_secs(1));
    let builder = match hooks.server() {
        Some(server) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioConnectionProvider::default(),
            )
        }
        None => match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                warn!(%name, error = %e, "cluster: no DNS resolver configuration; --peer-dns not resolved");
                return;
            }
        },
    };
    let mut opts = ResolverOpts::default();
    // Records are re-read at min(TTL, cap): the resolver's cache must not hold them longer.
    opts.positive_max_ttl = Some(cap);
    opts.negative_max_ttl = Some(cap / 10);
    let resolver = builder.with_options(opts).build();
    let mut last_good: BTreeSet<String> = BTreeSet::new();
    loop {
        let wait = match resolver.lookup_ip(host).await {
            Ok(answer) => {
                let found = peers_of(answer.iter(), port);
                let ttl = answer.valid_until().saturating_duration_since(Instant::now());
                if found.is_empty() {
                    warn!(%name, "cluster: empty DNS answer; keeping the last good peer set");
                    cap / 10
                } else {
                    if found != last_good {
                        let peers = found.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                        info!(%name, %peers, "cluster: DNS peers");
                    }
                    for p in &found {
                        hooks.add_peer(p.clone());
                    }
                    last_good = found;
                    ttl.clamp(Duration::from_secs(1), cap)
                }
            }
            Err(e) => {
                debug!(%name, error = %e, kept = last_good.len(), "cluster: DNS lookup failed; keeping the last good peer set");
                cap / 10
            }
        };
        tokio::select! {
            _ = hooks.shutdown().cancelled() => return,
            _ = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports_split() {
        assert_eq!(split_host_port("peers.internal:7946"), Some(("peers.internal", 7946)));
        assert_eq!(split_host_port("[::1]:7946"), Some(("::1", 7946)));
        assert_eq!(split_host_port("peers.internal"), None);
        assert_eq!(split_host_port(":7946"), None);
        assert_eq!(split_host_port("x:99999"), None);
    }

    #[test]
    fn every_record_is_a_peer() {
        let ips: Vec<IpAddr> =
            vec!["10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4])), "::1".parse().unwrap_or(IpAddr::from([0; 4]))];
        let peers = peers_of(ips, 7946);
        assert!(peers.contains("10.0.0.1:7946") && peers.contains("[::1]:7946"));
    }
}
