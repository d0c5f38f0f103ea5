//! The registry: every [`Session`] by id and by room. A connect resumes the requested session
//! when the resume rules allow, else creates a fresh one; a publish is broadcast to a room;
//! the sweeper drops ended, expired and overflowing sessions.
//!
//! Invariants:
//! - a session is in `sessions` exactly when it is in its room's member list, and a room's list
//!   is never empty (the room goes with its last member);
//! - the maps lock is held only to look up or edit the maps, never while a session's lock is
//!   taken or across an `.await`;
//! - session ids and secrets are 128-bit tokens from the OS-seeded CSPRNG ([`random_token`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use realtime_client::core::wire::{close_code, Hello, Payload, Position, Retry};

use super::{lock, Action, Attachment, Session, Stop, TransportKind};
use crate::channel::{self, ChannelConfig};
use crate::limits::{ReplayBudget, SessionSlot, SharedMessage};
use crate::metrics::LimitKind;
use crate::v3::auth::Principal;
use crate::Config;

/// The query parameters of a connect request that matter to the session logic.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// The room channel a fresh session is subscribed to (None: none).
    pub room: Option<String>,
    pub conn: u32,
    pub resume: Option<ResumeRequest>,
    /// `rt_since`: where a fresh session's room channel recovers from (PROTOCOL §8.5).
    pub since: Option<Position>,
}

/// A resume's session id and key; its `Debug` shows only `last`.
#[derive(Clone)]
pub struct ResumeRequest {
    pub session_id: String,
    pub key: String,
    pub last: u64,
}

impl std::fmt::Debug for ResumeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeRequest").field("session_id", &"<redacted>").field("key", &"<redacted>").field("last", &self.last).finish()
    }
}

/// Who makes a connect. A v2 connect carries no credential; a v3 one carries the principal its
/// credential verified as (None: an open server), which a resume must belong to and a fresh
/// session is bound to before it joins its room (PROTOCOL §9.4).
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    V2,
    V3(Option<&'a Principal>),
}

/// The outcome of a connect.
pub enum Connect {
    Attached { session: Arc<Session>, attachment: Arc<Attachment>, hello: Hello },
    /// The request came from a conn this session already replaced.
    Retired,
    /// The session limit is reached.
    Full,
    /// A per-IP limit refuses a new session (the caller counts the trip).
    Refused(LimitKind),
}

/// What a broadcast did.
#[derive(Debug, Default, Clone)]
pub struct Delivery {
    /// Messages queued to members.
    pub delivered: usize,
    /// Members ended because their unsent messages passed the replay bounds.
    pub overflowed: usize,
    /// Where each published message went, in order, with the index of its channel (none when
    /// the publish was refused).
    pub positions: Vec<(usize, Position)>,
    /// Why nothing was published: a channel is missing and the publish may not create it
    /// (`Closed`), or creating the batch's channels would pass the server's channel limit.
    pub refusal: Option<channel::Refusal>,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<String, Arc<Session>>,
}

/// Every session by id, and the channels they subscribe to.
pub struct Registry {
    maps: Mutex<Maps>,
    /// Bytes held in all replay buffers (see [`ReplayBudget`]).
    budget: Arc<ReplayBudget>,
    channels: channel::Registry,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(Arc::default(), ChannelConfig::default())
    }
}

impl Registry {
    /// A registry whose replay buffers count against `budget`.
    pub fn with_budget(budget: Arc<ReplayBudget>) -> Self {
        Self::new(budget, ChannelConfig::default())
    }

    /// A registry whose replay buffers and channel histories count against `budget`.
    pub fn new(budget: Arc<ReplayBudget>, channels: ChannelConfig) -> Self {
        Registry { maps: Mutex::default(), channels: channel::Registry::new(channels, budget.clone()), budget }
    }

    /// The channels (positions, subscribers).
    pub fn channels(&self) -> &channel::Registry {
        &self.channels
    }

    pub fn budget(&self) -> &Arc<ReplayBudget> {
        &self.budget
    }

    /// Bytes held in all replay buffers now.
    pub fn replay_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Subscribers of the channel `room` now.
    pub fn room_size(&self, room: &str) -> usize {
        self.channels.subscribers(room)
    }

    pub fn len(&self) -> usize {
        lock(&self.maps).sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, session_id: &str) -> Option<Arc<Session>> {
        lock(&self.maps).sessions.get(session_id).cloned()
    }

    /// Resumes the requested session if the resume rules allow, else creates a fresh one.
    pub fn connect(&self, request: &ConnectRequest, kind: TransportKind, config: &Config) -> Connect {
        self.connect_admitted(request, kind, config, Owner::V2, || Ok(None))
    }

    /// [`Self::connect`] by `owner`, with `admit` asked before a fresh session is made (under
    /// the total cap): it returns the session's per-IP slot, or the limit that refuses it.
    pub fn connect_admitted(
        &self,
        request: &ConnectRequest,
        kind: TransportKind,
        config: &Config,
        owner: Owner<'_>,
        admit: impl FnOnce() -> Result<Option<SessionSlot>, LimitKind>,
    ) -> Connect {
        // The session the request named with its right key, when it cannot resume it: the
        // fresh session replaces it (PROTOCOL §8.11 item 10). A session of another principal
        // (or a v2 session, for a v3 connect) is not resumable: nothing of it reaches the new
        // one, and it ends only once the fresh session is certain (§9.4).
        let mut replaced = None;
        if let Some(resume) = &request.resume {
            if let Some(session) = self.get(&resume.session_id) {
                if session.key_matches(&resume.key) {
                    let owned = match owner {
                        Owner::V2 => true,
                        Owner::V3(principal) => session.auth.belongs_to(principal),
                    };
                    if owned && session.room == request.room {
                        if session.is_retired(request.conn) {
                            return Connect::Retired;
                        }
                        if let Some((attachment, hello)) = session.attach(kind, request.conn, Some(resume.last), config) {
                            return Connect::Attached { session, attachment, hello };
                        }
                    }
                    replaced = Some(session);
                }
            }
        }
        if self.len() >= config.max_sessions {
            return Connect::Full;
        }
        let slot = match admit() {
            Ok(slot) => slot,
            Err(kind) => return Connect::Refused(kind),
        };
        // Only once the fresh session is certain (not refused by a limit) does the old one end:
        // its transport gets 4004 and it leaves its channels now, not at the next sweep.
        if let Some(old) = replaced {
            self.end_session(&old, Stop::Close(super::close(close_code::REPLACED, "replaced by a fresh session", Retry::Never)));
        }
        let session = Arc::new(Session::new(random_token(), random_token(), request.room.clone(), config, self.budget.clone(), slot));
        // Bound before it joins anything: the room join below is checked against the claims.
        if let Owner::V3(principal) = owner {
            session.auth.bind(principal.cloned());
        }
        let mut maps = lock(&self.maps);
        if maps.sessions.len() >= config.max_sessions {
            return Connect::Full;
        }
        maps.sessions.insert(session.id.clone(), session.clone());
        drop(maps);
        // Its first ordered frame is the room channel's `subscribed` (PROTOCOL §8.5).
        if let Some(room) = &session.room {
            self.subscribe(&session, room, request.since, None, config);
        }
        // A fresh attach (no resume) always succeeds; the fallback only keeps this panic-free.
        match session.attach(kind, request.conn, None, config) {
            Some((attachment, hello)) => Connect::Attached { session, attachment, hello },
            None => Connect::Full,
        }
    }

    /// Delivers a message to every session of `room`. Returns how many received it.
    pub fn broadcast(&self, room: &str, event: Option<String>, payload: Payload, config: &Config) -> usize {
        self.broadcast_all(room, vec![(event, payload)], config).delivered
    }

    /// Publishes messages in order to the channel `room` if it exists (a room publish creates
    /// nothing), each stored once and shared by every member and the history.
    pub fn broadcast_all(&self, room: &str, messages: Vec<(Option<String>, Payload)>, config: &Config) -> Delivery {
        self.publish(room, messages, false, config)
    }

    /// Publishes messages in order to `channel`: each gets the next offset and is queued to
    /// every member under the channel's lock. With `create`, a missing channel is created (a
    /// backend publish); else the messages reach nobody and nothing is created.
    pub fn publish(&self, channel: &str, messages: Vec<(Option<String>, Payload)>, create: bool, config: &Config) -> Delivery {
        self.publish_from(channel, None, messages, create, config)
    }

    /// [`Self::publish`] of messages by the verified subject `from` (v3: their `f`).
    pub fn publish_from(&self, channel: &str, from: Option<Arc<str>>, messages: Vec<(Option<String>, Payload)>, create: bool, config: &Config) -> Delivery {
        let messages = messages.into_iter().map(|(event, payload)| (0, event, payload)).collect();
        self.publish_batch(&[channel], from, messages, create, config)
    }

    /// Publishes messages in order, each to the channel `channels[index]` (distinct names),
    /// all or nothing (see [`channel::Registry::publish_batch`]): a refusal publishes nothing
    /// and is in [`Delivery::refusal`]. Each message is stored once, shared by every member and
    /// the history, and queued to every member under the channels lock. `from`: the verified
    /// subject of the publishing client (None for a backend publish).
    pub fn publish_batch(
        &self,
        channels: &[&str],
        from: Option<Arc<str>>,
        messages: Vec<(usize, Option<String>, Payload)>,
        create: bool,
        config: &Config,
    ) -> Delivery {
        let names: Vec<Arc<str>> = channels.iter().map(|name| Arc::from(*name)).collect();
        let messages: Vec<(usize, Arc<SharedMessage>)> =
            messages.into_iter().map(|(index, event, payload)| (index, self.budget.share_from(from.clone(), event, payload))).collect();
        let mut delivery = Delivery::default();
        // The members of each channel, looked up again only when they changed (subscribes and
        // leaves go on between two messages of a batch).
        let mut members_of: Vec<Option<(u64, Vec<Arc<Session>>)>> = vec![None; channels.len()];
        let outcome = self.channels.publish_batch(channels, messages, Instant::now(), create, |index, published, members, message| {
            let position = Position { epoch: published.epoch, offset: published.offset };
            delivery.positions.push((index, position));
            let (Some(name), Some(slot)) = (names.get(index), members_of.get_mut(index)) else {
                return;
            };
            if slot.as_ref().is_none_or(|(version, _)| *version != members.version) {
                let maps = lock(&self.maps);
                *slot = Some((members.version, members.ids.iter().filter_map(|id| maps.sessions.get(id).cloned()).collect()));
            }
            let Some((_, sessions)) = slot.as_ref() else { return };
            for member in sessions {
                // A member ended by an earlier message of the batch (it overflowed) is skipped.
                match member.push_channel_message(name, position, message.clone(), config) {
                    Some(true) => delivery.delivered += 1,
                    Some(false) => delivery.overflowed += 1,
                    None => {}
                }
            }
        });
        if let Err(refusal) = outcome {
            delivery.refusal = Some(refusal);
        }
        delivery
    }

    /// Subscribes `session` to `channel`, answering request `reply_to` (None: the room channel
    /// of a fresh session), recovering from `since`; a refusal is answered `unsubscribed`.
    /// The credential's `channels` claim is checked under the channel's lock, as the join is
    /// made: a refresh that narrowed it cannot let a subscribe in between (a refusal is 4013,
    /// and nothing of the channel is queued).
    pub fn subscribe(&self, session: &Arc<Session>, channel: &str, since: Option<Position>, reply_to: Option<u64>, config: &Config) {
        let answer = self.channels.subscribe_if(
            channel,
            &session.id,
            since.map(to_channel_position),
            Instant::now(),
            || session.auth.may_subscribe(channel),
            |answer| {
                session.joined(channel, since, answer, reply_to, config);
            },
        );
        if let Err(refusal) = answer {
            session.forget_channel(channel);
            session.push_unsubscribed(channel, reply_to, Some(refusal), config);
        }
    }

    /// Runs a batch's channel actions for `session`, in order (see `Session::handle_client_frames`),
    /// then lets its ack go out.
    pub fn apply_actions(&self, session: &Arc<Session>, actions: Vec<Action>, config: &Config) -> Delivery {
        let mut delivery = Delivery::default();
        for action in actions {
            match action {
                Action::Publish { channel, event, payload, .. } => {
                    let published = self.publish_from(&channel, session.auth.subject(), vec![(event, payload)], false, config);
                    delivery.delivered += published.delivered;
                    delivery.overflowed += published.overflowed;
                }
                Action::Subscribe { seq, channel, since } => self.subscribe(session, &channel, since, Some(seq), config),
                Action::Unsubscribe { seq, channel } => {
                    self.channels.unsubscribe(&channel, &session.id);
                    session.push_unsubscribed(&channel, Some(seq), None, config);
                }
                Action::Refuse { seq, channel, refusal } => {
                    session.push_unsubscribed(&channel, Some(seq), Some(refusal), config);
                }
                Action::Nack { seq, channel, refusal } => {
                    session.push_nack(&channel, seq, refusal, config);
                }
            }
        }
        session.finish_batch();
        delivery
    }

    /// Ends `session` at once: its transport stops as told, it leaves the registry and all its
    /// channels. Ending it again is harmless.
    pub fn end_session(&self, session: &Arc<Session>, stop: Stop) {
        session.end(stop);
        let removed = {
            let mut maps = lock(&self.maps);
            // Only this session: a later one cannot have its id (128 random bits).
            maps.sessions.remove(&session.id).is_some()
        };
        if removed {
            let names = session.channel_names();
            self.channels.leave_all(&session.id, names.iter().map(String::as_str));
        }
    }

    /// Drops ended, expired and overflowing sessions.
    pub fn sweep(&self, config: &Config) -> usize {
        let now = Instant::now();
        let all: Vec<Arc<Session>> = lock(&self.maps).sessions.values().cloned().collect();
        let mut expired = Vec::new();
        for session in all {
            if let Some(stop) = session.expired(config, now) {
                session.end(stop);
                expired.push(session);
            }
        }
        if expired.is_empty() {
            // Histories still age out (and idle channels are freed) when no session expired.
            self.channels.sweep(now);
            return 0;
        }
        let mut maps = lock(&self.maps);
        for session in &expired {
            maps.sessions.remove(&session.id);
        }
        drop(maps);
        // A session that ended leaves all its channels (PROTOCOL §8.11 item 4).
        for session in &expired {
            let names = session.channel_names();
            self.channels.leave_all(&session.id, names.iter().map(String::as_str));
        }
        self.channels.sweep(now);
        expired.len()
    }

    /// Every session (for shutdown).
    pub fn all(&self) -> Vec<Arc<Session>> {
        lock(&self.maps).sessions.values().cloned().collect()
    }
}

fn to_channel_position(position: Position) -> channel::Position {
    channel::Position { epoch: position.epoch, offset: position.offset }
}

/// 128 bits from the OS-seeded CSPRNG, base64url without padding (22 characters).
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut accumulator: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        accumulator = (accumulator << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((accumulator >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((accumulator << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_is_checked_under_the_lock_it_attaches_with() {
        let config = Config { replay_max_messages: 2, ..Config::default() };
        let registry = Registry::default();
        let request = ConnectRequest { room: Some("r".into()), ..ConnectRequest::default() };
        let Connect::Attached { session, attachment, .. } = registry.connect(&request, TransportKind::WebSocket, &config) else {
            panic!("fresh session refused");
        };
        // seq 1 is the room channel's `subscribed`.
        session.push_message(None, Payload::Text("1".into()), &config);
        let _ = session.pull_shared(&attachment, None); // seqs 1 and 2 sent, unacked
        session.push_message(None, Payload::Text("2".into()), &config); // trims sent seq 1
        // A resume from 0 would miss seq 1: attach itself refuses it (no check-then-attach gap).
        assert!(session.attach(TransportKind::WebSocket, 1, Some(0), &config).is_none());
        assert!(session.attach(TransportKind::WebSocket, 1, None, &config).is_some());
    }

    #[test]
    fn tokens_are_22_base64url_chars() {
        let token = random_token();
        assert_eq!(token.len(), 22);
        assert!(realtime_client::core::wire::is_valid_token(&token));
        assert_ne!(token, random_token());
    }
}
