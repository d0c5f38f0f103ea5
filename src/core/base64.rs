//! Base64 (standard alphabet, padded) for binary bodies on text-only carriers (SSE events,
//! text POST bodies).
//!
//! Small on purpose: a crate would add size to the wasm. Invariant: decoding never panics on any
//! input; whatever is not canonical padded base64 is [`WireError::BadBase64`]. Round trips are
//! property-tested with the codec in `wire`.

use crate::prelude::*;
use crate::core::wire::WireError;

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard, padded base64.
pub fn base64_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let triple = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        out.push(BASE64_ALPHABET[(triple >> 18) as usize & 63]);
        out.push(BASE64_ALPHABET[(triple >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 { BASE64_ALPHABET[(triple >> 6) as usize & 63] } else { b'=' });
        out.push(if chunk.len() > 2 { BASE64_ALPHABET[triple as usize & 63] } else { b'=' });
    }
    out
}

fn base64_value(byte: u8) -> Option<u32> {
    let value = match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Decodes standard, padded base64; anything else is [`WireError::BadBase64`].
pub fn base64_decode(input: &[u8]) -> Result<Vec<u8>, WireError> {
    if input.len() % 4 != 0 {
        return Err(WireError::BadBase64);
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let chunk_count = input.len() / 4;
    for (index, chunk) in input.chunks_exact(4).enumerate() {
        let last = index + 1 == chunk_count;
        let padding = match (chunk.get(2), chunk.get(3)) {
            (Some(b'='), Some(b'=')) if last => 2,
            (_, Some(b'=')) if last => 1,
            _ => 0,
        };
        let mut triple = 0u32;
        for (position, &byte) in chunk.iter().enumerate() {
            let value = if position >= 4 - padding {
                0
            } else {
                base64_value(byte).ok_or(WireError::BadBase64)?
            };
            triple = (triple << 6) | value;
        }
        out.push((triple >> 16) as u8);
        if padding < 2 {
            out.push((triple >> 8) as u8);
        }
        if padding < 1 {
            out.push(triple as u8);
        }
    }
    Ok(out)
}
