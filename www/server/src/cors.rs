//! Who may use this server. Two checks, both on every endpoint:
//!
//! - [`check_host`] (outermost, also static files): on a connection that arrived on a loopback
//!   address, a request whose Host (`:authority` over HTTP/2) is not a loopback name (localhost,
//!   127.0.0.1, [::1], any port), an `--allowed-host` or the host of a `--public-origin` gets 403.
//!   That stops DNS rebinding: a foreign page whose name resolves to 127.0.0.1 still sends its
//!   own name as Host. Elsewhere the check applies once the operator names an allowed host.
//! - [`check_origin`] (realtime endpoints): an exact allowlist, same-origin, and (TEST ONLY, off
//!   by default) any loopback origin. Same-origin is judged the same way on every endpoint: the
//!   page's origin is `Origin`, or, on the GETs where browsers send none (a same-origin event
//!   stream or poll), the origin of `Referer`; this server's own origins are every
//!   `--public-origin`, the host a trusted proxy forwards (`X-Forwarded-Host`/`Forwarded`, with
//!   its proto) and the request's Host. A request with neither header (non-browser clients)
//!   passes. A refusal reaches the client in-protocol where the client reads it: a WebSocket is
//!   accepted and closed with `close code=4001 retry=no` "origin not allowed", an event stream
//!   or poll answers 200 with that close frame, a POST gets 403 "origin not allowed".

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use realtime_client::core::wire::{self, close_code, Carrier, Frame, Retry};

use crate::client_ip::PeerAddr;
use crate::edge::LocalAddr;
use crate::metrics::LimitKind;
use crate::{text_error, AppState, Config};

/// The reason every origin refusal carries (status text, close reason).
pub const ORIGIN_REFUSED: &str = "origin not allowed";

/// How an `Origin` header relates to this server.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// No `Origin` header: not a cross-origin browser request.
    Absent,
    /// Same origin as one of this server's own ([`Own`]): no CORS headers needed.
    SameOrigin,
    /// Allowed cross-origin: reflect it.
    Allowed(HeaderValue),
    Refused,
}

/// This server's origins as a request sees them, besides the configured `--public-origin`s.
#[derive(Debug, Default)]
pub struct Own {
    /// The request's authority: the `Host` header over HTTP/1.1, the `:authority` pseudo-header
    /// (the URI's authority) over HTTP/2, where browsers send no `Host`. Any scheme.
    pub host: Option<String>,
    /// What a trusted proxy forwarded: (proto if given, host).
    pub forwarded: Option<(Option<String>, String)>,
}

/// `host` is the request's authority (see [`Own::host`]).
pub fn judge(headers: &HeaderMap, host: Option<&str>, config: &Config) -> OriginVerdict {
    judge_own(headers, &Own { host: host.map(str::to_owned), forwarded: None }, config)
}

/// The page origin a request reveals: `Origin`, else the origin of `Referer` (browsers send no
/// Origin on a same-origin GET, but do send the page as Referer).
fn page_origin(headers: &HeaderMap) -> Option<Result<(HeaderValue, String), ()>> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.to_str().map(|text| (origin.clone(), text.to_owned())).map_err(|_| ()));
    }
    // A Referer that is not an http(s) URL tells nothing: as if absent.
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let (scheme, rest) = referer.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let origin = format!("{scheme}://{authority}");
    let value = HeaderValue::from_str(&origin).ok()?;
    Some(Ok((value, origin)))
}

pub fn judge_own(headers: &HeaderMap, own: &Own, config: &Config) -> OriginVerdict {
    let Some(page) = page_origin(headers) else { return OriginVerdict::Absent };
    let Ok((origin, origin_text)) = page else { return OriginVerdict::Refused };
    if config.allowed_origins.iter().any(|allowed| allowed == &origin_text) {
        return OriginVerdict::Allowed(origin);
    }
    let lowered = origin_text.to_ascii_lowercase();
    if config.edge.public_origins.iter().any(|public| public == &lowered) {
        return OriginVerdict::SameOrigin;
    }
    let Some((scheme, authority)) = lowered.split_once("://") else { return OriginVerdict::Refused };
    if scheme != "http" && scheme != "https" {
        return OriginVerdict::Refused;
    }
    let same = |proto: Option<&str>, host: &str| {
        if proto.is_some_and(|proto| !proto.eq_ignore_ascii_case(scheme)) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        authority == host || format!("{authority}{default_port}") == host || format!("{host}{default_port}") == authority
    };
    if let Some((proto, host)) = &own.forwarded {
        if same(proto.as_deref(), host) {
            return OriginVerdict::SameOrigin;
        }
    }
    if let Some(host) = &own.host {
        if same(None, host) {
            return OriginVerdict::SameOrigin;
        }
    }
    if config.allow_loopback_origins && is_loopback_authority(authority) {
        return OriginVerdict::Allowed(origin);
    }
    OriginVerdict::Refused
}

fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, port)) if port.is_empty() || port.starts_with(':') => host,
            _ => return false,
        }
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let port_ok = match authority.rsplit_once(':') {
        Some((_, port)) if !authority.ends_with(']') => port.parse::<u16>().is_ok(),
        _ => true,
    };
    port_ok && matches!(host, "127.0.0.1" | "localhost" | "::1")
}

/// The host of an authority, lowercase, without port or trailing dot (`[::1]` keeps brackets).
/// None if it does not parse.
pub fn host_name(authority: &str) -> Option<String> {
    let authority = authority.trim().to_ascii_lowercase();
    let host = if authority.starts_with('[') {
        let (host, port) = authority.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(|port| port.parse::<u16>().is_ok())) {
            return None;
        }
        format!("{host}]")
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host.to_owned(),
            Some(_) => return None,
            None => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    (!host.is_empty()).then_some(host)
}

/// Is `authority` (a Host value) one this server answers to?
pub fn host_allowed(authority: &str, config: &Config, loopback_connection: bool) -> bool {
    let Some(host) = host_name(authority) else { return false };
    if loopback_connection && matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
        return true;
    }
    config.edge.allowed_hosts.iter().any(|allowed| allowed == &host)
        || config.edge.public_origins.iter().any(|origin| {
            origin.split_once("://").and_then(|(_, authority)| host_name(authority)).is_some_and(|public| public == host)
        })
}

/// The request's authority: `Host`, or the URI's (HTTP/2 `:authority`).
fn request_host(request: &Request) -> Option<String> {
    match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok().map(str::to_owned),
        None => request.uri().authority().map(|authority| authority.as_str().to_owned()),
    }
}

/// What a trusted proxy says the browser asked for: `Forwarded` (its last element's `host=` and
/// `proto=`), else `X-Forwarded-Host` and `X-Forwarded-Proto` (their last entries, the ones
/// the nearest proxy wrote). None from anyone but a trusted proxy.
pub fn forwarded(request: &Request, config: &Config) -> Option<(Option<String>, String)> {
    let ConnectInfo(PeerAddr(peer)) = request.extensions().get::<ConnectInfo<PeerAddr>>()?;
    if !config.trusted_proxies.contains(&peer.ip()) {
        return None;
    }
    let headers = request.headers();
    let last = |name: &str| {
        let value = headers.get_all(name).iter().last()?.to_str().ok()?;
        let entry = value.rsplit(',').next()?.trim();
        (!entry.is_empty()).then(|| entry.to_owned())
    };
    if let Some(element) = last("forwarded") {
        let mut host = None;
        let mut proto = None;
        for pair in element.split(';') {
            let Some((key, value)) = pair.split_once('=') else { continue };
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "host" => host = Some(value),
                "proto" => proto = Some(value),
                _ => {}
            }
        }
        if let Some(host) = host {
            return Some((proto, host));
        }
    }
    Some((last("x-forwarded-proto"), last("x-forwarded-host")?))
}

/// Middleware for every request: the Host check (see the module docs).
pub async fn check_host(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let config = &state.config;
    // Without the accept loop's LocalAddr (a test router on axum::serve), count as loopback.
    let loopback = request.extensions().get::<LocalAddr>().is_none_or(|LocalAddr(local)| match local.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    });
    if !loopback && config.edge.allowed_hosts.is_empty() {
        return next.run(request).await;
    }
    // Behind a trusted proxy, the host the browser used is the forwarded one.
    let host = forwarded(&request, config).map(|(_, host)| host).or_else(|| request_host(&request));
    if host.as_deref().is_some_and(|host| host_allowed(host, config, loopback)) {
        return next.run(request).await;
    }
    state.metrics.trip(LimitKind::host_refused);
    text_error(StatusCode::FORBIDDEN, "host not allowed")
}

/// Middleware: refuse disallowed origins, answer preflights, reflect allowed origins.
pub async fn check_origin(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let own = Own { host: request_host(&request), forwarded: forwarded(&request, &state.config) };
    let verdict = judge_own(request.headers(), &own, &state.config);
    let allowed_origin = match verdict {
        OriginVerdict::Refused => {
            state.metrics.trip(LimitKind::origin_refused);
            tracing::info!(path = request.uri().path(), "origin refused");
            // A cache must not serve this refusal to an allowed origin either.
            let mut response = refuse_origin(&state, request).await;
            response.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
            return response;
        }
        OriginVerdict::Allowed(origin) => Some(origin),
        OriginVerdict::Absent | OriginVerdict::SameOrigin => None,
    };
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        if let Some(requested) = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed_origin {
        if crate::auth::credentials_allowed(&state.config, &origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

/// The refusal of a request from a foreign origin, where the client reads it (see module docs).
async fn refuse_origin(state: &Arc<AppState>, request: Request) -> Response {
    let close = crate::session::close(close_code::UNAUTHORIZED, ORIGIN_REFUSED, Retry::Never);
    let frame = Frame::Close(close);
    if request.method() != Method::GET {
        return text_error(StatusCode::FORBIDDEN, ORIGIN_REFUSED);
    }
    match request.uri().path() {
        "/realtime" => {
            let (mut parts, _) = request.into_parts();
            let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, state).await else {
                return text_error(StatusCode::FORBIDDEN, ORIGIN_REFUSED);
            };
            // No session, nothing read: the close frame, then the WebSocket close.
            upgrade.max_message_size(1024).on_upgrade(move |mut socket| async move {
                let text = String::from_utf8(wire::encode_to_vec(&frame, Carrier::Binary)).unwrap_or_default();
                let _ = socket.send(Message::Text(text.into())).await;
                let close = CloseFrame { code: close_code::UNAUTHORIZED, reason: Utf8Bytes::from_static(ORIGIN_REFUSED) };
                let _ = socket.send(Message::Close(Some(close))).await;
                let _ = socket.close().await;
            })
        }
        "/realtime/sse" => {
            let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
            (headers, crate::sse::encode_event(&frame)).into_response()
        }
        "/realtime/poll" => {
            let headers = [(header::CONTENT_TYPE, crate::poll::FRAMES_CONTENT_TYPE), (header::CACHE_CONTROL, "no-store")];
            (headers, wire::encode_to_vec(&frame, Carrier::Binary)).into_response()
        }
        _ => text_error(StatusCode::FORBIDDEN, ORIGIN_REFUSED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(origin: &str, host: &str, config: &Config) -> OriginVerdict {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        judge(&headers, Some(host), config)
    }

    #[test]
    fn origins() {
        let mut config = Config { allowed_origins: vec!["https://app.example".into()], ..Config::default() };
        assert!(matches!(verdict("https://app.example", "api:1", &config), OriginVerdict::Allowed(_)));
        assert_eq!(verdict("https://app.example.evil", "api:1", &config), OriginVerdict::Refused);
        assert_eq!(verdict("http://api:1", "api:1", &config), OriginVerdict::SameOrigin);
        assert_eq!(verdict("http://api", "api:80", &config), OriginVerdict::SameOrigin);
        assert_eq!(verdict("http://127.0.0.1:5000", "api:1", &config), OriginVerdict::Refused);
        assert_eq!(verdict("null", "api:1", &config), OriginVerdict::Refused);
        config.allow_loopback_origins = true;
        assert!(matches!(verdict("http://127.0.0.1:5000", "api:1", &config), OriginVerdict::Allowed(_)));
        assert!(matches!(verdict("http://localhost:9", "api:1", &config), OriginVerdict::Allowed(_)));
        assert!(matches!(verdict("http://[::1]:9", "api:1", &config), OriginVerdict::Allowed(_)));
        assert_eq!(verdict("http://localhost.evil:9", "api:1", &config), OriginVerdict::Refused);
        assert_eq!(verdict("http://127.0.0.1.evil", "api:1", &config), OriginVerdict::Refused);
    }

    #[test]
    fn public_origin_forwarded_host_and_referer() {
        let mut config = Config::default();
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        let upstream = Own { host: Some("127.0.0.1:8080".into()), forwarded: None };
        // nginx's default Host $proxy_host: the page is foreign to the upstream address...
        assert_eq!(judge_own(&headers, &upstream, &config), OriginVerdict::Refused);
        // ...unless the operator names the public origin,
        config.edge.public_origins = vec!["https://app.example".into()];
        assert_eq!(judge_own(&headers, &upstream, &config), OriginVerdict::SameOrigin);
        config.edge.public_origins.clear();
        // or a trusted proxy forwards the host (and proto, which must match).
        let forwarded = Own { host: Some("127.0.0.1:8080".into()), forwarded: Some((Some("https".into()), "app.example".into())) };
        assert_eq!(judge_own(&headers, &forwarded, &config), OriginVerdict::SameOrigin);
        let wrong_proto = Own { host: None, forwarded: Some((Some("http".into()), "app.example".into())) };
        assert_eq!(judge_own(&headers, &wrong_proto, &config), OriginVerdict::Refused);
        // A same-origin GET carries no Origin but its Referer: judged the same way.
        let mut get = HeaderMap::new();
        get.insert(header::REFERER, HeaderValue::from_static("https://app.example/chat/?x=1"));
        assert_eq!(judge_own(&get, &upstream, &config), OriginVerdict::Refused);
        assert_eq!(judge_own(&get, &forwarded, &config), OriginVerdict::SameOrigin);
        get.insert(header::REFERER, HeaderValue::from_static("about:blank"));
        assert_eq!(judge_own(&get, &upstream, &config), OriginVerdict::Absent);
        assert_eq!(judge_own(&HeaderMap::new(), &upstream, &config), OriginVerdict::Absent);
    }

    #[test]
    fn hosts() {
        let mut config = Config::default();
        for host in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:9", "[::1]", "LOCALHOST.", "127.0.0.1"] {
            assert!(host_allowed(host, &config, true), "{host}");
            assert!(!host_allowed(host, &config, false), "{host}");
        }
        for host in ["evil.example", "evil.example:8080", "localhost.evil", "127.0.0.1.evil", "[::1", "", "a:b:c"] {
            assert!(!host_allowed(host, &config, true), "{host}");
        }
        config.edge.allowed_hosts = vec!["dev.example".into()];
        config.edge.public_origins = vec!["https://app.example".into()];
        assert!(host_allowed("dev.example:8080", &config, true));
        assert!(host_allowed("app.example", &config, false));
        assert!(!host_allowed("evil.example", &config, false));
    }
}
