//! JWT verification: a token in, a [`Principal`] or an [`AuthError`] out.
//!
//! Order of the checks, cheapest and least trusting first: the token's size
//! ([`MAX_TOKEN_BYTES`], before anything is decoded); its shape and header; the header's `alg`
//! against the configured keys (each key verifies one algorithm, so `none`, an algorithm no key
//! has, and an HS256 token against an RSA or EC key are refused here); the signature (by the
//! `jsonwebtoken` crate, which decodes the payload only after the signature verified); `aud` and
//! `iss` (by the crate); then, here, the time claims against `now` (an input, so tests choose the
//! clock) and the claims this server understands.
//!
//! Invariants: no error carries or logs any part of the token; the crate's own error (which may
//! quote the payload's JSON) is mapped to a fixed [`Invalid`] reason and dropped.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::VerifyKey;
use super::{is_valid_pattern, AuthError, Invalid, Principal, MAX_PATTERNS, MAX_SUBJECT_BYTES, MAX_TOKEN_BYTES};

/// Verifies tokens against the configured keys and claims.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    audience: Option<String>,
    issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    leeway_secs: u64,
}

impl Verifier {
    /// A verifier of `keys` (at least one); `audience` and `issuer`, when given, must be in every
    /// token (`aud` may be a list that holds it).
    /// The clock-skew allowance on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    pub fn new(keys: Vec<VerifyKey>, audience: Option<String>, issuer: Option<String>, leeway_secs: u64) -> Result<Verifier, String> {
        if keys.is_empty() {
            return Err("no verification key".into());
        }
        Ok(Verifier { keys, audience, issuer, leeway_secs })
    }

    /// The algorithms some key verifies (for logs and docs).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for key in &self.keys {
            if !algorithms.contains(&key.algorithm) {
                algorithms.push(key.algorithm);
            }
        }
        algorithms
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch, see [`super::unix_now`]).
    pub fn verify(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid(Invalid::TooLarge));
        }
        // Three base64url parts, nothing else: anything else is not worth decoding.
        if token.split('.').count() != 3 || !token.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)) {
            return Err(AuthError::Invalid(Invalid::Malformed));
        }
        // An `alg` outside the crate's list (`none` among them) fails to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid(Invalid::Algorithm))?;
        let key = self.key_for(header.alg, header.kid.as_deref())?;
        let mut validation = Validation::new(key.algorithm);
        // Time is checked below against the caller's clock; the crate would read the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|error| AuthError::Invalid(reason(error.kind())))?;
        self.claims(&data.claims, now)
    }

    /// The one key that may verify a token of `alg` with header `kid`. A `kid` that names a key
    /// picks it; without one, the algorithm must leave exactly one candidate (so a forged token
    /// costs one signature check, never one per key).
    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<&VerifyKey, AuthError> {
        let mut of_alg = self.keys.iter().filter(|key| key.algorithm == alg);
        if let Some(kid) = kid {
            if let Some(key) = self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)) {
                return if key.algorithm == alg { Ok(key) } else { Err(AuthError::Invalid(Invalid::Algorithm)) };
            }
        }
        match (of_alg.next(), of_alg.next()) {
            (None, _) => Err(AuthError::Invalid(Invalid::Algorithm)),
            (Some(key), None) if kid.is_none() || key.kid.is_none() => Ok(key),
            _ => Err(AuthError::Invalid(Invalid::UnknownKey)),
        }
    }

    /// The time claims and the claims this server understands.
    fn claims(&self, claims: &Map<String, Value>, now: u64) -> Result<Principal, AuthError> {
        let expires_at = match claims.get("exp") {
            Some(value) => numeric_date(value).ok_or(AuthError::Invalid(Invalid::Claims))?,
            None => return Err(AuthError::Invalid(Invalid::Claims)),
        };
        // RFC 7519 §4.1.4: valid only while now is before exp.
        if now >= expires_at.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if let Some(value) = claims.get("nbf") {
            let not_before = numeric_date(value).ok_or(AuthError::Invalid(Invalid::Claims))?;
            if not_before > now.saturating_add(self.leeway_secs) {
                return Err(AuthError::NotYetValid);
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(subject)) if is_valid_subject(subject) => subject.clone(),
            _ => return Err(AuthError::Invalid(Invalid::Subject)),
        };
        Ok(Principal { subject, channels: patterns(claims.get("channels"))?, publish: patterns(claims.get("publish"))?, expires_at })
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative number of seconds; a fraction is cut off. None
/// for anything else (a string, a negative, NaN cannot occur in JSON, a float past u64).
fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(seconds) = value.as_u64() {
        return Some(seconds);
    }
    let seconds = value.as_f64()?;
    // 2^64 as f64: anything at or above it does not fit (nor do NaN and the infinities).
    (0.0..18_446_744_073_709_551_616.0).contains(&seconds).then_some(seconds as u64)
}

/// A subject: 1 to [`MAX_SUBJECT_BYTES`] bytes, no control characters (it is shown to other
/// clients as the sender, and may reach a log line).
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty() && subject.len() <= MAX_SUBJECT_BYTES && !subject.chars().any(char::is_control)
}

/// A `channels` or `publish` claim: absent means none; else a list of at most [`MAX_PATTERNS`]
/// valid patterns. Anything else refuses the token (a permission the server cannot read must not
/// silently become a different one).
fn patterns(value: Option<&Value>) -> Result<Vec<String>, AuthError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let Some(list) = value.as_array() else { return Err(AuthError::Invalid(Invalid::Claims)) };
    if list.len() > MAX_PATTERNS {
        return Err(AuthError::Invalid(Invalid::Claims));
    }
    list.iter()
        .map(|pattern| match pattern.as_str() {
            Some(pattern) if is_valid_pattern(pattern) => Ok(pattern.to_owned()),
            _ => Err(AuthError::Invalid(Invalid::Claims)),
        })
        .collect()
}

/// The reason of a `jsonwebtoken` failure (the crate's error itself is dropped: its JSON errors
/// can quote the token).
fn reason(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::InvalidSignature => Invalid::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            Invalid::Algorithm
        }
        ErrorKind::InvalidAudience => Invalid::Audience,
        ErrorKind::InvalidIssuer => Invalid::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Invalid::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Invalid::Issuer,
        ErrorKind::InvalidClaimFormat(claim) if claim == "aud" => Invalid::Audience,
        ErrorKind::InvalidClaimFormat(claim) if claim == "iss" => Invalid::Issuer,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => Invalid::Claims,
        // Base64, JSON, UTF-8, the token's shape, and key errors (a key that did not fit the
        // token: treated as a bad token, the key was checked at start).
        _ => Invalid::Malformed,
    }
}
