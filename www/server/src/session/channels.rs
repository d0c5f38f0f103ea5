//! A session's side of channels (PROTOCOL.md §8): the subscriptions it holds, the checks a
//! client's channel frame passes while its batch is read (seq order, under the session lock),
//! and the ordered channel frames and channel messages queued to its replay buffer. The channel
//! registry side (offsets, members, history) is `crate::channel`; the session registry runs the
//! [`Action`]s a batch produced, in order, after the session lock is released (lock order:
//! channel, then session).
//!
//! Invariants:
//! - `Inner::channels` is the session's view of its subscriptions: a subscribe the checks accept
//!   is in it from the moment it is read (so a second subscribe for it in the same batch is the
//!   protocol error of §8.3), and leaves it on unsubscribe or a refusal by the registry;
//! - every refusal answers its request (`unsubscribed` or `nack` with `for=`) and never ends the
//!   session; only frames that break the protocol do.

use std::sync::Arc;
use std::time::Instant;

use realtime_client::core::wire::{close_code, is_valid_channel_name, ChannelMessage, Close, Frame, Payload, Position, Retry};

use super::replay::Item;
use super::{close, lock, Inner, Session, Stop, REPLAY_OVERFLOW};
use crate::channel::{Recovery, Refusal, Subscribed};
use crate::limits::{SharedMessage, ENTRY_BYTES};
use crate::Config;

/// What a client's ordered channel frame asks of the registry, in the batch's seq order.
#[derive(Debug)]
pub enum Action {
    /// Publish to `channel` (the room channel for a `msg` without `ch`).
    Publish { seq: u64, channel: String, event: Option<String>, payload: Payload },
    Subscribe { seq: u64, channel: String, since: Option<Position> },
    Unsubscribe { seq: u64, channel: String },
    /// A subscribe the session's checks refused: answered `unsubscribed` with the code.
    Refuse { seq: u64, channel: String, refusal: Refusal },
    /// A publish refused: answered `nack` with the code.
    Nack { seq: u64, channel: String, refusal: Refusal },
}

/// Whether `pattern` (a `--client-publish` pattern: exact, or a prefix ending in `*`) allows
/// `channel`. `none` allows nothing.
pub fn pattern_allows(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern != "none" && pattern == channel,
    }
}

/// The retry advice of a refusal's frame (§8.7).
fn refusal_retry(refusal: Refusal) -> Retry {
    match refusal {
        Refusal::SubscribeRate => Retry::AfterMs(1_000),
        Refusal::TooManyChannels | Refusal::BadName | Refusal::NotAllowed | Refusal::Closed => Retry::Never,
    }
}

fn refusal_close(refusal: Refusal) -> Close {
    close(refusal.code(), refusal.reason(), refusal_retry(refusal))
}

/// A subscribe rate: a token bucket of `burst` tokens refilled at `per_sec`.
#[derive(Debug)]
pub(super) struct SubscribeRate {
    tokens: f64,
    at: Instant,
}

impl SubscribeRate {
    pub(super) fn new(burst: u32) -> Self {
        SubscribeRate { tokens: f64::from(burst), at: Instant::now() }
    }

    fn take(&mut self, per_sec: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * f64::from(per_sec)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Session {
    /// The action for the client's ordered frame `frame` (its seq already checked and counted),
    /// or the close of a protocol error.
    pub(super) fn classify(&self, inner: &mut Inner, frame: Frame) -> Result<Action, Close> {
        let limits = &self.channel_limits;
        match frame {
            Frame::Message(message) => {
                let Some(room) = &self.room else {
                    return Err(close(close_code::PROTOCOL_ERROR, "msg without ch: this session has no room channel", Retry::Default));
                };
                Ok(self.publish_action(message.seq, room.clone(), message.event, message.payload))
            }
            Frame::ChannelMessage(ChannelMessage { channel, message, .. }) => {
                Ok(self.publish_action(message.seq, channel, message.event, message.payload))
            }
            Frame::Subscribe { seq, channel, since } => {
                if inner.channels.contains(&channel) {
                    return Err(close(close_code::PROTOCOL_ERROR, "subscribe to a channel the session holds", Retry::Default));
                }
                // A bad name does not get here from the wire (the codec refuses the frame,
                // PROTOCOL §8.7); the check keeps frames built in process to the same rule.
                let refusal = if !is_valid_channel_name(&channel) {
                    Some(Refusal::BadName)
                } else if inner.channels.len() >= limits.max_channels_per_session {
                    Some(Refusal::TooManyChannels)
                } else if !inner.subscribe_rate.take(limits.subscribe_rate_per_sec, limits.subscribe_burst(), Instant::now()) {
                    Some(Refusal::SubscribeRate)
                } else if !self.auth.may_subscribe(&channel) {
                    Some(Refusal::NotAllowed) // v3: the credential's `channels` claim.
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    return Ok(Action::Refuse { seq, channel, refusal });
                }
                inner.channels.insert(channel.clone());
                Ok(Action::Subscribe { seq, channel, since })
            }
            Frame::Unsubscribe { seq, channel } => {
                inner.channels.remove(&channel);
                Ok(Action::Unsubscribe { seq, channel })
            }
            _ => Err(close(close_code::PROTOCOL_ERROR, "unexpected frame from client", Retry::Default)),
        }
    }

    fn publish_action(&self, seq: u64, channel: String, event: Option<String>, payload: Payload) -> Action {
        // As in `classify`: unreachable from the wire, a guard for frames built in process.
        if !is_valid_channel_name(&channel) {
            return Action::Nack { seq, channel, refusal: Refusal::BadName };
        }
        if !self.publish_policy.iter().any(|pattern| pattern_allows(pattern, &channel)) || !self.auth.may_publish(&channel) {
            return Action::Nack { seq, channel, refusal: Refusal::NotAllowed };
        }
        Action::Publish { seq, channel, event, payload }
    }

    /// The channels this session holds (its view, see the module docs).
    pub fn channel_names(&self) -> Vec<String> {
        lock(&self.inner).channels.iter().cloned().collect()
    }

    /// The registry refused a subscribe the session's checks accepted: it is not held.
    pub fn forget_channel(&self, channel: &str) {
        lock(&self.inner).channels.remove(channel);
    }

    /// Queues the `unsubscribed` answering the client's request `reply_to` (code 1000 when
    /// `refusal` is None).
    pub fn push_unsubscribed(&self, channel: &str, reply_to: Option<u64>, refusal: Option<Refusal>, config: &Config) -> bool {
        let close = refusal.map_or_else(|| close(1000, "", Retry::Default), refusal_close);
        self.push_items(config, |inner| {
            inner.replay.push_item(|seq| Item::Control(Frame::Unsubscribed { seq, channel: channel.to_owned(), reply_to, close }));
        })
    }

    /// Queues the `nack` of the client's publish `reply_to`.
    pub fn push_nack(&self, channel: &str, reply_to: u64, refusal: Refusal, config: &Config) -> bool {
        self.push_items(config, |inner| {
            let close = refusal_close(refusal);
            inner.replay.push_item(|seq| Item::Control(Frame::Nack { seq, channel: channel.to_owned(), reply_to, close }));
        })
    }

    /// The session joined `channel` (called under the channel's lock): queues its `subscribed`
    /// (`for=reply_to` when it answers a request), then the replay or the `gap` of a recovery
    /// from `since` (§8.4). A replay that would not fit the session's replay bounds is answered
    /// as a gap (§8.11 item 6).
    pub fn joined(&self, channel: &str, since: Option<Position>, answer: &Subscribed, reply_to: Option<u64>, config: &Config) -> bool {
        let name: Arc<str> = Arc::from(channel);
        let epoch = answer.epoch;
        let top = answer.top;
        self.push_items(config, |inner| {
            inner.channels.insert(channel.to_owned());
            let mut recovery = answer.recovery.clone();
            if let (Some(Recovery::Replay(messages)), Some(since)) = (&recovery, since) {
                // The `subscribed` and every replayed message, each an entry.
                let entries = messages.len().saturating_add(1);
                let bytes = messages
                    .iter()
                    .map(|item| item.message.bytes)
                    .fold(entries.saturating_mul(ENTRY_BYTES), usize::saturating_add);
                if !inner.replay.fits(entries, bytes, config) {
                    recovery = Some(Recovery::Gap { from: since.offset.saturating_add(1), to: top });
                }
            }
            let recovered = matches!(recovery, Some(Recovery::Replay(_)));
            let position = Position { epoch, offset: top };
            inner.replay.push_item(|seq| Item::Control(Frame::Subscribed { seq, channel: channel.to_owned(), position, recovered, reply_to }));
            match recovery {
                Some(Recovery::Replay(messages)) => {
                    for item in messages {
                        let position = Position { epoch, offset: item.offset };
                        inner.replay.push_item(|_| Item::Message { channel: Some((name.clone(), position)), message: item.message });
                    }
                }
                Some(Recovery::Gap { from, to }) => {
                    inner.replay.push_item(|seq| Item::Control(Frame::Gap { seq, channel: channel.to_owned(), epoch, from, to }));
                }
                None => {}
            }
        })
    }

    /// Queues a channel's message at `position` (under the channel's lock): Some(true) queued,
    /// Some(false) it had to end the session (its unsent messages passed the replay bounds),
    /// None the session had ended before (nothing queued, nothing to count).
    pub fn push_channel_message(&self, channel: &Arc<str>, position: Position, message: Arc<SharedMessage>, config: &Config) -> Option<bool> {
        self.try_push_items(config, |inner| {
            inner.replay.push_item(|_| Item::Message { channel: Some((channel.clone(), position)), message });
        })
    }

    /// Runs `push` on the live session's state, then its replay bounds; an overflowing session
    /// ends (its client does not read). False when it had to end (an ended one counts as true).
    pub(super) fn push_items(&self, config: &Config, push: impl FnOnce(&mut Inner)) -> bool {
        self.try_push_items(config, push).unwrap_or(true)
    }

    /// [`Self::push_items`]; None when the session had already ended (nothing was pushed).
    fn try_push_items(&self, config: &Config, push: impl FnOnce(&mut Inner)) -> Option<bool> {
        let mut inner = lock(&self.inner);
        if inner.ended {
            return None;
        }
        push(&mut inner);
        let healthy = inner.replay.enforce_limits(config, Instant::now()) && inner.replay.enforce_ip_share();
        drop(inner);
        if !healthy {
            self.end(Stop::Close(close(close_code::LIMIT_EXCEEDED, REPLAY_OVERFLOW, Retry::Default)));
        }
        self.bump();
        Some(healthy)
    }

    /// The actions of a batch were run: its ack may go out now (a `nack` precedes the `ack`
    /// that covers its publish, §8.3).
    pub fn finish_batch(&self) {
        let mut inner = lock(&self.inner);
        if inner.ack_pending {
            inner.ack_pending = false;
            inner.ack_seq = inner.client_seq;
            inner.ack_due = true;
        }
        drop(inner);
        self.bump();
    }
}
