//! Background upgrade: probe a better rung, migrate the session there, drain the old connection.
//!
//! On a lower rung, a probe (a throwaway connection that attaches nothing and only waits for a
//! hello) re-tests the best allowed rung with backoff. Once it proves the rung, a migrating
//! connection resumes the session there; when its hello arrives it becomes active and the old
//! connection drains: still read, never written, until the server closes it or a deadline
//! passes. Invariant: at most one probe or migration is under way at a time.

use crate::prelude::*;
use crate::core::endpoint::TransportKind;
use crate::core::session::conns::{Attach, Role};
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, Session};
use crate::core::wire::Retry;
use crate::core::session::limits::after;
use crate::core::Millis;

impl Session {
    /// The best allowed rung above the active one, if any.
    pub(super) fn better_rung(&self) -> Option<TransportKind> {
        let active = self.active()?;
        let rank = self.rank(active.kind);
        self.config.transports.first().copied().filter(|&best| self.rank(best) < rank)
    }

    pub(super) fn schedule_probe(&mut self, now: Millis) {
        if self.better_rung().is_none() {
            return;
        }
        if let Some(backoff) = self.upgrade_backoff.as_mut() {
            let ceiling_floor = self.config.upgrade.map_or(0, |config| config.initial_delay_ms / 2);
            // Half fixed, half jittered: a probe never comes sooner than half the ceiling.
            let delay = ceiling_floor + backoff.next_delay(&mut self.jitter) / 2;
            self.timers.set(Timer::Probe, after(now, delay));
        }
    }

    pub(super) fn open_probe(&mut self, now: Millis) {
        let busy = self.conns.any(Role::Probe) || self.conns.any(Role::Migrating);
        if let (Some(kind), false) = (self.better_rung(), busy) {
            self.open_conn(now, kind, Role::Probe, Attach::HelloOnly);
        }
    }

    /// The probe said hello: drop it and resume the session on its rung.
    pub(super) fn probe_proved(&mut self, now: Millis, id: ConnId) {
        let kind = self.conn(id).map(|conn| conn.kind);
        self.drop_conn(id);
        if let Some(kind) = kind {
            self.open_conn(now, kind, Role::Migrating, Attach::Resume);
        }
    }

    /// A candidate that raced with a hello only won the round: close the others and resume the
    /// session on its rung, now the only connection presenting it.
    pub(super) fn resume_on_winning_rung(&mut self, now: Millis, id: ConnId) {
        let Some(kind) = self.conn(id).map(|conn| conn.kind) else { return };
        let others: Vec<ConnId> = self.conns.iter().filter(|conn| conn.role == Role::Candidate).map(|conn| conn.id).collect();
        for other in others {
            self.drop_conn(other);
        }
        self.untried.clear();
        self.timers.clear(Timer::Race);
        self.open_conn(now, kind, Role::Candidate, Attach::Resume);
    }

    /// Turns a replaced connection into a draining one, read until `drain_timeout_ms` passes.
    pub(super) fn start_draining(&mut self, now: Millis, id: ConnId) {
        let deadline = after(now, self.config.drain_timeout_ms);
        if let Some(conn) = self.conn_mut(id) {
            conn.role = Role::Draining;
            conn.deadline = Some(deadline);
        }
    }

    /// The server moved the session off the active connection. During our own migration that
    /// is the handover: the old connection drains and the session waits for the new one's hello
    /// (sends queue meanwhile). Otherwise one of our own late attaches won at the server: resume,
    /// whatever the frame's retry advice, since the session itself is alive.
    pub(super) fn handle_replaced(&mut self, now: Millis, id: ConnId) {
        if self.conns.any(Role::Migrating) {
            self.start_draining(now, id);
            self.batch.clear();
        } else {
            self.active_lost(now, String::from("server moved the session to another connection"), Retry::Default);
        }
    }
}
