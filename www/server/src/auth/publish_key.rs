//! The publish API key: with one configured, `POST /realtime/publish` needs
//! `Authorization: Bearer <key>`; without it or with a wrong one the answer is 401 with
//! `WWW-Authenticate: Bearer realm="realtime-publish"`, before the body is read, and nothing is
//! published. `--publish-listen ADDR` serves the endpoint on its own listener ([`router`]) and
//! takes it off the main one ([`main_routes`]).
//!
//! Invariants: only the key's SHA-256 digest is kept; a presented key is hashed and compared
//! with it in constant time (`subtle`), so neither the time nor the key's length leaks; the key
//! is never logged and its `Debug` prints nothing of it. It is a different secret from the admin
//! token ([`super::AuthFlags::apply`] refuses the same value for both).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use subtle::ConstantTimeEq;

use crate::metrics::LimitKind;
use crate::{text_error, AppState};

/// The default environment variable of the key (`--publish-key-env NAME` names another).
pub const KEY_ENV: &str = "RT_PUBLISH_KEY";
/// Shortest key accepted.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key accepted, and longest `Authorization` value hashed.
pub const MAX_KEY_BYTES: usize = 1024;

/// The publish key, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct PublishKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for PublishKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PublishKey(<redacted>)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    digest
}

impl PublishKey {
    /// A key from its text (surrounding whitespace is not part of it). Errors never quote it.
    pub fn new(text: &str) -> Result<PublishKey, String> {
        let key = text.trim();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!("the publish key must have at least {MIN_KEY_BYTES} characters"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("the publish key must have at most {MAX_KEY_BYTES} characters"));
        }
        if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("the publish key must be printable ASCII without spaces".into());
        }
        Ok(PublishKey { digest: sha256(key.as_bytes()) })
    }

    /// Whether `presented` is this key (constant time in the key's content).
    pub fn matches(&self, presented: &[u8]) -> bool {
        presented.len() <= MAX_KEY_BYTES && bool::from(sha256(presented).ct_eq(&self.digest))
    }

    /// Whether the `Authorization` header carries this key as a Bearer token.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization else { return false };
        let Some((scheme, presented)) = value.as_bytes().split_at_checked(7) else { return false };
        scheme.eq_ignore_ascii_case(b"bearer ") && self.matches(presented.trim_ascii())
    }
}

/// Middleware on the publish route: through only with the key, when one is configured.
pub async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.auth.publish_key else { return next.run(request).await };
    if key.admits(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    state.metrics.trip(LimitKind::publish_refused);
    let mut response = text_error(StatusCode::UNAUTHORIZED, "publish key missing or wrong (Authorization: Bearer <key>)");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"realtime-publish\""));
    response
}

/// The publish route behind [`require_key`] (state still to be given).
fn route(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let batch_limit = state.config.max_batch_bytes();
    Router::new()
        .route("/realtime/publish", post(crate::publish::handle).layer(DefaultBodyLimit::max(batch_limit)))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_key))
}

/// What the main listener mounts for publishing: the route, unless `--publish-listen` moved it.
pub fn main_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    if state.config.auth.publish_listen.is_some() {
        return Router::new();
    }
    route(state)
}

/// The whole `--publish-listen` listener: the publish route and nothing else, with the origin
/// check and client address of the main listener.
pub fn router(state: Arc<AppState>) -> Router {
    route(&state)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::cors::check_origin))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::client_ip::resolve))
        .with_state(state)
}

/// Binds `--publish-listen` (if given), prints `publish listening on http://ADDR` and serves
/// [`router`] there in the background until the process ends.
pub async fn spawn_listener(state: Arc<AppState>) -> std::io::Result<Option<SocketAddr>> {
    let Some(address) = state.config.auth.publish_listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    println!("publish listening on http://{address}");
    let publish = router(state.clone());
    tokio::spawn(crate::edge::serve(listener, None, publish, state, std::future::pending(), std::time::Duration::ZERO));
    Ok(Some(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "publish-key-0123456789";

    #[test]
    fn bearer_key_judged_and_never_printed() {
        let key = PublishKey::new(&format!(" {KEY}\n")).unwrap();
        let header = |text: &str| HeaderValue::from_str(text).unwrap();
        assert!(key.admits(Some(&header(&format!("Bearer {KEY}")))));
        assert!(key.admits(Some(&header(&format!("bearer  {KEY} ")))));
        assert!(!key.admits(None));
        assert!(!key.admits(Some(&header(KEY))));
        assert!(!key.admits(Some(&header(&format!("Basic {KEY}")))));
        assert!(!key.admits(Some(&header(&format!("Bearer {KEY}x")))));
        assert!(!key.admits(Some(&header(&format!("Bearer {}", &KEY[..KEY.len() - 1])))));
        assert!(!key.admits(Some(&header("Bearer"))));
        assert!(!key.admits(Some(&header(&format!("Bearer {}", "k".repeat(MAX_KEY_BYTES * 4))))));
        assert!(!format!("{key:?}").contains(KEY));
        assert!(PublishKey::new("short").is_err());
        assert!(PublishKey::new("a key with spaces inside").is_err());
        let error = PublishKey::new(&"x".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(!error.contains("xxxx"), "{error}");
    }
}
