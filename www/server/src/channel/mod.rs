//! Channels (PROTOCOL.md §8, protocol v2, a draft): names and their limits, epochs, refusal
//! codes, and the [`Registry`] of channels with their histories. The session registry
//! (`session::Registry`) owns one and wires it to the sessions; a room is the channel of its name.
//!
//! Invariants:
//! - a channel is in the registry while it has a subscriber or holds history; the registry frees
//!   it when it has neither (after an unsubscribe, a publish, or a [`Registry::sweep`]), and a
//!   channel created again draws a new random epoch, so a position from before matches it with
//!   probability 2^-64;
//! - a channel's epoch changes exactly when its history is lost: created, or its offsets ran out
//!   (then the new epoch is always different from the one it replaces);
//! - at most `max_channels` channels exist at once; a subscribe or publish that would create one
//!   more is refused ([`Refusal::TooManyChannels`]), never a crash;
//! - the maps lock is held only to look up or edit channels, never across an `.await`, and it is
//!   never taken while a session's lock is held (the session registry's rule);
//! - a publish holds the *publish turn* of its channels (`Channel::busy`) from before its first
//!   offset to after its last, so a batch's offsets in a channel are consecutive; turns are
//!   taken all at once or not at all (no two publishes wait for each other), given back by a
//!   drop guard (a panic included), and a busy channel is never freed;
//! - numbers from requests (positions) go through checked arithmetic ([`history`]).

pub mod history;
mod tombstones;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tombstones::Tombstones;

pub use history::{ChannelMessage, History, HistoryLimits, Recovery, MAX_OFFSET};

use crate::limits::{ReplayBudget, SharedMessage};
use crate::session::lock;

/// Longest channel name, in bytes (PROTOCOL.md §8.2).
pub const MAX_CHANNEL_NAME_BYTES: usize = 128;

/// Whether `name` is a channel name: 1-128 characters of `[A-Za-z0-9_.:/-]`. Every valid room
/// name (`params::is_valid_room`) is one, so a room maps to the channel of the same name.
pub fn is_valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_BYTES
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.:/-".contains(&byte))
}

/// An epoch on the wire: exactly 16 lowercase hex digits.
pub fn encode_epoch(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// Parses an epoch as [`encode_epoch`] writes it; anything else (other lengths, upper case, a
/// sign) is None.
pub fn parse_epoch(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Parses `rt_since=<ep>.<o>` (PROTOCOL.md §8.5): an epoch and a decimal offset of at most 20
/// digits within u64.
pub fn parse_since(text: &str) -> Option<Position> {
    let (epoch, offset) = text.split_once('.')?;
    if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(Position { epoch: parse_epoch(epoch)?, offset: offset.parse().ok()? })
}

/// A client's position in a channel: it delivered every message of `epoch` up to `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: u64,
    pub offset: u64,
}

/// Why a subscribe or publish was refused: the `code` of `unsubscribed` or `nack` (§8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    BadName,
    TooManyChannels,
    SubscribeRate,
    NotAllowed,
    Closed,
}

impl Refusal {
    pub fn code(self) -> u16 {
        match self {
            Refusal::BadName => 4010,
            Refusal::TooManyChannels => 4011,
            Refusal::SubscribeRate => 4012,
            Refusal::NotAllowed => 4013,
            Refusal::Closed => 4014,
        }
    }

    /// The reason text of the frame (lowercase, no trailing period).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadName => "bad channel name",
            Refusal::TooManyChannels => "too many channels",
            Refusal::SubscribeRate => "subscribe rate exceeded",
            Refusal::NotAllowed => "not allowed",
            Refusal::Closed => "channel closed",
        }
    }
}

/// Channel limits. The per-session and rate limits are enforced by the session when this module
/// is wired in; the registry enforces the total and the histories' bounds.
#[derive(Debug, Clone, Copy)]
pub struct ChannelConfig {
    pub history: HistoryLimits,
    /// Most channels at once, over all sessions.
    pub max_channels: usize,
    /// Most subscriptions one session holds.
    pub max_channels_per_session: usize,
    /// Subscribes per second per session, and the burst allowed (never below
    /// `max_channels_per_session`: see [`Self::subscribe_burst`]).
    pub subscribe_rate_per_sec: u32,
    pub subscribe_burst: u32,
    /// How long a freed channel's tombstone lasts (PROTOCOL §8.11 item 5: the history's age
    /// bound plus the resume window; `AppState::new` sets it from those). Zero: none.
    pub tombstone_lifetime: Duration,
}

impl ChannelConfig {
    /// The subscribe burst a session gets: at least its channel limit, so a client that
    /// re-establishes all its subscriptions after a reset is never rate-refused (PROTOCOL §8.11
    /// item 7).
    pub fn subscribe_burst(&self) -> u32 {
        self.subscribe_burst.max(u32::try_from(self.max_channels_per_session).unwrap_or(u32::MAX))
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            history: HistoryLimits::default(),
            max_channels: 100_000,
            max_channels_per_session: 128,
            subscribe_rate_per_sec: 20,
            subscribe_burst: 128,
            tombstone_lifetime: HistoryLimits::default().max_age + Duration::from_secs(60),
        }
    }
}

/// What an accepted subscribe answers (`subscribed`, then the replay or the `gap`).
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub epoch: u64,
    /// The channel's top when the subscription took effect: live messages follow from `top + 1`.
    pub top: u64,
    /// None without a position; else what §8.4 says. `recovered` is `Some(Replay(_))`.
    pub recovery: Option<Recovery>,
}

impl Subscribed {
    /// The `rec` flag of the `subscribed` frame.
    pub fn recovered(&self) -> bool {
        matches!(self.recovery, Some(Recovery::Replay(_)))
    }
}

/// Where a published message went in its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub epoch: u64,
    pub offset: u64,
    /// Subscribers when it was published (the fan-out's size).
    pub subscribers: usize,
}

/// One channel: its history and its members (session ids). Members, not a count: a subscribe
/// and an unsubscribe are idempotent per session, so a repeated or racing one cannot free a
/// channel that others still hold, or leak one that nobody does.
#[derive(Debug)]
struct Channel {
    history: History,
    members: HashSet<String>,
    /// Bumped whenever `members` changes, so a fan-out may keep its lookup of them.
    members_version: u64,
    /// A publish holds the channel's publish turn (see [`Registry::publish_batch`]): no other
    /// publish assigns its offsets meanwhile, and the channel is not freed.
    busy: bool,
}

impl Channel {
    fn new(history: History) -> Self {
        Channel { history, members: HashSet::new(), members_version: 0, busy: false }
    }

    fn is_idle(&self) -> bool {
        self.members.is_empty() && self.history.is_empty() && !self.busy
    }

    fn join(&mut self, member: &str) {
        if self.members.insert(member.to_owned()) {
            self.members_version = self.members_version.wrapping_add(1);
        }
    }

    fn leave(&mut self, member: &str) {
        if self.members.remove(member) {
            self.members_version = self.members_version.wrapping_add(1);
        }
    }
}

/// A channel's members as a fan-out sees them: the session ids, and a version that changes
/// whenever they do (a fan-out that looked them up for an earlier message may reuse that).
#[derive(Debug, Clone, Copy)]
pub struct Members<'a> {
    pub ids: &'a HashSet<String>,
    pub version: u64,
}

/// Draws epochs: random by default, scripted in tests.
type EpochSource = Box<dyn FnMut() -> u64 + Send>;

struct Channels {
    by_name: HashMap<String, Channel>,
    epochs: EpochSource,
    /// What freed channels leave (see [`tombstones`]).
    tombstones: Tombstones,
}

impl Channels {
    /// Creates the channel `name`: from its tombstone when one is left (the same epoch, going on
    /// after its top), else a new epoch at top 0. The caller checked `max_channels`.
    fn create(&mut self, name: &str, config: &ChannelConfig, budget: &Arc<ReplayBudget>, now: Instant) {
        let history = match self.tombstones.take(name, now) {
            Some((epoch, top)) => History::resumed(epoch, top, config.history, budget.clone()),
            None => History::new(draw_epoch(&mut self.epochs, None), config.history, budget.clone()),
        };
        self.by_name.insert(name.to_owned(), Channel::new(history));
    }

    /// Frees the channel `name` if it has no members and no history, leaving its tombstone.
    fn free_if_idle(&mut self, name: &str, now: Instant) {
        if self.by_name.get(name).is_some_and(Channel::is_idle) {
            if let Some(channel) = self.by_name.remove(name) {
                self.tombstones.leave(name, channel.history.epoch(), channel.history.top(), now);
            }
        }
    }
}

/// An epoch different from `previous` (a collision of 64 random bits is unlikely, and cheap to
/// rule out where it would matter).
fn draw_epoch(epochs: &mut EpochSource, previous: Option<u64>) -> u64 {
    loop {
        let epoch = epochs();
        if Some(epoch) != previous {
            return epoch;
        }
    }
}

/// The publish turns a batch holds ([`Registry::publish_batch`]), given back on drop.
struct Turns<'a> {
    registry: &'a Registry,
    names: &'a [&'a str],
}

impl Drop for Turns<'_> {
    fn drop(&mut self) {
        let mut channels = lock(&self.registry.channels);
        let now = Instant::now();
        for name in self.names {
            if let Some(channel) = channels.by_name.get_mut(*name) {
                channel.busy = false;
            }
            channels.free_if_idle(name, now);
        }
        drop(channels);
        self.registry.turns.notify_all();
    }
}

/// Every channel by name, with its history. Free-standing today (see the module docs).
pub struct Registry {
    channels: Mutex<Channels>,
    /// Signalled when a batch gives its publish turns back.
    turns: Condvar,
    config: ChannelConfig,
    budget: Arc<ReplayBudget>,
}

impl Registry {
    /// Epochs from the OS-seeded CSPRNG; entries charged to `budget`, the server's replay budget.
    pub fn new(config: ChannelConfig, budget: Arc<ReplayBudget>) -> Self {
        Self::with_epochs(config, budget, Box::new(rand::random::<u64>))
    }

    /// As [`Self::new`], with epochs from `epochs` (tests script them).
    pub fn with_epochs(config: ChannelConfig, budget: Arc<ReplayBudget>, epochs: EpochSource) -> Self {
        let tombstones = Tombstones::new(config.tombstone_lifetime, config.max_channels);
        Registry { channels: Mutex::new(Channels { by_name: HashMap::new(), epochs, tombstones }), turns: Condvar::new(), config, budget }
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// Channels that exist now.
    pub fn len(&self) -> usize {
        lock(&self.channels).by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The channel's epoch and top, if it exists.
    pub fn position(&self, name: &str) -> Option<Position> {
        lock(&self.channels).by_name.get(name).map(|channel| Position { epoch: channel.history.epoch(), offset: channel.history.top() })
    }

    /// Subscriptions the channel has (0 when it does not exist).
    pub fn subscribers(&self, name: &str) -> usize {
        lock(&self.channels).by_name.get(name).map_or(0, |channel| channel.members.len())
    }

    /// Runs `edit` on the channel `name` (with the epoch source, for a renewal), created (a new
    /// epoch, top 0) when missing and `max_channels` allows; frees it afterwards if it is idle.
    /// Without `create`, a missing channel is [`Refusal::Closed`] and nothing is created.
    fn with_channel<T>(&self, name: &str, now: Instant, create: bool, edit: impl FnOnce(&mut Channel, &mut EpochSource) -> T) -> Result<T, Refusal> {
        if !is_valid_channel_name(name) {
            return Err(Refusal::BadName);
        }
        let mut guard = lock(&self.channels);
        let channels = &mut *guard;
        if !channels.by_name.contains_key(name) {
            if !create {
                return Err(Refusal::Closed);
            }
            if channels.by_name.len() >= self.config.max_channels {
                return Err(Refusal::TooManyChannels);
            }
            channels.create(name, &self.config, &self.budget, now);
        }
        let Channels { by_name, epochs, .. } = channels;
        let Some(channel) = by_name.get_mut(name) else {
            return Err(Refusal::Closed);
        };
        channel.history.trim(now);
        let outcome = edit(channel, epochs);
        channels.free_if_idle(name, now);
        Ok(outcome)
    }

    /// Makes `member` (a session id) a subscriber of `name` and answers it, recovering from
    /// `since` when given (PROTOCOL.md §8.3, §8.4); subscribing again is the same membership.
    /// The per-session limit and rate are the caller's.
    pub fn subscribe(&self, name: &str, member: &str, since: Option<Position>, now: Instant) -> Result<Subscribed, Refusal> {
        self.subscribe_with(name, member, since, now, |subscribed| subscribed.clone())
    }

    /// [`Self::subscribe`], running `joined` on the answer under the channel's lock (the
    /// wiring queues the `subscribed` and its replay there: no publish can come in between).
    pub fn subscribe_with<T>(
        &self,
        name: &str,
        member: &str,
        since: Option<Position>,
        now: Instant,
        joined: impl FnOnce(&Subscribed) -> T,
    ) -> Result<T, Refusal> {
        self.subscribe_if(name, member, since, now, || true, joined)
    }

    /// [`Self::subscribe_with`] when `allowed` says yes, asked under the channel's lock before
    /// the join: else [`Refusal::NotAllowed`], no membership, nothing read from the history.
    pub fn subscribe_if<T>(
        &self,
        name: &str,
        member: &str,
        since: Option<Position>,
        now: Instant,
        allowed: impl FnOnce() -> bool,
        joined: impl FnOnce(&Subscribed) -> T,
    ) -> Result<T, Refusal> {
        self.with_channel(name, now, true, |channel, _| {
            if !allowed() {
                return Err(Refusal::NotAllowed);
            }
            channel.join(member);
            let recovery = since.map(|position| channel.history.since(position.epoch, position.offset));
            Ok(joined(&Subscribed { epoch: channel.history.epoch(), top: channel.history.top(), recovery }))
        })?
    }

    /// Removes `member` from `name` (not a member is fine: an unsubscribe may race the server's
    /// own); frees the channel when nothing is left in it.
    pub fn unsubscribe(&self, name: &str, member: &str) {
        let mut channels = lock(&self.channels);
        Self::leave(&mut channels, name, member, Instant::now());
    }

    /// Removes `member` from every channel in `names` (a session that ended: its memberships go
    /// with it, whatever unsubscribes did or did not arrive).
    pub fn leave_all<'a>(&self, member: &str, names: impl IntoIterator<Item = &'a str>) {
        let mut channels = lock(&self.channels);
        let now = Instant::now();
        for name in names {
            Self::leave(&mut channels, name, member, now);
        }
    }

    fn leave(channels: &mut Channels, name: &str, member: &str, now: Instant) {
        if let Some(channel) = channels.by_name.get_mut(name) {
            channel.leave(member);
            channels.free_if_idle(name, now);
        }
    }

    /// Gives `message` the channel's next offset and keeps it in the history (created when the
    /// channel did not exist, as a backend publish does). When the offsets ran out the channel
    /// starts a new epoch and the message gets offset 1 in it.
    pub fn publish(&self, name: &str, message: Arc<SharedMessage>, now: Instant) -> Result<Published, Refusal> {
        self.publish_with(name, message, now, true, |published, _| published)
    }

    /// [`Self::publish`], running `fan_out` with where the message went and the channel's
    /// members under the channel's lock (offsets and deliveries in one order, PROTOCOL §8.11
    /// item 1). Without `create`, a missing channel is [`Refusal::Closed`] (a client publish
    /// creates nothing, item 11).
    pub fn publish_with<T>(
        &self,
        name: &str,
        message: Arc<SharedMessage>,
        now: Instant,
        create: bool,
        mut fan_out: impl FnMut(Published, &HashSet<String>) -> T,
    ) -> Result<T, Refusal> {
        let mut outcomes = self.publish_batch(&[name], vec![(0, message)], now, create, |_, published, members, _| fan_out(published, members.ids))?;
        outcomes.pop().ok_or(Refusal::Closed)
    }

    /// Publishes `messages` in order, each to the channel `names[index]` (the names distinct),
    /// so that the offsets a batch gets in one channel are consecutive: no other publish to
    /// that channel comes in between (PROTOCOL §8.9). All or nothing (§8.11 item 12): every name
    /// is checked and every channel found, or created with `create` within `max_channels`,
    /// before the first offset is assigned; on Err nothing was published.
    ///
    /// How: the batch first takes the *publish turn* of each of its channels, all at once under
    /// the lock when none is taken (else it waits on `turns`: all at once, so two batches never
    /// hold one turn each and wait for the other's); then each message takes the lock on its
    /// own, gets its offset and runs `fan_out` (its channel's index, where it went, the members,
    /// the message) under it, as a single publish does (§8.11 item 1). Between two messages
    /// subscribes, unsubscribes and publishes to other channels go on, so a large batch holds
    /// up only publishes to its own channels. Those wait on a `Condvar`, blocking their thread
    /// (a client publish runs on a runtime worker) until the batch is done: a batch is bounded
    /// (10,000 messages; a large fan-out runs on a blocking thread), but this is the one wait a
    /// backend batch can impose on clients. A channel left idle is freed when the turns are
    /// given back, not between two of its messages.
    pub fn publish_batch<T>(
        &self,
        names: &[&str],
        messages: Vec<(usize, Arc<SharedMessage>)>,
        now: Instant,
        create: bool,
        mut fan_out: impl FnMut(usize, Published, Members<'_>, &Arc<SharedMessage>) -> T,
    ) -> Result<Vec<T>, Refusal> {
        if names.iter().any(|name| !is_valid_channel_name(name)) || messages.iter().any(|(index, _)| *index >= names.len()) {
            return Err(Refusal::BadName);
        }
        let mut guard = lock(&self.channels);
        while names.iter().any(|name| guard.by_name.get(*name).is_some_and(|channel| channel.busy)) {
            guard = self.turns.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let channels = &mut *guard;
        let mut missing: Vec<&str> = names.iter().copied().filter(|name| !channels.by_name.contains_key(*name)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() && !create {
            return Err(Refusal::Closed);
        }
        if channels.by_name.len().saturating_add(missing.len()) > self.config.max_channels {
            return Err(Refusal::TooManyChannels);
        }
        for name in missing {
            channels.create(name, &self.config, &self.budget, now);
        }
        for name in names {
            if let Some(channel) = channels.by_name.get_mut(*name) {
                channel.history.trim(now);
                channel.busy = true;
            }
        }
        drop(guard);
        // Gives the turns back (and frees what is idle) however this ends, a panic included.
        let _turns = Turns { registry: self, names };
        let mut outcomes = Vec::with_capacity(messages.len());
        for (index, message) in messages {
            let mut guard = lock(&self.channels);
            let Channels { by_name, epochs, .. } = &mut *guard;
            // Busy channels are never freed: every name is still there.
            let Some(channel) = names.get(index).and_then(|name| by_name.get_mut(*name)) else {
                continue;
            };
            let offset = match channel.history.push(message.clone(), now) {
                Ok(offset) => offset,
                Err(history::OffsetsExhausted) => {
                    let epoch = draw_epoch(epochs, Some(channel.history.epoch()));
                    channel.history.renew(epoch);
                    // A renewed history is empty: offset 1 is always available.
                    channel.history.push(message.clone(), now).unwrap_or(1)
                }
            };
            let published = Published { epoch: channel.history.epoch(), offset, subscribers: channel.members.len() };
            let members = Members { ids: &channel.members, version: channel.members_version };
            outcomes.push(fan_out(index, published, members, &message));
        }
        Ok(outcomes)
    }

    /// The recovery a subscriber at `since` would get now, without subscribing (tests, and the
    /// wiring's re-check after a session reset).
    pub fn since(&self, name: &str, since: Position, now: Instant) -> Option<Recovery> {
        let mut channels = lock(&self.channels);
        let channel = channels.by_name.get_mut(name)?;
        channel.history.trim(now);
        Some(channel.history.since(since.epoch, since.offset))
    }

    /// Tests: as if the channel `name` had assigned offsets up to `top` (see [`History::skip_to`]).
    #[cfg(test)]
    pub(crate) fn skip_to(&self, name: &str, top: u64) {
        if let Some(channel) = lock(&self.channels).by_name.get_mut(name) {
            channel.history.skip_to(top);
        }
    }

    /// Trims every history to its age bound at `now` and frees the channels left idle.
    pub fn sweep(&self, now: Instant) {
        let mut channels = lock(&self.channels);
        let mut idle = Vec::new();
        for (name, channel) in channels.by_name.iter_mut() {
            channel.history.trim(now);
            if channel.is_idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            channels.free_if_idle(&name, now);
        }
        channels.tombstones.trim(now);
    }

    /// Tombstones held now.
    pub fn tombstones(&self) -> usize {
        lock(&self.channels).tombstones.len()
    }

    /// Tombstones dropped before their time by their bound (`max_channels`) since the last call
    /// (the sweeper counts them as limit trips).
    pub fn take_evicted_tombstones(&self) -> u64 {
        lock(&self.channels).tombstones.take_evicted()
    }

    /// Tests: entries in the tombstones' expiry queue, stale ones included.
    #[cfg(test)]
    pub(crate) fn tombstone_queue(&self) -> usize {
        lock(&self.channels).tombstones.queued()
    }
}

#[cfg(test)]
mod tests;
