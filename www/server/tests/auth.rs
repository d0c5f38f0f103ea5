//! Authentication foundations (issue 14): JWT verification with HS256, RS256 and ES256 against
//! forgeries (alg none, wrong key, altered claims, algorithm confusion), expiry and hostile
//! claims; the publish API key; the startup rule; CORS with credentials; the demo token
//! endpoint; and no secret in the log at the most verbose level. The keys under
//! tests/fixtures/ are test-only keys.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use clap::Parser;
use common::{Server, WsClient, LIMIT};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime_client::core::wire::{self, Carrier, Credential, Frame, Hello, Payload, Resume, SessionFrame};
use realtime_server::admin::{self, AdminConfig};
use realtime_server::auth::demo::DemoSigner;
use realtime_server::auth::jwt::Verifier;
use realtime_server::auth::publish_key::{self, PublishKey};
use realtime_server::auth::{self, keys, AuthConfig, AuthError, AuthFlags, Invalid, Principal};
use realtime_server::Config;
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
const PUBLISH_KEY: &str = "test-publish-key-0123456789";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(), claims)
}

fn rs(claims: &Value) -> String {
    sign(Algorithm::RS256, None, &EncodingKey::from_rsa_pem(&read("test-only-rsa-private.pem")).unwrap(), claims)
}

fn es(claims: &Value) -> String {
    sign(Algorithm::ES256, None, &EncodingKey::from_ec_pem(&read("test-only-ec-private.pem")).unwrap(), claims)
}

fn claims() -> Value {
    json!({"sub": "alice", "channels": ["chat:*", "news"], "publish": ["chat:*"], "exp": NOW + 60})
}

fn hs_verifier() -> Verifier {
    Verifier::new(vec![keys::hmac_from_secret(SECRET.as_bytes()).unwrap()], None, None, 5).unwrap()
}

fn rsa_verifier() -> Verifier {
    Verifier::new(vec![keys::from_public_pem(&read("test-only-rsa-public.pem")).unwrap()], None, None, 5).unwrap()
}

fn ec_verifier() -> Verifier {
    Verifier::new(vec![keys::from_public_pem(&read("test-only-ec-public.pem")).unwrap()], None, None, 5).unwrap()
}

fn jwks_verifier() -> Verifier {
    Verifier::new(keys::from_jwks(&read("test-only-jwks.json")).unwrap(), None, None, 5).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this header and payload JSON and this signature part, signed by no one.
fn forged(header: &Value, payload: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()))
}

fn alice() -> Principal {
    Principal {
        subject: "alice".into(),
        channels: vec!["chat:*".into(), "news".into()],
        publish: vec!["chat:*".into()],
        expires_at: NOW + 60,
    }
}

#[test]
fn good_tokens_of_each_algorithm_give_their_principal() {
    assert_eq!(hs_verifier().verify(&hs(&claims()), NOW), Ok(alice()));
    assert_eq!(rsa_verifier().verify(&rs(&claims()), NOW), Ok(alice()));
    assert_eq!(ec_verifier().verify(&es(&claims()), NOW), Ok(alice()));
    // A JWKS picks the key by kid, and a lone key of the algorithm without one.
    let rsa = EncodingKey::from_rsa_pem(&read("test-only-rsa-private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&read("test-only-ec-private.pem")).unwrap();
    let jwks = jwks_verifier();
    assert_eq!(jwks.verify(&sign(Algorithm::RS256, Some("test-rsa"), &rsa, &claims()), NOW), Ok(alice()));
    assert_eq!(jwks.verify(&sign(Algorithm::ES256, Some("test-ec"), &ec, &claims()), NOW), Ok(alice()));
    assert_eq!(jwks.verify(&rs(&claims()), NOW), Ok(alice()));
    // A kid that names no key, or the EC key's kid on an RS256 token: refused.
    assert_eq!(jwks.verify(&sign(Algorithm::RS256, Some("other"), &rsa, &claims()), NOW), Err(AuthError::Invalid(Invalid::UnknownKey)));
    assert_eq!(jwks.verify(&sign(Algorithm::RS256, Some("test-ec"), &rsa, &claims()), NOW), Err(AuthError::Invalid(Invalid::Algorithm)));
    // A bearer header's token, surrounding whitespace aside.
    assert_eq!(hs_verifier().verify(&format!(" {} ", hs(&claims())), NOW), Ok(alice()));
}

#[test]
fn permissions_use_the_client_publish_pattern_syntax() {
    let principal = alice();
    assert!(principal.may_subscribe("chat:lobby") && principal.may_subscribe("chat:") && principal.may_subscribe("news"));
    assert!(!principal.may_subscribe("news2") && !principal.may_subscribe("chat") && !principal.may_subscribe("admin"));
    assert!(principal.may_publish("chat:x") && !principal.may_publish("news"));
    let nothing = Principal { channels: vec![], publish: vec![], ..alice() };
    assert!(!nothing.may_subscribe("news") && !nothing.may_publish("chat:x"));
    // Absent claims are empty lists: a token grants only what it names.
    let bare = hs_verifier().verify(&hs(&json!({"sub": "bob", "exp": NOW + 60})), NOW).unwrap();
    assert!(bare.channels.is_empty() && bare.publish.is_empty() && !bare.may_subscribe("news"));
    let all = hs_verifier().verify(&hs(&json!({"sub": "bob", "channels": ["*"], "exp": NOW + 60})), NOW).unwrap();
    assert!(all.may_subscribe("anything/at:all"));
    assert_eq!(alice().expires_in(NOW), 60);
    assert_eq!(alice().expires_in(NOW + 600), 0);
}

#[test]
fn expiry_and_not_before_with_a_small_leeway() {
    let verifier = hs_verifier();
    let at = |exp: u64| hs(&json!({"sub": "a", "exp": exp}));
    assert_eq!(verifier.verify(&at(NOW - 10), NOW), Err(AuthError::Expired));
    assert_eq!(verifier.verify(&at(NOW - 5), NOW), Err(AuthError::Expired), "exp + leeway is already past");
    assert!(verifier.verify(&at(NOW - 4), NOW).is_ok(), "within the 5 s leeway");
    assert!(verifier.verify(&at(NOW + 1), NOW).is_ok());
    let nbf = |nbf: u64| hs(&json!({"sub": "a", "exp": NOW + 600, "nbf": nbf}));
    assert_eq!(verifier.verify(&nbf(NOW + 60), NOW), Err(AuthError::NotYetValid));
    assert_eq!(verifier.verify(&nbf(NOW + 6), NOW), Err(AuthError::NotYetValid));
    assert!(verifier.verify(&nbf(NOW + 5), NOW).is_ok());
    assert!(verifier.verify(&nbf(NOW - 100), NOW).is_ok());
    assert!(AuthError::Expired.is_time() && AuthError::NotYetValid.is_time() && !AuthError::Missing.is_time());
    assert_eq!(AuthError::NotYetValid.code(), "expired");
    // No leeway: expired the second exp is reached.
    let strict = Verifier::new(vec![keys::hmac_from_secret(SECRET.as_bytes()).unwrap()], None, None, 0).unwrap();
    assert_eq!(strict.verify(&at(NOW), NOW), Err(AuthError::Expired));
    assert!(strict.verify(&at(NOW + 1), NOW).is_ok());
}

#[test]
fn hostile_numbers_in_time_claims() {
    let verifier = hs_verifier();
    let invalid = Err(AuthError::Invalid(Invalid::Claims));
    for exp in [json!("1900000000"), json!(-1), json!(1e300), json!(null), json!(true)] {
        assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": exp})), NOW), invalid, "exp {exp}");
    }
    // Nested values trip the crate's claim parser first: still invalid.
    for exp in [json!([NOW + 60]), json!({"t": 1})] {
        assert!(matches!(verifier.verify(&hs(&json!({"sub": "a", "exp": exp})), NOW), Err(AuthError::Invalid(_))), "exp {exp}");
    }
    assert_eq!(verifier.verify(&hs(&json!({"sub": "a"})), NOW), invalid, "exp is required");
    for nbf in [json!("0"), json!(-5), json!(1e300)] {
        assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": NOW + 60, "nbf": nbf})), NOW), invalid, "nbf {nbf}");
    }
    // The largest exp is a valid far-away time: no overflow anywhere.
    let forever = verifier.verify(&hs(&json!({"sub": "a", "exp": u64::MAX})), NOW).unwrap();
    assert_eq!(forever.expires_at, u64::MAX);
    assert_eq!(forever.expires_in(NOW), u64::MAX - NOW);
    assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": u64::MAX, "nbf": u64::MAX})), NOW), Err(AuthError::NotYetValid));
    // A fractional NumericDate is allowed (RFC 7519 §2) and cut to seconds.
    assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": (NOW + 60) as f64 + 0.75})), NOW).unwrap().expires_at, NOW + 60);
    assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": NOW + 60})), 0).unwrap().expires_at, NOW + 60);
}

#[test]
fn alg_none_is_refused_in_every_spelling() {
    let payload = claims();
    for alg in ["none", "None", "NONE", "nOnE", "", "HS1", "RS1"] {
        for signature in ["", "AAAA"] {
            let token = forged(&json!({"alg": alg, "typ": "JWT"}), &payload, signature);
            for verifier in [hs_verifier(), rsa_verifier(), jwks_verifier()] {
                assert_eq!(verifier.verify(&token, NOW), Err(AuthError::Invalid(Invalid::Algorithm)), "alg {alg:?}");
            }
        }
    }
    // No alg at all.
    assert!(matches!(hs_verifier().verify(&forged(&json!({"typ": "JWT"}), &payload, "AAAA"), NOW), Err(AuthError::Invalid(_))));
}

#[test]
fn a_wrong_key_is_refused() {
    let other_secret = EncodingKey::from_secret(b"another-secret-that-is-long-enough-000").unwrap();
    assert_eq!(
        hs_verifier().verify(&sign(Algorithm::HS256, None, &other_secret, &claims()), NOW),
        Err(AuthError::Invalid(Invalid::Signature))
    );
    let other_rsa = EncodingKey::from_rsa_pem(&read("test-only-rsa-other-private.pem")).unwrap();
    let forged_rsa = sign(Algorithm::RS256, None, &other_rsa, &claims());
    assert_eq!(rsa_verifier().verify(&forged_rsa, NOW), Err(AuthError::Invalid(Invalid::Signature)));
    assert_eq!(jwks_verifier().verify(&forged_rsa, NOW), Err(AuthError::Invalid(Invalid::Signature)));
    let forged_kid = sign(Algorithm::RS256, Some("test-rsa"), &other_rsa, &claims());
    assert_eq!(jwks_verifier().verify(&forged_kid, NOW), Err(AuthError::Invalid(Invalid::Signature)));
}

#[test]
fn altered_claims_with_the_signature_kept_are_refused() {
    for (verifier, token) in [(hs_verifier(), hs(&claims())), (rsa_verifier(), rs(&claims())), (ec_verifier(), es(&claims()))] {
        let parts: Vec<&str> = token.split('.').collect();
        let mut richer = claims();
        richer["sub"] = json!("admin");
        richer["channels"] = json!(["*"]);
        let swapped = format!("{}.{}.{}", parts[0], b64(richer.to_string().as_bytes()), parts[2]);
        assert_eq!(verifier.verify(&swapped, NOW), Err(AuthError::Invalid(Invalid::Signature)));
        // One flipped character of the signature, and of the header.
        let mut signature = parts[2].to_owned();
        let last = if signature.ends_with('A') { "B" } else { "A" };
        signature.replace_range(signature.len() - 1.., last);
        let flipped = format!("{}.{}.{signature}", parts[0], parts[1]);
        assert!(matches!(verifier.verify(&flipped, NOW), Err(AuthError::Invalid(Invalid::Signature | Invalid::Malformed))));
        // The payload of another (valid) token under this token's signature.
        let other = format!("{}.{}.{}", parts[0], hs(&json!({"sub": "x", "exp": NOW + 60})).split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(verifier.verify(&other, NOW), Err(AuthError::Invalid(Invalid::Signature)));
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // An RS256 (or ES256) token against an HS256-only server.
    assert_eq!(hs_verifier().verify(&rs(&claims()), NOW), Err(AuthError::Invalid(Invalid::Algorithm)));
    assert_eq!(hs_verifier().verify(&es(&claims()), NOW), Err(AuthError::Invalid(Invalid::Algorithm)));
    // The classic attack: HS256 "signed" with the server's public key as the HMAC secret, in the
    // PEM form and as DER, against the RSA, EC and JWKS configurations.
    for public in ["test-only-rsa-public.pem", "test-only-ec-public.pem"] {
        let pem = read(public);
        let der = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8(pem.clone()).unwrap().lines().filter(|line| !line.starts_with("-----")).collect::<String>())
            .unwrap();
        for secret in [pem.clone(), der] {
            let token = sign(Algorithm::HS256, None, &EncodingKey::from_secret(&secret).unwrap(), &claims());
            for verifier in [rsa_verifier(), ec_verifier(), jwks_verifier()] {
                assert_eq!(verifier.verify(&token, NOW), Err(AuthError::Invalid(Invalid::Algorithm)), "{public}");
            }
            let with_kid = sign(Algorithm::HS256, Some("test-rsa"), &EncodingKey::from_secret(&secret).unwrap(), &claims());
            assert_eq!(jwks_verifier().verify(&with_kid, NOW), Err(AuthError::Invalid(Invalid::Algorithm)));
        }
    }
    // RS256 against an ES256 key and the other way round.
    assert_eq!(ec_verifier().verify(&rs(&claims()), NOW), Err(AuthError::Invalid(Invalid::Algorithm)));
    assert_eq!(rsa_verifier().verify(&es(&claims()), NOW), Err(AuthError::Invalid(Invalid::Algorithm)));
    // A JWKS never brings in a symmetric key.
    let oct = json!({"keys": [{"kty": "oct", "k": b64(SECRET.as_bytes()), "alg": "HS256", "kid": "k"}]});
    assert!(keys::from_jwks(oct.to_string().as_bytes()).is_err());
}

#[test]
fn audience_and_issuer() {
    let key = || vec![keys::hmac_from_secret(SECRET.as_bytes()).unwrap()];
    let both = Verifier::new(key(), Some("rt".into()), Some("https://issuer.example".into()), 5).unwrap();
    let with = |extra: Value| {
        let mut value = claims();
        for (name, claim) in extra.as_object().unwrap() {
            value[name] = claim.clone();
        }
        hs(&value)
    };
    assert_eq!(both.verify(&with(json!({"aud": "rt", "iss": "https://issuer.example"})), NOW), Ok(alice()));
    assert_eq!(both.verify(&with(json!({"aud": ["other", "rt"], "iss": "https://issuer.example"})), NOW), Ok(alice()));
    let audience = Err(AuthError::Invalid(Invalid::Audience));
    let issuer = Err(AuthError::Invalid(Invalid::Issuer));
    assert_eq!(both.verify(&with(json!({"aud": "other", "iss": "https://issuer.example"})), NOW), audience);
    assert_eq!(both.verify(&with(json!({"aud": ["other"], "iss": "https://issuer.example"})), NOW), audience);
    assert_eq!(both.verify(&with(json!({"iss": "https://issuer.example"})), NOW), audience, "aud required");
    assert_eq!(both.verify(&with(json!({"aud": 7, "iss": "https://issuer.example"})), NOW), audience);
    assert_eq!(both.verify(&with(json!({"aud": "rt", "iss": "https://evil.example"})), NOW), issuer);
    assert_eq!(both.verify(&with(json!({"aud": "rt"})), NOW), issuer, "iss required");
    // Without --jwt-audience, a token meant for some audience is not for this server (RFC 7519 §4.1.3).
    assert_eq!(hs_verifier().verify(&with(json!({"aud": "rt"})), NOW), audience);
    assert_eq!(hs_verifier().verify(&with(json!({"iss": "anyone"})), NOW), Ok(alice()));
}

#[test]
fn subject_and_permission_claims_are_checked() {
    let verifier = hs_verifier();
    let subject = Err(AuthError::Invalid(Invalid::Subject));
    for sub in [json!(null), json!(""), json!(7), json!("a\nb"), json!("a\u{0}"), json!("x".repeat(257))] {
        assert_eq!(verifier.verify(&hs(&json!({"sub": sub, "exp": NOW + 60})), NOW), subject, "sub {sub}");
    }
    for sub in [json!(["alice"]), json!({"name": "alice"})] {
        assert!(matches!(verifier.verify(&hs(&json!({"sub": sub, "exp": NOW + 60})), NOW), Err(AuthError::Invalid(_))), "sub {sub}");
    }
    assert_eq!(verifier.verify(&hs(&json!({"exp": NOW + 60})), NOW), subject, "sub is required");
    assert!(verifier.verify(&hs(&json!({"sub": "x".repeat(256), "exp": NOW + 60})), NOW).is_ok());
    assert!(verifier.verify(&hs(&json!({"sub": "Zoë 😀", "exp": NOW + 60})), NOW).is_ok());
    let claims_error = Err(AuthError::Invalid(Invalid::Claims));
    let too_many: Vec<String> = (0..129).map(|i| format!("c{i}")).collect();
    for channels in [json!("chat:*"), json!([7]), json!(["a b"]), json!(["**"]), json!(["a*b"]), json!([""]), json!(too_many), json!({"a": 1})] {
        assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": NOW + 60, "channels": channels})), NOW), claims_error);
        assert_eq!(verifier.verify(&hs(&json!({"sub": "a", "exp": NOW + 60, "publish": channels})), NOW), claims_error);
    }
    assert!(verifier.verify(&hs(&json!({"sub": "a", "exp": NOW + 60, "channels": ["*", "a/b:c-d_e.f", "x*"]})), NOW).is_ok());
}

#[test]
fn missing_malformed_and_oversized_tokens() {
    let verifier = hs_verifier();
    assert_eq!(verifier.verify("", NOW), Err(AuthError::Missing));
    assert_eq!(verifier.verify("   ", NOW), Err(AuthError::Missing));
    let malformed = Err(AuthError::Invalid(Invalid::Malformed));
    for token in ["abc", "a.b", "a.b.c.d", "a b.c.d", "a.b\n.c", "é.b.c", "a.b.c=", "...."] {
        assert_eq!(verifier.verify(token, NOW), malformed, "{token:?}");
    }
    // Valid base64url, not JSON.
    assert!(matches!(verifier.verify("AAAA.AAAA.AAAA", NOW), Err(AuthError::Invalid(_))));
    // Over 8 KiB: refused before decoding, even when validly signed.
    let big = hs(&json!({"sub": "a", "exp": NOW + 60, "pad": "x".repeat(8 * 1024)}));
    assert!(big.len() > auth::MAX_TOKEN_BYTES);
    assert_eq!(verifier.verify(&big, NOW), Err(AuthError::Invalid(Invalid::TooLarge)));
    assert_eq!(verifier.verify(&"a".repeat(1 << 20), NOW), Err(AuthError::Invalid(Invalid::TooLarge)));
    let fits = hs(&json!({"sub": "a", "exp": NOW + 60, "pad": "x".repeat(4 * 1024)}));
    assert!(fits.len() <= auth::MAX_TOKEN_BYTES && verifier.verify(&fits, NOW).is_ok());
}

#[test]
fn no_error_quotes_the_token() {
    let verifier = hs_verifier();
    let tokens = [
        hs(&json!({"sub": "secret-subject-1", "exp": 1})),
        forged(&json!({"alg": "none"}), &json!({"sub": "secret-subject-2", "exp": NOW + 60}), ""),
        forged(&json!({"alg": "HS256"}), &json!({"sub": "secret-subject-3", "exp": NOW + 60}), "AAAA"),
        format!("{}.{}.AAAA", b64(br#"{"alg":"HS256"}"#), b64(b"{\"secret-subject-4\": ")),
        rs(&claims()),
    ];
    for token in &tokens {
        let error = verifier.verify(token, NOW).unwrap_err();
        let texts = [error.to_string(), format!("{error:?}")];
        for text in texts {
            assert!(!text.contains("secret-subject") && !text.contains(&token[..20]), "{text}");
        }
    }
    let debug = format!("{verifier:?} {:?}", keys::hmac_from_secret(SECRET.as_bytes()).unwrap());
    assert!(!debug.contains(SECRET) && !debug.contains(&b64(SECRET.as_bytes())[..12]), "{debug}");
}

#[test]
fn keys_load_or_say_what_is_wrong_without_quoting_secrets() {
    let short = keys::hmac_from_env("RT_JWT_SECRET", Some("short-secret".into())).unwrap_err();
    assert!(short.contains("RT_JWT_SECRET") && short.contains("32") && !short.contains("short-secret"), "{short}");
    assert!(keys::hmac_from_env("RT_JWT_SECRET", None).unwrap_err().contains("not set"));
    assert!(keys::hmac_from_env("X", Some(format!("  {SECRET}\n").into())).is_ok());
    let private = keys::from_public_pem(&read("test-only-rsa-private.pem")).unwrap_err();
    assert!(private.contains("private key"), "{private}");
    assert!(keys::from_public_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    assert!(keys::from_public_pem(b"not a key").is_err());
    assert!(keys::from_public_pem_file(&fixture("missing.pem")).unwrap_err().contains("missing.pem"));
    assert!(keys::from_jwks(b"{}").is_err());
    assert!(keys::from_jwks(b"[1,2]").is_err());
    assert!(keys::from_jwks(b"{\"keys\": []}").is_err());
    // Encryption keys and unknown kinds are skipped, a set of only those refused.
    let jwks: Value = serde_json::from_slice(&read("test-only-jwks.json")).unwrap();
    let mut enc = jwks.clone();
    enc["keys"][0]["use"] = json!("enc");
    enc["keys"][1]["kty"] = json!("OKP");
    assert!(keys::from_jwks(enc.to_string().as_bytes()).is_err());
    let mut duplicate = jwks.clone();
    duplicate["keys"][1]["kid"] = json!("test-rsa");
    assert!(keys::from_jwks(duplicate.to_string().as_bytes()).unwrap_err().contains("kid"));
    let many = json!({"keys": vec![jwks["keys"][0].clone(); keys::MAX_JWKS_KEYS + 1]});
    assert!(keys::from_jwks(many.to_string().as_bytes()).is_err());
    let loaded = keys::from_jwks(&read("test-only-jwks.json")).unwrap();
    assert_eq!(loaded.iter().map(|key| key.algorithm).collect::<Vec<_>>(), [Algorithm::RS256, Algorithm::ES256]);
}

/// `AuthFlags` parsed from `args`, applied with `env` as the environment.
#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    auth: AuthFlags,
}

fn apply(args: &[&str], env: &[(&str, &str)], config: &mut Config) -> Result<(), String> {
    let flags = Flags::try_parse_from(std::iter::once("realtime-server").chain(args.iter().copied())).map_err(|error| error.to_string())?;
    let lookup = |name: &str| env.iter().find(|(key, _)| *key == name).map(|(_, value)| std::ffi::OsString::from(*value));
    flags.auth.apply(config, &lookup)
}

#[test]
fn flags_pick_one_key_source_and_keep_the_keys_apart() {
    let mut config = Config::default();
    apply(&[], &[], &mut config).unwrap();
    assert!(config.auth.verifier.is_none() && config.auth.publish_key.is_none());
    apply(&[], &[("RT_JWT_SECRET", SECRET), ("RT_PUBLISH_KEY", PUBLISH_KEY)], &mut config).unwrap();
    assert!(config.auth.verifier.as_ref().unwrap().verify(&hs(&claims()), NOW).is_ok());
    assert!(config.auth.publish_key.as_ref().unwrap().matches(PUBLISH_KEY.as_bytes()));
    apply(&["--jwt-secret-env", "MY_SECRET", "--publish-key-env", "MY_KEY"], &[("MY_SECRET", SECRET), ("MY_KEY", PUBLISH_KEY)], &mut config).unwrap();
    assert!(config.auth.verifier.is_some() && config.auth.publish_key.is_some());
    let rsa = fixture("test-only-rsa-public.pem");
    let jwks = fixture("test-only-jwks.json");
    apply(&["--jwt-public-key", rsa.to_str().unwrap()], &[], &mut config).unwrap();
    assert!(config.auth.verifier.as_ref().unwrap().verify(&rs(&claims()), NOW).is_ok());
    apply(&["--jwks", jwks.to_str().unwrap(), "--jwt-audience", "rt"], &[], &mut config).unwrap();
    assert_eq!(config.auth.verifier.as_ref().unwrap().verify(&rs(&claims()), NOW), Err(AuthError::Invalid(Invalid::Audience)));

    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let refused: &[Case] = &[
        (&["--jwt-secret-env", "NOT_SET"], &[], "NOT_SET"),
        (&["--publish-key-env", "NOT_SET"], &[], "NOT_SET"),
        (&["--jwt-public-key", rsa.to_str().unwrap()], &[("RT_JWT_SECRET", SECRET)], "one kind of key"),
        (&["--jwt-public-key", rsa.to_str().unwrap(), "--jwks", jwks.to_str().unwrap()], &[], "cannot be used with"),
        (&["--jwt-audience", "rt"], &[], "need a key"),
        (&["--demo-auth"], &[("RT_JWT_SECRET", SECRET)], "--demo-auth"),
        (&["--demo-token-secs", "3"], &[], "--demo-auth"),
        (&["--demo-auth", "--demo-token-secs", "0"], &[], "0"),
        (&["--jwt-leeway-secs", "301"], &[("RT_JWT_SECRET", SECRET)], "301"),
        (&[], &[("RT_PUBLISH_KEY", "short")], "RT_PUBLISH_KEY"),
        (&[], &[("RT_JWT_SECRET", "short")], "RT_JWT_SECRET"),
    ];
    for (args, env, says) in refused {
        let error = apply(args, env, &mut Config::default()).unwrap_err();
        assert!(error.contains(says), "{args:?}: {error}");
        assert!(!error.contains(SECRET) && !error.contains("short\""), "{error}");
    }
    // The publish key and the admin token must differ: one must not open the other.
    let mut with_admin = Config { admin: AdminConfig::with_token(ADMIN_TOKEN).expect("a valid admin token"), ..Config::default() };
    let error = apply(&[], &[("RT_PUBLISH_KEY", ADMIN_TOKEN)], &mut with_admin).unwrap_err();
    assert!(error.contains("admin token") && !error.contains(ADMIN_TOKEN), "{error}");
    apply(&[], &[("RT_PUBLISH_KEY", PUBLISH_KEY)], &mut with_admin).unwrap();
}

fn rule(listen: std::net::SocketAddr, auth: &AuthConfig) -> Result<Option<String>, String> {
    auth::startup_rule(listen, &Config { auth: auth.clone(), ..Config::default() })
}

#[test]
fn the_startup_rule() {
    let loopback = "127.0.0.1:8080".parse().unwrap();
    let public = "0.0.0.0:8080".parse().unwrap();
    let open = AuthConfig::default();
    let notice = rule(loopback, &open).unwrap().unwrap();
    assert!(notice.contains("running open"), "{notice}");
    assert!(rule("[::1]:1".parse().unwrap(), &open).unwrap().is_some());
    assert!(rule("[::ffff:127.0.0.1]:1".parse().unwrap(), &open).unwrap().is_some());
    let error = rule(public, &open).unwrap_err();
    assert!(error.contains("RT_JWT_SECRET") && error.contains("--insecure-open"), "{error}");
    assert!(rule("192.168.1.2:1".parse().unwrap(), &open).is_err());
    assert!(rule(public, &AuthConfig { insecure_open: true, ..AuthConfig::default() }).unwrap().is_some());
    let verifier = Some(Arc::new(hs_verifier()));
    let tokens_only = AuthConfig { verifier: verifier.clone(), ..AuthConfig::default() };
    assert!(rule(loopback, &tokens_only).unwrap().is_none(), "not open: nothing to say");
    assert!(rule(public, &tokens_only).unwrap_err().contains("publish"), "an open publish endpoint on a public address");
    let key = Some(PublishKey::new(PUBLISH_KEY).unwrap());
    let full = AuthConfig { verifier: verifier.clone(), publish_key: key.clone(), ..AuthConfig::default() };
    assert_eq!(rule(public, &full), Ok(None));
    let moved = AuthConfig { verifier: verifier.clone(), publish_listen: Some(loopback), ..AuthConfig::default() };
    assert_eq!(rule(public, &moved), Ok(None));
    let moved_public = AuthConfig { verifier: verifier.clone(), publish_listen: Some(public), ..AuthConfig::default() };
    assert!(rule(loopback, &moved_public).is_err(), "a keyless publish listener on a public address");
    let demo = AuthConfig { demo: Some(Arc::new(DemoSigner::random(3).unwrap())), verifier, publish_key: key, ..AuthConfig::default() };
    assert_eq!(rule(loopback, &demo), Ok(None));
    assert!(rule(public, &demo).unwrap_err().contains("--demo-auth"));
    // Behind a proxy, a loopback listener is public.
    let proxied = Config { trusted_proxies: realtime_server::client_ip::TrustedProxies::parse(&["127.0.0.1"]).unwrap(), ..Config::default() };
    assert!(auth::startup_rule(loopback, &proxied).unwrap_err().contains("--trusted-proxy"));
    let mut fronted = Config::default();
    fronted.edge.public_origins = vec!["https://app.example".into()];
    assert!(auth::startup_rule(loopback, &fronted).is_err());
    fronted.auth.insecure_open = true;
    assert!(auth::startup_rule(loopback, &fronted).unwrap().unwrap().contains("--insecure-open"));
    // The admin listener off loopback needs its token, like the publish listener its key.
    let admin_public = Config { admin: AdminConfig { token: None, listen: Some(public) }, ..Config::default() };
    assert!(auth::startup_rule(loopback, &admin_public).unwrap_err().contains("--admin-listen"));
    let admin_loopback = Config { admin: AdminConfig { token: None, listen: Some(loopback) }, ..Config::default() };
    assert!(auth::startup_rule(loopback, &admin_loopback).is_ok());
    let admin_keyed = Config { admin: AdminConfig { listen: Some(public), ..AdminConfig::with_token(ADMIN_TOKEN).expect("a valid admin token") }, ..Config::default() };
    assert!(auth::startup_rule(loopback, &admin_keyed).is_ok());
}

// ---- Over real sockets ----

fn keyed(config: Config) -> Config {
    let auth = AuthConfig { publish_key: Some(PublishKey::new(PUBLISH_KEY).unwrap()), ..config.auth.clone() };
    Config { auth, ..config }
}

async fn publish(base: &str, room: &str, text: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/realtime/publish?room={room}"))
        .header("content-type", "text/plain")
        .body(text.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    tokio::time::timeout(LIMIT, request.send()).await.expect("answered in time").unwrap()
}

/// The text of the next message `client` gets.
async fn next_text(client: &mut WsClient) -> String {
    match client.message().await.payload {
        Payload::Text(text) => text,
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_needs_the_key_and_a_refused_publish_delivers_nothing() {
    let server = Server::start(keyed(Config { admin: AdminConfig::with_token(ADMIN_TOKEN).expect("a valid admin token"), ..Config::default() })).await;
    let base = format!("http://{}", server.addr);
    let mut subscriber = WsClient::connect(&server.ws_url("room=keyed")).await;
    subscriber.hello().await;
    let right = format!("Bearer {PUBLISH_KEY}");
    let huge = format!("Bearer {}", "k".repeat(16 * 1024));
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let wrong: [Option<&str>; 8] = [
        None,
        Some("Bearer wrong-key-0123456789abcdef"),
        Some(&admin),
        Some(PUBLISH_KEY),
        Some("Basic dGVzdDp0ZXN0"),
        Some("Bearer "),
        Some(&huge),
        Some("Bearer test-publish-key-012345678"),
    ];
    for authorization in wrong {
        let response = publish(&base, "keyed", "forged", authorization).await;
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"realtime-publish\"");
    }
    assert_eq!(server.state.metrics.trips(realtime_server::metrics::LimitKind::publish_refused), wrong.len() as u64);
    let response = publish(&base, "keyed", "real", Some(&right)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), "1");
    // The first message the subscriber ever sees is the keyed one: no refused publish got through.
    assert_eq!(next_text(&mut subscriber).await, "real");
    // The publish key does not open the admin surface.
    for path in ["/metrics", "/realtime/stats"] {
        let response = reqwest::Client::new().get(format!("{base}{path}")).header("authorization", &right).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let response = reqwest::Client::new().get(format!("{base}{path}")).header("authorization", &admin).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // A batch publish is behind the same key.
    let batch = reqwest::Client::new()
        .post(format!("{base}/realtime/publish?room=keyed"))
        .header("content-type", "application/x-realtime-frames")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 401);
}

#[tokio::test]
async fn without_a_key_publish_stays_open() {
    let server = Server::default().await;
    assert_eq!(publish(&format!("http://{}", server.addr), "open", "hello", None).await.status(), 202);
}

#[tokio::test]
async fn the_publish_listener_serves_publish_only_and_the_main_listener_none() {
    let mut config = keyed(Config::default());
    config.auth.publish_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config).await;
    let main = format!("http://{}", server.addr);
    let status = publish(&main, "moved", "x", Some(&format!("Bearer {PUBLISH_KEY}"))).await.status();
    assert!(status == 404 || status == 405, "the main listener serves no publish: {status}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let publish_base = format!("http://{}", listener.local_addr().unwrap());
    let router = publish_key::router(server.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut subscriber = WsClient::connect(&server.ws_url("room=moved")).await;
    subscriber.hello().await;
    assert_eq!(publish(&publish_base, "moved", "x", None).await.status(), 401);
    assert_eq!(publish(&publish_base, "moved", "via listener", Some(&format!("Bearer {PUBLISH_KEY}"))).await.status(), 202);
    assert_eq!(next_text(&mut subscriber).await, "via listener");
    let other = reqwest::get(format!("{publish_base}/realtime/sse?room=moved")).await.unwrap();
    assert_eq!(other.status(), 404, "only publish there");
}

#[tokio::test]
async fn credentials_only_for_exact_allowlisted_origins() {
    let config = Config { allowed_origins: vec!["https://app.example".into()], allow_loopback_origins: true, ..Config::default() };
    let server = Server::start(config).await;
    let client = reqwest::Client::new();
    let url = server.url("/realtime/publish?room=cors");
    let send = |origin: Option<&'static str>, preflight: bool| {
        let mut request = if preflight {
            client.request(reqwest::Method::OPTIONS, &url).header("access-control-request-method", "POST").header("access-control-request-headers", "authorization")
        } else {
            client.post(&url).header("content-type", "text/plain").body("x")
        };
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    for preflight in [false, true] {
        let allowed = send(Some("https://app.example"), preflight).await.unwrap();
        assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
        assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
        assert!(allowed.headers().get_all("vary").iter().any(|value| value == "Origin"));
        // Let in by the test-only loopback switch: no credentials.
        let loopback = send(Some("http://127.0.0.1:5555"), preflight).await.unwrap();
        assert_eq!(loopback.headers()["access-control-allow-origin"], "http://127.0.0.1:5555");
        assert!(loopback.headers().get("access-control-allow-credentials").is_none());
        for origin in [Some("https://evil.example"), Some("https://app.example.evil"), Some("null"), None] {
            let response = send(origin, preflight).await.unwrap();
            assert!(response.headers().get("access-control-allow-credentials").is_none(), "{origin:?}");
            assert!(response.headers().get("access-control-allow-origin").is_none(), "{origin:?}");
            assert!(response.headers().get_all("vary").iter().any(|value| value == "Origin"), "{origin:?}");
        }
    }
    // Nothing anywhere sends a wildcard.
    let response = send(Some("https://app.example"), false).await.unwrap();
    assert!(response.headers().get_all("access-control-allow-origin").iter().all(|value| value != "*"));
}

fn demo_config(lifetime_secs: u64) -> Config {
    let signer = DemoSigner::random(lifetime_secs).unwrap();
    let verifier = Verifier::new(vec![signer.verify_key().unwrap()], None, None, auth::DEFAULT_LEEWAY_SECS).unwrap();
    Config { auth: AuthConfig { demo: Some(Arc::new(signer)), verifier: Some(Arc::new(verifier)), ..AuthConfig::default() }, ..Config::default() }
}

async fn demo_token(server: &Server, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new().post(server.url("/realtime/demo-token")).header("content-type", content_type).body(body).send().await.unwrap()
}

#[tokio::test]
async fn the_demo_endpoint_signs_short_lived_tokens_the_server_verifies() {
    let server = Server::start(demo_config(3)).await;
    let before = auth::unix_now();
    let response = demo_token(&server, "application/json", r#"{"name": "Ada L."}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let token = answer["token"].as_str().unwrap();
    let expires_at = answer["expires_at"].as_u64().unwrap();
    assert!(expires_at >= before + 3 && expires_at <= auth::unix_now() + 3);
    let verifier = server.state.config.auth.verifier.clone().unwrap();
    let principal = verifier.verify(token, auth::unix_now()).unwrap();
    assert_eq!(principal.subject, "Ada L.");
    assert_eq!(answer["subject"], "Ada L.");
    assert_eq!((principal.channels.clone(), principal.publish.clone()), (vec!["*".to_owned()], vec!["*".to_owned()]));
    assert_eq!(principal.expires_at, expires_at);
    // After its lifetime (and the leeway) the token is refused: no sleeping, the clock is an input.
    assert_eq!(verifier.verify(token, expires_at + auth::DEFAULT_LEEWAY_SECS), Err(AuthError::Expired));
    // Another server's demo secret is another key.
    let other = Server::start(demo_config(3)).await;
    assert_eq!(other.state.config.auth.verifier.clone().unwrap().verify(token, auth::unix_now()), Err(AuthError::Invalid(Invalid::Signature)));

    for body in [r#"{"name": ""}"#, r#"{"name": " x"}"#, r#"{"name": "a\nb"}"#, r#"{"name": "<script>"}"#, r#"{"name": 7}"#, r#"{}"#, "[", r#"{"name": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#] {
        assert_eq!(demo_token(&server, "application/json", body).await.status(), 400, "{body}");
    }
    assert_eq!(demo_token(&server, "text/plain", r#"{"name": "a"}"#).await.status(), 415);
    assert_eq!(demo_token(&server, "application/json", format!(r#"{{"name": "a", "x": "{}"}}"#, "x".repeat(4096))).await.status(), 413);
    // Without --demo-auth there is no such endpoint.
    let plain = Server::default().await;
    let status = demo_token(&plain, "application/json", r#"{"name": "a"}"#).await.status();
    assert!(status == 404 || status == 405, "{status}");
}

// ---- The binary ----

/// A started binary: (child, its base URL, the extra listeners' lines); or how it exited:
/// (exit code, stderr).
type Started = Result<(Child, String, Vec<String>), (Option<i32>, String)>;

/// The binary on `listen` with `args` and exactly `env` for the auth variables; its stdout read
/// up to its main `listening on` line.
fn start_binary(listen: &str, args: &[&str], env: &[(&str, &str)], log: &str) -> Started {
    let mut command = Command::new(env!("CARGO_BIN_EXE_realtime-server"));
    command.args(["--listen", listen]).args(args).env("RUST_LOG", log);
    for name in ["RT_JWT_SECRET", "RT_PUBLISH_KEY", admin::TOKEN_ENV] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut others = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) => match line.strip_prefix("listening on ") {
                Some(address) => return Ok((child, address.to_owned(), others)),
                None => others.push(line),
            },
            _ => {
                let status = child.wait().unwrap();
                let mut stderr = String::new();
                child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
                return Err((status.code(), stderr));
            }
        }
    }
}

/// Stops the child and returns its stderr.
fn stop(mut child: Child) -> String {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    log
}

#[test]
fn the_binary_runs_open_on_loopback_and_refuses_elsewhere() {
    let (child, _, _) = start_binary("127.0.0.1:0", &[], &[], "info").unwrap();
    let log = stop(child);
    assert_eq!(log.lines().filter(|line| line.contains("running open")).count(), 1, "{log}");

    let (code, stderr) = start_binary("0.0.0.0:0", &[], &[], "info").unwrap_err();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("refusing to run open") && stderr.contains("RT_JWT_SECRET") && stderr.contains("--insecure-open"), "{stderr}");
    let (code, stderr) = start_binary("0.0.0.0:0", &[], &[("RT_JWT_SECRET", SECRET)], "info").unwrap_err();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("RT_PUBLISH_KEY") && !stderr.contains(SECRET), "{stderr}");
    let (code, stderr) = start_binary("0.0.0.0:0", &["--demo-auth"], &[("RT_PUBLISH_KEY", PUBLISH_KEY)], "info").unwrap_err();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--demo-auth"), "{stderr}");
    let (code, stderr) = start_binary("127.0.0.1:0", &[], &[("RT_PUBLISH_KEY", ADMIN_TOKEN), (admin::TOKEN_ENV, ADMIN_TOKEN)], "info").unwrap_err();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("admin token") && !stderr.contains(ADMIN_TOKEN), "{stderr}");
    let (code, _) = start_binary("127.0.0.1:0", &["--allow-origin", "*"], &[], "info").unwrap_err();
    assert_eq!(code, Some(2), "a wildcard origin is refused");

    // The key sources through the binary: a JWKS, a PEM public key (not a private one).
    let jwks = fixture("test-only-jwks.json");
    let (child, _, _) = start_binary("127.0.0.1:0", &["--jwks", jwks.to_str().unwrap()], &[], "info").unwrap();
    assert!(!stop(child).contains("running open"));
    let public = fixture("test-only-ec-public.pem");
    let (child, _, _) = start_binary("127.0.0.1:0", &["--jwt-public-key", public.to_str().unwrap()], &[], "info").unwrap();
    assert!(!stop(child).contains("running open"));
    let private = fixture("test-only-ec-private.pem");
    let (code, stderr) = start_binary("127.0.0.1:0", &["--jwt-public-key", private.to_str().unwrap()], &[], "info").unwrap_err();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("private key") && !stderr.contains("BEGIN"), "{stderr}");

    let (child, _, _) = start_binary("0.0.0.0:0", &["--insecure-open"], &[], "info").unwrap();
    let log = stop(child);
    assert!(log.contains("--insecure-open"), "{log}");
    let (child, _, _) = start_binary("0.0.0.0:0", &[], &[("RT_JWT_SECRET", SECRET), ("RT_PUBLISH_KEY", PUBLISH_KEY)], "info").unwrap();
    let log = stop(child);
    assert!(!log.contains("open"), "{log}");
}

#[tokio::test]
async fn the_binary_serves_publish_on_its_own_listener() {
    let (child, base, others) =
        start_binary("127.0.0.1:0", &["--publish-listen", "127.0.0.1:0"], &[("RT_PUBLISH_KEY", PUBLISH_KEY)], "info").unwrap();
    let publish_base = others.iter().find_map(|line| line.strip_prefix("publish listening on ")).expect("a publish listener").to_owned();
    let right = format!("Bearer {PUBLISH_KEY}");
    assert_eq!(publish(&publish_base, "b", "x", Some(&right)).await.status(), 202);
    assert_eq!(publish(&publish_base, "b", "x", None).await.status(), 401);
    let status = publish(&base, "b", "x", Some(&right)).await.status();
    assert!(status == 404 || status == 405, "{status}");
    stop(child);
}

/// Runs the binary at `RUST_LOG=trace` with every secret configured, sends tokens, keys and the
/// session key every way a client or an attacker would (headers, query strings, WebSocket
/// frames, bodies, right and wrong), and checks that none of them appears in its log.
#[tokio::test]
async fn no_secret_reaches_the_log_at_the_most_verbose_level() {
    let (child, base, _) = start_binary(
        "127.0.0.1:0",
        &["--demo-auth", "--demo-token-secs", "3", "--allow-kick"],
        &[("RT_PUBLISH_KEY", PUBLISH_KEY), (admin::TOKEN_ENV, ADMIN_TOKEN)],
        "trace",
    )
    .unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/realtime/demo-token"))
        .header("content-type", "application/json")
        .body(r#"{"name": "logged"}"#)
        .send()
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let token = answer["token"].as_str().unwrap().to_owned();
    let forged_token = hs(&claims());
    let mut secrets = vec![token.clone(), forged_token.clone(), PUBLISH_KEY.to_owned(), ADMIN_TOKEN.to_owned()];
    for secret in [&token, &forged_token, &PUBLISH_KEY.to_owned(), &ADMIN_TOKEN.to_owned()] {
        let bearer = format!("Bearer {secret}");
        let authorization = bearer.as_str();
        for (method, path) in [
            ("POST", "/realtime/publish?room=logs".to_owned()),
            ("GET", "/metrics".to_owned()),
            ("GET", "/realtime/stats".to_owned()),
            ("POST", "/realtime/kick?sid=AAAAAAAAAAAAAAAAAAAAAA".to_owned()),
            ("GET", format!("/realtime/poll?room=logs&rt_conn=1&access_token={secret}")),
            ("GET", format!("/realtime/nowhere?token={secret}")),
        ] {
            let url = format!("{base}{path}");
            let request = if method == "POST" { client.post(url).body(secret.clone()) } else { client.get(url) };
            let _ = request.header("authorization", authorization).header("content-type", "text/plain").header("cookie", format!("rt={secret}")).send().await.unwrap().bytes().await;
        }
    }
    // A session key from a hello (protocol v3: in frames, never in a URL), used to resume over
    // every transport; the demo token is the connect credential.
    let ws_base = base.replace("http://", "ws://");
    let session = |resume: Option<&Hello>, stream: Option<String>| {
        let resume = resume.map(|hello| Resume { session_id: hello.session_id.clone(), secret: hello.secret.clone(), last: 0 });
        Frame::Session(SessionFrame { resume, stream })
    };
    let credential = Frame::Token(Credential(token.clone()));
    let mut ws = WsClient::connect_v2(&format!("{ws_base}/realtime?rt_v=3&room=logs&rt_conn=1&token={token}")).await;
    ws.send_raw_text(&frames(&[session(None, None), credential.clone()])).await;
    let hello = match ws.frame().await {
        Frame::Hello(hello) | Frame::AuthHello(hello, _) => hello,
        other => panic!("expected hello, got {other:?}"),
    };
    secrets.push(hello.secret.clone());
    drop(ws);
    let mut resumed = WsClient::connect_v2(&format!("{ws_base}/realtime?rt_v=3&room=logs&rt_conn=2")).await;
    resumed.send_raw_text(&frames(&[session(Some(&hello), None), credential.clone()])).await;
    match resumed.frame().await {
        Frame::Hello(again) | Frame::AuthHello(again, _) => assert!(again.resumed, "the session key resumed the session"),
        other => panic!("expected hello, got {other:?}"),
    }
    resumed.send_raw_text(&format!("msg s=1 {token}\n{token}")).await;
    resumed.send_raw_text(&token).await;
    drop(resumed);
    let resume_body = frames(&[session(Some(&hello), None), credential.clone()]);
    let _ = client.post(format!("{base}/realtime/poll?rt_v=3&room=logs&rt_conn=3")).body(resume_body.clone()).timeout(std::time::Duration::from_secs(1)).send().await;
    let upload = format!("{}msg s=2 {token}\n{token}", frames(&[session(Some(&hello), None)]));
    let _ = client.post(format!("{base}/realtime/send?rt_v=3&room=logs&rt_conn=3")).body(upload).send().await;
    // SSE: the stream id comes in the stream, the bind carries the session and the token.
    if let Ok(response) = client.get(format!("{base}/realtime/sse?rt_v=3&room=logs&rt_conn=4")).send().await {
        let mut reader = common::SseReader::new(response);
        let (_, _, data) = common::parse_event(&reader.next_event().await);
        if let Ok((Frame::Pending { stream }, _)) = wire::decode(data.as_bytes(), 1024) {
            secrets.push(stream.clone());
            let bind = frames(&[session(Some(&hello), Some(stream)), credential.clone()]);
            let _ = client.post(format!("{base}/realtime/bind?rt_v=3&rt_conn=4")).body(bind).send().await;
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), reader.next_event()).await;
        }
    }
    let log = stop(child);
    assert!(log.contains("DEBUG") && log.contains("attached"), "the verbose log is there:\n{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret appears in the log:\n{log}");
        // Nor any long piece of it (a token cut across a line, a header dumped in parts).
        let piece = &secret[secret.len() / 2..(secret.len() / 2 + 16).min(secret.len())];
        assert!(!log.contains(piece), "part of a secret appears in the log:\n{log}");
    }
}

/// A publish that announces a huge body and never sends it is refused at once on its headers:
/// the key is checked before a byte of the body is read or buffered.
#[tokio::test]
async fn a_refused_publish_is_answered_before_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(keyed(Config::default())).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /realtime/publish?room=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\
                Authorization: Bearer wrong-key-0123456789abcdef\r\nContent-Length: 100000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(LIMIT, stream.read(&mut answer)).await.expect("answered without the body").unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn authenticate_in_open_mode_and_with_tokens() {
    let open = AuthConfig::default();
    assert!(!open.required());
    assert_eq!(open.authenticate(None, NOW), Ok(None));
    assert_eq!(open.authenticate(Some("garbage"), NOW), Ok(None));
    let closed = AuthConfig { verifier: Some(Arc::new(hs_verifier())), ..AuthConfig::default() };
    assert!(closed.required());
    assert_eq!(closed.authenticate(None, NOW), Err(AuthError::Missing));
    assert_eq!(closed.authenticate(Some(""), NOW), Err(AuthError::Missing));
    assert_eq!(closed.authenticate(Some(&hs(&claims())), NOW), Ok(Some(alice())));
    assert_eq!(closed.authenticate(Some(&hs(&claims())), NOW + 65), Err(AuthError::Expired));
    assert_eq!(AuthError::Missing.code(), "missing");
    assert_eq!(AuthError::Invalid(Invalid::Signature).code(), "invalid");
}

#[test]
fn bearer_tokens_from_headers() {
    let mut headers = axum::http::HeaderMap::new();
    assert_eq!(auth::bearer_token(&headers), None);
    for (value, token) in [("Bearer abc.def.ghi", Some("abc.def.ghi")), ("bearer  x ", Some("x")), ("Basic abc", None), ("Bearer ", None), ("abc", None)] {
        headers.insert("authorization", value.parse().unwrap());
        assert_eq!(auth::bearer_token(&headers), token, "{value:?}");
    }
}

#[test]
fn deeply_nested_json_in_a_header_is_refused_without_a_crash() {
    // Parsed before the signature is checked, so anyone can send it: serde_json's recursion
    // limit turns it into an error, and the 8 KiB bound keeps it small.
    let deep = format!(r#"{{"alg":"HS256","x":{}{}}}"#, "[".repeat(2500), "]".repeat(2500));
    let token = format!("{}.{}.AAAA", b64(deep.as_bytes()), b64(claims().to_string().as_bytes()));
    assert!(token.len() <= auth::MAX_TOKEN_BYTES);
    assert!(matches!(hs_verifier().verify(&token, NOW), Err(AuthError::Invalid(_))));
    let deeper = format!(r#"{{"alg":"HS256","x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let token = format!("{}.{}.AAAA", b64(deeper.as_bytes()), b64(b"{}"));
    assert_eq!(hs_verifier().verify(&token, NOW), Err(AuthError::Invalid(Invalid::TooLarge)));
}

/// An oversized `Authorization` header on the binary's publish endpoint is refused, and the
/// server keeps serving.
#[tokio::test]
async fn oversized_authorization_headers_are_refused() {
    let (child, base, _) = start_binary("127.0.0.1:0", &[], &[("RT_PUBLISH_KEY", PUBLISH_KEY)], "info").unwrap();
    for size in [8 * 1024, 64 * 1024, 1 << 20] {
        let bearer = format!("Bearer {}", "k".repeat(size));
        let result = reqwest::Client::new()
            .post(format!("{base}/realtime/publish?room=big"))
            .header("content-type", "text/plain")
            .header("authorization", bearer)
            .body("x")
            .send()
            .await;
        // 401 for a key too long to be the key; 431 (or a closed connection) past the header limit.
        if let Ok(response) = result {
            assert!(response.status() == 401 || response.status() == 431, "{size}: {}", response.status());
        }
    }
    assert_eq!(publish(&base, "big", "x", Some(&format!("Bearer {PUBLISH_KEY}"))).await.status(), 202);
    stop(child);
}

/// Frames as one text batch (a WebSocket message or a POST body).
fn frames(frames: &[Frame]) -> String {
    let mut bytes = Vec::new();
    for frame in frames {
        wire::encode(frame, Carrier::Text, &mut bytes);
    }
    String::from_utf8(bytes).unwrap_or_default()
}

/// Review finding 7: the leeway on `exp` (5 s here) applies to connects as the README says: a
/// token is accepted while now < exp + leeway, and refused (4005) after.
#[tokio::test]
async fn the_exp_leeway_applies_to_connects() {
    let config = Config { auth: AuthConfig { verifier: Some(Arc::new(hs_verifier())), ..AuthConfig::default() }, ..Config::default() };
    let server = Server::start(config).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let connect = |exp: u64| {
        let body = frames(&[Frame::Session(SessionFrame::default()), Frame::Token(Credential(hs(&json!({"sub": "late", "exp": exp}))))]);
        let url = server.url("/realtime/poll?rt_v=3&rt_conn=1");
        async move {
            let response = reqwest::Client::new().post(url).body(body).send().await.unwrap();
            let frames = wire::decode_all(&response.bytes().await.unwrap(), 1 << 20).unwrap();
            frames.into_iter().next().unwrap()
        }
    };
    let within = connect(now - 2).await;
    assert!(matches!(within, Frame::AuthHello(..)), "2 s past exp, within the leeway: {within:?}");
    let past = connect(now - 10).await;
    assert!(matches!(&past, Frame::Close(close) if close.code == 4005), "{past:?}");
}

/// Review finding 6: a plain reverse proxy in front of a loopback listener shows as an
/// `--allowed-host` that is not a loopback name; the server then counts as public.
#[test]
fn an_allowed_host_other_than_loopback_counts_as_a_proxy_for_the_startup_rule() {
    let loopback = "127.0.0.1:19102".parse().unwrap();
    let mut proxied = Config::default();
    proxied.edge.allowed_hosts = vec!["app.example".into()];
    let error = auth::startup_rule(loopback, &proxied).unwrap_err();
    assert!(error.contains("--allowed-host"), "{error}");
    for local in ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080"] {
        let mut config = Config::default();
        config.edge.allowed_hosts = vec![local.into()];
        assert!(auth::startup_rule(loopback, &config).unwrap().unwrap().contains("running open"), "{local}");
    }
}
