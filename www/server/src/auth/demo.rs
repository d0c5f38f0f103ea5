//! The demo's sign-in (`--demo-auth`, loopback only): `POST /realtime/demo-token` with
//! `{"name": "alice"}` answers `{"token", "subject", "expires_at"}`, an HS256 JWT with
//! `sub` = the name, `channels: ["*"]`, `publish: ["*"]` and `exp` = now + `--demo-token-secs`,
//! signed with a random secret made at start (never written anywhere), which the server's
//! verifier then accepts like any other key. Anyone who reaches the server can sign in as any
//! name: this proves the token path, it authenticates no one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;

use super::keys::{hmac_from_secret, VerifyKey};
use crate::{text_error, AppState};

/// Default lifetime of a demo token, in seconds.
pub const DEFAULT_LIFETIME_SECS: u64 = 300;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024;

/// Signs demo tokens with the secret made at start.
pub struct DemoSigner {
    secret: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for DemoSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("DemoSigner").field("lifetime_secs", &self.lifetime_secs).finish_non_exhaustive()
    }
}

impl DemoSigner {
    /// A signer with a fresh random secret from the operating system.
    pub fn random(lifetime_secs: u64) -> Result<DemoSigner, String> {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut secret).map_err(|_| "no randomness for the demo secret".to_owned())?;
        Ok(DemoSigner { secret, lifetime_secs })
    }

    /// The key that verifies this signer's tokens.
    pub fn verify_key(&self) -> Result<VerifyKey, String> {
        hmac_from_secret(&self.secret)
    }

    /// A token for `name` (already validated) issued at `now`: (token, exp).
    pub fn sign(&self, name: &str, now: u64) -> Result<(String, u64), String> {
        let expires_at = now.saturating_add(self.lifetime_secs);
        let claims = serde_json::json!({
            "sub": name,
            "channels": ["*"],
            "publish": ["*"],
            "iat": now,
            "exp": expires_at,
        });
        let key = EncodingKey::from_secret(&self.secret).map_err(|_| "signing failed".to_owned())?;
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|_| "signing failed".to_owned())?;
        Ok((token, expires_at))
    }
}

/// A demo name: 1 to [`MAX_NAME_CHARS`] of ASCII letters, digits, `_ . -` and inner spaces.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.trim() == name
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.- ".contains(&byte))
}

/// `POST /realtime/demo-token`.
pub async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(signer) = state.config.auth.demo.as_ref() else { return text_error(StatusCode::NOT_FOUND, "not found") };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return text_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send {\"name\": \"...\"} as application/json");
    }
    let name = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value.get("name").and_then(serde_json::Value::as_str).map(str::to_owned));
    let Some(name) = name.filter(|name| is_valid_name(name)) else {
        return text_error(StatusCode::BAD_REQUEST, "name: 1-32 characters of A-Z a-z 0-9 _ . - and inner spaces");
    };
    let now = super::unix_now();
    let Ok((token, expires_at)) = signer.sign(&name, now) else {
        return text_error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed");
    };
    let body = serde_json::json!({"token": token, "subject": name, "expires_at": expires_at}).to_string();
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// The demo route, mounted only with `--demo-auth`.
pub fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    if state.config.auth.demo.is_none() {
        return Router::new();
    }
    Router::new().route("/realtime/demo-token", post(handle).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}
