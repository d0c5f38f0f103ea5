//! The session's timer table: one slot per kind of session-wide deadline.
//!
//! `handle_timeout` fires the slots that are due and `poll_timeout` reports the earliest one;
//! both read this table, so a deadline can never be armed without being reported. Deadlines
//! that belong to one connection (connect, drain) live in its table entry; deadlines derived
//! from traffic (heartbeat, liveness) are computed from the active connection.

use crate::core::Millis;

/// A session-wide deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Open the next rung of the ladder beside those already racing.
    Race,
    /// Start the next connect round after a backoff delay.
    Reconnect,
    /// Open a probe of a better rung.
    Probe,
    /// The connection stayed up long enough: reset the backoff attempt counter.
    Stable,
    /// Acknowledge what was delivered (debounced).
    Ack,
    /// A liveness check waits for any traffic from the server until then.
    Suspect,
    /// Subscribe again to a channel the server ended with `retry=N`.
    Resubscribe,
    /// Ask for a fresh credential ahead of the one in force (PROTOCOL.md §9.4).
    Refresh,
    /// The token source has not answered in time: the ask counts as failed.
    TokenAsk,
}

const COUNT: usize = 9;

impl Timer {
    fn slot(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    at: [Option<Millis>; COUNT],
}

impl Timers {
    pub(super) fn set(&mut self, timer: Timer, at: Millis) {
        self.at[timer.slot()] = Some(at);
    }

    /// Arms `timer` unless it is armed already (the earlier deadline stands).
    pub(super) fn set_if_unset(&mut self, timer: Timer, at: Millis) {
        let slot = &mut self.at[timer.slot()];
        if slot.is_none() {
            *slot = Some(at);
        }
    }

    pub(super) fn clear(&mut self, timer: Timer) {
        self.at[timer.slot()] = None;
    }

    /// Disarms every timer but `Resubscribe` (a subscription's, not a connection's: `close`
    /// clears it with the subscriptions): the session lost its connections or closed.
    pub(super) fn clear_all(&mut self) {
        let resubscribe = self.get(Timer::Resubscribe);
        self.at = [None; COUNT];
        self.at[Timer::Resubscribe.slot()] = resubscribe;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Millis> {
        self.at[timer.slot()]
    }

    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is due at `now`; a due timer is disarmed.
    pub(super) fn take_due(&mut self, timer: Timer, now: Millis) -> bool {
        let slot = &mut self.at[timer.slot()];
        if slot.is_some_and(|at| now >= at) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Millis> {
        self.at.iter().flatten().copied().min()
    }
}
