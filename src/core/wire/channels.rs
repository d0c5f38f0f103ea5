//! The channel frames of protocol v2 (PROTOCOL.md §8): names, epochs and positions, and the
//! encoding and decoding of `subscribe`, `subscribed`, `unsubscribe`, `unsubscribed`, `gap`,
//! `nack` and of a `msg` that names its channel.
//!
//! Invariants: as the rest of the codec (never panics, every error a [`WireError`], the encoder
//! produces only what the decoder accepts); an epoch is exactly 16 lowercase hex digits; a `msg`
//! carries both `o` and `ep` or neither.

use crate::prelude::*;
use super::{close_fields, parse_number, push_close_fields, push_field, push_number_field, Fields, Frame, Message, WireError};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_NAME_BYTES: usize = 128;

/// A position in a channel: every message of `epoch` up to `offset` (0: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 64 random bits, chosen again whenever the server loses the channel's history.
    pub epoch: u64,
    /// An offset within the epoch (messages are numbered 1, 2, 3, ...).
    pub offset: u64,
}

/// A `msg` that names its channel: server to client with the message's position, client to
/// server (a publish) without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    /// The channel's name.
    pub channel: String,
    /// The epoch and offset the message got (server to client only).
    pub position: Option<Position>,
    /// Seq, event name and payload, as in a plain `msg`.
    pub message: Message,
}

/// Whether `name` is a channel name: 1 to 128 bytes of `[A-Za-z0-9_.:/-]`.
pub fn is_valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_BYTES
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.:/-".contains(&byte))
}

/// Appends an epoch as 16 lowercase hex digits.
pub fn push_epoch(out: &mut Vec<u8>, epoch: u64) {
    let mut shift = 64;
    while shift > 0 {
        shift -= 4;
        let digit = ((epoch >> shift) & 15) as u8;
        out.push(if digit < 10 { b'0' + digit } else { b'a' + digit - 10 });
    }
}

/// Parses an epoch as [`push_epoch`] writes it; anything else is an error.
pub fn parse_epoch(text: &[u8]) -> Result<u64, WireError> {
    if text.len() != 16 {
        return Err(WireError::BadNumber);
    }
    let mut epoch = 0u64;
    for &byte in text {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return Err(WireError::BadNumber),
        };
        epoch = (epoch << 4) | u64::from(digit);
    }
    Ok(epoch)
}

fn parse_channel(name: &[u8]) -> Result<String, WireError> {
    match core::str::from_utf8(name) {
        Ok(name) if is_valid_channel_name(name) => Ok(name.to_owned()),
        _ => Err(WireError::BadChannel),
    }
}

fn push_epoch_field(out: &mut Vec<u8>, epoch: u64) {
    out.extend_from_slice(b" ep=");
    push_epoch(out, epoch);
}

fn push_head(out: &mut Vec<u8>, kind: &[u8], seq: u64, channel: &str) {
    out.extend_from_slice(kind);
    push_number_field(out, b"s", seq);
    push_field(out, b"ch", channel.as_bytes());
}

/// The `ch`, `o` and `ep` fields of a channel `msg`, written after its `s`.
pub(super) fn push_message_channel(out: &mut Vec<u8>, channel: &str, position: Option<Position>) {
    push_field(out, b"ch", channel.as_bytes());
    if let Some(position) = position {
        push_number_field(out, b"o", position.offset);
        push_epoch_field(out, position.epoch);
    }
}

/// Encodes a `subscribe`, from `since` when given.
pub fn encode_subscribe(seq: u64, channel: &str, since: Option<Position>, out: &mut Vec<u8>) {
    push_head(out, b"subscribe", seq, channel);
    if let Some(since) = since {
        push_number_field(out, b"o", since.offset);
        push_epoch_field(out, since.epoch);
    }
    out.push(b'\n');
}

/// Encodes an `unsubscribe`.
pub fn encode_unsubscribe(seq: u64, channel: &str, out: &mut Vec<u8>) {
    push_head(out, b"unsubscribe", seq, channel);
    out.push(b'\n');
}

/// Encodes the channel frames only a server sends (`subscribed`, `unsubscribed`, `gap`,
/// `nack`); writes nothing for any other frame.
pub(super) fn encode_server_control(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Subscribed { seq, channel, position, recovered, reply_to } => {
            push_head(out, b"subscribed", *seq, channel);
            push_epoch_field(out, position.epoch);
            push_number_field(out, b"o", position.offset);
            push_number_field(out, b"rec", u64::from(*recovered));
            if let Some(reply_to) = reply_to {
                push_number_field(out, b"for", *reply_to);
            }
            out.push(b'\n');
        }
        Frame::Unsubscribed { seq, channel, reply_to, close } => {
            push_head(out, b"unsubscribed", *seq, channel);
            if let Some(reply_to) = reply_to {
                push_number_field(out, b"for", *reply_to);
            }
            push_close_fields(out, close);
        }
        Frame::Gap { seq, channel, epoch, from, to } => {
            push_head(out, b"gap", *seq, channel);
            push_epoch_field(out, *epoch);
            push_number_field(out, b"from", *from);
            push_number_field(out, b"to", *to);
            out.push(b'\n');
        }
        Frame::Nack { seq, channel, reply_to, close } => {
            push_head(out, b"nack", *seq, channel);
            push_number_field(out, b"for", *reply_to);
            push_close_fields(out, close);
        }
        _ => {}
    }
}

/// The `o` and `ep` of a frame: both or neither.
fn position(fields: &mut Fields<'_>) -> Result<Option<Position>, WireError> {
    match (fields.take(b"o"), fields.take(b"ep")) {
        (Some(offset), Some(epoch)) => Ok(Some(Position { epoch: parse_epoch(epoch)?, offset: parse_number(offset)? })),
        (None, None) => Ok(None),
        _ => Err(WireError::MissingField),
    }
}

fn optional_number(fields: &mut Fields<'_>, key: &[u8]) -> Result<Option<u64>, WireError> {
    fields.take(key).map(parse_number).transpose()
}

/// Wraps a decoded `msg` in its channel when it names one.
pub(super) fn message_in_channel(fields: &mut Fields<'_>, message: Message) -> Result<Frame, WireError> {
    let position = position(fields)?;
    match fields.take(b"ch") {
        Some(channel) => Ok(Frame::ChannelMessage(ChannelMessage { channel: parse_channel(channel)?, position, message })),
        None if position.is_none() => Ok(Frame::Message(message)),
        None => Err(WireError::MissingField),
    }
}

/// Decodes the channel frames other than `msg`; `None` for another frame type. The wasm (a
/// client, which never receives them) does not decode a `subscribe` or an `unsubscribe`: they
/// are an unknown frame type there, as any frame a server must not send.
pub(super) fn decode_control(fields: &mut Fields<'_>, body: &[u8]) -> Option<Result<Frame, WireError>> {
    let kind = match fields.kind {
        b"subscribed" => Control::Subscribed,
        b"unsubscribed" => Control::Unsubscribed,
        b"gap" => Control::Gap,
        b"nack" => Control::Nack,
        #[cfg(not(target_arch = "wasm32"))]
        b"subscribe" => Control::Subscribe,
        #[cfg(not(target_arch = "wasm32"))]
        b"unsubscribe" => Control::Unsubscribe,
        _ => return None,
    };
    Some(decode_control_kind(kind, fields, body))
}

/// The channel frame types other than `msg`.
#[derive(Clone, Copy)]
enum Control {
    Subscribed,
    Unsubscribed,
    Gap,
    Nack,
    #[cfg(not(target_arch = "wasm32"))]
    Subscribe,
    #[cfg(not(target_arch = "wasm32"))]
    Unsubscribe,
}

fn decode_control_kind(kind: Control, fields: &mut Fields<'_>, body: &[u8]) -> Result<Frame, WireError> {
    let seq = parse_number(fields.require(b"s")?)?;
    let channel = parse_channel(fields.require(b"ch")?)?;
    Ok(match kind {
        Control::Subscribed => Frame::Subscribed {
            seq,
            channel,
            position: position(fields)?.ok_or(WireError::MissingField)?,
            recovered: parse_number(fields.require(b"rec")?)? == 1,
            reply_to: optional_number(fields, b"for")?,
        },
        Control::Unsubscribed => {
            Frame::Unsubscribed { seq, channel, reply_to: optional_number(fields, b"for")?, close: close_fields(fields, body)? }
        }
        Control::Gap => Frame::Gap {
            seq,
            channel,
            epoch: parse_epoch(fields.require(b"ep")?)?,
            from: parse_number(fields.require(b"from")?)?,
            to: parse_number(fields.require(b"to")?)?,
        },
        Control::Nack => Frame::Nack { seq, channel, reply_to: parse_number(fields.require(b"for")?)?, close: close_fields(fields, body)? },
        #[cfg(not(target_arch = "wasm32"))]
        Control::Subscribe => Frame::Subscribe { seq, channel, since: position(fields)? },
        #[cfg(not(target_arch = "wasm32"))]
        Control::Unsubscribe => Frame::Unsubscribe { seq, channel },
    })
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::super::{decode, decode_all, encode_client_frame, encode_to_vec, Carrier, Close, Payload, Retry, DEFAULT_MAX_BODY_BYTES};
    use super::*;

    fn close(code: u16, reason: &str, retry: Retry) -> Close {
        Close { code, reason: reason.into(), retry }
    }

    fn frames() -> Vec<Frame> {
        let position = Position { epoch: 0x9f86_d081_884c_7d65, offset: 57 };
        let message = |seq, payload| Message { seq, event: Some("ticker".into()), payload };
        vec![
            Frame::ChannelMessage(ChannelMessage {
                channel: "prices:EURUSD".into(),
                position: Some(position),
                message: message(12, Payload::Json("{\"price\":1}".into())),
            }),
            Frame::ChannelMessage(ChannelMessage {
                channel: "a/b.c_d-e".into(),
                position: None,
                message: message(1, Payload::Binary(vec![0, 13, 10, 255])),
            }),
            Frame::Subscribe { seq: 1, channel: "c".into(), since: None },
            Frame::Subscribe { seq: 2, channel: "c".into(), since: Some(Position { epoch: u64::MAX, offset: u64::MAX }) },
            Frame::Subscribed { seq: 1, channel: "c".into(), position: Position { epoch: 0, offset: 0 }, recovered: false, reply_to: None },
            Frame::Subscribed { seq: 2, channel: "c".into(), position, recovered: true, reply_to: Some(7) },
            Frame::Unsubscribe { seq: 3, channel: "c".into() },
            Frame::Unsubscribed { seq: 3, channel: "c".into(), reply_to: Some(3), close: close(1000, "", Retry::Default) },
            Frame::Unsubscribed { seq: 4, channel: "c".into(), reply_to: None, close: close(4010, "bad channel name", Retry::Never) },
            Frame::Unsubscribed { seq: 5, channel: "c".into(), reply_to: Some(9), close: close(4012, "rate", Retry::AfterMs(1000)) },
            Frame::Gap { seq: 6, channel: "c".into(), epoch: 1, from: 0, to: 3 },
            Frame::Nack { seq: 7, channel: "c".into(), reply_to: 7, close: close(4013, "not allowed", Retry::Default) },
        ]
    }

    #[test]
    fn every_channel_frame_round_trips_on_every_carrier() {
        for carrier in [Carrier::Binary, Carrier::Text, Carrier::Sse] {
            let mut batch = Vec::new();
            for frame in frames() {
                let bytes = encode_to_vec(&frame, carrier);
                let (decoded, used) = decode(&bytes, DEFAULT_MAX_BODY_BYTES).expect("decodes");
                assert_eq!(decoded, frame);
                assert_eq!(used, bytes.len());
                batch.extend_from_slice(&bytes);
            }
            assert_eq!(decode_all(&batch, DEFAULT_MAX_BODY_BYTES).expect("batch decodes"), frames());
        }
    }

    #[test]
    fn the_client_encoder_writes_only_client_frames() {
        for frame in frames() {
            let mut out = Vec::new();
            let client = matches!(frame, Frame::ChannelMessage(_) | Frame::Subscribe { .. } | Frame::Unsubscribe { .. });
            assert_eq!(encode_client_frame(&frame, Carrier::Text, &mut out), client, "{frame:?}");
            let expected = if client { encode_to_vec(&frame, Carrier::Text) } else { Vec::new() };
            assert_eq!(out, expected, "{frame:?}");
        }
    }

    #[test]
    fn the_protocol_examples_decode() {
        let (frame, _) = decode(b"msg s=12 ch=prices:EURUSD o=57 ep=9f86d081884c7d65 k=j e=ticker n=11\n{\"price\":1}", 1024).expect("decodes");
        assert_eq!(frame, frames().remove(0));
        let (frame, _) = decode(b"unsubscribed s=9 ch=price code=4010 retry=no n=16\nbad channel name", 1024).expect("decodes");
        assert!(matches!(frame, Frame::Unsubscribed { seq: 9, reply_to: None, close: Close { code: 4010, retry: Retry::Never, .. }, .. }));
        assert_eq!(frame.ordered_seq(), Some(9));
    }

    #[test]
    fn malformed_channel_frames_are_errors() {
        let cases: &[(&[u8], WireError)] = &[
            (b"msg s=1 ch=c o=1 k=t\n", WireError::MissingField),
            (b"msg s=1 ch=c ep=0000000000000001 k=t\n", WireError::MissingField),
            (b"msg s=1 o=1 ep=0000000000000001 k=t\n", WireError::MissingField),
            (b"msg s=1 ch=c o=1 ep=000000000000001 k=t\n", WireError::BadNumber),
            (b"msg s=1 ch=c o=1 ep=000000000000000G k=t\n", WireError::BadNumber),
            (b"msg s=1 ch=c o=1 ep=000000000000000A k=t\n", WireError::BadNumber),
            (b"msg s=1 ch=a$b k=t\n", WireError::BadChannel),
            (b"subscribe s=1\n", WireError::MissingField),
            (b"subscribe s=1 ch=\n", WireError::BadChannel),
            (b"subscribe s=1 ch=c o=5\n", WireError::MissingField),
            (b"subscribed s=1 ch=c o=5 rec=1\n", WireError::MissingField),
            (b"gap s=1 ch=c ep=0000000000000001 from=1\n", WireError::MissingField),
            (b"nack s=1 ch=c code=4013\n", WireError::MissingField),
            (b"unsubscribed s=1 ch=c code=70000\n", WireError::BadNumber),
            (b"subscribe s=x ch=c\n", WireError::BadNumber),
        ];
        for (input, error) in cases {
            assert_eq!(decode(input, 1024).map(|(frame, _)| frame), Err(*error), "{}", String::from_utf8_lossy(input));
        }
        let long = [b"subscribe s=1 ch=".as_slice(), &[b'a'; 129], b"\n"].concat();
        assert_eq!(decode(&long, 1024).map(|(frame, _)| frame), Err(WireError::BadChannel));
    }

    #[test]
    fn epochs_are_sixteen_lowercase_hex_digits() {
        for epoch in [0, 1, 0x9f86_d081_884c_7d65, u64::MAX] {
            let mut out = Vec::new();
            push_epoch(&mut out, epoch);
            assert_eq!(out.len(), 16);
            assert_eq!(parse_epoch(&out), Ok(epoch));
        }
    }
}
