//! The inbox: server messages delivered to the app, and the acks that let the server drop them.
//!
//! Invariants: a message is delivered at most once and in order (a sequence number at or below
//! the last delivered one is a replay and dropped, whichever connection carried it; a gap is a
//! protocol error); `last_acked <= last_delivered`; acks are debounced (one per ack delay).

use crate::core::endpoint::TransportKind;
use crate::core::session::ladder::Failure;
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, Event, Session};
use crate::core::wire::{Frame, Message};
use crate::core::session::limits::after;
use crate::core::Millis;

#[derive(Debug, Default)]
pub(super) struct Inbox {
    /// Highest server sequence number delivered to the app.
    pub(super) last_delivered: u64,
    /// Highest server sequence number acked to the server.
    pub(super) last_acked: u64,
}

impl Session {
    pub(super) fn handle_message(&mut self, now: Millis, id: ConnId, message: Message) {
        if !self.accept_ordered(now, id, message.seq) {
            return;
        }
        self.stats.messages_in += 1;
        self.stats.bytes_in += message.payload.len() as u64;
        self.events.push(Event::Message { seq: message.seq, event: message.event, payload: message.payload });
    }

    /// Whether the ordered frame `seq` (a message or a channel frame) is the next one: then it
    /// counts as delivered and is acked. At or below the last delivered one it is a replay
    /// overlapping what we had; beyond the next one, a gap (a protocol error).
    pub(super) fn accept_ordered(&mut self, now: Millis, id: ConnId, seq: u64) -> bool {
        if seq <= self.inbox.last_delivered {
            return false;
        }
        if seq != self.inbox.last_delivered + 1 {
            self.conn_failed(now, id, "gap in server sequence numbers", Failure::Protocol);
            return false;
        }
        self.inbox.last_delivered = seq;
        let delay = self.ack_delay(self.active().map(|conn| conn.kind));
        self.timers.set_if_unset(Timer::Ack, after(now, delay));
        true
    }

    /// How long acks are debounced on a transport (over HTTP every ack costs a POST).
    pub(super) fn ack_delay(&self, kind: Option<TransportKind>) -> u64 {
        match kind {
            Some(TransportKind::WebSocket) => self.config.ack_delay_ms,
            _ => self.config.http_ack_delay_ms,
        }
    }

    /// Queues an ack of everything delivered, where the carrier needs one (a long poll's URL
    /// acknowledges by itself). `last_acked` moves only when the batch holding the ack is
    /// handed to the transport (see `flush`): an ack dropped with its batch is owed again.
    pub(super) fn queue_ack(&mut self) {
        self.timers.clear(Timer::Ack);
        let kind = self.active().map(|conn| conn.kind);
        let already = self.inbox.last_acked.max(self.batch.ack.unwrap_or(0));
        if self.inbox.last_delivered > already && kind.is_some() && kind != Some(TransportKind::LongPolling) {
            self.queue_frame(&Frame::Ack { seq: self.inbox.last_delivered });
            self.batch.ack = Some(self.inbox.last_delivered);
        }
    }
}
