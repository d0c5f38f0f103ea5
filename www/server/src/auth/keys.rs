//! Verification keys, loaded once at start: an HS256 secret from an environment variable, an
//! RS256 or ES256 public key from a PEM file, or the RS256/ES256 keys of a JWKS file.
//!
//! Invariants: every key is bound to exactly one algorithm when it is loaded ([`VerifyKey`]), so a
//! token is only ever checked with a key of its own algorithm: an RSA or EC public key is never
//! used as an HMAC secret (the algorithm-confusion attack), and a JWKS never brings in a symmetric
//! key. A secret's value never appears in an error message; the messages name the variable or the
//! file.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest HS256 secret accepted, in bytes: RFC 7518 §3.2 asks for a key at least as long as
/// the hash (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest HS256 secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;
/// Largest key or JWKS file read, in bytes.
pub const MAX_KEY_FILE_BYTES: u64 = 1 << 20;
/// Most keys taken from a JWKS file.
pub const MAX_JWKS_KEYS: usize = 64;
/// Longest `kid` kept, in bytes (a longer one is a malformed set).
pub const MAX_KID_BYTES: usize = 256;

/// A key and the one algorithm it verifies.
#[derive(Clone)]
pub struct VerifyKey {
    /// The JWKS `kid`; None for a secret or a PEM key.
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("VerifyKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// The HS256 key from the value of the environment variable `name` (`value`: what the variable
/// holds, None when unset). Surrounding whitespace is not part of the secret.
pub fn hmac_from_env(name: &str, value: Option<std::ffi::OsString>) -> Result<VerifyKey, String> {
    let Some(value) = value else { return Err(format!("the environment variable {name} (the HS256 secret) is not set")) };
    let Some(text) = value.to_str() else { return Err(format!("the environment variable {name} is not valid UTF-8")) };
    hmac_from_secret(text.trim().as_bytes()).map_err(|error| format!("{name}: {error}"))
}

/// An HS256 key from the secret's bytes.
pub fn hmac_from_secret(secret: &[u8]) -> Result<VerifyKey, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!("the HS256 secret must have at least {MIN_SECRET_BYTES} bytes"));
    }
    if secret.len() > MAX_SECRET_BYTES {
        return Err(format!("the HS256 secret must have at most {MAX_SECRET_BYTES} bytes"));
    }
    let key = DecodingKey::from_secret(secret).map_err(|_| "the HS256 secret is not usable".to_owned())?;
    Ok(VerifyKey { kid: None, algorithm: Algorithm::HS256, key })
}

/// Reads a key file of at most [`MAX_KEY_FILE_BYTES`].
fn read_bounded(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|error| format!("{what} {}: {error}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|error| format!("{what} {}: {error}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!("{what} {}: larger than {MAX_KEY_FILE_BYTES} bytes", path.display()));
    }
    Ok(bytes)
}

/// The RS256 or ES256 (P-256) key of a PEM public key file (`-----BEGIN PUBLIC KEY-----`, or
/// `RSA PUBLIC KEY`).
pub fn from_public_pem_file(path: &Path) -> Result<VerifyKey, String> {
    let pem = read_bounded(path, "--jwt-public-key")?;
    from_public_pem(&pem).map_err(|error| format!("--jwt-public-key {}: {error}", path.display()))
}

/// See [`from_public_pem_file`].
pub fn from_public_pem(pem: &[u8]) -> Result<VerifyKey, String> {
    let text = String::from_utf8_lossy(pem);
    // A private key or a certificate here is a mistake the operator must hear about: a private
    // key would sit on the verifying server, and neither is what the flag documents.
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key: give the public key (openssl pkey -in KEY -pubout)".into());
    }
    if !text.contains("-----BEGIN PUBLIC KEY-----") && !text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        return Err("not a PEM public key (-----BEGIN PUBLIC KEY-----)".into());
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return checked(VerifyKey { kid: None, algorithm: Algorithm::RS256, key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return checked(ec_p256(None, key)?);
    }
    Err("neither an RSA nor an EC public key".into())
}

/// An EC key, accepted only on P-256 (ES256): an uncompressed point of 65 bytes.
fn ec_p256(kid: Option<String>, key: DecodingKey) -> Result<VerifyKey, String> {
    match key.try_get_as_bytes() {
        Ok(point) if point.len() == 65 => Ok(VerifyKey { kid, algorithm: Algorithm::ES256, key }),
        _ => Err("an EC key must be on P-256 (ES256)".into()),
    }
}

/// Makes the crypto backend parse the key once, so a broken key stops the server at start
/// instead of failing every token.
fn checked(key: VerifyKey) -> Result<VerifyKey, String> {
    match jsonwebtoken::crypto::verify("AAAA", b"probe", &key.key, key.algorithm) {
        Ok(_) => Ok(key),
        Err(_) => Err(format!("the {:?} key does not parse", key.algorithm)),
    }
}

/// The RS256 and ES256 signing keys of a JWKS file (`{"keys": [...]}`). Keys for encryption,
/// for other algorithms or curves, and symmetric (`oct`) keys are skipped; a set with no usable
/// key, more than [`MAX_JWKS_KEYS`] keys, or two keys with one `kid` is refused.
pub fn from_jwks_file(path: &Path) -> Result<Vec<VerifyKey>, String> {
    let bytes = read_bounded(path, "--jwks")?;
    from_jwks(&bytes).map_err(|error| format!("--jwks {}: {error}", path.display()))
}

/// See [`from_jwks_file`].
pub fn from_jwks(bytes: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| format!("not JSON: {error}"))?;
    let Some(entries) = set.get("keys").and_then(serde_json::Value::as_array) else {
        return Err("no \"keys\" array".into());
    };
    if entries.len() > MAX_JWKS_KEYS {
        return Err(format!("more than {MAX_JWKS_KEYS} keys"));
    }
    let mut keys: Vec<VerifyKey> = Vec::new();
    for entry in entries {
        // A key of a shape this crate does not know is someone else's (another algorithm).
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else { continue };
        let Some(key) = jwk_key(&jwk)? else { continue };
        if key.kid.is_some() && keys.iter().any(|other| other.kid == key.kid) {
            return Err("two keys with the same kid".into());
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no RS256 or ES256 (P-256) signing key".into());
    }
    Ok(keys)
}

/// The key of one JWK, None when it is not an RS256/ES256 signing key.
fn jwk_key(jwk: &Jwk) -> Result<Option<VerifyKey>, String> {
    let common = &jwk.common;
    if matches!(common.public_key_use, Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))) {
        return Ok(None);
    }
    let kid = common.key_id.clone();
    if kid.as_ref().is_some_and(|kid| kid.len() > MAX_KID_BYTES) {
        return Err(format!("a kid longer than {MAX_KID_BYTES} bytes"));
    }
    let key = match (&jwk.algorithm, common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => {
            let key = DecodingKey::from_jwk(jwk).map_err(|_| "an RSA key does not parse".to_owned())?;
            VerifyKey { kid, algorithm: Algorithm::RS256, key }
        }
        (AlgorithmParameters::EllipticCurve(params), None | Some(KeyAlgorithm::ES256)) if params.curve == EllipticCurve::P256 => {
            let key = DecodingKey::from_jwk(jwk).map_err(|_| "an EC key does not parse".to_owned())?;
            ec_p256(kid, key)?
        }
        // Symmetric keys (`oct`), EdDSA, other curves and algorithms: not taken.
        _ => return Ok(None),
    };
    checked(key).map(Some)
}
