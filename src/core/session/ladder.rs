//! Connect rounds: the transport ladder, raced, and what happens when a connection fails.
//!
//! A round starts on the rung that worked last (or that an earlier page remembered), then the
//! rest in preference order. The first rung gets a head start; when it expires, or as soon as a
//! rung is refused, the next one opens beside those still racing. A rung whose transport opened
//! but said no hello is raced sooner, once it has been silent for as long as opening it took,
//! clamped (see `candidate_opened`). The first hello wins. When every rung of a round has failed, the next
//! round waits out a backoff delay.
//!
//! Invariant: a disconnect is a state, not an error. It emits `Reconnecting` and schedules a
//! retry, or closes for good when the policy or the server says stop.

use crate::prelude::*;
use crate::core::backoff::Backoff;
use crate::core::endpoint::TransportKind;
use crate::core::session::conns::{Attach, Role};
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, ErrorCode, Event, Session, State};
use crate::core::wire::Retry;
use crate::core::session::limits::{self, after};
use crate::core::Millis;

/// How a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// It closed or could not be opened.
    Transport,
    /// It broke the protocol (a frame that does not decode, a gap, a hello out of place).
    Protocol,
    /// The server gave no hello in time.
    Timeout,
}

impl Failure {
    fn code(self) -> ErrorCode {
        match self {
            Failure::Transport => ErrorCode::TransportFailed,
            Failure::Protocol => ErrorCode::Protocol,
            Failure::Timeout => ErrorCode::Timeout,
        }
    }
}

impl Session {
    /// Starts walking the ladder: the remembered rung first, then the others in order.
    pub(super) fn start_round(&mut self, now: Millis) {
        if !self.credential_ready(now) {
            return; // The token source is asked; its answer starts the round.
        }
        let first = self
            .last_transport
            .or(self.remembered)
            .filter(|kind| self.config.transports.contains(kind))
            .or(self.config.transports.first().copied())
            .unwrap_or(TransportKind::WebSocket);
        self.untried = core::iter::once(first)
            .chain(self.config.transports.iter().copied().filter(|&kind| kind != first))
            .collect();
        self.last_failure.clear();
        self.open_next_candidate(now);
    }

    /// Opens the next untried rung beside those already racing; arms the next head start.
    pub(super) fn open_next_candidate(&mut self, now: Millis) {
        if self.untried.is_empty() {
            return;
        }
        // Taken from the front without `Vec::remove` (an assertion, so a panic site).
        let mut rest = core::mem::take(&mut self.untried).into_iter();
        let Some(kind) = rest.next() else { return };
        self.untried = rest.collect();
        // At most one connection of a round presents the resume: the server attaches the last
        // one to arrive and retires the other, so two would fight over the session. The others
        // race with a hello only; if one of them wins, the session resumes on its rung.
        let resuming = self.conns.iter().any(|conn| conn.role == Role::Candidate && conn.attach == Attach::Resume);
        let attach = if self.ids.is_some() && resuming { Attach::HelloOnly } else { Attach::Resume };
        self.open_conn(now, kind, Role::Candidate, attach);
        if self.untried.is_empty() {
            self.timers.clear(Timer::Race);
        } else {
            self.timers.set(Timer::Race, after(now, self.config.head_start_ms));
        }
    }

    /// The newest candidate's transport opened (a WebSocket upgrade, an event stream's headers)
    /// without its hello. A working server sends the hello right behind the open, so the next
    /// rung need not wait out the whole head start: it opens once the candidate has been silent
    /// for as long as opening it took (at least one round trip), but never sooner than
    /// `MIN_HELLO_GRACE_MS` and never later than the head start would have. An open from an
    /// older candidate, a second open, or one after the hello changes nothing.
    pub(super) fn candidate_opened(&mut self, now: Millis, id: ConnId) {
        let newest = self.conns.iter().filter(|conn| conn.role == Role::Candidate).last();
        let (Some(conn), Some(race)) = (newest.filter(|conn| conn.id == id), self.timers.get(Timer::Race)) else { return };
        // Clamped: at least the floor (a 0 ms estimate, or a clock that stepped back), and the
        // deadline never later than the head start's (an estimate of minutes).
        let grace = now.saturating_sub(conn.opened_at).max(limits::MIN_HELLO_GRACE_MS);
        self.timers.set(Timer::Race, race.min(after(now, grace)));
    }

    /// A connection failed (closed, timed out, or broke the protocol).
    pub(super) fn conn_failed(&mut self, now: Millis, id: ConnId, reason: &str, failure: Failure) {
        let Some(conn) = self.conn(id) else { return };
        let (role, kind) = (conn.role, conn.kind);
        let protocol = failure == Failure::Protocol;
        if protocol {
            let mut message = String::from("protocol error: ");
            message.push_str(reason);
            self.events.push(Event::Error { code: ErrorCode::Protocol, message });
        }
        match role {
            Role::Active => {
                let mut message = String::new();
                if protocol {
                    message.push_str("protocol error: ");
                }
                message.push_str(reason);
                self.active_lost(now, message, Retry::Default);
            }
            Role::Candidate => {
                self.drop_conn(id);
                self.last_failure = String::from(kind.as_str());
                self.last_failure.push_str(" failed: ");
                self.last_failure.push_str(reason);
                if !protocol {
                    // A rung that fails says why (a protocol error has said so already).
                    self.events.push(Event::Error { code: failure.code(), message: self.last_failure.clone() });
                }
                let racing = self.conns.any(Role::Candidate);
                if !racing && !self.untried.is_empty() {
                    // A refused rung costs nothing: the next one starts now.
                    self.open_next_candidate(now);
                } else if !racing {
                    self.timers.clear(Timer::Race);
                    let reason = core::mem::take(&mut self.last_failure);
                    self.schedule_reconnect(now, reason, Retry::Default);
                }
            }
            Role::Probe | Role::Migrating => {
                self.drop_conn(id);
                if role == Role::Migrating && self.active().is_none() {
                    // The old connection was already handed over: the session has none left.
                    let mut message = String::from("upgrade failed: ");
                    message.push_str(reason);
                    self.active_lost(now, message, Retry::Default);
                } else {
                    self.schedule_probe(now);
                }
            }
            Role::Draining => self.drop_conn(id),
        }
    }

    /// The active connection is gone: drop everything and schedule the next round.
    pub(super) fn active_lost(&mut self, now: Millis, reason: String, advice: Retry) {
        self.drop_all_conns();
        self.timers.clear_all();
        self.untried.clear();
        if self.state == State::Closed {
            return;
        }
        self.schedule_reconnect(now, reason, advice);
    }

    pub(super) fn schedule_reconnect(&mut self, now: Millis, reason: String, advice: Retry) {
        let delay = match (self.backoff.as_mut(), advice) {
            (_, Retry::Never) | (None, _) => None,
            (Some(backoff), _) if !backoff.can_retry() => None,
            // "Not before N ms", plus the jitter of this attempt: after a restart, every client
            // gets the same advice, and they must not all come back in the same millisecond.
            (Some(backoff), Retry::AfterMs(ms)) => {
                Some(ms.min(limits::MAX_RETRY_MS).saturating_add(backoff.next_delay(&mut self.jitter)))
            }
            (Some(backoff), Retry::Default) => Some(backoff.next_delay(&mut self.jitter)),
        };
        let Some(delay) = delay else {
            // The app learns why the client stopped, as for every other end that is not its own.
            let mut message = String::from("gave up reconnecting: ");
            message.push_str(&reason);
            self.events.push(Event::Error { code: ErrorCode::RetriesExhausted, message });
            self.finish(1006, reason, ErrorCode::RetriesExhausted, "gave up reconnecting");
            return;
        };
        let attempt = self.backoff.as_ref().map_or(0, Backoff::attempt);
        self.stats.reconnects += 1;
        // Full jitter may draw 0; one millisecond keeps every deadline after `now`.
        let delay = delay.max(1);
        self.timers.set(Timer::Reconnect, after(now, delay));
        self.set_state(State::Reconnecting);
        self.events.push(Event::Reconnecting { attempt, delay_ms: delay, reason });
    }

    /// The rank of a rung in the ladder (0 is the preferred one).
    pub(super) fn rank(&self, kind: TransportKind) -> usize {
        self.config.transports.iter().position(|&allowed| allowed == kind).unwrap_or(usize::MAX)
    }
}
