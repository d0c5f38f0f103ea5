//! Channels (PROTOCOL.md §8): the subscriptions the app holds, their positions, and the
//! channel frames from the server.
//!
//! Subscribe and unsubscribe requests are outbox entries in the client's seq space (numbered,
//! resent on resume, acked, `outbox::Kind`); the server's channel frames are ordered frames in
//! its seq space (deduplicated and gap-checked as messages are, `inbox`). Answers are matched to
//! requests by `for=` (decision 8); a channel's messages are delivered once and in order by its
//! offsets (decision 2: a double is dropped, a skip is one `Gap` and then the message).
//!
//! Invariants: a channel is in `subs` from `subscribe` until `unsubscribe` (or the server ends
//! it for good): its messages are delivered only then, and only once its subscription took
//! effect (`Active`); `position` is the last position delivered (or asked from); after a reset
//! every held channel is subscribed again with its position, before any publish, and the room
//! channel is recovered through `rt_since` on the connect URL instead (§8.5).

use crate::prelude::*;
use crate::core::session::limits::{self, after};
use crate::core::session::outbox::{Kind, Outgoing};
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, ErrorCode, Event, SendError, Session, State};
use crate::core::wire::{self, ChannelMessage, Close, Frame, Payload, Position, Retry};
use crate::core::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Our subscribe with seq `req` waits for its answer.
    Pending { req: u64 },
    /// The room channel of a fresh session: the server's own `subscribed` (no `for=`) comes.
    Implicit,
    /// The subscription took effect: messages are delivered.
    Active,
    /// The server ended it for now: subscribe again at `at`.
    Retrying { at: Millis },
}

#[derive(Debug)]
struct Sub {
    name: String,
    state: SubState,
    /// The last position delivered (before the first `subscribed`: the one asked from).
    position: Option<Position>,
    /// A `subscribed rec=0` answered a subscribe with a position: the server's `gap` follows it
    /// (§8.4 cases 2 and 3), and `position` is already past what it covers. Told to the app
    /// ourselves if the stream that would carry it ends first (a reset, a server unsubscribe).
    owed: Option<OwedGap>,
}

/// The `gap` a recovery's `subscribed rec=0` promised (`Event::Gap` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwedGap {
    epoch: u64,
    from: u64,
    to: u64,
}

impl OwedGap {
    /// What a `subscribed rec=0` at `top` says was missed after `asked` (§8.4: case 2 in the
    /// same epoch, else case 3, `from=0`); none when `asked` is the top itself.
    fn after(asked: Position, top: Position) -> Option<OwedGap> {
        let from = if asked.epoch != top.epoch || asked.offset > top.offset {
            0
        } else if asked.offset < top.offset {
            asked.offset + 1
        } else {
            return None;
        };
        Some(OwedGap { epoch: top.epoch, from, to: top.offset })
    }

    fn event(self, channel: String) -> Event {
        Event::Gap { channel, epoch: self.epoch, from: self.from, to: self.to }
    }
}

/// The subscriptions the app holds.
#[derive(Debug, Default)]
pub(super) struct Channels {
    subs: Vec<Sub>,
}

impl Channels {
    /// A new life: only the room channel, which a fresh session holds from its creation.
    pub(super) fn new(room: Option<&str>) -> Channels {
        // A push, not an `Option` collected: that collect is a monomorphization of its own.
        let mut subs = Vec::new();
        if let Some(name) = room {
            subs.push(Sub { name: String::from(name), state: SubState::Implicit, position: None, owed: None });
        }
        Channels { subs }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.subs.iter().position(|sub| sub.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Sub> {
        self.subs.iter_mut().find(|sub| sub.name == name)
    }

    /// Removes `name`, keeping the others in order (no `Vec::remove`: no panic path); returns
    /// the state it had. Names are unique in `subs`.
    fn remove(&mut self, name: &str) -> Option<SubState> {
        let state = self.subs.iter().find(|sub| sub.name == name)?.state;
        self.subs.retain(|sub| sub.name != name);
        Some(state)
    }

    /// The earliest resubscribe deadline.
    fn next_retry(&self) -> Option<Millis> {
        self.subs
            .iter()
            .filter_map(|sub| match sub.state {
                SubState::Retrying { at } => Some(at),
                _ => None,
            })
            .min()
    }
}

impl Session {
    // --- User commands -------------------------------------------------------------------

    /// Subscribes to `channel`, recovering from `since` (a position stored earlier) when
    /// given. `Ok(false)`: already subscribed (nothing changes).
    pub fn subscribe(&mut self, now: Millis, channel: &str, since: Option<Position>) -> Result<bool, SendError> {
        if self.state == State::Closed {
            return Err(SendError::Closed);
        }
        if !wire::is_valid_channel_name(channel) {
            return Err(SendError::BadChannel);
        }
        if self.channels.find(channel).is_some() {
            return Ok(false);
        }
        let req = self.queue_control(now, Kind::Subscribe { channel: String::from(channel), since });
        self.channels.subs.push(Sub { name: String::from(channel), state: SubState::Pending { req }, position: since, owed: None });
        Ok(true)
    }

    /// Ends the subscription to `channel` at once: `Unsubscribed` now, and none of its messages
    /// from here on. False when it was not subscribed.
    pub fn unsubscribe(&mut self, now: Millis, channel: &str) -> bool {
        let Some(state) = self.channels.remove(channel) else { return false };
        if !matches!(state, SubState::Retrying { .. }) {
            self.queue_control(now, Kind::Unsubscribe { channel: String::from(channel) });
        }
        self.rearm_resubscribe();
        self.events.push(Event::Unsubscribed {
            channel: String::from(channel),
            code: ErrorCode::Unsubscribed,
            reason: String::from("unsubscribed by the app"),
        });
        true
    }

    /// Publishes to `channel`, or to the room channel (`None`); returns the id that later
    /// `Delivered`/`SendFailed` events name, as `send` does.
    pub fn publish(&mut self, now: Millis, channel: Option<&str>, event: Option<String>, payload: Payload) -> Result<u64, SendError> {
        if self.state == State::Closed {
            return Err(SendError::Closed);
        }
        match channel {
            Some(name) if !wire::is_valid_channel_name(name) => Err(SendError::BadChannel),
            None if self.config.room.is_none() => Err(SendError::NoRoom),
            _ => self.queue_publish(now, channel, event, payload),
        }
    }

    /// The last position delivered of a subscribed channel (or the one it is recovering from).
    pub fn position(&self, channel: &str) -> Option<Position> {
        self.channels.subs.iter().find(|sub| sub.name == channel).and_then(|sub| sub.position)
    }

    /// Whether the app holds a subscription to `channel` (taken effect or still on its way).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.channels.find(channel).is_some()
    }

    // --- Session hooks -------------------------------------------------------------------

    /// A new life after `close`: the room channel again, nothing else.
    pub(super) fn reset_channels(&mut self) {
        self.channels = Channels::new(self.config.room.as_deref());
        self.timers.clear(Timer::Resubscribe);
    }

    /// `rt_since=<ep>.<o>` for the room channel's position, on a connect URL.
    pub(super) fn push_room_since(&self, url: &mut String) {
        let Some(room) = self.config.room.as_deref() else { return };
        let Some(position) = self.position(room) else { return };
        let mut bytes = Vec::with_capacity(40);
        bytes.extend_from_slice(b"&rt_since=");
        wire::push_epoch(&mut bytes, position.epoch);
        bytes.push(b'.');
        wire::push_decimal(&mut bytes, position.offset);
        if let Ok(text) = core::str::from_utf8(&bytes) {
            url.push_str(text);
        }
    }

    /// A reset: the requests the fresh session must get first (decision 9: the room channel's
    /// unsubscribe when the app dropped it; a subscribe with its position for every other held
    /// channel), then the outbox renumbered behind them.
    pub(super) fn renumber_for_reset(&mut self) {
        let room = self.config.room.as_deref();
        let mut prefix = Vec::new();
        if let Some(room) = room {
            if self.channels.find(room).is_none() {
                prefix.push(Outgoing::request(Kind::Unsubscribe { channel: String::from(room) }, 1));
            }
        }
        for sub in &mut self.channels.subs {
            // The old session's `gap` will never come: the fresh one recovers from `position`.
            if let Some(owed) = sub.owed.take() {
                self.events.push(owed.event(sub.name.clone()));
            }
            if room == Some(sub.name.as_str()) {
                // The fresh session holds it already, recovered from `rt_since`.
                sub.state = SubState::Implicit;
            } else if !matches!(sub.state, SubState::Retrying { .. }) {
                // The fresh session numbers the prefix 1, 2, ...
                let req = prefix.len() as u64 + 1;
                prefix.push(Outgoing::request(Kind::Subscribe { channel: sub.name.clone(), since: sub.position }, req));
                sub.state = SubState::Pending { req };
            }
        }
        self.renumber_outbox_for_reset(prefix);
    }

    /// `close`: every subscription ends with the session.
    pub(super) fn end_channels(&mut self) {
        self.channels.subs.clear();
        self.timers.clear(Timer::Resubscribe);
    }

    /// The outbox renumbered requests not yet sent (`old`, `new` seqs): their answers come
    /// under the new ones.
    pub(super) fn renumbered_requests(&mut self, moved: &[(u64, u64)]) {
        for sub in &mut self.channels.subs {
            if let SubState::Pending { req } = sub.state {
                if let Some(&(_, new)) = moved.iter().find(|&&(old, _)| old == req) {
                    sub.state = SubState::Pending { req: new };
                }
            }
        }
    }

    /// The resubscribe timer fired.
    pub(super) fn resubscribe_due(&mut self, now: Millis) {
        // By index, with no list of names collected: queueing a request leaves `subs` as it is.
        let mut index = 0;
        while let Some(sub) = self.channels.subs.get(index) {
            if matches!(sub.state, SubState::Retrying { at } if at <= now) {
                let kind = Kind::Subscribe { channel: sub.name.clone(), since: sub.position };
                let req = self.queue_control(now, kind);
                if let Some(sub) = self.channels.subs.get_mut(index) {
                    sub.state = SubState::Pending { req };
                }
            }
            index += 1;
        }
        self.rearm_resubscribe();
    }

    fn rearm_resubscribe(&mut self) {
        match self.channels.next_retry() {
            Some(at) => self.timers.set(Timer::Resubscribe, at),
            None => self.timers.clear(Timer::Resubscribe),
        }
    }

    // --- Frames from the server ----------------------------------------------------------

    /// A channel frame (an ordered one: its seq is checked as a message's is).
    pub(super) fn handle_channel_frame(&mut self, now: Millis, id: ConnId, frame: Frame) {
        let Some(seq) = frame.ordered_seq() else { return };
        if !self.accept_ordered(now, id, seq) {
            return;
        }
        match frame {
            Frame::ChannelMessage(message) => self.channel_message(message, None),
            Frame::Attributed { subject, message } => self.channel_message(message, Some(subject)),
            Frame::Subscribed { channel, position, recovered, reply_to, .. } => {
                self.channel_subscribed(channel, position, recovered, reply_to)
            }
            Frame::Unsubscribed { channel, reply_to, close, .. } => self.channel_unsubscribed(now, channel, reply_to, close),
            Frame::Gap { channel, epoch, from, to, .. } => self.channel_gap(channel, epoch, from, to),
            Frame::Nack { reply_to, close, .. } if reply_to < self.outbox.next_seq => {
                self.fail_publish(reply_to, ErrorCode::from_channel_code(close.code));
            }
            _ => {}
        }
    }

    fn channel_message(&mut self, message: ChannelMessage, from: Option<String>) {
        let ChannelMessage { channel, position, message } = message;
        // A server message names its position; one that does not cannot be placed.
        let Some(position) = position else { return };
        let Some(sub) = self.channels.get_mut(&channel) else { return };
        if sub.state != SubState::Active {
            return; // Not ours (yet): from a subscription the app ended.
        }
        // The promised `gap` precedes every message; a server that skips it still tells it.
        if let Some(owed) = sub.owed.take() {
            self.events.push(owed.event(channel.clone()));
        }
        let gap = match sub.position {
            Some(last) if last.epoch == position.epoch => {
                if position.offset <= last.offset {
                    return; // A double.
                }
                (position.offset > last.offset + 1).then_some((last.offset + 1, position.offset - 1))
            }
            Some(_) => (position.offset != 1).then_some((0, position.offset.saturating_sub(1))),
            None => None,
        };
        sub.position = Some(position);
        if let Some((from, to)) = gap {
            self.events.push(Event::Gap { channel: channel.clone(), epoch: position.epoch, from, to });
        }
        self.stats.messages_in += 1;
        self.stats.bytes_in += message.payload.len() as u64;
        self.events.push(Event::ChannelMessage {
            channel,
            position,
            seq: message.seq,
            event: message.event,
            payload: message.payload,
            from,
        });
    }

    fn channel_subscribed(&mut self, channel: String, position: Position, recovered: bool, reply_to: Option<u64>) {
        let Some(sub) = self.channels.get_mut(&channel) else { return };
        let answers = match (sub.state, reply_to) {
            (SubState::Pending { req }, Some(reply_to)) => req == reply_to,
            (SubState::Implicit, None) => true,
            _ => false, // An answer to a request superseded since.
        };
        if !answers {
            return;
        }
        sub.state = SubState::Active;
        sub.owed = match sub.position {
            Some(asked) if !recovered => OwedGap::after(asked, position),
            _ => None,
        };
        if !recovered || sub.position.is_none() {
            sub.position = Some(position);
        }
        self.events.push(Event::Subscribed { channel, recovered, position });
    }

    fn channel_unsubscribed(&mut self, now: Millis, channel: String, reply_to: Option<u64>, close: Close) {
        let Some(sub) = self.channels.get_mut(&channel) else { return };
        let applies = match (sub.state, reply_to) {
            (SubState::Pending { req }, Some(reply_to)) => req == reply_to,
            // A server-initiated one counts only when no request of ours is pending (decision 8).
            (SubState::Active | SubState::Implicit, None) => true,
            _ => false,
        };
        if !applies {
            return;
        }
        let code = ErrorCode::from_channel_code(close.code);
        if let Retry::AfterMs(ms) = close.retry {
            sub.state = SubState::Retrying { at: after(now, ms.min(limits::MAX_RETRY_MS)) };
            // The resubscribe recovers from `position`: the `gap` before it is told now.
            if let Some(owed) = sub.owed.take() {
                self.events.push(owed.event(channel.clone()));
            }
            self.rearm_resubscribe();
            self.events.push(Event::SubscriptionError { channel, code, message: close.reason });
        } else {
            self.channels.remove(&channel);
            self.events.push(Event::Unsubscribed { channel, code, reason: close.reason });
        }
    }

    fn channel_gap(&mut self, channel: String, epoch: u64, from: u64, to: u64) {
        let Some(sub) = self.channels.get_mut(&channel) else { return };
        if sub.state != SubState::Active {
            return;
        }
        sub.owed = None;
        let behind = sub.position.is_none_or(|last| last.epoch != epoch || last.offset < to);
        if behind {
            sub.position = Some(Position { epoch, offset: to });
        }
        self.events.push(Event::Gap { channel, epoch, from, to });
    }
}
