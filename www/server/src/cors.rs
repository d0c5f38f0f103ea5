//! Origin check and CORS for the realtime endpoints: an exact allowlist, same-origin, and
//! (TEST ONLY, off by default) any loopback origin. Requests without `Origin` (non-browser
//! clients) pass. A present but disallowed origin gets 403 on every realtime endpoint, so a
//! foreign page can neither open a WebSocket nor fire simple POSTs with side effects.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::{text_error, AppState, Config};

/// How an `Origin` header relates to this server.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// No `Origin` header: not a cross-origin browser request.
    Absent,
    /// Same scheme-less authority as the request's (`Host` or `:authority`): no CORS headers needed.
    SameOrigin,
    /// Allowed cross-origin: reflect it.
    Allowed(HeaderValue),
    Refused,
}

/// `host` is the request's authority: the `Host` header over HTTP/1.1, the `:authority`
/// pseudo-header (the URI's authority) over HTTP/2, where browsers send no `Host`.
pub fn judge(headers: &HeaderMap, host: Option<&str>, config: &Config) -> OriginVerdict {
    let Some(origin) = headers.get(header::ORIGIN) else { return OriginVerdict::Absent };
    let Ok(origin_text) = origin.to_str() else { return OriginVerdict::Refused };
    if config.allowed_origins.iter().any(|allowed| allowed == origin_text) {
        return OriginVerdict::Allowed(origin.clone());
    }
    let Some((scheme, authority)) = origin_text.split_once("://") else { return OriginVerdict::Refused };
    if scheme != "http" && scheme != "https" {
        return OriginVerdict::Refused;
    }
    let authority = authority.to_ascii_lowercase();
    if let Some(host) = host {
        let host = host.to_ascii_lowercase();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        if authority == host || format!("{authority}{default_port}") == host || authority == format!("{host}{default_port}")
        {
            return OriginVerdict::SameOrigin;
        }
    }
    if config.allow_loopback_origins && is_loopback_authority(&authority) {
        return OriginVerdict::Allowed(origin.clone());
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

/// Middleware: refuse disallowed origins, answer preflights, reflect allowed origins.
pub async fn check_origin(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let host = match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => request.uri().authority().map(|authority| authority.as_str()),
    };
    let verdict = judge(request.headers(), host, &state.config);
    let allowed_origin = match verdict {
        OriginVerdict::Refused => {
            tracing::info!(path = request.uri().path(), "origin refused");
            return text_error(StatusCode::FORBIDDEN, "origin not allowed");
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
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
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
}
