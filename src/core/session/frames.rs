//! Frames from the server, by connection role: the hello that establishes a connection, the
//! promotion of the winner, a reset when the server could not resume, and the server's close.
//!
//! Invariants: a connection counts as established only once the server's hello arrived on it;
//! the first frame on a connection must be that hello; a draining connection is still read
//! (messages and acks) but never answered.

use crate::core::session::conns::Role;
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, Event, Session, SessionIds, State};
use crate::core::wire::{self, close_code, Close, Frame, Hello, Retry};
use crate::core::Millis;

impl Session {
    pub(super) fn handle_frame(&mut self, now: Millis, id: ConnId, frame: Frame) {
        let Some(conn) = self.conn(id) else { return };
        let (role, established) = (conn.role, conn.established);
        match (role, frame) {
            (Role::Draining, Frame::Message(message)) => self.handle_message(now, id, message),
            (Role::Draining, Frame::Ack { seq }) => self.handle_ack(now, id, seq),
            (Role::Draining, Frame::Close(_)) => self.drop_conn(id),
            (Role::Draining, _) => {}
            (_, Frame::Hello(hello)) if !established => self.handle_hello(now, id, role, hello),
            (_, Frame::Hello(_)) => self.conn_failed(now, id, "second hello on one connection", true),
            (_, Frame::Close(close)) if !established => {
                // A racing connection the server retired (another attach of ours won there).
                let mut reason = String::from("server closed the connection: ");
                reason.push_str(&close.reason);
                self.conn_failed(now, id, &reason, false);
            }
            (Role::Active, Frame::Close(close)) if close.code == close_code::REPLACED => self.handle_replaced(now, id),
            (_, _) if !established => self.conn_failed(now, id, "expected hello as the first frame", true),
            (Role::Active, Frame::Message(message)) => self.handle_message(now, id, message),
            (Role::Active, Frame::Ack { seq }) => self.handle_ack(now, id, seq),
            (Role::Active, Frame::Ping { time }) => self.queue_frame(&Frame::Pong { time }),
            (Role::Active, Frame::Pong { time }) => {
                if time <= now {
                    self.stats.rtt_ms = Some(now - time);
                }
            }
            (Role::Active, Frame::Close(close)) => self.handle_close(now, close),
            // A migrating connection carries nothing but its hello before it becomes active.
            (_, _) => {}
        }
    }

    fn handle_hello(&mut self, now: Millis, id: ConnId, role: Role, hello: Hello) {
        if hello.version != wire::PROTOCOL_VERSION {
            self.events.push_back(Event::Error { message: String::from("server speaks an unsupported protocol version") });
            self.finish(close_code::UNSUPPORTED_VERSION, String::from("unsupported protocol version"), "unsupported protocol version");
            return;
        }
        match role {
            Role::Probe => self.probe_proved(now, id),
            Role::Candidate | Role::Migrating => self.promote(now, id, role, hello),
            Role::Active | Role::Draining => {}
        }
    }

    /// Makes `id` the active connection after its hello.
    fn promote(&mut self, now: Millis, id: ConnId, role: Role, hello: Hello) {
        let asked_to_resume = self.ids.is_some();
        let resumed = asked_to_resume && hello.resumed;
        let previous = self.active().map(|conn| (conn.id, conn.kind));
        // The losers of a race, and (after a migration) the connection being replaced.
        let others: Vec<(ConnId, Role)> =
            self.conns.iter().filter(|conn| conn.id != id).map(|conn| (conn.id, conn.role)).collect();
        for (other, other_role) in others {
            match other_role {
                Role::Active if resumed => self.start_draining(now, other),
                Role::Draining => {}
                _ => self.drop_conn(other),
            }
        }
        if asked_to_resume && !hello.resumed {
            self.reset_session();
        }
        self.ids = Some(SessionIds { id: hello.session_id.clone(), secret: hello.secret });
        self.heartbeat_ms = hello.heartbeat_ms.max(1);
        self.max_body_bytes = usize::try_from(hello.max_body_bytes).unwrap_or(usize::MAX);
        self.timers.clear(Timer::Race);
        self.untried.clear();
        self.batch.clear();
        let Some(conn) = self.conn_mut(id) else { return };
        conn.role = Role::Active;
        conn.established = true;
        conn.deadline = None;
        conn.last_received = now;
        let kind = conn.kind;
        if role == Role::Candidate {
            self.timers.set(Timer::Stable, now + self.config.stable_after_ms);
        }
        self.handle_ack(now, id, hello.ack);
        self.set_state(State::Open);
        let from = previous.map(|(_, kind)| kind).or(self.last_transport);
        if from != Some(kind) {
            let reason = if role == Role::Migrating {
                self.stats.upgrades += 1;
                String::from("upgrade: the better transport works again")
            } else if self.rank(kind) > 0 && self.last_failure.is_empty() && self.remembered == Some(kind) {
                String::from("remembered: this transport worked last time")
            } else if self.rank(kind) > 0 {
                self.stats.fallbacks += 1;
                let mut reason = String::from("fallback: ");
                reason.push_str(if self.last_failure.is_empty() { "a better transport gave no hello in time" } else { &self.last_failure });
                reason
            } else {
                String::from("connected")
            };
            self.events.push_back(Event::Transport { from, to: kind, reason });
        }
        self.last_transport = Some(kind);
        self.last_failure.clear();
        if role == Role::Candidate || !resumed {
            self.events.push_back(Event::Open { session_id: hello.session_id, transport: kind, resumed });
        }
        self.outbox.mark_all_unsent();
        // A long poll continues from `after_poll_response`, once the whole response is handled.
        // One ping right away measures the round-trip time without waiting for a heartbeat.
        self.queue_frame(&Frame::Ping { time: now });
        self.pump_out(now);
        if self.better_rung().is_some() {
            if role == Role::Candidate {
                if let Some(backoff) = self.upgrade_backoff.as_mut() {
                    backoff.reset();
                }
            }
            self.schedule_probe(now);
        } else {
            self.timers.clear(Timer::Probe);
        }
    }

    /// The server could not resume: start over on the fresh session it gave us.
    fn reset_session(&mut self) {
        self.inbox = Default::default();
        self.timers.clear(Timer::Ack);
        self.renumber_outbox_for_reset();
        self.events.push_back(Event::Reset { reason: "the server could not resume the session" });
    }

    fn handle_close(&mut self, now: Millis, close: Close) {
        let fatal = matches!(close.code, close_code::UNAUTHORIZED | close_code::UNSUPPORTED_VERSION);
        if fatal || close.retry == Retry::Never || (close.code == close_code::NORMAL && close.retry == Retry::Default) {
            if fatal {
                let mut message = String::from("server refused the session: ");
                message.push_str(&close.reason);
                self.events.push_back(Event::Error { message });
            }
            self.finish(close.code, close.reason, "server closed the session");
            return;
        }
        let mut reason = String::from("server closed the connection: ");
        reason.push_str(&close.reason);
        self.active_lost(now, reason, close.retry);
    }

    /// Enters `Closed`: drops every connection and fails everything pending.
    pub(super) fn finish(&mut self, code: u16, reason: String, failure: &'static str) {
        self.drop_all_conns();
        self.timers.clear_all();
        self.untried.clear();
        self.fail_outbox(failure);
        self.set_state(State::Closed);
        self.events.push_back(Event::Closed { code, reason });
    }
}
