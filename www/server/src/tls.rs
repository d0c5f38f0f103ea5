//! HTTPS: TLS whose ALPN offers `h2` and `http/1.1`, so browsers
//! multiplex every stream of a host on one HTTP/2 connection (over HTTP/1.1 they open at most six
//! connections per host, and a page holding more event streams stalls).
//!
//! The certificate comes from PEM files (`--tls-cert`, `--tls-key`) or is generated at start
//! (`--tls-self-signed`, for 127.0.0.1 and localhost). [`spki_sha256`] gives the base64 SHA-256 of
//! its SubjectPublicKeyInfo, the form Chromium's `--ignore-certificate-errors-spki-list` takes.
//!
//! Handshakes run in each connection's own task of [`crate::edge::serve`], after accept, bounded
//! by a timeout and by handshake slots per client IP and in total (`--tls-handshake-timeout-ms`,
//! `--max-handshakes-per-ip`): a slow or silent client never holds up the accept loop, and a
//! flood of silent sockets from one address takes only its own slots, never another client's.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A certificate chain with its private key, and the chain's leaf SPKI fingerprint.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Base64 SHA-256 of the leaf's DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        formatter.debug_struct("Identity").field("spki_sha256", &self.spki_sha256).finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    /// Errors name the file and what is wrong with it.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Identity, String> {
        let chain = CertificateDer::pem_file_iter(cert_path)
            .map_err(|error| format!("--tls-cert {}: {}", cert_path.display(), pem_error(&error)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("--tls-cert {}: {}", cert_path.display(), pem_error(&error)))?;
        let Some(leaf) = chain.first() else {
            return Err(format!("--tls-cert {}: no PEM CERTIFICATE block in the file", cert_path.display()));
        };
        let spki_sha256 = spki_sha256(leaf)
            .ok_or_else(|| format!("--tls-cert {}: the first certificate is not valid DER X.509", cert_path.display()))?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|error| format!("--tls-key {}: {}", key_path.display(), pem_error(&error)))?;
        Ok(Identity { chain, key, spki_sha256 })
    }

    /// A fresh self-signed development certificate for `127.0.0.1` and `localhost` (ECDSA P-256).
    pub fn self_signed() -> Result<Identity, String> {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(|error| format!("cannot generate a development certificate: {error}"))?;
        let leaf = generated.cert.der().clone();
        let spki_sha256 = spki_sha256(&leaf).ok_or("rcgen produced a certificate that does not parse")?;
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
            .map_err(|error| format!("cannot use the generated key: {error}"))?;
        Ok(Identity { chain: vec![leaf], key, spki_sha256 })
    }

    /// The rustls configuration: ring provider, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS configuration: {error}"))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|error| format!("--tls-cert/--tls-key do not make a usable pair: {error}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn pem_error(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(error) => error.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind in the file".to_owned(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Base64 (standard, padded) SHA-256 of the DER SubjectPublicKeyInfo of an X.509 certificate;
/// None if the DER does not have the shape of a certificate.
pub fn spki_sha256(certificate: &[u8]) -> Option<String> {
    let spki = subject_public_key_info(certificate)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

/// The SubjectPublicKeyInfo (tag and length included) inside a DER certificate:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }.
pub fn subject_public_key_info(certificate: &[u8]) -> Option<&[u8]> {
    let (tag, certificate_body, _) = der_element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_element(certificate_body)?;
    if tag != 0x30 {
        return None;
    }
    // Skip the optional explicit [0] version.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        tbs = der_element(tbs)?.2;
    }
    let (tag, _, rest) = der_element(tbs)?;
    if tag != 0x30 {
        return None;
    }
    Some(&tbs[..tbs.len() - rest.len()])
}

/// Splits one DER element off `input`: (tag, contents, rest). Single-byte tags, definite lengths.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        first as usize
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count].iter().fold(0usize, |length, &byte| (length << 8) | byte as usize);
        rest = &rest[count..];
        length
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The acceptor for [`crate::edge::serve`].
pub fn acceptor(config: Arc<ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walker_refuses_garbage_without_panicking() {
        for input in [&[][..], &[0x30], &[0x30, 0x85, 1, 1, 1, 1, 1], &[0x30, 0x02, 0x30], &[0x04, 0x00]] {
            assert_eq!(subject_public_key_info(input), None);
        }
    }

    #[test]
    fn self_signed_fingerprint_is_the_sha256_of_the_key_spki() {
        use rcgen::PublicKeyData;
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let spki = generated.signing_key.subject_public_key_info();
        assert_eq!(subject_public_key_info(generated.cert.der()), Some(&spki[..]));
        let expected = base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
        assert_eq!(spki_sha256(generated.cert.der()).as_deref(), Some(expected.as_str()));
        assert_eq!(expected.len(), 44);
    }
}
