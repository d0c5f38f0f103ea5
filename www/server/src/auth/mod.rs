//! Authentication (issue 14), the parts that do not depend on how a token travels: JWT
//! verification ([`jwt::Verifier`], keys from [`keys`]), the [`Principal`] a token names and its
//! channel permissions, the publish API key ([`publish_key`]), the demo token endpoint
//! ([`demo`]), the startup rule ([`startup_rule`]: open only on loopback) and the log filter that
//! keeps dependencies from printing request bytes ([`logs`]).
//!
//! How a caller uses it: [`AuthConfig::authenticate`]`(token, unix_now())` on
//! `state.config.auth` gives `Ok(Some(principal))`, `Ok(None)` in open mode (no verifier: a
//! loopback server without auth configuration, or `--insecure-open`; everything allowed as
//! before), or the [`AuthError`]; then [`Principal::may_subscribe`] / [`Principal::may_publish`]
//! per channel, and [`Principal::expires_in`] for the refresh.
//!
//! Invariants: no token, secret or key appears in a `Debug` output, an error message or a log
//! line of this module; every size is bounded before anything is parsed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{header, HeaderMap};

pub mod connect;
pub mod demo;
pub mod jwt;
pub mod keys;
pub mod logs;
pub mod publish_key;

/// Largest token verified, in bytes; a longer one is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub`, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Most patterns in a `channels` or `publish` claim.
pub const MAX_PATTERNS: usize = 128;
/// Default clock-skew allowance on `exp` and `nbf`, in seconds (`--jwt-leeway-secs`).
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// The default name of the environment variable that holds the HS256 secret.
pub const SECRET_ENV: &str = "RT_JWT_SECRET";

/// Who a verified token names, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: 1 to [`MAX_SUBJECT_BYTES`] bytes without control characters.
    pub subject: String,
    /// Patterns of the channels it may subscribe to (the `channels` claim; absent: none).
    pub channels: Vec<String>,
    /// Patterns of the channels it may publish to (the `publish` claim; absent: none).
    pub publish: Vec<String>,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Principal {
    /// Whether the `channels` claim covers `channel`.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.channels.iter().any(|pattern| crate::session::pattern_allows(pattern, channel))
    }

    /// Whether the `publish` claim covers `channel`.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|pattern| crate::session::pattern_allows(pattern, channel))
    }

    /// Seconds from `now` until `exp` (0 once it has passed; the leeway is not counted).
    pub fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// Why a token was refused. The messages are fixed text: never any part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    Missing,
    /// The token is not one this server accepts (see [`Invalid`]).
    Invalid(Invalid),
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    NotYetValid,
}

/// What was wrong with an invalid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// Over [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not three base64url parts of JSON.
    Malformed,
    /// `alg` is `none`, unknown, or one no configured key verifies.
    Algorithm,
    /// `kid` names no key, or several keys could verify it.
    UnknownKey,
    /// The signature does not verify (a wrong key, altered header or claims).
    Signature,
    /// `aud` is missing or does not name `--jwt-audience`, or is present when none is configured.
    Audience,
    /// `iss` is missing or not `--jwt-issuer`.
    Issuer,
    /// `sub` is missing, not a string, empty, too long or has control characters.
    Subject,
    /// `exp` missing, a time claim not a number, or `channels`/`publish` not a list of patterns.
    Claims,
}

impl AuthError {
    /// A short stable code: `missing`, `invalid`, `expired` (also for not yet valid: the
    /// client's answer is the same, fetch a new token).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) => "invalid",
            AuthError::Expired | AuthError::NotYetValid => "expired",
        }
    }

    /// Whether it is about time (expired or not yet valid), not about the token's identity.
    pub fn is_time(&self) -> bool {
        matches!(self, AuthError::Expired | AuthError::NotYetValid)
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            AuthError::Missing => "token missing",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::Invalid(Invalid::TooLarge) => "token too large",
            AuthError::Invalid(Invalid::Malformed) => "token malformed",
            AuthError::Invalid(Invalid::Algorithm) => "token algorithm not accepted",
            AuthError::Invalid(Invalid::UnknownKey) => "token key unknown",
            AuthError::Invalid(Invalid::Signature) => "token signature invalid",
            AuthError::Invalid(Invalid::Audience) => "token audience not accepted",
            AuthError::Invalid(Invalid::Issuer) => "token issuer not accepted",
            AuthError::Invalid(Invalid::Subject) => "token subject missing or invalid",
            AuthError::Invalid(Invalid::Claims) => "token claims invalid",
        })
    }
}

impl std::error::Error for AuthError {}

/// A permission pattern, in `--client-publish` syntax: a channel name, or a prefix (possibly
/// empty) of channel characters followed by `*`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    use realtime_client::core::wire::is_valid_channel_name;
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => is_valid_channel_name(prefix),
        None => is_valid_channel_name(pattern),
    }
}

/// Seconds since the Unix epoch by the system clock (0 before it: a clock that far off refuses
/// every token as not yet valid rather than panicking).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive); None without that
/// header or with another scheme. Not bounded here: [`jwt::Verifier::verify`] bounds it.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// Authentication settings (see [`AuthFlags`]).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Verifies connect tokens; None: open mode (no principal, everything allowed).
    pub verifier: Option<Arc<jwt::Verifier>>,
    /// The key `POST /realtime/publish` requires; None: publish is open.
    pub publish_key: Option<publish_key::PublishKey>,
    /// Serve `POST /realtime/publish` on this address only (not on the main listener).
    pub publish_listen: Option<SocketAddr>,
    /// `POST /realtime/demo-token` signs tokens with this (the demo's random secret).
    pub demo: Option<Arc<demo::DemoSigner>>,
    /// `--insecure-open`: run without authentication on a non-loopback address.
    pub insecure_open: bool,
}

impl AuthConfig {
    /// The one call of a connect path: in open mode (no verifier) Ok(None) whatever was
    /// presented; else the principal of `token` at `now`, or why not (None or an empty token:
    /// [`AuthError::Missing`]).
    pub fn authenticate(&self, token: Option<&str>, now: u64) -> Result<Option<Principal>, AuthError> {
        let Some(verifier) = &self.verifier else { return Ok(None) };
        verifier.verify(token.unwrap_or(""), now).map(Some)
    }

    /// Whether tokens are required (a verifier is configured).
    pub fn required(&self) -> bool {
        self.verifier.is_some()
    }
}

/// Command-line flags of authentication.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthFlags {
    /// The environment variable that holds the HS256 secret (at least 32 bytes). Default:
    /// RT_JWT_SECRET, used when it is set. The secret itself never goes on the command line.
    #[arg(long, value_name = "NAME")]
    jwt_secret_env: Option<String>,
    /// Verify RS256 or ES256 (P-256) tokens with this PEM public key.
    #[arg(long, value_name = "PEM", conflicts_with_all = ["jwks", "jwt_secret_env"])]
    jwt_public_key: Option<PathBuf>,
    /// Verify RS256 and ES256 tokens with the signing keys of this JWKS file (picked by `kid`).
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_secret_env")]
    jwks: Option<PathBuf>,
    /// Every token must carry this audience in `aud`. Without it, a token that has `aud` is refused.
    #[arg(long, value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Every token must carry this issuer in `iss`.
    #[arg(long, value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, default_value_t = DEFAULT_LEEWAY_SECS, value_parser = clap::value_parser!(u64).range(0..=300))]
    jwt_leeway_secs: u64,
    /// The environment variable that holds the publish API key (16-1024 printable characters):
    /// when set, POST /realtime/publish requires `Authorization: Bearer <key>`. Default:
    /// RT_PUBLISH_KEY.
    #[arg(long, value_name = "NAME")]
    publish_key_env: Option<String>,
    /// Serve POST /realtime/publish on this address only (the main listener then answers 404).
    #[arg(long, value_name = "ADDR")]
    publish_listen: Option<SocketAddr>,
    /// DEMO ONLY (loopback): POST /realtime/demo-token {"name": ...} answers a short-lived
    /// HS256 token signed with a random secret made at start, which this server then verifies.
    #[arg(long, conflicts_with_all = ["jwt_secret_env", "jwt_public_key", "jwks"])]
    demo_auth: bool,
    /// Lifetime of a demo token, in seconds.
    #[arg(long, default_value_t = demo::DEFAULT_LIFETIME_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400), requires = "demo_auth")]
    demo_token_secs: u64,
    /// Run without authentication on a non-loopback address (anyone who reaches it joins, reads
    /// and publishes). Without it such a server refuses to start.
    #[arg(long)]
    insecure_open: bool,
}

impl AuthFlags {
    /// Loads keys and secrets (from the environment through `env`, so tests choose it). The
    /// admin token, when configured, must differ from the publish key.
    pub fn apply(&self, config: &mut crate::Config, env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Result<(), String> {
        let secret_env = self.jwt_secret_env.as_deref().unwrap_or(SECRET_ENV);
        let secret = env(secret_env).filter(|value| !value.is_empty());
        if self.jwt_secret_env.is_some() && secret.is_none() {
            return Err(format!("--jwt-secret-env {secret_env}: that environment variable is not set"));
        }
        let keys = match (&self.jwt_public_key, &self.jwks, secret) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(format!("give one kind of key: {secret_env} is set and so is --jwt-public-key or --jwks (unset it)"))
            }
            (Some(_), Some(_), None) => return Err("give --jwt-public-key or --jwks, not both".into()),
            (Some(path), None, None) => Some(vec![keys::from_public_pem_file(path)?]),
            (None, Some(path), None) => Some(keys::from_jwks_file(path)?),
            (None, None, Some(value)) => Some(vec![keys::hmac_from_env(secret_env, Some(value))?]),
            (None, None, None) => None,
        };
        if self.demo_auth && keys.is_some() {
            return Err(format!("--demo-auth makes its own key: unset {secret_env}"));
        }
        let keys = if self.demo_auth {
            let signer = demo::DemoSigner::random(self.demo_token_secs)?;
            let key = signer.verify_key()?;
            config.auth.demo = Some(Arc::new(signer));
            Some(vec![key])
        } else {
            keys
        };
        config.auth.verifier = match keys {
            Some(keys) => Some(Arc::new(jwt::Verifier::new(keys, self.jwt_audience.clone(), self.jwt_issuer.clone(), self.jwt_leeway_secs)?)),
            None if self.jwt_audience.is_some() || self.jwt_issuer.is_some() => {
                return Err("--jwt-audience and --jwt-issuer need a key (RT_JWT_SECRET, --jwt-public-key or --jwks)".into())
            }
            None => None,
        };
        let key_env = self.publish_key_env.as_deref().unwrap_or(publish_key::KEY_ENV);
        let key_text = env(key_env).filter(|value| !value.is_empty());
        if self.publish_key_env.is_some() && key_text.is_none() {
            return Err(format!("--publish-key-env {key_env}: that environment variable is not set"));
        }
        config.auth.publish_key = match key_text {
            Some(text) => {
                let text = text.to_str().ok_or_else(|| format!("{key_env} is not valid UTF-8"))?.to_owned();
                let key = publish_key::PublishKey::new(&text).map_err(|error| format!("{key_env}: {error}"))?;
                if config.admin.token.as_ref().is_some_and(|admin| admin.matches(text.trim().as_bytes())) {
                    return Err(format!("{key_env} is the admin token: give the publish API and the admin surface different keys"));
                }
                Some(key)
            }
            None => None,
        };
        config.auth.publish_listen = self.publish_listen;
        config.auth.insecure_open = self.insecure_open;
        Ok(())
    }
}

/// Whether an `--allowed-host` names this machine only (`localhost`, a loopback address; with or
/// without a port).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(""),
        None => host.as_str(),
    };
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// Whether `ip` is a loopback address (an IPv4-mapped one counts).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// The startup rule: Ok with the one line to print on stderr (when there is one to say), or Err
/// with what to configure. A loopback server (not behind a proxy) without a verifier runs open
/// and says so; on any
/// other address it needs a verifier and a protected publish endpoint (the publish key, or
/// `--publish-listen`), unless `--insecure-open`. `--demo-auth` runs on loopback only; a
/// `--publish-listen` or `--admin-listen` off loopback needs its key.
pub fn startup_rule(listen: SocketAddr, config: &crate::Config) -> Result<Option<String>, String> {
    if config.admin.listen.is_some_and(|address| !is_loopback(address.ip())) && config.admin.token.is_none() && !config.auth.insecure_open {
        return Err(format!(
            "--admin-listen on a non-loopback address needs the admin token (--admin-token-file or {}), or --insecure-open",
            crate::admin::TOKEN_ENV
        ));
    }
    // Behind a reverse proxy (the deployment `--trusted-proxy`, `--public-origin` and an
    // `--allowed-host` other than a loopback name describe), a loopback listener is what the
    // internet reaches: it counts as public.
    let proxied = !config.trusted_proxies.0.is_empty()
        || !config.edge.public_origins.is_empty()
        || config.edge.allowed_hosts.iter().any(|host| !is_loopback_host(host));
    let config = &config.auth;
    let loopback = is_loopback(listen.ip()) && !proxied;
    if config.demo.is_some() && !loopback {
        return Err(format!("--demo-auth gives a token to anyone who asks: it runs on a loopback --listen address only, not {listen}"));
    }
    if config.publish_listen.is_some_and(|address| !is_loopback(address.ip())) && config.publish_key.is_none() {
        return Err(format!(
            "--publish-listen on a non-loopback address needs the publish key ({} or --publish-key-env NAME)",
            publish_key::KEY_ENV
        ));
    }
    if loopback {
        return Ok(config.verifier.is_none().then(|| {
            format!("no authentication configured: running open on loopback {listen} (anyone who reaches it may join, read and publish)")
        }));
    }
    let publish_open = config.publish_key.is_none() && config.publish_listen.is_none();
    if config.insecure_open {
        return Ok((config.verifier.is_none() || publish_open)
            .then(|| format!("--insecure-open: running without full authentication on {listen}")));
    }
    if config.verifier.is_none() {
        let behind = if proxied { " behind --trusted-proxy/--public-origin/--allowed-host" } else { "" };
        return Err(format!(
            "refusing to run open on {listen}{behind}: configure tokens ({SECRET_ENV} or --jwt-secret-env NAME, --jwt-public-key PEM or \
             --jwks FILE) and the publish key ({}), or pass --insecure-open",
            publish_key::KEY_ENV
        ));
    }
    if publish_open {
        return Err(format!(
            "refusing to serve an open POST /realtime/publish on {listen}: set the publish key ({} or --publish-key-env NAME), \
             or move it with --publish-listen ADDR, or pass --insecure-open",
            publish_key::KEY_ENV
        ));
    }
    Ok(None)
}

/// Whether a response to `origin` may carry `Access-Control-Allow-Credentials: true`: only for
/// an exact `--allow-origin` entry (never a loopback origin let in by the test switch, never a
/// wildcard, which this server never sends).
pub fn credentials_allowed(config: &crate::Config, origin: &header::HeaderValue) -> bool {
    config.allowed_origins.iter().any(|allowed| allowed.as_bytes() == origin.as_bytes())
}
