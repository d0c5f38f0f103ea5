//! The global replay budget: bytes held in every replay buffer together, and the message a
//! publish stores once and shares between all the members it reaches.
//!
//! Invariants: a [`SharedMessage`]'s payload is counted once, when it is made, and given back when
//! its last holder drops it; each replay entry pointing at it adds [`ENTRY_BYTES`] while it is
//! buffered. So `used` is the memory replay buffers actually hold (to within allocator overhead),
//! however many members share a payload. A publish first [`ReplayBudget::reserve`]s what it will
//! store, atomically, so concurrent publishes cannot all pass the check: `used` (reservations
//! included) passes the budget by one publish at most.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use realtime_client::core::wire::Payload;

/// What one replay entry costs besides its shared message (seq, time, pointer, queue slot).
pub const ENTRY_BYTES: usize = 64;

/// Bytes held in replay buffers, also exported as the `replay_bytes` gauge.
#[derive(Debug, Default)]
pub struct ReplayBudget {
    used: AtomicUsize,
    gauge: Gauge,
}

impl ReplayBudget {
    pub fn new(gauge: Gauge) -> Self {
        ReplayBudget { used: AtomicUsize::new(0), gauge }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        self.gauge.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn release(&self, bytes: usize) {
        // Saturating: a release can never wrap the counter below zero.
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(bytes)));
        self.gauge.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Reserves `bytes` for a publish while the budget is not exceeded (`used <= limit`, checked
    /// and added in one atomic step), or None. The reservation is given back when it drops,
    /// after the publish has charged what it actually stored; meanwhile both count, which only
    /// makes a concurrent publish's check stricter.
    pub fn reserve(self: &Arc<Self>, bytes: usize, limit: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used <= limit).then(|| used.saturating_add(bytes)))
            .ok()
            .map(|_| Reservation { budget: self.clone(), bytes })
    }

    /// Stores a message once, counted against the budget until its last holder drops it.
    pub fn share(self: &Arc<Self>, event: Option<String>, payload: Payload) -> Arc<SharedMessage> {
        self.share_from(None, event, payload)
    }

    /// [`Self::share`] for a message published by the verified `from` (v3: its `f`).
    pub fn share_from(self: &Arc<Self>, from: Option<Arc<str>>, event: Option<String>, payload: Payload) -> Arc<SharedMessage> {
        let bytes = payload.len() + event.as_ref().map_or(0, String::len) + from.as_ref().map_or(0, |from| from.len());
        self.charge(bytes);
        Arc::new(SharedMessage { event, payload, from, bytes, budget: self.clone() })
    }
}

/// Bytes reserved by [`ReplayBudget::reserve`] until it drops (not in the gauge: not memory).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ReplayBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = self.bytes;
        let _ = self.budget.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(bytes)));
    }
}

/// A message stored once and shared by every replay buffer it is in.
#[derive(Debug)]
pub struct SharedMessage {
    pub event: Option<String>,
    pub payload: Payload,
    /// The verified subject of the client that published it (v3 `f`; None: a backend publish
    /// or a server without authentication).
    pub from: Option<Arc<str>>,
    /// Payload plus event name (and `from`), in bytes.
    pub bytes: usize,
    budget: Arc<ReplayBudget>,
}

impl Drop for SharedMessage {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_payload_is_counted_once() {
        let budget = Arc::new(ReplayBudget::default());
        let message = budget.share(Some("e".into()), Payload::Text("x".repeat(1000)));
        let copies: Vec<_> = (0..100).map(|_| message.clone()).collect();
        assert_eq!(budget.used(), 1001);
        drop(message);
        drop(copies);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn reservations_pass_the_budget_by_one_at_most() {
        let budget = Arc::new(ReplayBudget::default());
        let first = budget.reserve(60, 100).unwrap();
        let second = budget.reserve(60, 100).expect("60 <= 100: one more may pass the budget");
        assert!(budget.reserve(1, 100).is_none(), "120 > 100: refused");
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(1, 100).is_some());
    }
}
