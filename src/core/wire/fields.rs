//! Header fields, shared by every frame: the checked parsing of numbers, names and tokens, and their writing.

use crate::prelude::*;
use super::{WireError, MAX_EVENT_NAME_BYTES, MAX_TOKEN_BYTES};

/// The parsed `key=value` fields of one header line (and bare flags such as `b64`).
pub(super) struct Fields<'a> {
    pub(super) kind: &'a [u8],
    pairs: [(&'a [u8], &'a [u8]); 12],
    count: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn parse(header: &'a [u8]) -> Result<Self, WireError> {
        let mut parts = header.split(|&byte| byte == b' ');
        let kind = parts.next().filter(|kind| !kind.is_empty()).ok_or(WireError::BadHeader)?;
        let mut fields = Fields { kind, pairs: [(&[][..], &[][..]); 12], count: 0 };
        for part in parts {
            if part.is_empty() {
                return Err(WireError::BadHeader);
            }
            let mut halves = part.splitn(2, |&byte| byte == b'=');
            let (key, value) = (halves.next().unwrap_or_default(), halves.next().unwrap_or_default());
            if key.is_empty() {
                return Err(WireError::BadHeader);
            }
            // Unknown keys beyond the fixed capacity are ignored, like any unknown key.
            if let Some(slot) = fields.pairs.get_mut(fields.count) {
                *slot = (key, value);
                fields.count += 1;
            }
        }
        Ok(fields)
    }

    pub(super) fn take(&mut self, key: &[u8]) -> Option<&'a [u8]> {
        self.pairs.iter().take(self.count).find(|(name, _)| *name == key).map(|(_, value)| *value)
    }

    pub(super) fn require(&mut self, key: &[u8]) -> Result<&'a [u8], WireError> {
        self.take(key).ok_or(WireError::MissingField)
    }

    pub(super) fn flag(&mut self, key: &[u8]) -> bool {
        self.take(key).is_some()
    }
}

/// Parses a decimal `u64` without a sign, leading `+` or more than 20 digits.
pub fn parse_number(value: &[u8]) -> Result<u64, WireError> {
    if value.is_empty() || value.len() > 20 {
        return Err(WireError::BadNumber);
    }
    let mut number: u64 = 0;
    for &byte in value {
        if !byte.is_ascii_digit() {
            return Err(WireError::BadNumber);
        }
        number = number
            .checked_mul(10)
            .and_then(|number| number.checked_add(u64::from(byte - b'0')))
            .ok_or(WireError::BadNumber)?;
    }
    Ok(number)
}

pub(super) fn utf8_body(body: &[u8], limit: usize) -> Result<String, WireError> {
    if body.len() > limit {
        return Err(WireError::BodyTooLarge);
    }
    match core::str::from_utf8(body) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Err(WireError::BadUtf8),
    }
}

/// Whether `name` is a valid event name: 1 to 64 bytes of `[A-Za-z0-9_.:/-]`.
pub fn is_valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME_BYTES
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.:/-".contains(&byte))
}

pub(super) fn parse_event_name(name: &[u8]) -> Result<String, WireError> {
    match core::str::from_utf8(name) {
        Ok(name) if is_valid_event_name(name) => Ok(name.to_owned()),
        _ => Err(WireError::BadEventName),
    }
}

/// Whether `token` is a valid session id or secret: 1 to 128 base64url characters.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

pub(super) fn parse_token(token: &[u8]) -> Result<String, WireError> {
    match core::str::from_utf8(token) {
        Ok(token) if is_valid_token(token) => Ok(token.to_owned()),
        _ => Err(WireError::BadToken),
    }
}

// Writing: the header fields of an encoded frame.

/// Appends the decimal form of `value` to `out` (no `core::fmt`).
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    // Most significant digit first: the divisor starts at the largest power of ten not above
    // `value`. No indexing, so no bounds check (each keeps the panic formatter in the wasm).
    let mut divisor = 1u64;
    while value / divisor >= 10 {
        divisor *= 10;
    }
    loop {
        out.push(b'0' + (value / divisor) as u8);
        value %= divisor;
        if divisor == 1 {
            break;
        }
        divisor /= 10;
    }
}

pub(super) fn push_field(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
}

pub(super) fn push_number_field(out: &mut Vec<u8>, key: &[u8], value: u64) {
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    push_decimal(out, value);
}

pub(super) fn push_body(out: &mut Vec<u8>, body: &[u8]) {
    if !body.is_empty() {
        push_number_field(out, b"n", body.len() as u64);
    }
    out.push(b'\n');
    out.extend_from_slice(body);
}
