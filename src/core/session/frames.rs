//! Frames from the server, by connection role: the hello that establishes a connection, the
//! promotion of the winner, a reset when the server could not resume, and the server's close.
//!
//! Invariants: a connection counts as established only once the server's hello arrived on it;
//! the first frame on a connection must be that hello; a draining connection is still read
//! (messages and acks) but never answered.

use crate::prelude::*;
use crate::core::session::auth::CREDENTIAL_REFUSED;
use crate::core::session::conns::{Attach, Role};
use crate::core::session::limits::{self, after};
use crate::core::session::ladder::Failure;
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, ErrorCode, Event, Session, SessionIds, State, TransportCause};
use crate::core::wire::{self, close_code, Close, Frame, Hello, Retry};
use crate::core::Millis;

impl Session {
    pub(super) fn handle_frame(&mut self, now: Millis, id: ConnId, frame: Frame) {
        let Some(conn) = self.conn(id) else { return };
        let (role, established) = (conn.role, conn.established);
        match (role, frame) {
            (Role::Draining, Frame::Message(message)) => self.handle_message(now, id, message),
            (Role::Draining, Frame::Ack { seq }) => self.handle_ack(now, id, seq),
            (Role::Draining, frame) if is_channel_frame(&frame) => self.handle_channel_frame(now, id, frame),
            (Role::Draining, Frame::Close(_)) => self.drop_conn(id),
            (Role::Draining, _) => {}
            (_, Frame::Close(close)) if close.code == CREDENTIAL_REFUSED => self.credential_refused(now, id, role, close),
            (Role::Candidate | Role::Migrating, Frame::Pending { stream }) if !established => self.bind(now, id, stream),
            (_, Frame::AuthHello(hello, auth)) if !established => {
                let promoted = role != Role::Probe;
                self.handle_hello(now, id, role, hello);
                if promoted && self.active().is_some_and(|conn| conn.id == id) {
                    self.credential_expires_in(now, auth.expires_in_ms);
                }
            }
            (_, Frame::Hello(hello)) if !established => {
                self.handle_hello(now, id, role, hello);
                if self.active().is_some_and(|conn| conn.id == id) {
                    self.credential_expires_in(now, None);
                }
            }
            (_, Frame::Hello(_) | Frame::AuthHello(..)) => self.conn_failed(now, id, "second hello on one connection", Failure::Protocol),
            (_, Frame::Close(close)) if !established => self.handle_close_before_hello(now, id, role, close),
            (Role::Active, Frame::Close(close)) if close.code == close_code::REPLACED => self.handle_replaced(now, id),
            (_, _) if !established => self.conn_failed(now, id, "expected hello as the first frame", Failure::Protocol),
            (Role::Active, Frame::Message(message)) => self.handle_message(now, id, message),
            (Role::Active, Frame::Ack { seq }) => self.handle_ack(now, id, seq),
            (Role::Active, frame) if is_channel_frame(&frame) => self.handle_channel_frame(now, id, frame),
            (Role::Active, Frame::Ping { time }) => self.queue_frame(&Frame::Pong { time }),
            (Role::Active, Frame::Pong { time }) => {
                if time <= now {
                    self.stats.rtt_ms = Some(now - time);
                }
            }
            (Role::Active, Frame::Close(close)) => self.handle_close(now, close),
            // An `authed` answers a refresh; one nobody asked for still says when this ends.
            (Role::Active, Frame::Authed { expires_in_ms }) => self.credential_expires_in(now, expires_in_ms),
            // A migrating connection carries nothing but its hello before it becomes active.
            (_, _) => {}
        }
    }

    fn handle_hello(&mut self, now: Millis, id: ConnId, role: Role, hello: Hello) {
        if hello.version != wire::PROTOCOL_V3 && matches!(role, Role::Probe | Role::Migrating) {
            // The better rung is served by another server version; the session is fine where it is.
            self.conn_failed(now, id, "the better transport's server speaks another protocol version", Failure::Transport);
            return;
        }
        if hello.version != wire::PROTOCOL_V3 {
            self.events.push(Event::Error {
                code: ErrorCode::UnsupportedVersion,
                message: String::from("server speaks an unsupported protocol version"),
            });
            self.finish(
                close_code::UNSUPPORTED_VERSION,
                String::from("unsupported protocol version"),
                ErrorCode::UnsupportedVersion,
                "unsupported protocol version",
            );
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
        let Some(conn) = self.conn(id) else { return };
        let (attach, presented_last) = (conn.attach, conn.presented_last);
        if role == Role::Candidate && attach == Attach::HelloOnly {
            // A rung that raced without the resume won: resume there, alone (two connections
            // presenting one session would make the server replace one with the other).
            self.resume_on_winning_rung(now, id);
            return;
        }
        let asked_to_resume = presented_last.is_some();
        let resumed = asked_to_resume && hello.resumed;
        // The server cannot have received more than we sent; a fresh session received nothing.
        let ack_limit = if resumed { self.outbox.next_seq - 1 } else { 0 };
        if hello.ack > ack_limit {
            self.conn_failed(now, id, "hello acknowledged a message never sent", Failure::Protocol);
            return;
        }
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
        self.heartbeat_ms = hello.heartbeat_ms.clamp(limits::MIN_HEARTBEAT_MS, limits::MAX_HEARTBEAT_MS);
        self.max_body_bytes = usize::try_from(hello.max_body_bytes.min(limits::MAX_BODY_BYTES)).unwrap_or(usize::MAX);
        self.timers.clear(Timer::Race);
        // A liveness check started on the connection being replaced says nothing of this one.
        self.timers.clear(Timer::Suspect);
        self.untried.clear();
        self.batch.clear();
        if resumed {
            // The resume's `rt_last` acknowledged everything delivered when it was opened.
            self.inbox.last_acked = self.inbox.last_acked.max(presented_last.unwrap_or(0));
        }
        let Some(conn) = self.conn_mut(id) else { return };
        conn.role = Role::Active;
        conn.established = true;
        conn.deadline = None;
        conn.last_received = now;
        let kind = conn.kind;
        if role == Role::Candidate {
            self.timers.set(Timer::Stable, after(now, self.config.stable_after_ms));
        }
        self.handle_ack(now, id, hello.ack);
        self.reject_oversize();
        if self.inbox.last_delivered > self.inbox.last_acked {
            // An ack that was batched for the old connection never went out: owe it here.
            self.timers.set_if_unset(Timer::Ack, after(now, self.ack_delay(Some(kind))));
        }
        self.set_state(State::Open);
        let from = previous.map(|(_, kind)| kind).or(self.last_transport);
        if from != Some(kind) {
            let (cause, reason) = if role == Role::Migrating {
                self.stats.upgrades += 1;
                (TransportCause::Upgrade, String::from("upgrade: the better transport works again"))
            } else if self.rank(kind) > 0 && self.last_failure.is_empty() && self.remembered == Some(kind) {
                (TransportCause::Remembered, String::from("remembered: this transport worked last time"))
            } else if self.rank(kind) > 0 {
                self.stats.fallbacks += 1;
                let mut reason = String::from("fallback: ");
                reason.push_str(if self.last_failure.is_empty() { "a better transport gave no hello in time" } else { &self.last_failure });
                (TransportCause::Fallback, reason)
            } else {
                (TransportCause::Connected, String::from("connected"))
            };
            self.events.push(Event::Transport { from, to: kind, cause, reason });
        }
        self.last_transport = Some(kind);
        self.last_failure.clear();
        if role == Role::Candidate || !resumed {
            self.events.push(Event::Open { session_id: hello.session_id, transport: kind, resumed });
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
        self.renumber_for_reset();
        self.events.push(Event::Reset { reason: "the server could not resume the session" });
    }

    /// A close on the active connection: the end, or a reconnect on the server's advice.
    fn handle_close(&mut self, now: Millis, close: Close) {
        if let Some(cause) = final_cause(&close) {
            self.end_by_server(close, cause);
            return;
        }
        let mut reason = String::from("server closed the connection: ");
        reason.push_str(&close.reason);
        self.active_lost(now, reason, close.retry);
    }

    /// A close before the hello. The server's advice counts wherever it arrives: a refusal ends
    /// the client, a "come back in N ms" ends the round (another rung of the same server would
    /// only be refused too), and only a plain close counts as a failed rung.
    fn handle_close_before_hello(&mut self, now: Millis, id: ConnId, role: Role, close: Close) {
        let mut reason = String::from("server closed the connection: ");
        reason.push_str(&close.reason);
        if close.code == close_code::REPLACED {
            // A racing connection the server retired (another attach of ours won there).
            self.conn_failed(now, id, &reason, Failure::Transport);
        } else if role == Role::Probe || role == Role::Migrating {
            // The session itself is fine on its current rung; the better one is not available.
            self.conn_failed(now, id, &reason, Failure::Transport);
        } else if let Some(cause) = final_cause(&close) {
            self.end_by_server(close, cause);
        } else if let Retry::AfterMs(_) = close.retry {
            self.active_lost(now, reason, close.retry);
        } else {
            self.conn_failed(now, id, &reason, Failure::Transport);
        }
    }

    /// The server ended the session for good: one `error` saying why (unless it was a plain
    /// normal closure), then `close`.
    fn end_by_server(&mut self, close: Close, cause: ErrorCode) {
        let plain_end = close.code == close_code::NORMAL && close.retry == Retry::Default;
        if !plain_end {
            let mut message = String::from(match cause {
                ErrorCode::Unauthorized | ErrorCode::UnsupportedVersion => "server refused the session: ",
                _ => "server closed the session and asked not to reconnect: ",
            });
            message.push_str(&close.reason);
            self.events.push(Event::Error { code: cause, message });
        }
        self.finish(close.code, close.reason, cause, "server closed the session");
    }

    /// Enters `Closed`: drops every connection and fails everything pending.
    pub(super) fn finish(&mut self, code: u16, reason: String, cause: ErrorCode, failure: &'static str) {
        self.drop_all_conns();
        self.timers.clear_all();
        self.untried.clear();
        self.fail_outbox(ErrorCode::Closed, failure);
        self.end_channels();
        self.set_state(State::Closed);
        self.events.push(Event::Closed { code, reason, cause });
    }
}

/// The channel frames a server sends (PROTOCOL.md §8.2), handled by `channels`.
fn is_channel_frame(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::ChannelMessage(_) | Frame::Attributed { .. } | Frame::Subscribed { .. } | Frame::Unsubscribed { .. } | Frame::Gap { .. } | Frame::Nack { .. }
    )
}

/// Whether a close frame ends the session for good, and why. 4001 and 4002 do whatever their
/// `retry` says; `retry=no` does with any code; so does a plain normal closure.
fn final_cause(close: &Close) -> Option<ErrorCode> {
    match (close.code, close.retry) {
        (close_code::UNAUTHORIZED, _) => Some(ErrorCode::Unauthorized),
        (close_code::UNSUPPORTED_VERSION, _) => Some(ErrorCode::UnsupportedVersion),
        (_, Retry::Never) | (close_code::NORMAL, Retry::Default) => Some(ErrorCode::ServerClosed),
        _ => None,
    }
}
