//! Liveness: heartbeats, the silence that means a connection is dead, and the page lifecycle.
//!
//! The server pings whenever it has been quiet for a heartbeat interval, so no traffic for an
//! interval and a half means the connection is dead. Browsers throttle and freeze timers in
//! hidden pages and the machine may sleep: silence noticed only after such a gap is checked with
//! a ping and a short grace before it is believed, since the socket may hold unread data.

use crate::prelude::*;
use crate::core::backoff::Backoff;
use crate::core::endpoint::TransportKind;
use crate::core::session::timers::Timer;
use crate::core::session::{Event, Session, State, Wake};
use crate::core::wire::{Frame, Retry};
use crate::core::session::limits::after;
use crate::core::Millis;

/// How much later than its latest deadline the session may run before it counts as having
/// slept (a throttled or frozen page, a suspended machine).
const LATE_MARGIN_MS: u64 = 1_000;

impl Session {
    /// A page or network lifecycle signal. Several in a row cost one check or one attempt.
    pub fn handle_wake(&mut self, now: Millis, wake: Wake) {
        match self.state {
            State::Open if self.active().is_some() && wake != Wake::PageShow => self.check_liveness(now),
            // Waiting out a backoff delay, or suspended at pagehide: try now.
            State::Reconnecting if self.conns.is_empty() && wake != Wake::Offline => {
                self.timers.set(Timer::Reconnect, now);
                self.handle_timeout(now);
            }
            _ => {}
        }
        self.flush(now);
        self.last_step = now;
    }

    /// `pagehide`: drop the connections (an open WebSocket keeps a page out of the back/forward
    /// cache) but keep the session, so that `pageshow` resumes it.
    pub fn suspend(&mut self, now: Millis) {
        if !matches!(self.state, State::Open | State::Connecting | State::Reconnecting) {
            return;
        }
        self.drop_all_conns();
        self.timers.clear_all();
        self.untried.clear();
        self.set_state(State::Reconnecting);
        self.events.push(Event::Reconnecting {
            attempt: self.backoff.as_ref().map_or(0, Backoff::attempt),
            delay_ms: 0,
            reason: String::from("page hidden: resuming when it is shown again"),
        });
        self.last_step = now;
    }

    /// Sends a ping and gives the server a short grace to answer; no answer means dead.
    pub(super) fn check_liveness(&mut self, now: Millis) {
        if self.timers.is_set(Timer::Suspect) {
            return; // A check is already under way.
        }
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        if kind != TransportKind::LongPolling {
            self.queue_frame(&Frame::Ping { time: now });
        }
        // A held long poll answers within one interval; other transports answer the ping.
        let grace = if kind == TransportKind::LongPolling { self.heartbeat_ms + 1_000 } else { (self.heartbeat_ms / 2).clamp(1_000, 5_000) };
        self.timers.set(Timer::Suspect, after(now, grace));
    }

    /// No traffic for a heartbeat interval plus half of one means the connection is dead.
    pub(super) fn liveness_timeout(&self) -> u64 {
        self.heartbeat_ms + self.heartbeat_ms / 2
    }

    /// The liveness part of `handle_timeout`: a failed check, silence, or a heartbeat due.
    pub(super) fn check_traffic(&mut self, now: Millis) {
        // A gap longer than any deadline we set means the page was frozen or throttled.
        let woke_late = self.last_step > 0 && now > self.last_step.saturating_add(self.heartbeat_ms + LATE_MARGIN_MS);
        if self.timers.take_due(Timer::Suspect, now) {
            self.active_lost(now, String::from("liveness check failed: no answer from the server"), Retry::Default);
        }
        let Some((last_received, last_sent, kind)) =
            self.active().map(|conn| (conn.last_received, conn.last_sent, conn.kind))
        else {
            return;
        };
        let silent = now >= last_received.saturating_add(self.liveness_timeout());
        if silent && (woke_late || self.timers.is_set(Timer::Suspect)) {
            // Silence seen only because we slept: ask before believing it.
            self.check_liveness(now);
        } else if silent {
            self.active_lost(now, String::from("heartbeat timeout: no traffic from the server"), Retry::Default);
        } else if now >= last_sent.saturating_add(self.heartbeat_ms) && kind != TransportKind::LongPolling && self.can_write() {
            // A long poll is itself the client's heartbeat, and so is a POST in flight.
            self.queue_frame(&Frame::Ping { time: now });
        }
    }

    /// The next deadline the active connection's traffic sets (silence or a heartbeat due).
    pub(super) fn traffic_deadline(&self) -> Option<Millis> {
        if self.timers.is_set(Timer::Suspect) {
            return None; // The check's own deadline stands.
        }
        let conn = self.active()?;
        let silence = conn.last_received.saturating_add(self.liveness_timeout());
        if conn.kind != TransportKind::LongPolling && !conn.post_in_flight {
            Some(silence.min(conn.last_sent.saturating_add(self.heartbeat_ms)))
        } else {
            Some(silence)
        }
    }
}
