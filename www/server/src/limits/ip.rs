//! Per-IP state: how many sessions and streams each client IP holds, the replay bytes its
//! sessions hold, and its new-session rate.
//!
//! Invariants: a count is taken by a slot ([`SessionSlot`], [`StreamSlot`]) and given back when
//! the slot drops, so a count can never leak; an IP whose counts reach zero leaves the table.
//! Replay bytes are charged and released through the session's [`SessionSlot`] (by its replay
//! buffer, which gives back everything it holds before the slot drops).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::LimitConfig;
use crate::metrics::LimitKind;
use crate::session::lock;

/// The key of per-IP limits: the address itself for IPv4, its /64 for IPv6.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Counts {
    sessions: usize,
    streams: usize,
    /// Replay bytes held by this IP's sessions (shared with their slots: no lock per message).
    replay_bytes: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Table {
    counts: Mutex<HashMap<IpAddr, Counts>>,
}

impl Table {
    fn release(&self, key: IpAddr, edit: impl FnOnce(&mut Counts)) {
        let mut counts = lock(&self.counts);
        if let Some(entry) = counts.get_mut(&key) {
            edit(entry);
            if entry.sessions == 0 && entry.streams == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// Sessions and streams held per client IP, and the keyed new-session limiter.
pub struct IpLimits {
    table: Arc<Table>,
    new_sessions: DefaultKeyedRateLimiter<IpAddr>,
    credential_attempts: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for IpLimits {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("IpLimits").finish_non_exhaustive()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

impl IpLimits {
    pub fn new(config: &LimitConfig) -> Self {
        IpLimits {
            table: Arc::default(),
            new_sessions: RateLimiter::keyed(quota(config.new_sessions_per_sec, config.new_sessions_burst)),
            credential_attempts: RateLimiter::keyed(quota(config.credential_attempts_per_sec, config.credential_attempts_burst)),
        }
    }

    /// Counts a new session of `ip`, or says which limit refuses it. The rate is only charged
    /// when the count admits the session.
    pub fn admit_session(&self, ip: IpAddr, config: &LimitConfig) -> Result<SessionSlot, LimitKind> {
        let key = ip_key(ip);
        let mut counts = lock(&self.table.counts);
        let entry = counts.entry(key).or_default();
        if entry.sessions >= config.max_sessions_per_ip {
            if entry.sessions == 0 && entry.streams == 0 {
                counts.remove(&key);
            }
            return Err(LimitKind::sessions_per_ip);
        }
        if self.new_sessions.check_key(&key).is_err() {
            if entry.sessions == 0 && entry.streams == 0 {
                counts.remove(&key);
            }
            return Err(LimitKind::new_session_rate);
        }
        entry.sessions += 1;
        Ok(SessionSlot { table: self.table.clone(), key, replay_bytes: entry.replay_bytes.clone() })
    }

    /// Counts a live stream or held poll of `ip`, or refuses it.
    pub fn admit_stream(&self, ip: IpAddr, config: &LimitConfig) -> Result<StreamSlot, LimitKind> {
        let key = ip_key(ip);
        let mut counts = lock(&self.table.counts);
        let entry = counts.entry(key).or_default();
        if entry.streams >= config.max_streams_per_ip {
            if entry.sessions == 0 && entry.streams == 0 {
                counts.remove(&key);
            }
            return Err(LimitKind::streams_per_ip);
        }
        entry.streams += 1;
        Ok(StreamSlot { table: self.table.clone(), key })
    }

    /// Sessions held by `ip` (by its key).
    pub fn sessions_of(&self, ip: IpAddr) -> usize {
        lock(&self.table.counts).get(&ip_key(ip)).map_or(0, |counts| counts.sessions)
    }

    /// Streams and held polls of `ip` (by its key).
    pub fn streams_of(&self, ip: IpAddr) -> usize {
        lock(&self.table.counts).get(&ip_key(ip)).map_or(0, |counts| counts.streams)
    }

    /// Replay bytes held by the sessions of `ip` (by its key).
    pub fn replay_bytes_of(&self, ip: IpAddr) -> usize {
        lock(&self.table.counts).get(&ip_key(ip)).map_or(0, |counts| counts.replay_bytes.load(Ordering::Acquire))
    }

    /// IPs with any count (the size of the table).
    pub fn tracked_ips(&self) -> usize {
        lock(&self.table.counts).len()
    }

    /// Keys of the new-session limiter (bounded by [`Self::prune`]).
    pub fn rate_keys(&self) -> usize {
        self.new_sessions.len()
    }

    /// Forgets limiter state of IPs that are back to a full burst (called by the sweeper).
    pub fn prune(&self) {
        self.new_sessions.retain_recent();
        self.new_sessions.shrink_to_fit();
        self.credential_attempts.retain_recent();
        self.credential_attempts.shrink_to_fit();
    }

    /// Counts one credential check of `ip` (before it is made), or refuses it over the rate.
    pub fn admit_credential(&self, ip: IpAddr) -> Result<(), LimitKind> {
        self.credential_attempts.check_key(&ip_key(ip)).map_err(|_| LimitKind::credential_rate)
    }
}

/// Connections in a waiting state (a v3 WebSocket before its first message), per IP key and
/// in total, each counted by a [`WaitSlot`] until it drops.
#[derive(Debug, Default)]
pub struct Waits {
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Waits {
    /// Counts one waiting connection of `ip`, or refuses it (`kind`) at `per_ip` for its IP or
    /// `total` in all; the check and the count are one step under the lock.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, per_ip: usize, total: usize, kind: LimitKind) -> Result<WaitSlot, LimitKind> {
        let key = ip_key(ip);
        let mut guard = lock(&self.counts);
        let (all, by_ip) = &mut *guard;
        let of_ip = by_ip.get(&key).copied().unwrap_or(0);
        if *all >= total || of_ip >= per_ip {
            return Err(kind);
        }
        *all += 1;
        by_ip.insert(key, of_ip + 1);
        Ok(WaitSlot { waits: self.clone(), key })
    }

    /// Connections waiting now, in total.
    pub fn len(&self) -> usize {
        lock(&self.counts).0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One waiting connection counted against its IP and the total until it drops.
#[derive(Debug)]
pub struct WaitSlot {
    waits: Arc<Waits>,
    key: IpAddr,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.waits.counts);
        let (all, by_ip) = &mut *guard;
        *all = all.saturating_sub(1);
        if let Some(count) = by_ip.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_ip.remove(&self.key);
            }
        }
    }
}

/// One session counted against its IP until it drops.
#[derive(Debug)]
pub struct SessionSlot {
    table: Arc<Table>,
    key: IpAddr,
    replay_bytes: Arc<AtomicUsize>,
}

impl SessionSlot {
    /// Charges `bytes` of this session's replay buffer to its IP; returns the IP's total after.
    pub fn charge_replay(&self, bytes: usize) -> usize {
        self.replay_bytes.fetch_add(bytes, Ordering::AcqRel).saturating_add(bytes)
    }

    /// Gives back replay bytes charged by [`Self::charge_replay`] (saturating).
    pub fn release_replay(&self, bytes: usize) {
        let _ = self.replay_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| Some(held.saturating_sub(bytes)));
    }

    /// Replay bytes held by all the sessions of this IP now.
    pub fn ip_replay_bytes(&self) -> usize {
        self.replay_bytes.load(Ordering::Acquire)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.table.release(self.key, |counts| counts.sessions = counts.sessions.saturating_sub(1));
    }
}

/// One stream or held poll counted against its IP until it drops.
#[derive(Debug)]
pub struct StreamSlot {
    table: Arc<Table>,
    key: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.table.release(self.key, |counts| counts.streams = counts.streams.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), ip("2001:db8:1:2::"));
        assert_ne!(ip_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn slots_count_per_ip_and_give_back_on_drop() {
        let config = LimitConfig { max_sessions_per_ip: 2, max_streams_per_ip: 1, ..LimitConfig::default() };
        let limits = IpLimits::new(&config);
        let a = limits.admit_session(ip("2001:db8::1"), &config).unwrap();
        let _b = limits.admit_session(ip("2001:db8::2"), &config).unwrap();
        assert_eq!(limits.admit_session(ip("2001:db8::3"), &config).unwrap_err(), LimitKind::sessions_per_ip);
        // Another IP is not affected.
        let other = limits.admit_session(ip("192.0.2.1"), &config).unwrap();
        drop(a);
        let _c = limits.admit_session(ip("2001:db8::3"), &config).unwrap();
        let stream = limits.admit_stream(ip("192.0.2.1"), &config).unwrap();
        assert_eq!(limits.admit_stream(ip("192.0.2.1"), &config).unwrap_err(), LimitKind::streams_per_ip);
        drop(stream);
        drop(other);
        assert_eq!(limits.sessions_of(ip("192.0.2.1")), 0);
        assert_eq!(limits.tracked_ips(), 1, "an IP with nothing held leaves the table");
    }

    #[test]
    fn replay_bytes_are_counted_per_ip_through_the_slots() {
        let config = LimitConfig::default();
        let limits = IpLimits::new(&config);
        let a = limits.admit_session(ip("192.0.2.9"), &config).unwrap();
        let b = limits.admit_session(ip("192.0.2.9"), &config).unwrap();
        let other = limits.admit_session(ip("192.0.2.10"), &config).unwrap();
        assert_eq!(a.charge_replay(100), 100);
        assert_eq!(b.charge_replay(50), 150, "the sessions of one IP share the count");
        assert_eq!(other.charge_replay(7), 7);
        a.release_replay(100);
        b.release_replay(500);
        assert_eq!(limits.replay_bytes_of(ip("192.0.2.9")), 0, "a release never wraps");
        assert_eq!(limits.replay_bytes_of(ip("192.0.2.10")), 7);
    }

    #[test]
    fn new_session_rate_is_per_ip_and_pruned() {
        let config = LimitConfig { new_sessions_per_sec: 1, new_sessions_burst: 3, ..LimitConfig::default() };
        let limits = IpLimits::new(&config);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limits.admit_session(ip("192.0.2.1"), &config).unwrap());
        }
        assert_eq!(limits.admit_session(ip("192.0.2.1"), &config).unwrap_err(), LimitKind::new_session_rate);
        held.push(limits.admit_session(ip("192.0.2.2"), &config).unwrap());
        assert_eq!(limits.rate_keys(), 2);
        limits.prune();
        assert_eq!(limits.rate_keys(), 2, "IPs that used their burst are remembered");
    }

    #[test]
    fn pruning_forgets_ips_back_at_a_full_burst() {
        let config = LimitConfig { new_sessions_per_sec: 1_000, new_sessions_burst: 3, ..LimitConfig::default() };
        let limits = IpLimits::new(&config);
        for index in 0..50u8 {
            drop(limits.admit_session(IpAddr::from([192, 0, 2, index]), &config).unwrap());
        }
        assert_eq!(limits.rate_keys(), 50);
        // At 1,000/s a used cell is back within a millisecond; look again until then (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while limits.rate_keys() > 0 {
            assert!(std::time::Instant::now() < deadline, "the keyed limiter was never pruned");
            std::thread::yield_now();
            limits.prune();
        }
        assert_eq!(limits.tracked_ips(), 0);
    }
}
