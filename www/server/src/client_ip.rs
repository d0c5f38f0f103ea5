//! The client's IP address, which every per-IP limit is keyed on. It is the TCP peer, unless the
//! peer is a proxy the operator named (`--trusted-proxy`): then it is the address that proxy
//! reports in `X-Forwarded-For` (the rightmost entry not itself a trusted proxy). A header from
//! anyone else is ignored, so a client cannot pick its own bucket.
//!
//! [`resolve`] stores a [`ClientIp`] in every request's extensions; handlers take it with
//! `Extension<ClientIp>`. A request served without connect info (a test mounting the router on
//! `axum::serve`, which inserts no `ConnectInfo<PeerAddr>`) counts as the unspecified address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// The TCP peer of a connection, inserted as `ConnectInfo<PeerAddr>` into every request by the
/// accept loop ([`crate::edge::serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The address the per-IP limits count against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    pub const UNKNOWN: ClientIp = ClientIp(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
}

/// The client address for a request from `peer` with `headers`, given the trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    // Walk X-Forwarded-For from the right: each trusted hop appended the address it saw.
    let mut address = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { return address };
        for entry in text.rsplit(',') {
            let Ok(hop) = entry.trim().parse::<IpAddr>() else { return address };
            address = canonical(hop);
            if !trusted_proxies.contains(&address) {
                return address;
            }
        }
    }
    address
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address (a dual-stack socket reports them).
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// Middleware: stores the request's [`ClientIp`].
pub async fn resolve(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let ip = match request.extensions().get::<ConnectInfo<PeerAddr>>() {
        Some(ConnectInfo(PeerAddr(peer))) => ClientIp(client_ip(peer.ip(), request.headers(), &state.config.trusted_proxies)),
        None => ClientIp::UNKNOWN,
    };
    request.extensions_mut().insert(ip);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 1.2.3.4"));
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(ip("9.9.9.9"), &headers, &[]), ip("9.9.9.9"));
        // A trusted proxy reports the rightmost address, not the client-chosen leftmost one.
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &[ip("10.0.0.1")]), ip("1.2.3.4"));
        // Two trusted hops: skip both.
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.2"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &[ip("10.0.0.1"), ip("10.0.0.2")]), ip("1.2.3.4"));
        // Garbage stops the walk at the last good address.
        headers.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &[ip("10.0.0.1")]), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("::ffff:1.2.3.4"), &HeaderMap::new(), &[]), ip("1.2.3.4"));
    }
}
