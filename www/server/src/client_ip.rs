//! The client's IP address, which every per-IP limit is keyed on. It is the TCP peer, unless the
//! peer is a proxy the operator named (`--trusted-proxy`): then it is the address that proxy
//! reports in `X-Forwarded-For` (the rightmost entry not itself a trusted proxy). A header from
//! anyone else is ignored, so a client cannot pick its own bucket. A trusted proxy is named by
//! address or by network (`10.0.0.0/8`, `fd00::/8`): a fleet of balancers is rarely one address.
//!
//! [`resolve`] stores a [`ClientIp`] in every request's extensions; handlers take it with
//! `Extension<ClientIp>`. A request served without connect info (a test mounting the router on
//! `axum::serve`, which inserts no `ConnectInfo<PeerAddr>`) counts as the unspecified address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
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

/// One `--trusted-proxy`: an address, or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(ipnet::IpNet);

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let net = match text.parse::<IpAddr>() {
            Ok(address) => ipnet::IpNet::from(address),
            Err(_) => text
                .parse::<ipnet::IpNet>()
                .map_err(|_| format!("{text:?} is neither an IP address nor a network like 10.0.0.0/8"))?,
        };
        // `10.1.2.3/8` is taken as the network it lies in, as every router reads it.
        Ok(ProxyNet(net.trunc()))
    }
}

/// The proxies whose forwarding headers are believed (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ProxyNet>);

impl TrustedProxies {
    /// From addresses or networks as the flag takes them; the error names the bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries.iter().map(|entry| entry.as_ref().parse()).collect::<Result<_, _>>().map(TrustedProxies)
    }

    /// Whether `address` (taken canonically: an IPv4-mapped IPv6 address is its IPv4 address)
    /// is a trusted proxy.
    pub fn contains(&self, address: &IpAddr) -> bool {
        let address = canonical(*address);
        self.0.iter().any(|ProxyNet(net)| net.contains(&address))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client address for a request from `peer` with `headers`, given the trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    // Walk X-Forwarded-For from the right: each trusted hop appended the address it saw.
    let mut address = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { return address };
        for entry in text.rsplit(',') {
            let Some(hop) = parse_hop(entry) else { return address };
            address = canonical(hop);
            if !trusted_proxies.contains(&address) {
                return address;
            }
        }
    }
    address
}

/// One `X-Forwarded-For` entry: an address, also as proxies write it with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:443`) or in brackets (`[2001:db8::1]`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse() {
        return Some(address);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(|port| port.parse::<u16>().is_ok());
        return if port_ok { inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6) } else { None };
    }
    let (host, port) = entry.split_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address (a dual-stack socket reports them).
pub fn canonical(address: IpAddr) -> IpAddr {
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
        let none = TrustedProxies::default();
        let trusted = |list: &[&str]| TrustedProxies::parse(list).unwrap();
        assert_eq!(client_ip(ip("9.9.9.9"), &headers, &none), ip("9.9.9.9"));
        // A trusted proxy reports the rightmost address, not the client-chosen leftmost one.
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.1"])), ip("1.2.3.4"));
        // Two trusted hops: skip both.
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.2"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.1", "10.0.0.2"])), ip("1.2.3.4"));
        // A network names both hops at once.
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/24"])), ip("1.2.3.4"));
        // Garbage stops the walk at the last good address.
        headers.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.1"])), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("::ffff:1.2.3.4"), &HeaderMap::new(), &none), ip("1.2.3.4"));
    }

    #[test]
    fn forwarded_entries_with_ports_or_brackets_name_the_client() {
        let trusted = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        for (entry, client) in [("1.2.3.4:5678", "1.2.3.4"), ("[2001:db8::1]", "2001:db8::1"), ("[2001:db8::1]:443", "2001:db8::1"), (" 1.2.3.4 ", "1.2.3.4")] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_str(entry).unwrap());
            assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip(client), "{entry}");
        }
        // Not an address: the walk stops at the proxy (the operator's proxy writes garbage).
        for entry in ["1.2.3.4:99999", "[2001:db8::1", "[1.2.3.4]", "2001:db8::1:x", "host:80"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_str(entry).unwrap());
            assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("10.0.0.1"), "{entry}");
        }
    }

    #[test]
    fn trusted_proxies_by_address_or_network() {
        let list = TrustedProxies::parse(&["192.0.2.7", "10.1.2.3/8", "fd00::/8"]).unwrap();
        assert!(list.contains(&ip("192.0.2.7")));
        assert!(!list.contains(&ip("192.0.2.8")));
        assert!(list.contains(&ip("10.200.0.1")), "10.1.2.3/8 is the network 10.0.0.0/8");
        assert!(!list.contains(&ip("11.0.0.1")));
        assert!(list.contains(&ip("fd12::1")));
        assert!(!list.contains(&ip("fe80::1")));
        assert!(list.contains(&ip("::ffff:10.9.9.9")), "an IPv4-mapped peer counts as its IPv4 address");
        // A network wider than its family, or no address at all, is refused with the culprit named.
        for bad in ["10.0.0.0/33", "proxy.example", "", "::/129"] {
            let error = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }
}
