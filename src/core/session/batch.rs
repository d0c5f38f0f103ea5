//! The upstream batch: frames queued during one step go to the active connection together, as
//! one WebSocket message or one POST body (frames are self-delimiting, so a batch is plain
//! concatenation), and the long-poll loop.
//!
//! Sends are batched across calls: `send` only queues the message and asks for a flush
//! ([`Session::poll_flush`]), which the adapter runs at the end of the task
//! ([`Session::handle_flush`]), so every `send()` of one task shares a batch. Everything else
//! (timers, incoming frames, acks, a POST's answer, a hello) still hands its frames over at once,
//! and so does a `send` whose message would overflow the batch. At most [`MAX_IN_FLIGHT`]
//! messages are out unacknowledged on a WebSocket; an ack that opens the window sends more at
//! once.
//!
//! Invariants: only the active connection is written to; at most one upstream POST is in
//! flight per connection (the next batch waits for its answer); a batch is at most
//! [`MAX_BATCH_BYTES`] unless a single message is larger; a message is marked transmitted only
//! in the call that hands its batch over, so a batch voided with its connection never counts
//! as sent.

use crate::prelude::*;
use crate::core::endpoint::TransportKind;
use crate::core::session::conns::Role;
use crate::core::session::ladder::Failure;
use crate::core::session::outbox::Kind;
use crate::core::session::{ConnId, Effect, Session};
use crate::core::wire::{self, Carrier, Frame, Message, Payload};
use crate::core::session::limits::{self, after};
use crate::core::Millis;

/// Largest batch put into one WebSocket message or POST body; beyond it a new one starts.
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Most messages handed to a WebSocket and not yet acknowledged; the rest waits in the outbox
/// until acks open the window. Batched, a loop of sends would otherwise reach the server far
/// faster than it can pass the messages on: in a room every message also comes back to its
/// sender, and a server ends a session whose unsent backlog passes its replay bound (10,000
/// messages on the reference server, PROTOCOL.md §4). Upstream POSTs need no window: one is in
/// flight at a time, and the server answers it once it has taken the messages in.
pub(super) const MAX_IN_FLIGHT: usize = 1_000;

/// Where the flush of deferred sends stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FlushState {
    /// Nothing waits for a flush.
    #[default]
    Idle,
    /// A send waits; `poll_flush` has not told the adapter yet.
    Wanted,
    /// The adapter was told and will call `handle_flush`.
    Scheduled,
}

#[derive(Debug, Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    /// A binary payload is in it and the carrier is binary: send a binary WebSocket message.
    binary: bool,
    /// The ack frame in it, if any: it counts as sent once the batch is handed over.
    pub(super) ack: Option<u64>,
    /// Size bounds of the messages sent since the last pump, waiting for the flush.
    deferred_bytes: usize,
    flush: FlushState,
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

    /// Whether `send` deferred a message whose flush the adapter must now schedule: true once
    /// per pending batch. The adapter then calls [`Session::handle_flush`] at the end of the
    /// current task (a microtask in the browser).
    pub fn poll_flush(&mut self) -> bool {
        let wanted = self.batch.flush == FlushState::Wanted;
        if wanted {
            self.batch.flush = FlushState::Scheduled;
        }
        wanted
    }

    /// Hands over what `send` deferred. Spurious calls are no-ops.
    pub fn handle_flush(&mut self, now: Millis) {
        self.batch.flush = FlushState::Idle;
        self.pump_out(now);
    }

    /// The encoded size bound of a message on the active connection's carrier.
    pub(super) fn size_bound(&self, event: Option<&str>, payload: &Payload) -> usize {
        let carrier = self.active().map_or(Carrier::Text, |conn| carrier_for(conn.kind));
        wire::message_size_bound(event, payload, carrier)
    }

    /// Before `send` queues a message of encoded size at most `bound`: if it would overflow
    /// the batch that the deferred messages make, those go now.
    pub(super) fn before_deferred_send(&mut self, now: Millis, bound: usize) {
        let deferred = self.batch.deferred_bytes;
        if deferred > 0 && deferred.saturating_add(bound) > MAX_BATCH_BYTES {
            self.pump_out(now);
        }
    }

    /// After `send` queued a message: it waits for the flush, unless it alone fills a batch.
    /// With nothing to write to (not connected, or a POST in flight) nothing is wanted: the
    /// hello or the POST's answer pumps it.
    pub(super) fn defer_send(&mut self, now: Millis, bound: usize) {
        if !self.can_write() {
            return;
        }
        self.batch.deferred_bytes = self.batch.deferred_bytes.saturating_add(bound);
        if self.batch.deferred_bytes >= MAX_BATCH_BYTES {
            self.pump_out(now);
        } else if self.batch.flush == FlushState::Idle {
            self.batch.flush = FlushState::Wanted;
        }
    }

    /// Hands unsent messages and queued control frames to the active connection.
    pub(super) fn pump_out(&mut self, now: Millis) {
        self.encode_unsent(now);
        self.flush(now);
    }

    /// Encodes unsent messages into the batch (handing over a full one on a WebSocket); the
    /// caller flushes in the same step.
    pub(super) fn encode_unsent(&mut self, now: Millis) {
        if !self.can_write() {
            return;
        }
        self.batch.deferred_bytes = 0;
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        let carrier = carrier_for(kind);
        let window = if kind == TransportKind::WebSocket { MAX_IN_FLIGHT } else { usize::MAX };
        let mut index = self.outbox.first_untransmitted();
        while let Some(message) = self.outbox.held().get(index).filter(|_| index < window) {
            let bound = match &message.kind {
                Kind::Publish { channel } => {
                    let channel_bound = channel.as_ref().map_or(0, |name| wire::CHANNEL_FIELDS_BOUND + name.len());
                    wire::message_size_bound(message.event.as_deref(), &message.payload, carrier) + channel_bound
                }
                _ => crate::core::session::outbox::CONTROL_BOUND,
            };
            if !self.batch.bytes.is_empty() && self.batch.bytes.len() + bound > MAX_BATCH_BYTES {
                if kind != TransportKind::WebSocket {
                    break; // The rest goes in the next POST, once this one is answered.
                }
                self.flush(now);
            }
            let Some(message) = self.outbox.held_mut().get_mut(index) else { break };
            message.transmitted = true;
            if matches!(message.payload, Payload::Binary(_)) && carrier == Carrier::Binary {
                self.batch.binary = true;
            }
            let out = &mut self.batch.bytes;
            match &message.kind {
                Kind::Publish { channel } => wire::encode_channel_message(
                    message.seq,
                    channel.as_deref().map(|name| (name, None)),
                    message.event.as_deref(),
                    &message.payload,
                    carrier,
                    out,
                ),
                Kind::Subscribe { channel, since } => wire::encode_subscribe(message.seq, channel, *since, out),
                Kind::Unsubscribe { channel } => wire::encode_unsubscribe(message.seq, channel, out),
            }
            index += 1;
        }
    }

    pub(super) fn queue_frame(&mut self, frame: &Frame) {
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        let carrier = carrier_for(kind);
        if matches!(frame, Frame::Message(Message { payload: Payload::Binary(_), .. })) && carrier == Carrier::Binary {
            self.batch.binary = true;
        }
        wire::encode_client_frame(frame, carrier, &mut self.batch.bytes);
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
        let post = match self.active().map(|conn| (conn.id, conn.kind)) {
            Some((_, TransportKind::WebSocket)) | None => None,
            // Every upload starts with its session (PROTOCOL.md §9.3).
            Some((id, _)) => self.session_frame(None).map(|head| (self.endpoint.send_url(id.0), head)),
        };
        let Some(conn) = self.conns.active_mut() else { return };
        conn.last_sent = now;
        let id = conn.id;
        match post {
            None => self.effects.push(Effect::Transmit { conn: id, data, binary }),
            Some((url, mut body)) => {
                conn.post_in_flight = true;
                conn.post_deadline = Some(after(now, upload_timeout));
                body.extend_from_slice(&data);
                self.effects.push(Effect::Post { conn: id, url, body });
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
        let Some(body) = self.session_frame(Some(self.inbox.last_delivered)) else { return };
        let url = self.endpoint.poll_url(id.0);
        // The poll's `last` acknowledges everything delivered so far.
        self.inbox.last_acked = self.inbox.last_delivered;
        self.effects.push(Effect::Poll { conn: id, url, body });
    }
}
