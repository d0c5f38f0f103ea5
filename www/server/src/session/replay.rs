//! The outgoing half of one session: seq numbering, the replay buffer and its limits, and the
//! send cursor of the current transport. Plain data, no locks and no I/O: a [`Replay`] lives
//! inside its session's lock, and the session decides what a failed limit means.
//!
//! Invariants:
//! - outgoing seqs are 1, 2, 3, ...; the buffer holds a contiguous run of them, oldest first,
//!   ending at `next_seq - 1` when it is not empty; `bytes` is the sum of its entries' sizes;
//! - `sent_up_to` is the highest seq handed to the current transport (reset to the client's
//!   `rt_last` on resume and on each poll), `sent_up_to < next_seq`;
//! - a message leaves the buffer only when acked, or (after which the session is no longer
//!   resumable) when it was sent and a limit is hit: a resume from before it would be a gap;
//! - `acked` is the highest seq the client acknowledged (`ack` frames, `rt_last` of polls and
//!   resumes), `acked < next_seq`. Acks are cumulative, so an `rt_last` below `acked` (a URL
//!   built before a later ack on another request, say a migrating WebSocket while the old poll
//!   connection kept polling) still means the client has everything up to `acked`: no gap.
//! - every buffered entry is charged `ENTRY_BYTES` to the global [`ReplayBudget`] and given back
//!   when it leaves (ack, trim, discard, drop); its message's payload is charged once, by the
//!   message itself, however many buffers hold it;
//! - every buffered entry's `bytes` is also charged to the session's client IP through its
//!   [`SessionSlot`] and given back when it leaves, so `bytes` summed over an IP's sessions is
//!   that IP's count.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use realtime_client::core::wire::{Frame, Position};

use super::Outgoing;
use crate::limits::{ReplayBudget, SessionSlot, SharedMessage, ENTRY_BYTES};
use crate::Config;

/// What a buffered entry sends: a message (shared by every member's buffer, with its channel
/// and position when it has one) or an ordered channel frame (`subscribed`, `gap`, ...).
#[derive(Debug, Clone)]
pub(super) enum Item {
    Message { channel: Option<(Arc<str>, Position)>, message: Arc<SharedMessage> },
    Control(Frame),
}

#[derive(Debug)]
struct Buffered {
    seq: u64,
    item: Item,
    bytes: usize,
    at: Instant,
}

/// The replay buffer of a session and its send cursor.
#[derive(Debug)]
pub(super) struct Replay {
    next_seq: u64,
    entries: VecDeque<Buffered>,
    bytes: usize,
    resumable: bool,
    sent_up_to: u64,
    acked: u64,
    /// The global budget, charged [`ENTRY_BYTES`] per buffered entry.
    budget: Arc<ReplayBudget>,
    /// Counts the session against its client IP (sessions, replay bytes) until it drops.
    slot: Option<SessionSlot>,
    /// Most replay bytes the sessions of this IP may hold together.
    ip_share: usize,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.budget.release(self.entries.len().saturating_mul(ENTRY_BYTES));
        self.release_ip(self.bytes);
    }
}

impl Replay {
    pub(super) fn new(budget: Arc<ReplayBudget>, slot: Option<SessionSlot>, ip_share: usize) -> Self {
        Replay { next_seq: 1, entries: VecDeque::new(), bytes: 0, resumable: true, sent_up_to: 0, acked: 0, budget, slot, ip_share }
    }

    fn release_ip(&self, bytes: usize) {
        if let Some(slot) = &self.slot {
            slot.release_replay(bytes);
        }
    }

    fn pop_front(&mut self) {
        if let Some(front) = self.entries.pop_front() {
            self.bytes = self.bytes.saturating_sub(front.bytes);
            self.budget.release(ENTRY_BYTES);
            self.release_ip(front.bytes);
        }
    }

    /// The seq the next message gets; every seq below it was assigned.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether `entries` more entries of `bytes` in all (their [`ENTRY_BYTES`] included) fit
    /// the session's count and byte bounds and its client IP's share, without trimming.
    pub(super) fn fits(&self, entries: usize, bytes: usize, config: &Config) -> bool {
        let ip_fits = self.slot.as_ref().is_none_or(|slot| slot.ip_replay_bytes().saturating_add(bytes) <= self.ip_share);
        self.entries.len().saturating_add(entries) <= config.replay_max_messages
            && self.bytes.saturating_add(bytes) <= config.replay_max_bytes
            && ip_fits
    }

    /// False once a sent, unacked message was trimmed (or the buffer was discarded).
    pub(super) fn is_resumable(&self) -> bool {
        self.resumable
    }

    /// The oldest seq that can still be sent: the front's, or `next_seq` when empty.
    pub(super) fn first_available(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |entry| entry.seq)
    }

    /// The highest seq the client is known to have, given it says `last`: its own earlier
    /// cumulative ack may be higher than an `rt_last` chosen before that ack was sent.
    pub(super) fn known_delivered(&self, last: u64) -> u64 {
        last.max(self.acked)
    }

    /// Whether a client that has delivered every seq up to `last` can resume (see PROTOCOL.md):
    /// `last` is not beyond the last assigned seq, and nothing after what the client has (`last`,
    /// or its earlier ack if higher) left the buffer unacked.
    pub(super) fn can_resume_from(&self, last: u64) -> bool {
        self.resumable && last < self.next_seq && self.known_delivered(last).saturating_add(1) >= self.first_available()
    }

    /// Appends a message with the next seq (limits are the caller's, see [`Self::enforce_limits`]).
    pub(super) fn push(&mut self, message: Arc<SharedMessage>) {
        self.push_item(|_| Item::Message { channel: None, message });
    }

    /// Appends the item `make` builds for the next seq (it gets the seq: a control frame
    /// carries it). Every entry counts [`ENTRY_BYTES`] (64, PROTOCOL §8.11 item 13) beside its
    /// payload: a control frame's reason, a message's size.
    pub(super) fn push_item(&mut self, make: impl FnOnce(u64) -> Item) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let item = make(seq);
        let bytes = ENTRY_BYTES + match &item {
            Item::Message { message, .. } => message.bytes,
            Item::Control(Frame::Unsubscribed { close, .. } | Frame::Nack { close, .. }) => close.reason.len(),
            Item::Control(_) => 0,
        };
        self.entries.push_back(Buffered { seq, item, bytes, at: Instant::now() });
        self.bytes += bytes;
        self.budget.charge(ENTRY_BYTES);
        if let Some(slot) = &self.slot {
            slot.charge_replay(bytes);
        }
        seq
    }

    /// The lowest client seq that a buffered (so unacknowledged) `nack` refuses: a hello's
    /// `ack=` must stay below it (PROTOCOL §8.11 item 3).
    pub(super) fn lowest_unacked_nack(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|entry| match &entry.item {
                Item::Control(Frame::Nack { reply_to, .. }) => Some(*reply_to),
                _ => None,
            })
            .min()
    }

    /// Drops every message up to `seq`: the client has it. `seq < next_seq` (callers check).
    pub(super) fn ack_through(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
        while let Some(front) = self.entries.front() {
            if front.seq > seq {
                break;
            }
            self.pop_front();
        }
    }

    /// The current transport has (or is assumed to have) every seq up to `last`.
    pub(super) fn set_sent_up_to(&mut self, last: u64) {
        self.sent_up_to = last;
    }

    /// Appends every buffered message after the send cursor to `frames` and moves the cursor.
    pub(super) fn take_unsent(&mut self, frames: &mut Vec<Outgoing>) {
        let sent_up_to = self.sent_up_to;
        let start = self.entries.partition_point(|entry| entry.seq <= sent_up_to);
        for entry in self.entries.range(start..) {
            frames.push(match &entry.item {
                Item::Message { channel, message } => Outgoing::Message { seq: entry.seq, channel: channel.clone(), message: message.clone() },
                Item::Control(frame) => Outgoing::Frame(frame.clone()),
            });
        }
        if let Some(last) = self.entries.back() {
            self.sent_up_to = self.sent_up_to.max(last.seq);
        }
    }


    /// Trims sent messages over the count, byte or age limits (the session stops being
    /// resumable). Returns false when unsent messages alone exceed the limits.
    pub(super) fn enforce_limits(&mut self, config: &Config, now: Instant) -> bool {
        let over = |replay: &Replay| {
            replay.entries.len() > config.replay_max_messages
                || replay.bytes > config.replay_max_bytes
                || replay.entries.front().is_some_and(|entry| now.duration_since(entry.at) > config.replay_max_age)
        };
        self.trim_sent_while(over);
        // Age alone never kills: an old unsent message on a detached session expires with it.
        self.entries.len() <= config.replay_max_messages && self.bytes <= config.replay_max_bytes
    }

    /// Trims sent messages while this session's client IP holds more than its share (the
    /// session stops being resumable). Returns false when the IP is still over it: the caller
    /// ends this session (the one receiving), as at its own bound.
    pub(super) fn enforce_ip_share(&mut self) -> bool {
        let over = |replay: &Replay| replay.slot.as_ref().is_some_and(|slot| slot.ip_replay_bytes() > replay.ip_share);
        self.trim_sent_while(over);
        !over(self)
    }

    /// Drops the oldest messages while `over` holds and they were already sent (the session
    /// stops being resumable); an unsent message is never dropped here.
    fn trim_sent_while(&mut self, over: impl Fn(&Replay) -> bool) {
        while over(self) {
            match self.entries.front() {
                Some(front) if front.seq <= self.sent_up_to => {
                    self.resumable = false;
                    self.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The session ended: nothing is kept and nothing can be resumed.
    pub(super) fn discard(&mut self) {
        self.resumable = false;
        self.budget.release(self.entries.len().saturating_mul(ENTRY_BYTES));
        self.release_ip(self.bytes);
        self.entries.clear();
        self.bytes = 0;
    }
}
