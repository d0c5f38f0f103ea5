//! Tombstones of freed channels (PROTOCOL.md §8.11 item 5): a channel freed for having no
//! subscribers and no history leaves its `(epoch, top)` for a while, and the channel created
//! again under that name within that time goes on in the same epoch from the same top. Its
//! history was empty when it was freed, so nothing is lost by keeping the epoch: a subscriber at
//! `(epoch, top)` recovers with `rec=1` and no replay, one further behind gets the exact gap.
//! Plain data, no locks, no clock: `now` is an input.
//!
//! Invariants:
//! - at most `max` tombstones are held; past it the oldest goes first (counted in `evicted`);
//! - a tombstone is taken at most once, and never after its `until`;
//! - `order` lists tombstones oldest first (all have the same lifetime, so also by expiry); an
//!   entry whose tombstone was taken or replaced is stale and is skipped, and `order` is
//!   compacted when stale entries would make it more than twice the live count (churn on one
//!   name cannot grow it without bound).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    epoch: u64,
    top: u64,
    until: Instant,
}

/// The tombstones of freed channels, by name.
#[derive(Debug)]
pub(super) struct Tombstones {
    by_name: HashMap<Arc<str>, Tombstone>,
    order: VecDeque<(Arc<str>, Instant)>,
    lifetime: Duration,
    max: usize,
    /// Tombstones dropped before their time by the `max` bound, since last taken.
    evicted: u64,
}

impl Tombstones {
    /// Tombstones that last `lifetime` (zero: none are kept), at most `max` at once.
    pub(super) fn new(lifetime: Duration, max: usize) -> Self {
        Tombstones { by_name: HashMap::new(), order: VecDeque::new(), lifetime, max, evicted: 0 }
    }

    /// The channel `name` was freed at `now` in `epoch` with offsets up to `top`.
    pub(super) fn leave(&mut self, name: &str, epoch: u64, top: u64, now: Instant) {
        if self.lifetime.is_zero() || self.max == 0 {
            return;
        }
        let until = now + self.lifetime;
        let name: Arc<str> = Arc::from(name);
        self.by_name.insert(name.clone(), Tombstone { epoch, top, until });
        self.order.push_back((name, until));
        self.trim(now);
    }

    /// The `(epoch, top)` to create `name` again with, if a live tombstone is left (taken).
    pub(super) fn take(&mut self, name: &str, now: Instant) -> Option<(u64, u64)> {
        let tombstone = self.by_name.remove(name)?;
        (tombstone.until >= now).then_some((tombstone.epoch, tombstone.top))
    }

    /// Drops expired tombstones, and the oldest while more than `max` are held.
    pub(super) fn trim(&mut self, now: Instant) {
        while let Some((name, until)) = self.order.front() {
            let live = self.by_name.get(name).is_some_and(|tombstone| tombstone.until == *until);
            if live && *until >= now && self.by_name.len() <= self.max {
                break;
            }
            if live {
                if *until >= now {
                    self.evicted = self.evicted.saturating_add(1);
                }
                self.by_name.remove(name);
            }
            self.order.pop_front();
        }
        if self.order.len() > self.by_name.len().saturating_mul(2).max(64) {
            let by_name = &self.by_name;
            self.order.retain(|(name, until)| by_name.get(name).is_some_and(|tombstone| tombstone.until == *until));
        }
        debug_assert!(self.by_name.len() <= self.max);
    }

    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Entries in the expiry queue, stale ones included (tests check its bound).
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.order.len()
    }

    /// Tombstones evicted by the `max` bound since the last call.
    pub(super) fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }
}
