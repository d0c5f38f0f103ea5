//! The admin surface: `GET /metrics` (Prometheus text format), `GET /realtime/stats` and
//! `POST /realtime/kick`. None of them is public: each needs `Authorization: Bearer <token>`
//! with the token the operator configured (`--admin-token-file PATH` or the environment variable
//! `REALTIME_ADMIN_TOKEN`). Without a configured token they answer 403 and say how to enable them;
//! a missing or wrong token gets 401. Every refusal counts as `LimitKind::admin_refused`.
//!
//! Invariants: the token is never logged and never kept in memory: only its SHA-256 digest is
//! (in [`AdminToken`], whose `Debug` prints nothing of it), and a presented token is hashed and
//! compared with that digest in constant time (`subtle`), so neither the comparison time nor the
//! length of the stored token tells an attacker anything. Kick also needs `--allow-kick`
//! ([`crate::kick`]); the token does not replace that switch.
//!
//! With `--admin-listen ADDR` the admin routes are served only there ([`router`]) and the public
//! listener answers 404 for them; the token is still required when one is configured, and
//! without one that listener is open to whoever reaches its address (put it on loopback or a
//! private network).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::metrics::LimitKind;
use crate::{text_error, AppState, Config};

/// The environment variable that may carry the admin token (instead of `--admin-token-file`).
pub const TOKEN_ENV: &str = "REALTIME_ADMIN_TOKEN";
/// Shortest token accepted: a guessable token would make the admin surface public again.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted (and longest `Authorization` value hashed): a bound on work per request.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The admin token, kept only as its SHA-256 digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminToken(<redacted>)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    digest
}

impl AdminToken {
    /// A token from its text; surrounding whitespace (a file's final newline) is not part of it.
    pub fn new(text: &str) -> Result<AdminToken, String> {
        let token = text.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(format!("the admin token must have at least {MIN_TOKEN_BYTES} characters"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("the admin token must have at most {MAX_TOKEN_BYTES} characters"));
        }
        // It travels in an HTTP header: visible ASCII only, so it means the same everywhere.
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".into());
        }
        Ok(AdminToken { digest: sha256(token.as_bytes()) })
    }

    /// Whether `presented` is this token (constant time in the token's content).
    pub fn matches(&self, presented: &[u8]) -> bool {
        presented.len() <= MAX_TOKEN_BYTES && bool::from(sha256(presented).ct_eq(&self.digest))
    }
}

/// Admin settings (see [`AdminFlags`]).
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// The token the admin endpoints require; None: they answer 403.
    pub token: Option<AdminToken>,
    /// Serve the admin routes on this address only (not on the public listener).
    pub listen: Option<SocketAddr>,
}

impl AdminConfig {
    /// A configuration with this token (tests); Err says why the token is refused.
    pub fn with_token(token: &str) -> Result<AdminConfig, String> {
        Ok(AdminConfig { token: Some(AdminToken::new(token)?), listen: None })
    }
}

/// Command-line flags of the admin surface.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminFlags {
    /// A file holding the admin token (at least 16 printable characters; surrounding whitespace
    /// ignored) that GET /metrics, GET /realtime/stats and POST /realtime/kick require as
    /// `Authorization: Bearer <token>`. The environment variable REALTIME_ADMIN_TOKEN may carry it
    /// instead. Default: none, and those endpoints answer 403 (they leak load figures and, with
    /// --allow-kick, let anyone break sessions).
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// Serve the admin endpoints on this address only, e.g. 127.0.0.1:9090 (the public listener
    /// then answers 404 for them); the token is still required when one is configured, and
    /// without one this listener is open to anyone who reaches it. Default: none, the admin
    /// endpoints share the public listener.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
}

impl AdminFlags {
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        config.admin.token = token_from(self.admin_token_file.as_deref(), std::env::var(TOKEN_ENV).ok())?;
        config.admin.listen = self.admin_listen;
        Ok(())
    }
}

/// The token from the file or the environment (given both, refuses: which one counts would be a
/// guess). An empty environment variable counts as unset.
pub fn token_from(file: Option<&Path>, env: Option<String>) -> Result<Option<AdminToken>, String> {
    let env = env.filter(|value| !value.trim().is_empty());
    match (file, env) {
        (Some(_), Some(_)) => Err(format!("give the admin token once: --admin-token-file or {TOKEN_ENV}, not both")),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("--admin-token-file {}: {error}", path.display()))?;
            AdminToken::new(&text).map(Some).map_err(|error| format!("--admin-token-file {}: {error}", path.display()))
        }
        (None, Some(value)) => AdminToken::new(&value).map(Some).map_err(|error| format!("{TOKEN_ENV}: {error}")),
        (None, None) => Ok(None),
    }
}

/// The verdict on a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No token is configured: the admin surface is off.
    Disabled,
    /// No `Authorization: Bearer`, or the wrong token.
    Unauthorized,
}

/// Judges the `Authorization` header against the configured token.
pub fn judge(authorization: Option<&HeaderValue>, token: Option<&AdminToken>) -> Access {
    let Some(token) = token else { return Access::Disabled };
    let Some(value) = authorization else { return Access::Unauthorized };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
    let Some((scheme, presented)) = value.split_at_checked(7) else { return Access::Unauthorized };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Access::Unauthorized;
    }
    if token.matches(presented.trim_ascii()) {
        Access::Granted
    } else {
        Access::Unauthorized
    }
}

/// Middleware on every admin route: lets the request through only with the admin token.
/// Preflights (`OPTIONS`, no credentials by design) never reach it: the origin check answers them.
pub async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // On its own listener (`--admin-listen`) without a token, the network the operator chose
    // for it is the protection.
    let open = state.config.admin.listen.is_some() && state.config.admin.token.is_none();
    if open {
        return next.run(request).await;
    }
    match judge(request.headers().get(header::AUTHORIZATION), state.config.admin.token.as_ref()) {
        Access::Granted => next.run(request).await,
        Access::Disabled => {
            state.metrics.trip(LimitKind::admin_refused);
            text_error(
                StatusCode::FORBIDDEN,
                "the admin endpoints are off: start the server with --admin-token-file PATH (or the environment \
                 variable REALTIME_ADMIN_TOKEN) and send Authorization: Bearer <token>",
            )
        }
        Access::Unauthorized => {
            state.metrics.trip(LimitKind::admin_refused);
            let mut response = text_error(StatusCode::UNAUTHORIZED, "admin token missing or wrong (Authorization: Bearer <token>)");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"realtime-admin\""));
            response
        }
    }
}

/// `GET /metrics`: every metric in the Prometheus text format, never cached.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // The session gauge is read from the registry at scrape time, so it is right whoever else
    // keeps it up to date.
    state.metrics.sessions.set(i64::try_from(state.registry.len()).unwrap_or(i64::MAX));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        state.metrics.encode(),
    )
        .into_response()
}

/// The admin routes, each behind [`require_token`]; `/realtime/stats` and `/realtime/kick` also
/// keep the origin check of the other realtime endpoints (the demo page calls kick, a browser test
/// reads the stats cross-origin).
pub fn routes(state: Arc<AppState>) -> (Router<Arc<AppState>>, Router) {
    let guard = axum::middleware::from_fn_with_state(state.clone(), require_token);
    let realtime = Router::new()
        .route("/realtime/stats", get(crate::stats::handle))
        .route("/realtime/kick", post(crate::kick::handle))
        .route_layer(guard.clone());
    let metrics = Router::new().route("/metrics", get(metrics)).route_layer(guard).with_state(state);
    (realtime, metrics)
}

/// The whole admin listener of `--admin-listen`: the admin routes and nothing else.
pub fn router(state: Arc<AppState>) -> Router {
    let (realtime, metrics) = routes(state.clone());
    realtime
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::cors::check_origin))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::client_ip::resolve))
        .with_state(state)
        .merge(metrics)
}

/// Binds `--admin-listen` (if given), prints `admin listening on http://ADDR` and serves
/// [`router`] there in the background, plain HTTP, until the process ends.
pub async fn spawn_listener(state: Arc<AppState>) -> std::io::Result<Option<SocketAddr>> {
    let Some(address) = state.config.admin.listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() && state.config.admin.token.is_none() {
        tracing::warn!(%address, "the admin listener is not on loopback and has no token: metrics and stats are open to that network");
    }
    println!("admin listening on http://{address}");
    // The same edge as the public listener (timeouts, connection caps); it never drains on its
    // own: the process ends with the public listener.
    let admin = router(state.clone());
    tokio::spawn(crate::edge::serve(listener, None, admin, state, std::future::pending(), std::time::Duration::ZERO));
    Ok(Some(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-admin";

    fn bearer(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn bearer_token_judged() {
        let token = AdminToken::new(TOKEN).unwrap();
        assert_eq!(judge(None, None), Access::Disabled);
        assert_eq!(judge(Some(&bearer(&format!("Bearer {TOKEN}"))), None), Access::Disabled);
        assert_eq!(judge(None, Some(&token)), Access::Unauthorized);
        assert_eq!(judge(Some(&bearer(&format!("Bearer {TOKEN}"))), Some(&token)), Access::Granted);
        assert_eq!(judge(Some(&bearer(&format!("bearer  {TOKEN} "))), Some(&token)), Access::Granted);
        assert_eq!(judge(Some(&bearer(&format!("Bearer {TOKEN}x"))), Some(&token)), Access::Unauthorized);
        assert_eq!(judge(Some(&bearer(&format!("Basic {TOKEN}"))), Some(&token)), Access::Unauthorized);
        assert_eq!(judge(Some(&bearer(TOKEN)), Some(&token)), Access::Unauthorized);
        assert_eq!(judge(Some(&bearer("Bearer")), Some(&token)), Access::Unauthorized);
        assert_eq!(judge(Some(&bearer("")), Some(&token)), Access::Unauthorized);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(judge(Some(&bearer(&long)), Some(&token)), Access::Unauthorized);
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("with a space inside it").is_err());
        assert!(AdminToken::new(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        let token = AdminToken::new(&format!("  {TOKEN}\n")).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        let config = AdminConfig { token: Some(token), listen: None };
        assert!(!format!("{config:?}").contains(TOKEN));
    }

    #[test]
    fn token_from_file_or_environment_but_not_both() {
        let dir = std::env::temp_dir().join(format!("realtime-admin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        assert!(token_from(Some(&file), None).unwrap().unwrap().matches(TOKEN.as_bytes()));
        assert!(token_from(None, Some(TOKEN.into())).unwrap().unwrap().matches(TOKEN.as_bytes()));
        assert!(token_from(None, Some(String::new())).unwrap().is_none());
        assert!(token_from(None, None).unwrap().is_none());
        assert!(token_from(Some(&file), Some(TOKEN.into())).is_err());
        assert!(token_from(Some(&dir.join("missing")), None).is_err());
        std::fs::write(&file, "short").unwrap();
        let error = token_from(Some(&file), None).unwrap_err();
        assert!(!error.contains("short"), "the file's content must not appear in errors: {error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
