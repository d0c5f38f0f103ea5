//! The upstream batch: frames queued during one step go to the active connection together, as
//! one WebSocket message or one POST body (frames are self-delimiting, so a batch is plain
//! concatenation), and the long-poll loop.
//!
//! Invariants: only the active connection is written to; at most one upstream POST is in
//! flight per connection (the next batch waits for its answer); a batch is at most
//! [`MAX_BATCH_BYTES`] unless a single message is larger.

use crate::prelude::*;
use crate::core::endpoint::TransportKind;
use crate::core::session::conns::Role;
use crate::core::session::ladder::Failure;
use crate::core::session::{ConnId, Effect, Session};
use crate::core::wire::{self, Carrier, Frame, Message, Payload};
use crate::core::session::limits::{self, after};
use crate::core::Millis;

/// Largest batch put into one WebSocket message or POST body; beyond it a new one starts.
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    /// A binary payload is in it and the carrier is binary: send a binary WebSocket message.
    binary: bool,
    /// The ack frame in it, if any: it counts as sent once the batch is handed over.
    pub(super) ack: Option<u64>,
}

impl Batch {
    /// Voids the batch (its connection is gone); an ack in it is owed again.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.binary = false;
        self.ack = None;
    }
}

fn carrier_for(kind: TransportKind) -> Carrier {
    if kind == TransportKind::WebSocket {
        Carrier::Binary
    } else {
        Carrier::Text
    }
}

impl Session {
    /// Whether the active connection can take more frames now.
    pub(super) fn can_write(&self) -> bool {
        self.active().is_some_and(|conn| !conn.post_in_flight)
    }

    /// Hands unsent messages and queued control frames to the active connection.
    pub(super) fn pump_out(&mut self, now: Millis) {
        if !self.can_write() {
            return;
        }
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        let carrier = carrier_for(kind);
        let mut index = self.outbox.first_untransmitted();
        while index < self.outbox.len() {
            let message = &self.outbox.queue[index];
            let bound = wire::message_size_bound(message.event.as_deref(), &message.payload);
            if !self.batch.bytes.is_empty() && self.batch.bytes.len() + bound > MAX_BATCH_BYTES {
                if kind != TransportKind::WebSocket {
                    break; // The rest goes in the next POST, once this one is answered.
                }
                self.flush(now);
            }
            let message = &mut self.outbox.queue[index];
            message.transmitted = true;
            if matches!(message.payload, Payload::Binary(_)) && carrier == Carrier::Binary {
                self.batch.binary = true;
            }
            wire::encode_message(message.seq, message.event.as_deref(), &message.payload, carrier, &mut self.batch.bytes);
            index += 1;
        }
        self.flush(now);
    }

    pub(super) fn queue_frame(&mut self, frame: &Frame) {
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        let carrier = carrier_for(kind);
        if matches!(frame, Frame::Message(Message { payload: Payload::Binary(_), .. })) && carrier == Carrier::Binary {
            self.batch.binary = true;
        }
        wire::encode(frame, carrier, &mut self.batch.bytes);
    }

    /// Hands the frames queued during this step to the active connection as one batch.
    pub(super) fn flush(&mut self, now: Millis) {
        if self.batch.bytes.is_empty() || !self.can_write() {
            return;
        }
        // An ack that is due soon rides along for free.
        if self.timers.is_set(crate::core::session::timers::Timer::Ack) {
            self.queue_ack();
        }
        let data = core::mem::take(&mut self.batch.bytes);
        let binary = core::mem::replace(&mut self.batch.binary, false);
        if let Some(acked) = self.batch.ack.take() {
            self.inbox.last_acked = self.inbox.last_acked.max(acked);
        }
        let upload_timeout =
            (self.heartbeat_ms.saturating_mul(limits::UPLOAD_TIMEOUT_HEARTBEATS)).max(limits::MIN_UPLOAD_TIMEOUT_MS);
        let post_url = match (self.active().map(|conn| conn.kind), self.ids.as_ref()) {
            (Some(TransportKind::WebSocket), _) | (None, _) => None,
            (Some(_), Some(ids)) => self.active().map(|conn| self.endpoint.send_url(conn.id.0, &ids.id, &ids.secret)),
            (Some(_), None) => None,
        };
        let Some(conn) = self.conns.active_mut() else { return };
        conn.last_sent = now;
        let id = conn.id;
        match post_url {
            None => self.effects.push_back(Effect::Transmit { conn: id, data, binary }),
            Some(url) => {
                conn.post_in_flight = true;
                conn.post_deadline = Some(after(now, upload_timeout));
                self.effects.push_back(Effect::Post { conn: id, url, body: data });
            }
        }
    }

    /// After a long-poll response: the next poll at once (or, when draining, the end).
    pub(super) fn after_poll_response(&mut self, now: Millis, id: ConnId) {
        let Some(conn) = self.conn(id) else { return };
        if conn.kind != TransportKind::LongPolling {
            return;
        }
        match (conn.role, conn.established) {
            (Role::Active, true) => self.issue_poll(id),
            (Role::Draining, _) => self.drop_conn(id),
            // A first poll must bring the hello.
            (_, false) => self.conn_failed(now, id, "poll answered without a hello", Failure::Protocol),
            _ => {}
        }
    }

    fn issue_poll(&mut self, id: ConnId) {
        let Some(ids) = self.ids.as_ref() else { return };
        let url = self.endpoint.poll_url(id.0, &ids.id, &ids.secret, self.inbox.last_delivered);
        // The poll's `rt_last` acknowledges everything delivered so far.
        self.inbox.last_acked = self.inbox.last_delivered;
        self.effects.push_back(Effect::Poll { conn: id, url });
    }
}
