//! The authentication frames of protocol v3 (PROTOCOL.md §9.2): `session`, `token`, `authed`,
//! `pending`, the `exp` and `sub` of a v3 `hello` and the `f` (verified subject) of a `msg`.
//!
//! Only the reference server speaks v3 so far, so everything here that the wasm client would
//! never call is compiled for the host only (`cfg(not(target_arch = "wasm32"))`): a v2 client
//! does not grow for frames it never sees. When the client moves to v3, the halves it needs
//! (encoding `session` and `token`, decoding `authed`, `pending`, `exp`, `sub` and `f`) lose
//! their gate, and so do the v3 [`Frame`] variants (each costs the wasm its arms in `Frame`'s
//! drop, clone and comparison code, measured at ~200 bytes gzipped for all six).
//!
//! Invariants: as the rest of the codec (never panics, every error a [`WireError`], the encoder
//! produces only what the decoder accepts); a credential is 1-8,192 bytes of ASCII 0x21-0x7E and
//! never appears in a `Debug` output; a subject is 1-256 bytes of UTF-8, percent-encoded on the
//! wire.

use crate::prelude::*;
use super::{parse_number, parse_token, push_field, push_number_field, Fields, WireError};
use super::Frame;
use super::Hello;

/// The protocol version whose credentials travel in frames, never in URLs (PROTOCOL.md §9).
pub const PROTOCOL_V3: u32 = 3;
/// Longest credential (`token` body), in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 8192;
/// Longest subject (`sub`, `f`) before percent-encoding, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// A `session` frame: which session a connection, poll, bind or upload is about. Its `Debug`
/// names no session id, key or stream id.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SessionFrame {
    /// The session to resume (None: connect a fresh session).
    pub resume: Option<Resume>,
    /// On a bind (§9.3): the id of the event stream the `pending` event named.
    pub stream: Option<String>,
}

/// The session named by a `session` frame's `sid`, `key` and `last`. Its `Debug` shows only
/// `last`.
#[derive(Clone, PartialEq, Eq)]
pub struct Resume {
    pub session_id: String,
    pub secret: String,
    /// Highest server seq the client delivered (`rt_last` in v2); absent on the wire = 0.
    pub last: u64,
}

impl core::fmt::Debug for SessionFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionFrame").field("resume", &self.resume).field("stream", &self.stream.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl core::fmt::Debug for Resume {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Resume").field("session_id", &"<redacted>").field("secret", &"<redacted>").field("last", &self.last).finish()
    }
}

/// An opaque credential (a JWT for the reference server). Its `Debug` shows only its length, so
/// a frame printed to a log never carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(pub String);

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// What a v3 `hello` adds: when the credential expires and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelloAuth {
    /// Milliseconds until the credential expires (None: it does not).
    pub expires_in_ms: Option<u64>,
    /// The verified principal (None: a server without authentication).
    pub subject: Option<String>,
}

/// Whether `credential` is 1 to 8,192 bytes of printable ASCII without space.
pub fn is_valid_credential(credential: &[u8]) -> bool {
    !credential.is_empty() && credential.len() <= MAX_CREDENTIAL_BYTES && credential.iter().all(|byte| (0x21..0x7f).contains(byte))
}

/// Whether `subject` can be a `sub` or an `f`: 1 to 256 bytes.
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty() && subject.len() <= MAX_SUBJECT_BYTES
}

/// Appends `subject` percent-encoded: every byte outside 0x21-0x7E, and `%`, as `%XX`.
#[cfg(not(target_arch = "wasm32"))]
pub fn push_subject(out: &mut Vec<u8>, subject: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in subject.bytes() {
        if (0x21..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte);
        } else {
            out.push(b'%');
            out.extend(HEX.get(usize::from(byte >> 4)).copied());
            out.extend(HEX.get(usize::from(byte & 15)).copied());
        }
    }
}

/// Decodes a percent-encoded subject; it must be UTF-8 of 1 to 256 bytes.
pub fn parse_subject(text: &[u8]) -> Result<String, WireError> {
    fn hex(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.iter();
    while let Some(&byte) = rest.next() {
        if byte == b'%' {
            let high = rest.next().copied().and_then(hex).ok_or(WireError::BadSubject)?;
            let low = rest.next().copied().and_then(hex).ok_or(WireError::BadSubject)?;
            bytes.push(high << 4 | low);
        } else {
            bytes.push(byte);
        }
        if bytes.len() > MAX_SUBJECT_BYTES {
            return Err(WireError::BadSubject);
        }
    }
    match String::from_utf8(bytes) {
        Ok(subject) if is_valid_subject(&subject) => Ok(subject),
        _ => Err(WireError::BadSubject),
    }
}

/// Encodes the v3 frames (and `hello` with its [`HelloAuth`]); other frames are not written.
pub(super) fn encode(frame: &Frame, carrier: super::Carrier, out: &mut Vec<u8>) {
    match frame {
        #[cfg(not(target_arch = "wasm32"))]
        Frame::Attributed { subject, message: super::ChannelMessage { channel, position, message } } => {
            let channel = Some((channel.as_str(), *position));
            super::encode_message_parts(message.seq, channel, Some(subject), message.event.as_deref(), &message.payload, carrier, out);
        }
        Frame::Session(session) => {
            out.extend_from_slice(b"session");
            if let Some(stream) = &session.stream {
                push_field(out, b"stream", stream.as_bytes());
            }
            if let Some(resume) = &session.resume {
                push_field(out, b"sid", resume.session_id.as_bytes());
                push_field(out, b"key", resume.secret.as_bytes());
                push_number_field(out, b"last", resume.last);
            }
            out.push(b'\n');
        }
        Frame::Token(Credential(credential)) => {
            out.extend_from_slice(b"token");
            push_number_field(out, b"n", credential.len() as u64);
            out.push(b'\n');
            out.extend_from_slice(credential.as_bytes());
        }
        #[cfg(not(target_arch = "wasm32"))]
        Frame::Authed { expires_in_ms } => {
            out.extend_from_slice(b"authed");
            if let Some(ms) = expires_in_ms {
                push_number_field(out, b"exp", *ms);
            }
            out.push(b'\n');
        }
        #[cfg(not(target_arch = "wasm32"))]
        Frame::Pending { stream } => {
            out.extend_from_slice(b"pending");
            push_field(out, b"stream", stream.as_bytes());
            out.push(b'\n');
        }
        #[cfg(not(target_arch = "wasm32"))]
        Frame::AuthHello(hello, auth) => {
            let mut plain = Vec::new();
            super::encode(&Frame::Hello(hello.clone()), super::Carrier::Binary, &mut plain);
            // The hello ends with its LF and has no body: the fields go before it.
            plain.pop();
            out.extend_from_slice(&plain);
            push_hello_auth(out, auth);
            out.push(b'\n');
        }
        _ => {}
    }
    let _ = carrier;
}

/// The `exp` and `sub` fields of a v3 hello.
#[cfg(not(target_arch = "wasm32"))]
fn push_hello_auth(out: &mut Vec<u8>, auth: &HelloAuth) {
    if let Some(ms) = auth.expires_in_ms {
        push_number_field(out, b"exp", ms);
    }
    if let Some(subject) = &auth.subject {
        out.extend_from_slice(b" sub=");
        push_subject(out, subject);
    }
}

/// The ` f=<subject>` field of a message published by a verified client.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn push_from(out: &mut Vec<u8>, subject: &str) {
    out.extend_from_slice(b" f=");
    push_subject(out, subject);
}

/// A decoded hello, as [`Frame::AuthHello`] when it carries `exp` or `sub`.
pub(super) fn hello_frame(fields: &mut Fields<'_>, hello: Hello) -> Result<Frame, WireError> {
    let expires_in_ms = fields.take(b"exp").map(parse_number).transpose()?;
    // The client's API has no use for its own subject: its wasm leaves `sub` unread.
    #[cfg(not(target_arch = "wasm32"))]
    let subject = fields.take(b"sub").map(parse_subject).transpose()?;
    #[cfg(target_arch = "wasm32")]
    let subject = None;
    if expires_in_ms.is_some() || subject.is_some() {
        return Ok(Frame::AuthHello(hello, HelloAuth { expires_in_ms, subject }));
    }
    Ok(Frame::Hello(hello))
}

/// A decoded channel message, as [`Frame::Attributed`] when it carries `f`. A plain `msg` (no
/// `ch`) keeps no `f`: only the server writes `f`, and only on channel messages.
pub(super) fn attribute(fields: &mut Fields<'_>, frame: Frame) -> Result<Frame, WireError> {
    if let Frame::ChannelMessage(message) = frame {
        return match fields.take(b"f") {
            Some(subject) => Ok(Frame::Attributed { subject: parse_subject(subject)?, message }),
            None => Ok(Frame::ChannelMessage(message)),
        };
    }
    Ok(frame)
}

/// Decodes the v3 frame types; None for any other type.
pub(super) fn decode(
    fields: &mut super::fields::Fields<'_>,
    body: &[u8],
) -> Option<Result<Frame, super::WireError>> {
    let frame = match fields.kind {
        // What only a server reads: the client's wasm keeps no decoder for it.
        #[cfg(not(target_arch = "wasm32"))]
        b"session" => decode_session(fields),
        #[cfg(not(target_arch = "wasm32"))]
        b"token" if is_valid_credential(body) => Ok(Frame::Token(Credential(String::from_utf8_lossy(body).into_owned()))),
        #[cfg(not(target_arch = "wasm32"))]
        b"token" if body.len() > MAX_CREDENTIAL_BYTES => Err(WireError::BodyTooLarge),
        #[cfg(not(target_arch = "wasm32"))]
        b"token" => Err(WireError::BadCredential),
        b"authed" => fields.take(b"exp").map(parse_number).transpose().map(|expires_in_ms| Frame::Authed { expires_in_ms }),
        b"pending" => fields.require(b"stream").and_then(parse_token).map(|stream| Frame::Pending { stream }),
        _ => return None,
    };
    let _ = body;
    Some(frame)
}

#[cfg(not(target_arch = "wasm32"))]
fn decode_session(fields: &mut Fields<'_>) -> Result<Frame, WireError> {
    let stream = fields.take(b"stream").map(parse_token).transpose()?;
    let (sid, key, last) = (fields.take(b"sid"), fields.take(b"key"), fields.take(b"last"));
    let resume = match (sid, key) {
        (Some(sid), Some(key)) => Some(Resume {
            session_id: parse_token(sid)?,
            secret: parse_token(key)?,
            last: last.map(parse_number).transpose()?.unwrap_or(0),
        }),
        (None, None) if last.is_none() => None,
        // Half a resume (a key without its id, a `last` of no session) is no request at all.
        _ => return Err(WireError::MissingField),
    };
    Ok(Frame::Session(SessionFrame { resume, stream }))
}

/// Encodes a message frame with its `f` (the publisher's verified subject, when given), as
/// [`super::encode_channel_message`] does without one.
#[cfg(not(target_arch = "wasm32"))]
pub fn encode_attributed_message(
    seq: u64,
    channel: Option<(&str, Option<super::Position>)>,
    subject: Option<&str>,
    event: Option<&str>,
    payload: &super::Payload,
    carrier: super::Carrier,
    out: &mut Vec<u8>,
) {
    super::encode_message_parts(seq, channel, subject, event, payload, carrier, out);
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::super::{decode, decode_all, encode_to_vec, Carrier, ChannelMessage, Message, Payload, Position, DEFAULT_MAX_BODY_BYTES};
    use super::*;

    fn hello() -> Hello {
        Hello { version: 3, session_id: "sid".into(), secret: "key".into(), heartbeat_ms: 25_000, max_body_bytes: 1 << 20, ack: 0, resumed: false }
    }

    fn channel_message(seq: u64) -> ChannelMessage {
        ChannelMessage {
            channel: "lobby".into(),
            position: Some(Position { epoch: 0x9f86_d081_884c_7d65, offset: 4 }),
            message: Message { seq, event: Some("chat".into()), payload: Payload::Binary(vec![0, 1, 255]) },
        }
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Session(SessionFrame::default()),
            Frame::Session(SessionFrame { resume: Some(Resume { session_id: "abc".into(), secret: "d-e_f".into(), last: 7 }), stream: None }),
            Frame::Session(SessionFrame { resume: None, stream: Some("str3am".into()) }),
            Frame::Session(SessionFrame { resume: Some(Resume { session_id: "a".into(), secret: "b".into(), last: u64::MAX }), stream: Some("s".into()) }),
            Frame::Token(Credential("eyJhbGciOi.J9.x~!".into())),
            Frame::Token(Credential("t".repeat(MAX_CREDENTIAL_BYTES))),
            Frame::Authed { expires_in_ms: Some(60_000) },
            Frame::Authed { expires_in_ms: None },
            Frame::Pending { stream: "AAAAAAAAAAAAAAAAAAAAAA".into() },
            Frame::AuthHello(hello(), HelloAuth { expires_in_ms: Some(5), subject: Some("alice@example.com".into()) }),
            Frame::AuthHello(hello(), HelloAuth { expires_in_ms: None, subject: Some("Zoë Ünïcode 100% sure".into()) }),
            Frame::AuthHello(hello(), HelloAuth { expires_in_ms: Some(0), subject: None }),
            Frame::Attributed { subject: "bob".into(), message: channel_message(9) },
            Frame::Attributed { subject: "a b%c\n".into(), message: channel_message(10) },
        ]
    }

    #[test]
    fn every_v3_frame_round_trips_on_every_carrier() {
        for carrier in [Carrier::Binary, Carrier::Text, Carrier::Sse] {
            let mut batch = Vec::new();
            for frame in frames() {
                let bytes = encode_to_vec(&frame, carrier);
                let (decoded, used) = decode(&bytes, DEFAULT_MAX_BODY_BYTES).expect("decodes");
                assert_eq!(decoded, frame);
                assert_eq!(used, bytes.len());
                batch.extend_from_slice(&bytes);
            }
            assert_eq!(decode_all(&batch, DEFAULT_MAX_BODY_BYTES).unwrap(), frames());
        }
    }

    #[test]
    fn exact_bytes() {
        let session = Frame::Session(SessionFrame { resume: Some(Resume { session_id: "S".into(), secret: "K".into(), last: 3 }), stream: Some("X".into()) });
        assert_eq!(encode_to_vec(&session, Carrier::Text), b"session stream=X sid=S key=K last=3\n");
        assert_eq!(encode_to_vec(&Frame::Token(Credential("abc".into())), Carrier::Text), b"token n=3\nabc");
        assert_eq!(encode_to_vec(&Frame::Authed { expires_in_ms: Some(9) }, Carrier::Text), b"authed exp=9\n");
        assert_eq!(encode_to_vec(&Frame::Pending { stream: "P".into() }, Carrier::Text), b"pending stream=P\n");
        let hello = Frame::AuthHello(hello(), HelloAuth { expires_in_ms: Some(1000), subject: Some("a%b c".into()) });
        assert_eq!(
            encode_to_vec(&hello, Carrier::Text),
            b"hello v=3 sid=sid key=key hb=25000 max=1048576 ack=0 resumed=0 exp=1000 sub=a%25b%20c\n"
        );
        let message = Frame::Attributed {
            subject: "al ice".into(),
            message: ChannelMessage { channel: "c".into(), position: None, message: Message { seq: 2, event: None, payload: Payload::Text("hi".into()) } },
        };
        assert_eq!(encode_to_vec(&message, Carrier::Text), b"msg s=2 f=al%20ice ch=c k=t n=2\nhi");
        // A plain v2 hello and message are unchanged.
        assert_eq!(decode(b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0\n", 10).unwrap().0, Frame::Hello(Hello {
            version: 3, session_id: "a".into(), secret: "b".into(), heartbeat_ms: 1, max_body_bytes: 1, ack: 0, resumed: false
        }));
    }

    #[test]
    fn a_plain_msg_keeps_no_f() {
        let (frame, _) = decode(b"msg s=1 f=mallory k=t n=1\nx", 10).unwrap();
        assert_eq!(frame, Frame::Message(Message { seq: 1, event: None, payload: Payload::Text("x".into()) }));
    }

    #[test]
    fn malformed_v3_frames_are_errors_not_panics() {
        let oversized = [&b"token n=8193\n"[..], &vec![b'a'; MAX_CREDENTIAL_BYTES + 1]].concat();
        let cases: &[(&[u8], WireError)] = &[
            (b"session sid=abc\n", WireError::MissingField),
            (b"session key=abc\n", WireError::MissingField),
            (b"session last=3\n", WireError::MissingField),
            (b"session sid=a/b key=c\n", WireError::BadToken),
            (b"session sid=a key=\n", WireError::BadToken),
            (b"session sid=a key=b last=-1\n", WireError::BadNumber),
            (b"session sid=a key=b last=18446744073709551616\n", WireError::BadNumber),
            (b"session sid=a key=b last=000000000000000000001\n", WireError::BadNumber),
            (b"session stream=\n", WireError::BadToken),
            (b"session stream=a.b\n", WireError::BadToken),
            (b"token\n", WireError::BadCredential),
            (b"token n=3\na b", WireError::BadCredential),
            (b"token n=2\n\xc3\xa9", WireError::BadCredential),
            (b"token n=1\n\x7f", WireError::BadCredential),
            (b"token n=5\nab", WireError::Truncated),
            (b"token n=99999999999999999999\n", WireError::BadNumber),
            (&oversized, WireError::BodyTooLarge),
            (b"authed exp=x\n", WireError::BadNumber),
            (b"authed exp=99999999999999999999\n", WireError::BadNumber),
            (b"pending\n", WireError::MissingField),
            (b"pending stream=a=b\n", WireError::BadToken),
            (b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0 exp=1e3\n", WireError::BadNumber),
            (b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0 sub=\n", WireError::BadSubject),
            (b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0 sub=%4\n", WireError::BadSubject),
            (b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0 sub=%zz\n", WireError::BadSubject),
            (b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0 sub=%FF\n", WireError::BadSubject),
            (b"msg s=1 ch=c f=%C3 k=t n=1\nx", WireError::BadSubject),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(input, DEFAULT_MAX_BODY_BYTES).err(), Some(*expected), "{:?}", String::from_utf8_lossy(input));
        }
        let long_subject = [&b"msg s=1 ch=c f="[..], &vec![b'a'; MAX_SUBJECT_BYTES + 1], b" k=t\n"].concat();
        assert_eq!(decode(&long_subject, 10).err(), Some(WireError::BadSubject));
        let max_subject = [&b"msg s=1 ch=c f="[..], &vec![b'a'; MAX_SUBJECT_BYTES], b" k=t\n"].concat();
        assert!(decode(&max_subject, 10).is_ok());
    }

    #[test]
    fn a_credential_never_shows_in_debug_output() {
        let frame = Frame::Token(Credential("secret-jwt".into()));
        assert!(!std::format!("{frame:?}").contains("secret-jwt"));
    }

    #[test]
    fn subjects_round_trip_through_percent_encoding() {
        for subject in ["a", "alice", "%", "100%", " ", "é", "日本", "a\u{7f}b", "tab\there", &"x".repeat(MAX_SUBJECT_BYTES)] {
            let mut encoded = Vec::new();
            push_subject(&mut encoded, subject);
            assert!(encoded.iter().all(|byte| (0x21..0x7f).contains(byte)), "{subject:?}");
            assert_eq!(parse_subject(&encoded).unwrap(), subject);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn subjects_round_trip(subject in "\\PC{1,64}") {
                prop_assume!(is_valid_subject(&subject));
                let mut encoded = Vec::new();
                push_subject(&mut encoded, &subject);
                prop_assert_eq!(parse_subject(&encoded).unwrap(), subject);
            }

            #[test]
            fn credentials_round_trip(credential in "[!-~]{1,200}") {
                let frame = Frame::Token(Credential(credential));
                prop_assert_eq!(decode(&encode_to_vec(&frame, Carrier::Text), DEFAULT_MAX_BODY_BYTES).unwrap().0, frame);
            }

            #[test]
            fn arbitrary_session_and_token_frames_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..100)) {
                let _ = decode(&[&b"session "[..], &tail].concat(), 64);
                let _ = decode(&[&b"token n="[..], &tail].concat(), 64);
                let _ = decode(&[&b"hello v=3 sid=a key=b hb=1 max=1 ack=0 resumed=0 sub="[..], &tail].concat(), 64);
            }
        }
    }
}
