//! Client IP parsing: pure functions over header bytes, free of I/O, used by [`ClientIp`](crate::ClientIp).
//!
//! Proxy headers are lists that grow to the right: each proxy appends the address it saw the request come
//! from. Everything left of what *your* proxies wrote was sent by the client and can be forged, so the client
//! address is taken a fixed number of entries from the right (the number of trusted proxies), never from the
//! left.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses one address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:8080`, optionally in double quotes and surrounded by spaces. Anything else (`unknown`, an
/// obfuscated `_node`, a host name) is `None`.
///
/// ```
/// use floodgate_http::ip::parse_ip;
/// use std::net::IpAddr;
///
/// assert_eq!(parse_ip(" 192.0.2.1:443 "), Some(IpAddr::from([192, 0, 2, 1])));
/// assert_eq!(parse_ip("\"[2001:db8::1]:80\""), "2001:db8::1".parse().ok());
/// assert_eq!(parse_ip("unknown"), None);
/// ```
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches(|c: char| c == ' ' || c == '\t');
    let s = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = s.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The `n`-th address from the right (1 = the last) of an `X-Forwarded-For` list given as its header lines in
/// order. Empty list elements are skipped; an element that is not an address (or a line that is not text) is
/// still counted, and yields `None` if it is the one picked, so a client cannot shift the count. `n = 0` or a
/// list shorter than `n` gives `None`.
///
/// ```
/// use floodgate_http::ip::x_forwarded_for;
/// use std::net::IpAddr;
///
/// let lines: [&[u8]; 2] = [b"203.0.113.9, 198.51.100.1", b"192.0.2.1"];
/// assert_eq!(x_forwarded_for(lines, 1), Some(IpAddr::from([192, 0, 2, 1])));
/// assert_eq!(x_forwarded_for(lines, 2), Some(IpAddr::from([198, 51, 100, 1])));
/// assert_eq!(x_forwarded_for(lines, 4), None);
/// ```
pub fn x_forwarded_for<'a, I>(lines: I, n: usize) -> Option<IpAddr>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    nth_from_right(lines, n, parse_ip)
}

/// The `n`-th `for=` address from the right (1 = the last) of an RFC 7239 `Forwarded` list given as its header
/// lines in order, counted the same way as [`x_forwarded_for`]. An element without `for=` counts and yields
/// `None`.
///
/// ```
/// use floodgate_http::ip::forwarded;
/// use std::net::IpAddr;
///
/// let lines: [&[u8]; 1] = [b"for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\""];
/// assert_eq!(forwarded(lines, 1), "2001:db8:cafe::17".parse().ok());
/// assert_eq!(forwarded(lines, 2), Some(IpAddr::from([192, 0, 2, 60])));
/// ```
pub fn forwarded<'a, I>(lines: I, n: usize) -> Option<IpAddr>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    nth_from_right(lines, n, |element| {
        element.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            if k.trim().eq_ignore_ascii_case("for") { parse_ip(v) } else { None }
        })
    })
}

fn nth_from_right<'a, I>(lines: I, n: usize, parse: impl Fn(&str) -> Option<IpAddr>) -> Option<IpAddr>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    if n == 0 {
        return None;
    }
    let mut seen = 0;
    for line in lines.into_iter().rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            // A line that is not text counts as one element that is not an address.
            seen += 1;
            if seen == n {
                return None;
            }
            continue;
        };
        for element in line.rsplit(',') {
            if element.trim_matches(|c: char| c == ' ' || c == '\t').is_empty() {
                continue;
            }
            seen += 1;
            if seen == n {
                return parse(element);
            }
        }
    }
    None
}

/// The address a limit is keyed by: IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as dual-stack sockets
/// report IPv4 peers) become IPv4, and IPv6 addresses keep only their first `v6_prefix` bits (a host usually
/// owns a whole /64, so `64` stops it from rotating addresses; `128` keeps them whole).
///
/// ```
/// use floodgate_http::ip::normalize;
/// use std::net::IpAddr;
///
/// let mapped: IpAddr = "::ffff:192.0.2.1".parse()?;
/// assert_eq!(normalize(mapped, 128), IpAddr::from([192, 0, 2, 1]));
/// let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse()?;
/// assert_eq!(normalize(v6, 64), "2001:db8:1:2::".parse::<IpAddr>()?);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn normalize(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if v6_prefix < 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(v6_prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(v6.to_bits() & mask))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn parses_the_forms_proxies_write() {
        assert_eq!(parse_ip("192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(parse_ip("192.0.2.1:65535"), ip("192.0.2.1"));
        assert_eq!(parse_ip("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(parse_ip("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(parse_ip("[2001:db8::1]:8080"), ip("2001:db8::1"));
        assert_eq!(parse_ip("\t\"192.0.2.1\" "), ip("192.0.2.1"));
        assert_eq!(parse_ip("::ffff:192.0.2.1"), ip("::ffff:192.0.2.1"));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "unknown",
            "_hidden",
            "example.com",
            "192.0.2.1:",
            "192.0.2.1:http",
            "192.0.2.1:123456",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[192.0.2.1]",
            "192.0.2.256",
            "\"",
            "1.2.3.4, 5.6.7.8",
        ] {
            assert_eq!(parse_ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn x_forwarded_for_counts_from_the_right_across_lines() {
        let lines: [&[u8]; 3] = [b"1.1.1.1, 2.2.2.2", b"", b" 3.3.3.3 ,, 4.4.4.4"];
        assert_eq!(x_forwarded_for(lines, 1), ip("4.4.4.4"));
        assert_eq!(x_forwarded_for(lines, 2), ip("3.3.3.3"));
        assert_eq!(x_forwarded_for(lines, 3), ip("2.2.2.2"));
        assert_eq!(x_forwarded_for(lines, 4), ip("1.1.1.1"));
        assert_eq!(x_forwarded_for(lines, 5), None);
        assert_eq!(x_forwarded_for(lines, 0), None);
        assert_eq!(x_forwarded_for(Vec::<&[u8]>::new(), 1), None);
    }

    #[test]
    fn x_forwarded_for_garbage_counts_and_is_not_skipped() {
        // The client sends garbage; the proxy appends the real address.
        let lines: [&[u8]; 2] = [b"not-an-ip", b"192.0.2.1"];
        assert_eq!(x_forwarded_for(lines, 1), ip("192.0.2.1"));
        assert_eq!(x_forwarded_for(lines, 2), None);
        let lines: [&[u8]; 2] = [b"1.1.1.1", b"\xff\xfe"];
        assert_eq!(x_forwarded_for(lines, 1), None);
        assert_eq!(x_forwarded_for(lines, 2), ip("1.1.1.1"));
    }

    #[test]
    fn forwarded_reads_for_parameters() {
        let lines: [&[u8]; 2] = [b"for=\"_gazonk\", for=192.0.2.43", b"proto=https;FOR = \"[2001:db8::17]\";by=x"];
        assert_eq!(forwarded(lines, 1), ip("2001:db8::17"));
        assert_eq!(forwarded(lines, 2), ip("192.0.2.43"));
        assert_eq!(forwarded(lines, 3), None);
        let no_for: [&[u8]; 1] = [b"proto=https;by=203.0.113.43"];
        assert_eq!(forwarded(no_for, 1), None);
    }

    #[test]
    fn normalize_maps_and_masks() {
        let v6 = ip("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff").unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(normalize(v6, 128), v6);
        assert_eq!(normalize(v6, 64), IpAddr::V6("2001:db8:aaaa:bbbb::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(normalize(v6, 48), IpAddr::V6("2001:db8:aaaa::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(normalize(v6, 0), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let v4 = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(normalize(v4, 64), v4);
        assert_eq!(normalize(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()), 64), v4);
    }
}
