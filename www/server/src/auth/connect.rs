//! The JWT verifier as the v3 connect paths' [`Authenticator`]: a verified token becomes the
//! session's principal; every refusal is a 4005 (get a new token and retry, PROTOCOL §9.5),
//! with fixed text that quotes nothing of the token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{jwt, unix_now, AuthError};
use crate::v3::auth::{Authenticator, Principal, Refusal};

/// Verifies connect and refresh credentials with the configured JWT keys.
pub struct JwtAuthenticator(pub Arc<jwt::Verifier>);

impl Authenticator for JwtAuthenticator {
    fn verify(&self, credential: Option<&str>) -> Result<Option<Principal>, Refusal> {
        let principal = self.0.verify(credential.unwrap_or(""), unix_now()).map_err(|error| Refusal::credential(reason(&error)))?;
        Ok(Some(Principal {
            subject: principal.subject,
            // An absent claim grants nothing (the token's own list, empty), never the server's
            // open policy: a token that names no channels opens none.
            channels: Some(principal.channels),
            publish: Some(principal.publish),
            // Accepted while now < exp + leeway (README), on the connect and after it: the
            // session's credential expires then. An `exp` past what SystemTime holds is as good
            // as never (year 2106 here).
            expires_at: Some(
                UNIX_EPOCH
                    .checked_add(Duration::from_secs(principal.expires_at.saturating_add(self.0.leeway_secs())))
                    .unwrap_or_else(far_future),
            ),
        }))
    }
}

fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX))
}

fn reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::Missing => "token required",
        AuthError::Expired => "token expired",
        AuthError::NotYetValid => "token not yet valid",
        AuthError::Invalid(_) => "token invalid",
    }
}
