//! The outbox: messages the app sent, from `send()` until the server acknowledges them.
//!
//! Invariants: sequence numbers are consecutive from the oldest entry; the transmitted entries
//! form a prefix (sending goes in order, and a new connection marks everything unsent); an entry
//! leaves only by an ack, by a reset that cannot prove it was not delivered, or by `close`, and
//! each of those settles its `send()` exactly once (a `Delivered` or `SendFailed` event).
//!
//! The queue is a `Vec` with a read index (a `VecDeque` costs kilobytes of wasm per element
//! type): acked entries at its front are skipped, and dropped in one pass once they are half of
//! it, so an ack costs amortised O(1) per message.

use crate::prelude::*;
use crate::core::session::ladder::Failure;
use crate::core::session::{ErrorCode, Event, SendError, Session};
use crate::core::wire::{self, Payload, Position};
use crate::core::Millis;

/// What an outbox entry carries: a publish (to the room channel, or a named one), or a
/// subscription request (PROTOCOL.md §8.2: numbered in the same seq space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Publish { channel: Option<String> },
    Subscribe { channel: String, since: Option<Position> },
    Unsubscribe { channel: String },
}

pub(super) struct Outgoing {
    /// The id `send()` returned (0 for a subscription request: no event ever names it).
    pub(super) id: u64,
    pub(super) kind: Kind,
    /// The server refused it (a `nack`): already settled, kept only until acked.
    pub(super) failed: bool,
    pub(super) seq: u64,
    pub(super) event: Option<String>,
    pub(super) payload: Payload,
    /// Whether it was ever handed to a transport (then the server may have it).
    pub(super) transmitted: bool,
}

impl Outgoing {
    /// A subscription request numbered `seq`.
    pub(super) fn request(kind: Kind, seq: u64) -> Outgoing {
        Outgoing { id: 0, kind, failed: false, seq, event: None, payload: Payload::Text(String::new()), transmitted: false }
    }
}

pub(super) struct Outbox {
    /// The entries from `acked` on are held; those before it were acked and wait to be dropped.
    queue: Vec<Outgoing>,
    acked: usize,
    /// Payload bytes held.
    pub(super) bytes: usize,
    /// The sequence number the next message gets.
    pub(super) next_seq: u64,
    /// The id the next `send()` returns; never reused within a client.
    next_id: u64,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox { queue: Vec::new(), acked: 0, bytes: 0, next_seq: 1, next_id: 1 }
    }
}

impl Outbox {
    pub(super) fn len(&self) -> usize {
        self.queue.len().saturating_sub(self.acked)
    }

    /// The messages held, oldest first.
    pub(super) fn held(&self) -> &[Outgoing] {
        self.queue.get(self.acked..).unwrap_or_default()
    }

    pub(super) fn held_mut(&mut self) -> &mut [Outgoing] {
        self.queue.get_mut(self.acked..).unwrap_or_default()
    }

    /// Empties the outbox, returning what it held, oldest first.
    fn take_held(&mut self) -> impl Iterator<Item = Outgoing> {
        let acked = core::mem::replace(&mut self.acked, 0);
        core::mem::take(&mut self.queue).into_iter().skip(acked)
    }

    /// The index (in [`Outbox::held`]) of the first message not yet handed to a transport.
    pub(super) fn first_untransmitted(&self) -> usize {
        self.held().partition_point(|message| message.transmitted)
    }

    /// After a resume the unacked tail goes again, in order: the server drops what it has.
    pub(super) fn mark_all_unsent(&mut self) {
        for message in self.held_mut() {
            message.transmitted = false;
        }
    }

    /// Removes every message with a sequence number up to `seq`; returns the last one's id and
    /// the count and bytes removed.
    fn take_acked(&mut self, seq: u64) -> Option<(u64, u64, u64)> {
        let mut acked: Option<(u64, u64, u64)> = None;
        while let Some(message) = self.queue.get_mut(self.acked).filter(|message| message.seq <= seq) {
            // The entry stays until the next compaction; its payload goes now.
            let length = core::mem::replace(&mut message.payload, Payload::Text(String::new())).len();
            self.bytes -= length;
            self.acked += 1;
            if matches!(message.kind, Kind::Publish { .. }) && !message.failed {
                let (_, count, bytes) = acked.unwrap_or((0, 0, 0));
                acked = Some((message.id, count + 1, bytes + length as u64));
            }
        }
        if self.acked * 2 >= self.queue.len() {
            let mut index = 0;
            let acked = core::mem::replace(&mut self.acked, 0);
            self.queue.retain(|_| {
                index += 1;
                index > acked
            });
        }
        acked
    }
}

/// The encoded size bound of a subscription request (a header line).
pub(super) const CONTROL_BOUND: usize = 96 + wire::MAX_CHANNEL_NAME_BYTES;

impl Session {
    /// Queues a message; returns its id, which later `Delivered`/`SendFailed` events name.
    pub fn send(&mut self, now: Millis, event: Option<String>, payload: Payload) -> Result<u64, SendError> {
        self.queue_publish(now, None, event, payload)
    }

    /// `send` to the room channel (`None`) or to a named channel.
    pub(super) fn queue_publish(&mut self, now: Millis, channel: Option<&str>, event: Option<String>, payload: Payload) -> Result<u64, SendError> {
        if self.state == crate::core::session::State::Closed {
            return Err(SendError::Closed);
        }
        if let Some(name) = &event {
            if !wire::is_valid_event_name(name) {
                return Err(SendError::BadEventName);
            }
        }
        if payload.len() > self.max_body_bytes {
            return Err(SendError::TooLarge);
        }
        let outbox = &mut self.outbox;
        if outbox.len() >= self.config.outbox_max_messages
            || outbox.bytes + payload.len() > self.config.outbox_max_bytes
        {
            return Err(SendError::OutboxFull);
        }
        let id = outbox.next_id;
        outbox.next_id += 1;
        let seq = outbox.next_seq;
        outbox.next_seq += 1;
        outbox.bytes += payload.len();
        let bound = self.size_bound(event.as_deref(), &payload) + channel.map_or(0, |name| name.len() + wire::CHANNEL_FIELDS_BOUND);
        let kind = Kind::Publish { channel: channel.map(String::from) };
        // A batch that this message would overflow goes now; the rest waits for the flush.
        self.before_deferred_send(now, bound);
        self.outbox.queue.push(Outgoing { id, kind, failed: false, seq, event, payload, transmitted: false });
        self.defer_send(now, bound);
        Ok(id)
    }

    /// Queues a subscription request (no limits: the server must learn what the app holds).
    pub(super) fn queue_control(&mut self, now: Millis, kind: Kind) -> u64 {
        let seq = self.outbox.next_seq;
        self.outbox.next_seq += 1;
        let bound = CONTROL_BOUND;
        self.before_deferred_send(now, bound);
        self.outbox.queue.push(Outgoing::request(kind, seq));
        self.defer_send(now, bound);
        seq
    }

    /// A `nack`: the publish `seq` was refused; it fails at once (and stays until acked).
    pub(super) fn fail_publish(&mut self, seq: u64, code: ErrorCode) {
        let Some(message) = self.outbox.held_mut().iter_mut().find(|message| message.seq == seq) else { return };
        if message.failed || !matches!(message.kind, Kind::Publish { .. }) {
            return;
        }
        message.failed = true;
        let id = message.id;
        self.events.push(Event::SendFailed { id, code, reason: "the server refused the publish" });
    }

    /// The server has every message up to `seq`.
    pub(super) fn handle_ack(&mut self, now: Millis, id: crate::core::session::ConnId, seq: u64) {
        if seq >= self.outbox.next_seq {
            self.conn_failed(now, id, "server acknowledged a message never sent", Failure::Protocol);
            return;
        }
        if let Some((up_to_id, count, bytes)) = self.outbox.take_acked(seq) {
            self.stats.messages_out += count;
            self.stats.bytes_out += bytes;
            self.events.push(Event::Delivered { up_to_id });
        }
    }

    /// A fresh session: a message that went out may or may not have reached the old one, so it
    /// is rejected rather than risk a double. Messages never sent are renumbered and kept.
    /// `kept`: the subscription requests the new session must see first, numbered 1, 2, ...
    /// (`Outgoing::request`); the old ones are dropped (the new session holds exactly what the
    /// client sends it).
    pub(super) fn renumber_outbox_for_reset(&mut self, mut kept: Vec<Outgoing>) {
        let mut next_seq = kept.len() as u64 + 1;
        for mut message in self.outbox.take_held() {
            if !matches!(message.kind, Kind::Publish { .. }) {
                continue;
            }
            if message.transmitted && message.failed {
                self.outbox.bytes -= message.payload.len();
            } else if message.transmitted {
                self.outbox.bytes -= message.payload.len();
                self.events.push(Event::SendFailed {
                    id: message.id,
                    code: ErrorCode::Reset,
                    reason: "session reset: the message may not have been delivered",
                });
            } else {
                message.seq = next_seq;
                next_seq += 1;
                kept.push(message);
            }
        }
        self.outbox.queue = kept;
        self.outbox.next_seq = next_seq;
    }

    /// After a hello: messages queued under an older (or the default) size limit that exceed
    /// the server's are refused now, instead of being refused by the server and resent for
    /// ever. Only the never-transmitted tail is touched: a transmitted message may still reach
    /// the server from a replaced connection under its seq, so no seq it used is ever reused.
    /// The tail after the transmitted prefix is renumbered without a gap.
    pub(super) fn reject_oversize(&mut self) {
        let limit = self.max_body_bytes;
        let first_unsent = self.outbox.first_untransmitted();
        if !self.outbox.held().iter().skip(first_unsent).any(|message| message.payload.len() > limit) {
            return;
        }
        let Some(mut next_seq) = self.outbox.held().get(first_unsent).map(|message| message.seq) else { return };
        let mut kept = Vec::with_capacity(self.outbox.len());
        let mut moved = Vec::new();
        for (index, mut message) in self.outbox.take_held().enumerate() {
            if index < first_unsent {
                kept.push(message);
            } else if message.payload.len() > limit {
                self.outbox.bytes -= message.payload.len();
                self.events.push(Event::SendFailed {
                    id: message.id,
                    code: ErrorCode::TooLarge,
                    reason: SendError::TooLarge.as_str(),
                });
            } else {
                if matches!(message.kind, Kind::Subscribe { .. }) {
                    moved.push((message.seq, next_seq));
                }
                message.seq = next_seq;
                next_seq += 1;
                kept.push(message);
            }
        }
        self.outbox.queue = kept;
        self.outbox.next_seq = next_seq;
        self.renumbered_requests(&moved);
    }

    /// Fails every message still held (the client closed).
    pub(super) fn fail_outbox(&mut self, code: ErrorCode, reason: &'static str) {
        for message in self.outbox.take_held() {
            if matches!(message.kind, Kind::Publish { .. }) && !message.failed {
                self.events.push(Event::SendFailed { id: message.id, code, reason });
            }
        }
        self.outbox.bytes = 0;
    }
}
