//! Per-IP and per-session limits of the session layer: sessions and streams per client IP, the
//! rate of new sessions per IP, message and byte rates per session, frames per batch, the control
//! queue, the global replay budget and each IP's share of it, stream write deadlines and the
//! fan-out threshold.
//!
//! Every limit is a field of [`LimitConfig`] with a safe default and a flag in [`LimitFlags`].
//! When one trips, the caller counts it with `state.metrics.trip(LimitKind::..)` (which also logs
//! it, rate-limited) and refuses only the request, stream or session at fault.
//!
//! Invariants: per-IP state is keyed by [`ip_key`] (an IPv6 client counts per /64, since one host
//! usually holds a whole /64); the keyed limiter is pruned by the sweeper, so its memory is
//! bounded by the IPs seen in the last burst window; every rate limit is a governor GCRA.

use std::time::Duration;

use crate::Config;

mod budget;
mod ip;
mod rate;

pub use budget::{ReplayBudget, Reservation, SharedMessage, ENTRY_BYTES};
pub use ip::{ip_key, IpLimits, SessionSlot, StreamSlot, WaitSlot, Waits};
pub use rate::{decode_batch, BatchError, SessionRates, Throttle};

/// The least retry advice a refusal gives.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Session and rate limits (see [`LimitFlags`] for what each protects).
#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub max_sessions_per_ip: usize,
    pub max_streams_per_ip: usize,
    pub new_sessions_per_sec: u32,
    pub new_sessions_burst: u32,
    /// Credentials verified per second per client IP for v3 connects (fresh or resume), and
    /// their burst: counted before the signature check, so a flood costs one lookup each.
    pub credential_attempts_per_sec: u32,
    pub credential_attempts_burst: u32,
    /// v3 WebSockets waiting for their first message, per client IP and in total: each may be
    /// buffering a message of up to the batch limit (axum cannot lower it until the first one).
    pub max_first_message_waits_per_ip: usize,
    pub max_first_message_waits: usize,
    /// v3 event streams of one client IP waiting for their bind (an unbound stream holds no
    /// session; in total they are capped at the session cap).
    pub max_pending_streams_per_ip: usize,
    pub messages_per_sec: u32,
    pub messages_burst: u32,
    pub bytes_per_sec: u32,
    pub bytes_burst: u32,
    /// How long a client over its message or byte rate is slowed down before it is refused.
    pub rate_slowdown: Duration,
    pub max_frames_per_batch: usize,
    pub max_control_frames: usize,
    pub replay_budget_bytes: usize,
    /// Most replay bytes the sessions of one client IP may hold together (None: the budget / 16).
    pub replay_budget_per_ip_bytes: Option<usize>,
    pub stream_write_timeout: Duration,
    pub fanout_blocking_threshold: usize,
    /// The retry advice of a refusal (`retry=` of close 4003, `Retry-After` of 503 and 429).
    pub retry_after: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            max_sessions_per_ip: 256,
            max_streams_per_ip: 256,
            new_sessions_per_sec: 10,
            new_sessions_burst: 100,
            credential_attempts_per_sec: 20,
            credential_attempts_burst: 100,
            max_first_message_waits_per_ip: 4,
            max_first_message_waits: 128,
            max_pending_streams_per_ip: 8,
            messages_per_sec: 200,
            messages_burst: 1_000,
            bytes_per_sec: 1 << 20,
            bytes_burst: 4 << 20,
            rate_slowdown: Duration::from_secs(5),
            max_frames_per_batch: 10_000,
            max_control_frames: 8,
            replay_budget_bytes: 1 << 30,
            replay_budget_per_ip_bytes: None,
            stream_write_timeout: Duration::from_secs(15),
            fanout_blocking_threshold: 4_096,
            retry_after: Duration::from_secs(5),
        }
    }
}

impl LimitConfig {
    /// The replay bytes one client IP's sessions may hold together: the flag, else 1/16 of the
    /// global budget, so one address cannot fill the budget and refuse everyone.
    pub fn replay_share_per_ip(&self) -> usize {
        self.replay_budget_per_ip_bytes.unwrap_or(self.replay_budget_bytes / 16).max(1)
    }

    /// The retry advice of every refusal: `retry_after`, at least 1 s, so no setting (not even
    /// `--limit-retry-after-ms 0`) sends clients into a tight reconnect loop.
    fn advised_retry(&self) -> Duration {
        self.retry_after.max(MIN_RETRY_AFTER)
    }

    /// The `retry=` advice of a refusal close (at least 1,000 ms).
    pub fn retry(&self) -> realtime_client::core::wire::Retry {
        realtime_client::core::wire::Retry::AfterMs(u64::try_from(self.advised_retry().as_millis()).unwrap_or(u64::MAX))
    }

    /// The `Retry-After` header value of a refusal, in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.advised_retry().as_secs().max(1)
    }
}

/// Command-line flags of the session and rate limits.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitFlags {
    /// Most sessions held for one client IP (IPv6: per /64), default 256. Protects the session
    /// table (`--max-sessions` in total) from one address.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_sessions_per_ip: u64,
    /// Most live streams (WebSocket, SSE) and held polls of one client IP, default 256.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_streams_per_ip: u64,
    /// New sessions per second per client IP (default 10, bursts of --new-sessions-burst).
    /// Protects the session table and the CPU from connect floods.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub new_sessions_per_sec: u32,
    /// Burst of new sessions per client IP (default 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub new_sessions_burst: u32,
    /// v3 connect credentials verified per second per client IP (default 20, bursts of
    /// --credential-attempts-burst), counted before the signature check: a flood of connects
    /// costs the CPU one lookup each once over it.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub credential_attempts_per_sec: u32,
    /// Burst of credential checks per client IP (default 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub credential_attempts_burst: u32,
    /// v3 WebSockets of one client IP that have not sent their first message yet (default 4).
    /// Each may be buffering up to the batch limit meanwhile; the first message must come in
    /// 10 s.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_first_message_waits_per_ip: u64,
    /// v3 WebSockets that have not sent their first message yet, in total (default 128: at most
    /// 128 x the batch limit, about 190 MB at the default limits, buffered by them).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_first_message_waits: u64,
    /// v3 event streams of one client IP waiting for their bind (default 8; each waits 10 s
    /// at most). In total they are capped at --max-sessions.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_pending_streams_per_ip: u64,
    /// Client messages per second per session (default 200, bursts of 1,000); over it the
    /// session's reads are slowed, then refused. Protects the other members of a room.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub messages_per_sec: u32,
    /// Burst of client messages per session (default 1,000).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub messages_burst: u32,
    /// Upstream bytes per second per session (default 1 MiB, bursts of 4 MiB).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub bytes_per_sec: u32,
    /// Burst of upstream bytes per session (default 4 MiB).
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub bytes_burst: u32,
    /// How long a session over its rate is slowed down before it is refused (close 4003 or 429),
    /// in ms (default 5,000).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub rate_slowdown_ms: u64,
    /// Most frames in one request body or WebSocket message (default 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_frames_per_batch: u64,
    /// Most control frames (pongs) queued per session (default 8; the oldest is dropped).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_control_frames: u64,
    /// Bytes held in all replay buffers together (default 1 GiB); over it publishes get 503 and
    /// client messages are slowed, then refused. Protects the server's memory.
    #[arg(long, default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub replay_budget_bytes: u64,
    /// Most replay bytes the sessions of one client IP hold together (default: the budget / 16);
    /// over it the session receiving a message overflows (close 4003 "replay buffer overflow"),
    /// as at its own bound, so one address cannot exhaust the global budget.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub replay_budget_per_ip_bytes: Option<u64>,
    /// A stream write (WebSocket, SSE) that does not finish within this many ms cuts the stream
    /// as a slow consumer (default 15,000).
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub stream_write_timeout_ms: u64,
    /// A publish with more member deliveries than this runs on a blocking thread (default 4,096),
    /// so the runtime workers keep serving.
    #[arg(long, default_value_t = 4_096, value_parser = clap::value_parser!(u64).range(1..))]
    pub fanout_blocking_threshold: u64,
    /// Retry advice of a refusal, in ms (close 4003 `retry=`, `Retry-After`), default 5,000; a
    /// value under 1,000 advises 1,000 (no tight reconnect loop).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub limit_retry_after_ms: u64,
}

impl LimitFlags {
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        let size = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        config.limits = LimitConfig {
            max_sessions_per_ip: size(self.max_sessions_per_ip),
            max_streams_per_ip: size(self.max_streams_per_ip),
            new_sessions_per_sec: self.new_sessions_per_sec,
            new_sessions_burst: self.new_sessions_burst,
            credential_attempts_per_sec: self.credential_attempts_per_sec,
            credential_attempts_burst: self.credential_attempts_burst,
            max_first_message_waits_per_ip: size(self.max_first_message_waits_per_ip),
            max_first_message_waits: size(self.max_first_message_waits),
            max_pending_streams_per_ip: size(self.max_pending_streams_per_ip),
            messages_per_sec: self.messages_per_sec,
            messages_burst: self.messages_burst,
            bytes_per_sec: self.bytes_per_sec,
            bytes_burst: self.bytes_burst,
            rate_slowdown: Duration::from_millis(self.rate_slowdown_ms),
            max_frames_per_batch: size(self.max_frames_per_batch),
            max_control_frames: size(self.max_control_frames),
            replay_budget_bytes: size(self.replay_budget_bytes),
            replay_budget_per_ip_bytes: self.replay_budget_per_ip_bytes.map(size),
            stream_write_timeout: Duration::from_millis(self.stream_write_timeout_ms),
            fanout_blocking_threshold: size(self.fanout_blocking_threshold),
            retry_after: Duration::from_millis(self.limit_retry_after_ms),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitFlags,
    }

    #[test]
    fn flag_defaults_are_the_config_defaults_and_flags_apply() {
        let mut config = Config::default();
        Flags::parse_from(["test"]).limits.apply(&mut config).unwrap();
        let defaults = LimitConfig::default();
        assert_eq!(format!("{:?}", config.limits), format!("{defaults:?}"));
        let flags = Flags::parse_from(["test", "--max-sessions-per-ip", "3", "--stream-write-timeout-ms", "500", "--limit-retry-after-ms", "0"]);
        flags.limits.apply(&mut config).unwrap();
        assert_eq!(config.limits.max_sessions_per_ip, 3);
        assert_eq!(config.limits.stream_write_timeout, Duration::from_millis(500));
        assert_eq!(config.limits.retry_after_secs(), 1, "Retry-After is at least 1 s");
        let advice = realtime_client::core::wire::Retry::AfterMs(1_000);
        assert_eq!(config.limits.retry(), advice, "retry= agrees with Retry-After: at least 1,000 ms");
        let limits = LimitConfig { retry_after: Duration::from_millis(2_500), ..LimitConfig::default() };
        assert_eq!((limits.retry(), limits.retry_after_secs()), (realtime_client::core::wire::Retry::AfterMs(2_500), 2));
        assert!(Flags::try_parse_from(["test", "--messages-per-sec", "0"]).is_err());
        assert_eq!(config.limits.replay_share_per_ip(), (1 << 30) / 16, "default: the budget / 16");
        Flags::parse_from(["test", "--replay-budget-per-ip-bytes", "1000"]).limits.apply(&mut config).unwrap();
        assert_eq!(config.limits.replay_share_per_ip(), 1000);
    }
}
