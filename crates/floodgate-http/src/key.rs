//! What a request is limited by: the [`KeyExtractor`] trait and the extractors that come with it.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, HeaderValue, Request};

use crate::ip;

/// Picks the key a request is counted under, or `None` if it has none (see
/// [`MissingKey`](crate::MissingKey) for what happens then).
///
/// Extractors only read the request (headers, extensions, URI), so they are pure and cheap. Implement it for
/// your own keys, or pass a closure to [`key_fn`].
///
/// ```
/// use floodgate_http::KeyExtractor;
/// use http::Request;
///
/// /// Limits by the first path segment (`/tenant-a/...`).
/// struct Tenant;
///
/// impl<B> KeyExtractor<B> for Tenant {
///     type Key = String;
///     fn extract(&self, req: &Request<B>) -> Option<String> {
///         req.uri().path().split('/').nth(1).filter(|s| !s.is_empty()).map(str::to_owned)
///     }
/// }
///
/// let req = Request::get("/acme/orders").body(()).unwrap();
/// assert_eq!(Tenant.extract(&req).as_deref(), Some("acme"));
/// ```
pub trait KeyExtractor<B>: Send + Sync + 'static {
    /// The key: an [`IpAddr`], a [`HeaderValue`], a `String`, a `u64`... Whatever the backend accepts (see
    /// [`MemoryKey`](crate::MemoryKey) and [`StoreKey`](crate::StoreKey)).
    type Key: Send + 'static;

    /// The key of `req`, if it has one.
    fn extract(&self, req: &Request<B>) -> Option<Self::Key>;
}

/// Where [`ClientIp`] reads the address from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Peer,
    XForwardedFor(usize),
    Forwarded(usize),
    Header(HeaderName),
}

/// Keys requests by the client's IP address.
///
/// By default ([`ClientIp::peer`]) that is the TCP peer, read from axum's `ConnectInfo<SocketAddr>` extension
/// (serve with `into_make_service_with_connect_info::<SocketAddr>()`) or, failing that, from a plain
/// [`SocketAddr`] extension (insert one yourself under hyper or tonic).
///
/// Behind a reverse proxy every peer is the proxy, so the address must come from a header the proxy writes.
/// **Headers are only trustworthy if your proxy sets or appends them**; a client can send any header it likes.
/// You opt in explicitly, naming how many of the right-most entries your own proxies wrote:
/// [`x_forwarded_for`](ClientIp::x_forwarded_for), [`forwarded`](ClientIp::forwarded) (RFC 7239), or a
/// single-address header that your proxy overwrites ([`x_real_ip`](ClientIp::x_real_ip),
/// [`trusted_header`](ClientIp::trusted_header), e.g. `CF-Connecting-IP`).
///
/// IPv4-mapped IPv6 peers count as IPv4. IPv6 addresses are keyed whole unless you set
/// [`ipv6_prefix`](ClientIp::ipv6_prefix) (a /64 is one host's usual allocation, so `64` stops an attacker from
/// rotating through it). The key is an [`IpAddr`]: with a `MemoryStore<IpAddr>` no request allocates.
///
/// ```
/// use floodgate_http::{ClientIp, KeyExtractor};
/// use http::Request;
/// use std::net::{IpAddr, SocketAddr};
///
/// let mut req = Request::get("/").header("x-forwarded-for", "6.6.6.6, 203.0.113.7").body(())?;
/// req.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 2], 55_000)));
///
/// assert_eq!(ClientIp::peer().extract(&req), Some(IpAddr::from([10, 0, 0, 2])));
/// // One proxy (at 10.0.0.2) appended the address it saw: the right-most entry.
/// assert_eq!(ClientIp::x_forwarded_for(1).extract(&req), Some(IpAddr::from([203, 0, 113, 7])));
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIp {
    source: Source,
    v6_prefix: u8,
    or_peer: bool,
}

impl ClientIp {
    /// The TCP peer's address.
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// let req = http::Request::new(());
    /// assert_eq!(ClientIp::peer().extract(&req), None); // no connection info
    /// ```
    pub fn peer() -> Self {
        ClientIp { source: Source::Peer, v6_prefix: 128, or_peer: false }
    }

    /// The `trusted_proxies`-th address from the right of `X-Forwarded-For`: `1` if one proxy of yours appends
    /// the address it saw, `2` behind a CDN and then a load balancer, and so on. A request whose list is shorter
    /// has no key (or the peer's, with [`or_peer`](Self::or_peer)).
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// use std::net::IpAddr;
    /// let req = http::Request::get("/").header("x-forwarded-for", "1.1.1.1, 192.0.2.9, 10.0.0.1").body(())?;
    /// assert_eq!(ClientIp::x_forwarded_for(2).extract(&req), Some(IpAddr::from([192, 0, 2, 9])));
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn x_forwarded_for(trusted_proxies: usize) -> Self {
        ClientIp { source: Source::XForwardedFor(trusted_proxies), ..Self::peer() }
    }

    /// The `trusted_proxies`-th `for=` address from the right of the RFC 7239 `Forwarded` header.
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// use std::net::IpAddr;
    /// let req = http::Request::get("/").header("forwarded", "for=192.0.2.60;proto=https").body(())?;
    /// assert_eq!(ClientIp::forwarded(1).extract(&req), Some(IpAddr::from([192, 0, 2, 60])));
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn forwarded(trusted_proxies: usize) -> Self {
        ClientIp { source: Source::Forwarded(trusted_proxies), ..Self::peer() }
    }

    /// `X-Real-IP`, as nginx sets it: one address, which your proxy must overwrite on every request.
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// use std::net::IpAddr;
    /// let req = http::Request::get("/").header("x-real-ip", "192.0.2.1").body(())?;
    /// assert_eq!(ClientIp::x_real_ip().extract(&req), Some(IpAddr::from([192, 0, 2, 1])));
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn x_real_ip() -> Self {
        Self::trusted_header(HeaderName::from_static("x-real-ip"))
    }

    /// A header holding one address that your proxy overwrites on every request (`CF-Connecting-IP`,
    /// `Fly-Client-IP`, `True-Client-IP`...). If it appears more than once the request has no key.
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// use http::HeaderName;
    /// use std::net::IpAddr;
    /// let req = http::Request::get("/").header("cf-connecting-ip", "2001:db8::5").body(())?;
    /// let ip = ClientIp::trusted_header(HeaderName::from_static("cf-connecting-ip")).extract(&req);
    /// assert_eq!(ip, "2001:db8::5".parse().ok());
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn trusted_header(name: HeaderName) -> Self {
        ClientIp { source: Source::Header(name), ..Self::peer() }
    }

    /// Keys IPv6 addresses by their first `bits` bits only (default 128: the whole address).
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// let req = http::Request::get("/").header("x-real-ip", "2001:db8:1:2:3:4:5:6").body(())?;
    /// assert_eq!(ClientIp::x_real_ip().ipv6_prefix(64).extract(&req), "2001:db8:1:2::".parse().ok());
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.v6_prefix = bits.min(128);
        self
    }

    /// When the header gives no address, use the TCP peer's (for a server reached both through your proxy and
    /// directly: direct clients then count by their own address).
    ///
    /// ```
    /// use floodgate_http::{ClientIp, KeyExtractor};
    /// use std::net::{IpAddr, SocketAddr};
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 3], 1)));
    /// assert_eq!(ClientIp::x_real_ip().extract(&req), None);
    /// assert_eq!(ClientIp::x_real_ip().or_peer().extract(&req), Some(IpAddr::from([192, 0, 2, 3])));
    /// ```
    pub fn or_peer(mut self) -> Self {
        self.or_peer = true;
        self
    }
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::peer()
    }
}

/// The TCP peer's address from the request's extensions: axum's `ConnectInfo<SocketAddr>`, else a
/// `SocketAddr`.
///
/// ```
/// use floodgate_http::key::peer_ip;
/// use std::net::{IpAddr, SocketAddr};
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(SocketAddr::from(([127, 0, 0, 1], 8080)));
/// assert_eq!(peer_ip(&req), Some(IpAddr::from([127, 0, 0, 1])));
/// ```
#[inline]
pub fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    req.extensions().get::<SocketAddr>().map(SocketAddr::ip)
}

impl<B> KeyExtractor<B> for ClientIp {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        let headers = req.headers();
        let found = match &self.source {
            Source::Peer => peer_ip(req),
            Source::XForwardedFor(n) => {
                let lines = headers.get_all("x-forwarded-for").iter().map(HeaderValue::as_bytes);
                ip::x_forwarded_for(lines, *n)
            }
            Source::Forwarded(n) => {
                ip::forwarded(headers.get_all(http::header::FORWARDED).iter().map(HeaderValue::as_bytes), *n)
            }
            Source::Header(name) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => v.to_str().ok().and_then(ip::parse_ip),
                    _ => None,
                }
            }
        };
        let found = match found {
            None if self.or_peer && self.source != Source::Peer => peer_ip(req),
            found => found,
        };
        Some(ip::normalize(found?, self.v6_prefix))
    }
}

/// Keys requests by the value of a header (an API key, a tenant id). A request without it, or with an empty
/// one, has no key; if the header appears more than once the first value counts.
///
/// The key is the [`HeaderValue`] itself (cloning it does not copy the bytes). Limit by a header a client
/// cannot choose freely (one your authentication checked or your gateway set), or each made-up value gets a
/// fresh budget (and a key in the store: bound the store with `max_keys`).
///
/// ```
/// use floodgate_http::{HeaderKey, KeyExtractor};
/// let req = http::Request::get("/").header("x-api-key", "k-123").body(())?;
/// assert_eq!(HeaderKey::new("x-api-key")?.extract(&req).as_ref().map(|v| v.as_bytes()), Some(&b"k-123"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name` (any case).
    ///
    /// ```
    /// use floodgate_http::HeaderKey;
    /// assert!(HeaderKey::new("X-Api-Key").is_ok());
    /// assert!(HeaderKey::new("bad header").is_err());
    /// ```
    pub fn new(name: impl TryInto<HeaderName, Error: Into<http::Error>>) -> Result<Self, http::Error> {
        Ok(HeaderKey { name: name.try_into().map_err(Into::into)? })
    }

    /// Keys by the header `name`.
    ///
    /// ```
    /// use floodgate_http::HeaderKey;
    /// let key = HeaderKey::from_name(http::header::AUTHORIZATION);
    /// assert_eq!(key.name(), "authorization");
    /// ```
    pub fn from_name(name: HeaderName) -> Self {
        HeaderKey { name }
    }

    /// The header's name.
    ///
    /// ```
    /// use floodgate_http::HeaderKey;
    /// assert_eq!(HeaderKey::new("X-Api-Key")?.name(), "x-api-key");
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    type Key = HeaderValue;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<HeaderValue> {
        req.headers().get(&self.name).filter(|v| !v.is_empty()).cloned()
    }
}

/// A closure as a [`KeyExtractor`]; see [`key_fn`].
///
/// ```
/// use floodgate_http::{KeyExtractor, KeyFn};
/// let by_path = KeyFn(|req: &http::Request<()>| Some(req.uri().path().to_owned()));
/// assert_eq!(by_path.extract(&http::Request::new(())).as_deref(), Some("/"));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct KeyFn<F>(pub F);

/// Keys requests with a closure `Fn(&Request<B>) -> Option<K>`.
///
/// ```
/// use floodgate_http::{key_fn, KeyExtractor};
/// use http::Request;
///
/// // The user id your auth layer put in the extensions, as a u64.
/// #[derive(Clone, Copy)]
/// struct UserId(u64);
///
/// let by_user = key_fn(|req: &Request<()>| req.extensions().get::<UserId>().map(|u| u.0));
/// let mut req = Request::new(());
/// assert_eq!(by_user.extract(&req), None);
/// req.extensions_mut().insert(UserId(42));
/// assert_eq!(by_user.extract(&req), Some(42));
/// ```
pub fn key_fn<F>(f: F) -> KeyFn<F> {
    KeyFn(f)
}

impl<B, K, F> KeyExtractor<B> for KeyFn<F>
where
    F: Fn(&Request<B>) -> Option<K> + Send + Sync + 'static,
    K: Send + 'static,
{
    type Key = K;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<K> {
        (self.0)(req)
    }
}

/// Keys requests by the route they matched (axum's [`MatchedPath`](axum::extract::MatchedPath), such as
/// `/users/{id}`), so each route gets its own budget. Combine it with another key in a tuple to limit each
/// client per route: `(RouteKey, ClientIp::peer())` keys by `(RoutePath, IpAddr)`.
///
/// The key is a [`RoutePath`], which shares the router's string (taking it allocates nothing). A request that
/// matched no route (a 404 fallback) has no key: add the layer with `Router::route_layer` so that such requests
/// keep their 404 instead of meeting [`MissingKey`](crate::MissingKey).
///
/// ```
/// use axum::{Router, routing::get};
/// use floodgate::{MemoryStore, Policy};
/// use floodgate_http::{ClientIp, MemoryBackend, RateLimitLayer, RouteKey, RoutePath};
/// use std::net::IpAddr;
/// use std::time::Duration;
///
/// let store = MemoryStore::builder().key_type::<(RoutePath, IpAddr)>().build();
/// let per_route_and_ip = RateLimitLayer::new(
///     (RouteKey, ClientIp::peer()),
///     MemoryBackend::new(store),
///     Policy::gcra(20, Duration::from_secs(1))?,
/// );
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .route("/search", get(|| async { "results" }))
///     .route_layer(per_route_and_ip);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[cfg(feature = "axum")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKey;

#[cfg(feature = "axum")]
impl<B> KeyExtractor<B> for RouteKey {
    type Key = RoutePath;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<RoutePath> {
        req.extensions().get::<axum::extract::MatchedPath>().cloned().map(RoutePath)
    }
}

/// The route a request matched, as [`RouteKey`] gives it: a cheap clone of axum's
/// [`MatchedPath`](axum::extract::MatchedPath), compared and hashed by its text.
///
/// ```
/// use floodgate_http::{KeyExtractor, RouteKey};
/// use axum::{Router, routing::get};
///
/// // Routers insert the matched path; a request built by hand has none.
/// assert_eq!(RouteKey.extract(&http::Request::new(())), None);
/// ```
#[cfg(feature = "axum")]
#[derive(Clone, Debug)]
pub struct RoutePath(pub axum::extract::MatchedPath);

#[cfg(feature = "axum")]
impl RoutePath {
    /// The route's pattern, such as `/users/{id}`.
    ///
    /// ```
    /// # fn show(route: floodgate_http::RoutePath) {
    /// println!("{}", route.as_str());
    /// # }
    /// ```
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(feature = "axum")]
impl PartialEq for RoutePath {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(feature = "axum")]
impl Eq for RoutePath {}

#[cfg(feature = "axum")]
impl std::hash::Hash for RoutePath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

#[cfg(feature = "axum")]
impl AsRef<[u8]> for RoutePath {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

/// Two extractors together: the key is the pair of both keys, and a request lacking either has none.
///
/// ```
/// use floodgate_http::{ClientIp, HeaderKey, KeyExtractor};
/// use std::net::{IpAddr, SocketAddr};
///
/// let both = (HeaderKey::new("x-api-key")?, ClientIp::peer());
/// let mut req = http::Request::get("/").header("x-api-key", "k").body(())?;
/// assert_eq!(both.extract(&req), None);
/// req.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 9)));
/// let key = (http::HeaderValue::from_static("k"), IpAddr::from([192, 0, 2, 1]));
/// assert_eq!(both.extract(&req), Some(key));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<B, X, Y> KeyExtractor<B> for (X, Y)
where
    X: KeyExtractor<B>,
    Y: KeyExtractor<B>,
{
    type Key = (X::Key, Y::Key);

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<Self::Key> {
        Some((self.0.extract(req)?, self.1.extract(req)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap_or_default()
    }

    #[cfg(feature = "axum")]
    #[test]
    fn peer_reads_axum_connect_info_first() {
        let mut r = req(&[]);
        r.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 1)));
        assert_eq!(ClientIp::peer().extract(&r), Some(IpAddr::from([192, 0, 2, 1])));
        r.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::from(([192, 0, 2, 2], 1))));
        assert_eq!(ClientIp::peer().extract(&r), Some(IpAddr::from([192, 0, 2, 2])));
    }

    #[test]
    fn headers_are_ignored_unless_opted_in() {
        let r = req(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4")]);
        assert_eq!(ClientIp::peer().extract(&r), None);
        assert_eq!(ClientIp::default().extract(&r), None);
    }

    #[test]
    fn x_forwarded_for_spans_repeated_header_lines() {
        let r = req(&[("x-forwarded-for", "9.9.9.9, 1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        assert_eq!(ClientIp::x_forwarded_for(1).extract(&r), Some(IpAddr::from([2, 2, 2, 2])));
        assert_eq!(ClientIp::x_forwarded_for(2).extract(&r), Some(IpAddr::from([1, 1, 1, 1])));
        assert_eq!(ClientIp::x_forwarded_for(4).extract(&r), None);
    }

    #[test]
    fn single_address_header_rejects_duplicates_and_garbage() {
        let twice = req(&[("x-real-ip", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(ClientIp::x_real_ip().extract(&twice), None);
        assert_eq!(ClientIp::x_real_ip().extract(&req(&[("x-real-ip", "nope")])), None);
    }

    #[test]
    fn or_peer_falls_back() {
        let mut r = req(&[("x-forwarded-for", "garbage")]);
        r.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 1)));
        assert_eq!(ClientIp::x_forwarded_for(1).extract(&r), None);
        assert_eq!(ClientIp::x_forwarded_for(1).or_peer().extract(&r), Some(IpAddr::from([192, 0, 2, 1])));
    }

    #[test]
    fn ipv6_prefix_applies_to_every_source() {
        let mut r = req(&[("x-real-ip", "[2001:db8::1:2]:99")]);
        r.extensions_mut().insert(SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 1, 2, 3, 4), 1)));
        let want: Option<IpAddr> = "2001:db8::".parse().ok();
        assert_eq!(ClientIp::x_real_ip().ipv6_prefix(64).extract(&r), want);
        assert_eq!(ClientIp::peer().ipv6_prefix(64).extract(&r), want);
        assert_eq!(ClientIp::peer().ipv6_prefix(200), ClientIp::peer());
    }

    #[test]
    fn header_key_skips_missing_and_empty() {
        let key = HeaderKey::from_name(HeaderName::from_static("x-api-key"));
        assert_eq!(key.extract(&req(&[])), None);
        assert_eq!(key.extract(&req(&[("x-api-key", "")])), None);
        assert_eq!(key.extract(&req(&[("x-api-key", "a"), ("x-api-key", "b")])), Some(HeaderValue::from_static("a")));
    }
}
