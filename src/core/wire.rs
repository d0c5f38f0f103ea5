//! Wire protocol v2: the frame codec shared by the client and the reference server (the channel
//! frames of v2 are in `channels.rs`; a v1 peer never sees them).
//!
//! A frame is one header line, then an optional body whose byte length the header states:
//!
//! ```text
//! msg s=12 k=j e=ticker n=11\n{"price":1}
//! ```
//!
//! Every frame is self-delimiting, so a batch is plain concatenation and the same bytes ride on
//! a WebSocket message, an SSE event or a long-poll response body. The body is never re-encoded
//! as a string inside another format: a JSON payload is carried as its own text and parsed once,
//! by whoever consumes it. Binary bodies travel raw where the carrier is binary (WebSocket binary
//! messages) and as base64 (`b64` flag) where it is text-only.
//!
//! Invariants: decoding never panics on any input; every error is a [`WireError`]; the encoder
//! only produces what the decoder accepts (property-tested). No `format!` here: this code ships
//! in the wasm and must not pull in `core::fmt`.

use crate::prelude::*;
pub use crate::core::base64::{base64_decode, base64_encode};
pub use channels::{encode_subscribe, encode_unsubscribe, is_valid_channel_name, parse_epoch, push_epoch, ChannelMessage, Position, MAX_CHANNEL_NAME_BYTES};

mod auth;
mod channels;
mod fields;
pub use auth::{is_valid_credential, is_valid_subject, Credential, HelloAuth, Resume, SessionFrame, MAX_CREDENTIAL_BYTES, MAX_SUBJECT_BYTES, PROTOCOL_V3};
#[cfg(not(target_arch = "wasm32"))]
pub use auth::{encode_attributed_message, parse_subject, push_subject};
use fields::{parse_event_name, parse_token, push_body, push_field, push_number_field, utf8_body, Fields};
pub use fields::{is_valid_event_name, is_valid_token, parse_number, push_decimal};

/// The protocol version this codec speaks (channels, PROTOCOL.md §8).
pub const PROTOCOL_VERSION: u32 = 2;
/// Most bytes the `ch`, `o` and `ep` fields of a channel message add, besides the name.
pub const CHANNEL_FIELDS_BOUND: usize = 48;
/// The version before channels, which the reference server still serves.
pub const PROTOCOL_V1: u32 = 1;
/// Longest header line accepted, in bytes, including the terminating LF.
pub const MAX_HEADER_BYTES: usize = 1024;
/// Default largest message body, in bytes (the server may advertise a different one in hello).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Longest event name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 64;
/// Longest session id or resume secret, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

/// What went wrong while decoding a frame. The message is for humans; the variant for code.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The input ended before the header line or the body was complete.
    Truncated,
    /// The header line is longer than [`MAX_HEADER_BYTES`].
    HeaderTooLong,
    /// The header is not ASCII, or a field is not `key=value`.
    BadHeader,
    /// The frame type is not one this version knows.
    UnknownFrameType,
    /// A required field is absent.
    MissingField,
    /// A numeric field is not a decimal integer in range.
    BadNumber,
    /// The payload kind is not `t`, `j` or `b`.
    BadKind,
    /// The body is larger than the limit in force.
    BodyTooLarge,
    /// A text or JSON body is not valid UTF-8.
    BadUtf8,
    /// A base64 body does not decode.
    BadBase64,
    /// An event name is empty, too long or uses a character outside `[A-Za-z0-9_.:/-]`.
    BadEventName,
    /// A session id or secret is empty, too long or not base64url characters.
    BadToken,
    /// A channel name is empty, too long or uses a character outside `[A-Za-z0-9_.:/-]`.
    BadChannel,
    /// A credential (v3 `token` body) is empty or holds a byte outside ASCII 0x21-0x7E.
        BadCredential,
    /// A subject (v3 `sub`, `f`) is badly percent-encoded, not UTF-8, empty or too long.
        BadSubject,
}

impl WireError {
    /// A short, lowercase description (no formatting machinery needed).
    pub fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "frame truncated",
            WireError::HeaderTooLong => "frame header too long",
            WireError::BadHeader => "malformed frame header",
            WireError::UnknownFrameType => "unknown frame type",
            WireError::MissingField => "frame field missing",
            WireError::BadNumber => "bad number in frame header",
            WireError::BadKind => "bad payload kind",
            WireError::BodyTooLarge => "message body too large",
            WireError::BadUtf8 => "text body is not valid utf-8",
            WireError::BadBase64 => "bad base64 body",
            WireError::BadEventName => "bad event name",
            WireError::BadToken => "bad session id or secret",
            WireError::BadChannel => "bad channel name",
            WireError::BadCredential => "bad credential",
            WireError::BadSubject => "bad subject",
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for WireError {}

/// An application payload; the kind is kept end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A string.
    Text(String),
    /// JSON text, parsed once by the consumer (the browser's `JSON.parse` in the client).
    Json(String),
    /// Raw bytes.
    Binary(Vec<u8>),
}

impl Payload {
    /// Size of the payload in bytes, as counted against limits and in stats.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(text) | Payload::Json(text) => text.len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The server's greeting: a transport counts as established only once this has arrived on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the server speaks.
    pub version: u32,
    /// Public session id.
    pub session_id: String,
    /// Resume secret, separate from the id so that the id may be shown or logged.
    pub secret: String,
    /// Heartbeat interval in milliseconds: each side pings when it has sent nothing for this long.
    pub heartbeat_ms: u64,
    /// Largest message body the server accepts, in bytes.
    pub max_body_bytes: u64,
    /// Highest client sequence number the server has received (cumulative ack at hello time).
    pub ack: u64,
    /// Whether this hello resumes the session the client asked for (false: a fresh session).
    pub resumed: bool,
}

/// An application message with its per-direction sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sequence number, starting at 1 per direction and per session.
    pub seq: u64,
    /// Named event, or `None` for a plain message.
    pub event: Option<String>,
    /// The payload.
    pub payload: Payload,
}

/// Reconnect advice carried by a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The receiver decides (its own backoff).
    Default,
    /// Do not reconnect.
    Never,
    /// Reconnect after this many milliseconds.
    AfterMs(u64),
}

/// A close frame: why the sender is ending the connection or session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Close code (see PROTOCOL.md: 1000 normal, 4xxx protocol-defined).
    pub code: u16,
    /// Human-readable reason.
    pub reason: String,
    /// Reconnect advice.
    pub retry: Retry,
}

/// Close codes defined by the protocol.
pub mod close_code {
    /// Normal closure: the session is over.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (restart, shutdown); reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer sent a frame that does not decode or breaks the protocol.
    pub const PROTOCOL_ERROR: u16 = 4000;
    /// The client is not allowed (authentication or authorization failed).
    pub const UNAUTHORIZED: u16 = 4001;
    /// The protocol version is not supported.
    pub const UNSUPPORTED_VERSION: u16 = 4002;
    /// A limit was exceeded (message size, rate, sessions).
    pub const LIMIT_EXCEEDED: u16 = 4003;
    /// The connection was replaced by a newer one of the same session.
    pub const REPLACED: u16 = 4004;
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Server to client, first frame on every connection.
    Hello(Hello),
    /// An application message, either direction.
    Message(Message),
    /// Cumulative acknowledgement: every message up to and including `seq` was received.
    Ack { seq: u64 },
    /// Liveness probe; the peer answers with a pong echoing `time`.
    Ping { time: u64 },
    /// Answer to a ping.
    Pong { time: u64 },
    /// The sender ends the connection (and, depending on `retry`, the session).
    Close(Close),
    /// A message of a channel (v2): server to client with its position, or a client's publish.
    ChannelMessage(ChannelMessage),
    /// Client to server (v2): subscribe to `channel`, recovering from `since` when given.
    Subscribe { seq: u64, channel: String, since: Option<Position> },
    /// Server to client (v2): the subscription took effect at `position` (the channel's epoch
    /// and top); `reply_to` is the client seq of the subscribe it answers (absent for the room
    /// channel a session starts with).
    Subscribed { seq: u64, channel: String, position: Position, recovered: bool, reply_to: Option<u64> },
    /// Client to server (v2): end the subscription to `channel`.
    Unsubscribe { seq: u64, channel: String },
    /// Server to client (v2): the subscription ended (code 1000: by the client's unsubscribe
    /// `reply_to`; other codes: refused or ended by the server, see PROTOCOL.md §8.7).
    Unsubscribed { seq: u64, channel: String, reply_to: Option<u64>, close: Close },
    /// Server to client (v2): the messages `from..=to` of `channel` are lost to this client.
    Gap { seq: u64, channel: String, epoch: u64, from: u64, to: u64 },
    /// Server to client (v2): the client's publish `reply_to` to `channel` was refused.
    Nack { seq: u64, channel: String, reply_to: u64, close: Close },
    /// Client to server (v3): the session a connection, poll, bind or upload is about.
    Session(SessionFrame),
    /// Client to server (v3): a credential, at connect or as an in-band refresh.
    Token(Credential),
    /// Server to client (v3): the refreshed credential verified; it expires in `expires_in_ms`.
    Authed { expires_in_ms: Option<u64> },
    /// Server to client (v3): the first event of an event stream waiting for its bind.
    Pending { stream: String },
    /// Server to client (v3): a hello with the credential's expiry and principal.
    AuthHello(Hello, HelloAuth),
    /// Server to client (v3): a channel message published by the verified `subject` (`f`).
    Attributed { subject: String, message: ChannelMessage },
}

impl Frame {
    /// The seq of an ordered frame (a message or a channel frame), None for the unnumbered ones.
    pub fn ordered_seq(&self) -> Option<u64> {
        match self {
            Frame::Message(Message { seq, .. })
            | Frame::ChannelMessage(ChannelMessage { message: Message { seq, .. }, .. })
            | Frame::Subscribe { seq, .. }
            | Frame::Subscribed { seq, .. }
            | Frame::Unsubscribe { seq, .. }
            | Frame::Unsubscribed { seq, .. }
            | Frame::Gap { seq, .. }
            | Frame::Nack { seq, .. } => Some(*seq),
            Frame::Hello(_) | Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } | Frame::Close(_) => None,
            Frame::Attributed { message: ChannelMessage { message: Message { seq, .. }, .. }, .. } => Some(*seq),
            Frame::Session(_) | Frame::Token(_) | Frame::Authed { .. } | Frame::Pending { .. } | Frame::AuthHello(..) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// What a carrier can hold, which decides how bodies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// Arbitrary bytes (WebSocket binary messages, fetch bodies read as bytes): bodies go raw.
    Binary,
    /// UTF-8 text (WebSocket text messages, text POST bodies): binary bodies go as base64.
    Text,
    /// An SSE `data:` field: UTF-8 text in which a CR would be taken for a line break, so a text
    /// body containing CR goes as base64 too. LF is fine: the server splits the frame over
    /// several `data:` lines and the browser joins them back with LF.
    Sse,
}

impl Carrier {
    fn needs_base64(self, payload: &Payload) -> bool {
        match (self, payload) {
            (Carrier::Binary, _) => false,
            (_, Payload::Binary(_)) => true,
            (Carrier::Text, _) => false,
            (Carrier::Sse, Payload::Text(text) | Payload::Json(text)) => text.contains('\r'),
        }
    }
}

/// Encodes `frame` and appends it to `out`, encoding bodies as `carrier` requires.
pub fn encode(frame: &Frame, carrier: Carrier, out: &mut Vec<u8>) {
    if encode_client_frame(frame, carrier, out) {
        return;
    }
    if let Frame::Hello(hello) = frame {
        out.extend_from_slice(b"hello");
        push_number_field(out, b"v", u64::from(hello.version));
        push_field(out, b"sid", hello.session_id.as_bytes());
        push_field(out, b"key", hello.secret.as_bytes());
        push_number_field(out, b"hb", hello.heartbeat_ms);
        push_number_field(out, b"max", hello.max_body_bytes);
        push_number_field(out, b"ack", hello.ack);
        push_number_field(out, b"resumed", u64::from(hello.resumed));
        out.push(b'\n');
    } else {
        // Each writes only the frames it knows (the v3 ones a server sends: host builds only).
        channels::encode_server_control(frame, out);
        auth::encode(frame, carrier, out);
    }
}

/// Encodes the frames a client sends (messages, acks, pings, pongs, a close, a subscribe, an
/// unsubscribe, v3's session and token) as [`encode`] does; false, writing nothing, for a frame only a server sends.
/// The client calls this one rather than `encode`, so that the server's encoders (a hello and
/// the channel answers) are not linked into the wasm.
pub fn encode_client_frame(frame: &Frame, carrier: Carrier, out: &mut Vec<u8>) -> bool {
    match frame {
        Frame::Message(message) => {
            encode_message(message.seq, message.event.as_deref(), &message.payload, carrier, out);
        }
        Frame::Ack { seq } => push_numbered(out, b"ack", b"s", *seq),
        Frame::Ping { time } => push_numbered(out, b"ping", b"t", *time),
        Frame::Pong { time } => push_numbered(out, b"pong", b"t", *time),
        Frame::Close(close) => {
            out.extend_from_slice(b"close");
            push_close_fields(out, close);
        }
        Frame::ChannelMessage(ChannelMessage { channel, position, message }) => encode_channel_message(
            message.seq,
            Some((channel, *position)),
            message.event.as_deref(),
            &message.payload,
            carrier,
            out,
        ),
        Frame::Subscribe { seq, channel, since } => encode_subscribe(*seq, channel, *since, out),
        Frame::Unsubscribe { seq, channel } => encode_unsubscribe(*seq, channel, out),
        // v3: what opens a connection, a poll, a bind or an upload, and a refresh.
        Frame::Session(_) | Frame::Token(_) => auth::encode(frame, carrier, out),
        _ => return false,
    }
    true
}

/// A header line of one number field: `ack s=3`, `ping t=5`.
fn push_numbered(out: &mut Vec<u8>, kind: &[u8], key: &[u8], value: u64) {
    out.extend_from_slice(kind);
    push_number_field(out, key, value);
    out.push(b'\n');
}

/// The fields and body of a close (also those of an `unsubscribed` and a `nack`).
fn push_close_fields(out: &mut Vec<u8>, close: &Close) {
    push_number_field(out, b"code", u64::from(close.code));
    match close.retry {
        Retry::Default => {}
        Retry::Never => push_field(out, b"retry", b"no"),
        Retry::AfterMs(ms) => push_number_field(out, b"retry", ms),
    }
    push_body(out, close.reason.as_bytes());
}

/// Encodes a message frame from borrowed parts (no copy of the payload before encoding).
pub fn encode_message(seq: u64, event: Option<&str>, payload: &Payload, carrier: Carrier, out: &mut Vec<u8>) {
    encode_channel_message(seq, None, event, payload, carrier, out);
}

/// Encodes a message frame, naming its channel (and its position in it) when given.
pub fn encode_channel_message(
    seq: u64,
    channel: Option<(&str, Option<Position>)>,
    event: Option<&str>,
    payload: &Payload,
    carrier: Carrier,
    out: &mut Vec<u8>,
) {
    encode_message_parts(seq, channel, None, event, payload, carrier, out);
}

/// Encodes a message frame; `subject` (v3, server only) is the publisher's `f`.
pub(crate) fn encode_message_parts(
    seq: u64,
    channel: Option<(&str, Option<Position>)>,
    subject: Option<&str>,
    event: Option<&str>,
    payload: &Payload,
    carrier: Carrier,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"msg");
    push_number_field(out, b"s", seq);
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(subject) = subject {
        auth::push_from(out, subject);
    }
    #[cfg(target_arch = "wasm32")]
    let _ = subject;
    if let Some((channel, position)) = channel {
        channels::push_message_channel(out, channel, position);
    }
    let (kind, raw): (&[u8], &[u8]) = match payload {
        Payload::Text(text) => (b"t", text.as_bytes()),
        Payload::Json(text) => (b"j", text.as_bytes()),
        Payload::Binary(bytes) => (b"b", bytes.as_slice()),
    };
    push_field(out, b"k", kind);
    if let Some(event) = event {
        push_field(out, b"e", event.as_bytes());
    }
    if carrier.needs_base64(payload) {
        out.extend_from_slice(b" b64");
        push_body(out, &base64_encode(raw));
    } else {
        push_body(out, raw);
    }
}

/// An upper bound of the encoded size of a message frame on `carrier`, for batching decisions
/// (add `CHANNEL_FIELDS_BOUND` and the channel name's length for a channel message).
pub fn message_size_bound(event: Option<&str>, payload: &Payload, carrier: Carrier) -> usize {
    // Header fields are at most ~70 bytes plus the event name; base64 grows the body by 4/3.
    let body = if carrier.needs_base64(payload) { payload.len() / 3 * 4 + 4 } else { payload.len() };
    96 + event.map_or(0, str::len) + body
}

/// Encodes one frame into a fresh buffer.
pub fn encode_to_vec(frame: &Frame, carrier: Carrier) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, carrier, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes the first frame of `input`, returning it and the number of bytes it took.
///
/// `max_body_bytes` bounds the body (after base64 decoding too). Unknown header keys are ignored
/// so that later minor revisions can add fields; unknown frame types are an error.
pub fn decode(input: &[u8], max_body_bytes: usize) -> Result<(Frame, usize), WireError> {
    let header_end = match input.iter().take(MAX_HEADER_BYTES).position(|&byte| byte == b'\n') {
        Some(index) => index,
        None if input.len() >= MAX_HEADER_BYTES => return Err(WireError::HeaderTooLong),
        None => return Err(WireError::Truncated),
    };
    let header = input.get(..header_end).ok_or(WireError::Truncated)?;
    if !header.iter().all(|&byte| (0x20..0x7f).contains(&byte)) {
        return Err(WireError::BadHeader);
    }
    let mut fields = Fields::parse(header)?;
    let body_len = match fields.take(b"n") {
        Some(value) => parse_number(value)? as usize,
        None => 0,
    };
    let body_start = header_end + 1;
    // The encoded body may be up to 4/3 larger than the limit when it is base64.
    let encoded_limit = max_body_bytes.saturating_add(max_body_bytes / 3 + 4);
    if body_len > encoded_limit {
        return Err(WireError::BodyTooLarge);
    }
    let body_end = body_start.checked_add(body_len).ok_or(WireError::BodyTooLarge)?;
    let body = input.get(body_start..body_end).ok_or(WireError::Truncated)?;

    let frame = match fields.kind {
        b"hello" => {
            let version = parse_number(fields.require(b"v")?)?;
            let hello = Hello {
                version: u32::try_from(version).map_err(|_| WireError::BadNumber)?,
                session_id: parse_token(fields.require(b"sid")?)?,
                secret: parse_token(fields.require(b"key")?)?,
                heartbeat_ms: parse_number(fields.require(b"hb")?)?,
                max_body_bytes: parse_number(fields.require(b"max")?)?,
                ack: parse_number(fields.require(b"ack")?)?,
                resumed: parse_number(fields.require(b"resumed")?)? == 1,
            };
            auth::hello_frame(&mut fields, hello)?
        }
        b"msg" => {
            let seq = parse_number(fields.require(b"s")?)?;
            let kind = fields.require(b"k")?;
            let event = match fields.take(b"e") {
                Some(name) => Some(parse_event_name(name)?),
                None => None,
            };
            let decoded;
            let raw = if fields.flag(b"b64") {
                decoded = base64_decode(body)?;
                decoded.as_slice()
            } else {
                body
            };
            let payload = match kind {
                b"t" => Payload::Text(utf8_body(raw, max_body_bytes)?),
                b"j" => Payload::Json(utf8_body(raw, max_body_bytes)?),
                b"b" => Payload::Binary(raw.to_vec()),
                _ => return Err(WireError::BadKind),
            };
            if payload.len() > max_body_bytes {
                return Err(WireError::BodyTooLarge);
            }
            let frame = channels::message_in_channel(&mut fields, Message { seq, event, payload })?;
            auth::attribute(&mut fields, frame)?
        }
        b"ack" => Frame::Ack { seq: parse_number(fields.require(b"s")?)? },
        b"ping" => Frame::Ping { time: parse_number(fields.require(b"t")?)? },
        b"pong" => Frame::Pong { time: parse_number(fields.require(b"t")?)? },
        // A close reason is bounded by the header limit, whatever the body limit.
        b"close" => Frame::Close(close_fields(&mut fields, body)?),
        _ => match channels::decode_control(&mut fields, body) {
            Some(frame) => frame?,
            None => match auth::decode(&mut fields, body) {
                Some(frame) => frame?,
                None => return Err(WireError::UnknownFrameType),
            },
        },
    };
    Ok((frame, body_end))
}

/// The fields and body of a close (also those of an `unsubscribed` and a `nack`); the reason is
/// bounded by the header limit, whatever the body limit.
fn close_fields(fields: &mut Fields<'_>, body: &[u8]) -> Result<Close, WireError> {
    let code = parse_number(fields.require(b"code")?)?;
    let retry = match fields.take(b"retry") {
        None => Retry::Default,
        Some(b"no") => Retry::Never,
        Some(value) => Retry::AfterMs(parse_number(value)?),
    };
    Ok(Close {
        code: u16::try_from(code).map_err(|_| WireError::BadNumber)?,
        reason: utf8_body(body, MAX_HEADER_BYTES)?,
        retry,
    })
}

/// Decodes every frame of a batch (concatenated frames). Stops at the first error.
pub fn decode_all(mut input: &[u8], max_body_bytes: usize) -> Result<Vec<Frame>, WireError> {
    let mut frames = Vec::new();
    while !input.is_empty() {
        let (frame, used) = decode(input, max_body_bytes)?;
        frames.push(frame);
        input = input.get(used..).ok_or(WireError::Truncated)?;
    }
    Ok(frames)
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;

    fn round_trip(frame: &Frame, carrier: Carrier) {
        let bytes = encode_to_vec(frame, carrier);
        let (decoded, used) = decode(&bytes, DEFAULT_MAX_BODY_BYTES).expect("decodes");
        assert_eq!(&decoded, frame);
        assert_eq!(used, bytes.len());
        if carrier != Carrier::Binary {
            assert!(std::str::from_utf8(&bytes).is_ok(), "text carrier output must be utf-8");
        }
        if carrier == Carrier::Sse {
            assert!(!bytes.contains(&b'\r'), "sse carrier output must not hold CR");
        }
    }

    fn every_kind() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: 1,
                session_id: "s-1_a".into(),
                secret: "k3y".into(),
                heartbeat_ms: 25_000,
                max_body_bytes: 1 << 20,
                ack: 7,
                resumed: true,
            }),
            Frame::Message(Message { seq: 1, event: None, payload: Payload::Text("hi\nthere".into()) }),
            Frame::Message(Message {
                seq: 2,
                event: Some("ticker".into()),
                payload: Payload::Json("{\"price\":1}".into()),
            }),
            Frame::Message(Message { seq: 3, event: None, payload: Payload::Binary(vec![0, 10, 255]) }),
            Frame::Message(Message { seq: 4, event: None, payload: Payload::Text(String::new()) }),
            Frame::Message(Message { seq: 5, event: None, payload: Payload::Text("a\r\nb".into()) }),
            Frame::Ack { seq: u64::MAX },
            Frame::Ping { time: 0 },
            Frame::Pong { time: 123 },
            Frame::Close(Close { code: 1000, reason: "bye".into(), retry: Retry::Never }),
            Frame::Close(Close { code: 1001, reason: String::new(), retry: Retry::AfterMs(500) }),
            Frame::Close(Close { code: 4000, reason: "x".into(), retry: Retry::Default }),
        ]
    }

    #[test]
    fn every_frame_kind_round_trips_on_both_carriers() {
        for frame in every_kind() {
            round_trip(&frame, Carrier::Binary);
            round_trip(&frame, Carrier::Text);
            round_trip(&frame, Carrier::Sse);
        }
    }

    #[test]
    fn the_client_encoder_writes_what_encode_writes_but_no_hello() {
        for frame in every_kind() {
            let mut out = Vec::new();
            let client = !matches!(frame, Frame::Hello(_));
            assert_eq!(encode_client_frame(&frame, Carrier::Sse, &mut out), client);
            assert_eq!(out, if client { encode_to_vec(&frame, Carrier::Sse) } else { Vec::new() });
        }
    }

    #[test]
    fn exact_bytes_of_a_message() {
        let frame = Frame::Message(Message {
            seq: 12,
            event: Some("ticker".into()),
            payload: Payload::Json("{\"price\":1}".into()),
        });
        assert_eq!(encode_to_vec(&frame, Carrier::Binary), b"msg s=12 k=j e=ticker n=11\n{\"price\":1}");
        let binary = Frame::Message(Message { seq: 1, event: None, payload: Payload::Binary(vec![1, 2]) });
        assert_eq!(encode_to_vec(&binary, Carrier::Text), b"msg s=1 k=b b64 n=4\nAQI=");
        let with_cr = Frame::Message(Message { seq: 2, event: None, payload: Payload::Text("\r".into()) });
        assert_eq!(encode_to_vec(&with_cr, Carrier::Text), b"msg s=2 k=t n=1\n\r");
        assert_eq!(encode_to_vec(&with_cr, Carrier::Sse), b"msg s=2 k=t b64 n=4\nDQ==");
    }

    #[test]
    fn a_batch_is_concatenation() {
        let frames = every_kind();
        let mut bytes = Vec::new();
        for frame in &frames {
            encode(frame, Carrier::Sse, &mut bytes);
        }
        assert_eq!(decode_all(&bytes, DEFAULT_MAX_BODY_BYTES).unwrap(), frames);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], WireError)] = &[
            (b"", WireError::Truncated),
            (b"msg s=1 k=t n=5\nab", WireError::Truncated),
            (b"msg s=1 k=t", WireError::Truncated),
            (b"nope\n", WireError::UnknownFrameType),
            (b"msg k=t\n", WireError::MissingField),
            (b"msg s=x k=t\n", WireError::BadNumber),
            (b"msg s=99999999999999999999999 k=t\n", WireError::BadNumber),
            (b"msg s=1 k=z\n", WireError::BadKind),
            (b"msg s=1 k=t n=2\n\xff\xfe", WireError::BadUtf8),
            (b"msg s=1 k=b b64 n=3\nAQI", WireError::BadBase64),
            (b"msg s=1 k=t e=bad!name\n", WireError::BadEventName),
            (b"msg  s=1 k=t\n", WireError::BadHeader),
            (b"msg s=1 k=t \xc3\xa9\n", WireError::BadHeader),
            (b"hello v=1 sid=a key=b hb=1 max=1\n", WireError::MissingField),
            (b"hello v=1 sid=a/b key=b hb=1 max=1 ack=0 resumed=0\n", WireError::BadToken),
            (b"close code=70000\n", WireError::BadNumber),
            (b"msg s=1 k=t n=18446744073709551615\n", WireError::BodyTooLarge),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(input, DEFAULT_MAX_BODY_BYTES).err(), Some(*expected), "{input:?}");
        }
        let long = vec![b'a'; MAX_HEADER_BYTES + 10];
        assert_eq!(decode(&long, 10).err(), Some(WireError::HeaderTooLong));
        assert_eq!(decode(b"msg s=1 k=t n=5\nhello", 4).err(), Some(WireError::BodyTooLarge));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let (frame, _) = decode(b"ack s=3 future=1\n", 10).unwrap();
        assert_eq!(frame, Frame::Ack { seq: 3 });
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (raw, encoded) in [
            (&b""[..], &b""[..]),
            (b"f", b"Zg=="),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg=="),
            (b"\xff\xfe\xfd", b"//79"),
        ] {
            assert_eq!(base64_encode(raw), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), raw);
        }
        assert!(base64_decode(b"Zg=a").is_err());
        assert!(base64_decode(b"Z===").is_err());
        assert!(base64_decode(b"Zg==Zg==").is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn payload() -> impl Strategy<Value = Payload> {
            prop_oneof![
                any::<String>().prop_map(Payload::Text),
                "[ -~]{0,40}".prop_map(Payload::Json),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(Payload::Binary),
            ]
        }

        fn frame() -> impl Strategy<Value = Frame> {
            prop_oneof![
                (any::<u64>(), proptest::option::of("[A-Za-z0-9_.:/-]{1,64}"), payload()).prop_map(
                    |(seq, event, payload)| Frame::Message(Message { seq, event, payload })
                ),
                any::<u64>().prop_map(|seq| Frame::Ack { seq }),
                any::<u64>().prop_map(|time| Frame::Ping { time }),
                any::<u64>().prop_map(|time| Frame::Pong { time }),
                (any::<u16>(), "[^\u{0}]{0,40}", prop_oneof![
                    Just(Retry::Default),
                    Just(Retry::Never),
                    any::<u64>().prop_map(Retry::AfterMs)
                ])
                    .prop_map(|(code, reason, retry)| Frame::Close(Close { code, reason, retry })),
                ("[A-Za-z0-9_-]{1,128}", "[A-Za-z0-9_-]{1,128}", any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>())
                    .prop_map(|(session_id, secret, heartbeat_ms, max_body_bytes, ack, resumed)| {
                        Frame::Hello(Hello { version: 1, session_id, secret, heartbeat_ms, max_body_bytes, ack, resumed })
                    }),
            ]
        }

        proptest! {
            #[test]
            fn batches_round_trip(
                frames in proptest::collection::vec(frame(), 0..8),
                carrier in prop_oneof![Just(Carrier::Binary), Just(Carrier::Text), Just(Carrier::Sse)],
            ) {
                let mut bytes = Vec::new();
                for frame in &frames {
                    encode(frame, carrier, &mut bytes);
                }
                if carrier != Carrier::Binary {
                    prop_assert!(std::str::from_utf8(&bytes).is_ok());
                }
                prop_assert_eq!(decode_all(&bytes, DEFAULT_MAX_BODY_BYTES).unwrap(), frames);
            }

            #[test]
            fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = decode_all(&bytes, 64);
            }

            #[test]
            fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
                prop_assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
            }
        }
    }
}
