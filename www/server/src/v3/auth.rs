//! The authentication hook of protocol v3 (PROTOCOL.md §9.4): every connect's credential, and
//! every in-band refresh, goes through one [`Authenticator`]. The server runs open (every
//! connect allowed, no principal) until one is configured: [`Config::auth`](crate::Config).
//!
//! A verifier (the JWT one, a connect hook) implements [`Authenticator::verify`]. It never puts
//! the credential in its refusal: the reason reaches the client and the logs.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use realtime_client::core::wire::close_code;

/// Code 4005: the credential is missing, expired, not yet valid, or does not verify (§9.5).
pub const CREDENTIAL_REFUSED: u16 = 4005;

/// Who a verified credential names, and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal (a JWT's `sub`): 1-256 bytes of UTF-8. A session belongs to it, and the
    /// messages its clients publish carry it as `f`.
    pub subject: String,
    /// Channel patterns it may subscribe to (the `channels` claim; `*` at the end matches any
    /// suffix). None: the claim is absent, the server's own policy applies.
    pub channels: Option<Vec<String>>,
    /// Channel patterns it may publish to (the `publish` claim), as `channels`.
    pub publish: Option<Vec<String>>,
    /// When the credential expires (None: it does not). The connection is closed with 4005 then.
    pub expires_at: Option<SystemTime>,
}

impl Principal {
    /// A principal with no claims beyond its subject, expiring at `expires_at`.
    pub fn new(subject: impl Into<String>, expires_at: Option<SystemTime>) -> Self {
        Principal { subject: subject.into(), channels: None, publish: None, expires_at }
    }
}

/// Why a credential was refused; sent to the client as `close code=<code>` with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// [`CREDENTIAL_REFUSED`] (4005: the client gets a new credential and reconnects) or
    /// `close_code::UNAUTHORIZED` (4001: this principal is refused; the client stops).
    pub code: u16,
    /// A short, lowercase reason; never the credential or any part of it.
    pub reason: &'static str,
}

impl Refusal {
    /// 4005: missing, expired, not yet valid or not verifying.
    pub const fn credential(reason: &'static str) -> Self {
        Refusal { code: CREDENTIAL_REFUSED, reason }
    }

    /// 4001: the credential verified, but this principal is not allowed.
    pub const fn forbidden(reason: &'static str) -> Self {
        Refusal { code: close_code::UNAUTHORIZED, reason }
    }
}

/// Verifies credentials. Called on the request's task for every v3 connect (fresh or resume)
/// and every in-band `token`; keep it fast (no network call on the request path; a JWKS is
/// fetched ahead, not per request).
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `credential` (None: the client sent no `token` frame). `Ok(None)`: allowed with
    /// no principal (an open server); `Ok(Some)`: allowed as that principal.
    fn verify(&self, credential: Option<&str>) -> Result<Option<Principal>, Refusal>;

    /// Whether this authenticator allows everyone (then v2 requests, which cannot carry a
    /// credential, are still served; otherwise they get `close code=4002`).
    fn is_open(&self) -> bool {
        false
    }
}

/// No authentication: every connect allowed, no principal, no `f`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAuthenticator;

impl Authenticator for OpenAuthenticator {
    fn verify(&self, _credential: Option<&str>) -> Result<Option<Principal>, Refusal> {
        Ok(None)
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// A verifier of present credentials as a function (`|jwt| verify(jwt)`): a connect without a
/// credential is refused (4005), every credential goes to the function.
impl<F> Authenticator for F
where
    F: Fn(&str) -> Result<Principal, Refusal> + Send + Sync + 'static,
{
    fn verify(&self, credential: Option<&str>) -> Result<Option<Principal>, Refusal> {
        let credential = credential.ok_or(Refusal::credential("credential missing"))?;
        self(credential).map(Some)
    }
}

/// The configured authenticator ([`OpenAuthenticator`] by default).
#[derive(Clone)]
pub struct AuthHook(pub Arc<dyn Authenticator>);

impl AuthHook {
    pub fn new(authenticator: impl Authenticator) -> Self {
        AuthHook(Arc::new(authenticator))
    }

    /// Verifies a credential, refusing one that has already expired whatever the verifier said.
    pub fn verify(&self, credential: Option<&str>) -> Result<Option<Principal>, Refusal> {
        let principal = self.0.verify(credential)?;
        if let Some(principal) = &principal {
            if principal.expires_at.is_some_and(|at| at <= SystemTime::now()) {
                return Err(Refusal::credential("token expired"));
            }
            if !realtime_client::core::wire::is_valid_subject(&principal.subject) {
                return Err(Refusal::credential("credential names no valid subject"));
            }
        }
        Ok(principal)
    }

    pub fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

impl Default for AuthHook {
    fn default() -> Self {
        AuthHook::new(OpenAuthenticator)
    }
}

impl fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_open() { "AuthHook(open)" } else { "AuthHook(configured)" })
    }
}

/// Milliseconds from now until `at` (0 when it passed), for `exp` on `hello` and `authed`.
pub fn millis_until(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::now()).map_or(0, |left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn alice(credential: &str) -> Result<Principal, Refusal> {
        match credential {
            "alice" => Ok(Principal::new("alice", None)),
            "old" => Ok(Principal::new("alice", Some(SystemTime::now() - Duration::from_secs(1)))),
            "nameless" => Ok(Principal::new("", None)),
            _ => Err(Refusal::credential("does not verify")),
        }
    }

    #[test]
    fn a_function_verifies_present_credentials_and_the_hook_checks_what_it_returns() {
        let hook = AuthHook::new(alice);
        assert!(!hook.is_open());
        assert_eq!(hook.verify(Some("alice")).unwrap().unwrap().subject, "alice");
        assert_eq!(hook.verify(None), Err(Refusal::credential("credential missing")));
        assert_eq!(hook.verify(Some("bob")).unwrap_err().code, CREDENTIAL_REFUSED);
        assert_eq!(hook.verify(Some("old")), Err(Refusal::credential("token expired")), "an expired principal never passes");
        assert_eq!(hook.verify(Some("nameless")).unwrap_err().code, CREDENTIAL_REFUSED);
        assert_eq!(format!("{hook:?}"), "AuthHook(configured)");
    }

    #[test]
    fn the_open_hook_allows_everyone_as_no_one() {
        let hook = AuthHook::default();
        assert!(hook.is_open());
        assert_eq!(hook.verify(None), Ok(None));
        assert_eq!(hook.verify(Some("anything")), Ok(None));
        assert_eq!(Refusal::forbidden("banned").code, close_code::UNAUTHORIZED);
    }
}
