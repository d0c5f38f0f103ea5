//! The ranges every number from the server is clamped to, and deadline arithmetic that cannot
//! overflow.
//!
//! A hostile or broken server may send any 64-bit value. Without bounds, `hb=1` would make the
//! client ping every millisecond, a delay of 2^31 ms or more becomes a negative browser timeout
//! that fires at once (a spinning timer), and values near `u64::MAX` overflow deadline sums.
//! The same ranges are documented in PROTOCOL.md.

use crate::core::Millis;

/// Shortest heartbeat interval honoured (`hb` in the hello).
pub const MIN_HEARTBEAT_MS: u64 = 1_000;
/// Longest heartbeat interval honoured.
pub const MAX_HEARTBEAT_MS: u64 = 300_000;
/// Longest `retry=N` honoured: a server asking for more is asked again after an hour.
pub const MAX_RETRY_MS: u64 = 3_600_000;
/// Largest message size limit honoured (`max` in the hello).
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// An upload (POST) unanswered for this many heartbeats replaces the connection...
pub const UPLOAD_TIMEOUT_HEARTBEATS: u64 = 2;
/// ...but never sooner than this, so that a large body on a slow link gets its time.
pub const MIN_UPLOAD_TIMEOUT_MS: u64 = 10_000;

/// A rung whose transport opened (a WebSocket upgrade, an event stream's headers) waits at least
/// this long for the hello, which a working server sends right behind the open, before the next
/// rung is raced beside it: a margin for a busy server, and the floor of a 0 ms estimate.
pub const MIN_HELLO_GRACE_MS: u64 = 100;

/// The deadline `delay` after `now`: at least one millisecond later, so that a deadline handled
/// by `handle_timeout` is never due again at the same instant, and saturating instead of
/// overflowing.
pub fn after(now: Millis, delay: u64) -> Millis {
    now.saturating_add(delay.max(1))
}
