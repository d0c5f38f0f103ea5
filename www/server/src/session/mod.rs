//! One session's state and its transports; no I/O here. The outgoing messages and their replay
//! buffer are in `replay.rs`, the set of all sessions (connect, resume, broadcast, sweep) in
//! `registry.rs`, whose public items are re-exported here (`session::Registry` and the rest).
//!
//! A [`Session`] outlives its transports: a transport *attaches* to it (WebSocket, SSE stream or
//! long-poll connection), pulls frames from it with [`Session::pull`], and detaches when it ends.
//! Outgoing messages are appended to the replay buffer (never sent from here), and every change
//! bumps a `watch` counter that the attached transport waits on, so no wake-up can be lost.
//! A message is an `Arc<SharedMessage>` shared by every member it was published to, and it stays
//! shared on its way out ([`Outgoing`]) until a transport encodes it.
//!
//! Invariants:
//! - at most one transport is attached; attaching another stops the old one with close 4004
//!   (set under the session lock, so the old one always finds it in [`Session::pull`]); the old
//!   conn, if it differs, is retired: late requests from it get [`Connect::Retired`];
//! - an ended session sends nothing more and can no longer be resumed;
//! - the pings of one upstream batch get one pong; at most `max_control_frames` wait;
//! - lock order: the registry lock, then a session lock, then an attachment's stop slot, never
//!   the reverse; no lock is held across an `.await` or while another session's lock is taken.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use realtime_client::core::wire::{close_code, Close, Frame, Hello, Payload, Retry, PROTOCOL_VERSION};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::limits::{ReplayBudget, SessionRates, SessionSlot, SharedMessage};
use crate::Config;

mod channels;
mod outgoing;
mod registry;
mod replay;

pub use channels::{pattern_allows, Action};
pub use outgoing::Outgoing;

pub use registry::{random_token, Connect, ConnectRequest, Delivery, Owner, Registry, ResumeRequest};
use replay::Replay;

/// Which kind of transport is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    Sse,
    Poll,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::Poll => "poll",
        }
    }
}

/// How a transport must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// End without sending anything more (the peer is gone or closed first).
    Silent,
    /// Send this close frame, then end.
    Close(Close),
}

/// One attachment of a transport to a session.
#[derive(Debug)]
pub struct Attachment {
    /// Unique per session, increasing.
    pub generation: u64,
    pub kind: TransportKind,
    /// The client's `rt_conn`.
    pub conn: u32,
    stop: Mutex<Option<Stop>>,
    /// Set by [`Session::kick`]: the transport must break off at once, as a failed network
    /// would, sending nothing more (no close frame) and leaving the session resumable.
    aborted: AtomicBool,
}

impl Attachment {
    /// Asks the transport to stop; the first request wins.
    pub fn request_stop(&self, stop: Stop) {
        let mut slot = lock(&self.stop);
        if slot.is_none() {
            *slot = Some(stop);
        }
    }

    fn take_stop(&self) -> Option<Stop> {
        lock(&self.stop).take()
    }

    /// Whether a stop was requested and not yet taken by the transport.
    pub fn stop_requested(&self) -> bool {
        lock(&self.stop).is_some()
    }

    /// Whether the requested stop cuts a write in progress: a replacement (4004: the newer
    /// transport takes over), a replay overflow (the session is gone) or a silent stop (nothing
    /// more is sent anyway). Any other close (a refusal with retry advice) waits for the write,
    /// within its deadline, and is then sent.
    pub fn stop_cuts_writes(&self) -> bool {
        match &*lock(&self.stop) {
            None => false,
            Some(Stop::Silent) => true,
            Some(Stop::Close(close)) => close.code == close_code::REPLACED || close.reason == REPLAY_OVERFLOW,
        }
    }

    /// Whether [`Session::kick`] broke this transport off.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

/// What a transport gets from [`Session::pull`] (frames) or [`Session::pull_shared`].
#[derive(Debug)]
pub enum Pull<T = Frame> {
    /// Frames to send now, possibly none.
    Frames(Vec<T>),
    /// Stop this transport.
    Stop(Stop),
}

#[derive(Debug)]
struct Inner {
    /// Outgoing seqs, the replay buffer and the send cursor.
    replay: Replay,
    /// Highest client seq received.
    client_seq: u64,
    /// What the next `ack` (and a hello's `ack=`) says: `client_seq` once the batch's actions
    /// ran ([`Session::finish_batch`]), so a `nack` precedes the ack covering its publish.
    ack_seq: u64,
    /// A batch counted seqs that `ack_seq` does not cover yet.
    ack_pending: bool,
    ack_due: bool,
    /// The channels this session holds (see `channels.rs`).
    channels: HashSet<String>,
    subscribe_rate: channels::SubscribeRate,
    control: VecDeque<Frame>,
    attached: Option<Arc<Attachment>>,
    next_generation: u64,
    /// When the session last had no live transport (None while one is live).
    idle_since: Option<Instant>,
    /// Generation of the newest poll request; an older held poll is superseded.
    poll_generation: u64,
    /// Conn numbers whose attachment was replaced: late requests from them must not attach.
    retired_conns: VecDeque<u32>,
    ended: bool,
}

/// A client session: identity, room, delivery state.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    secret: String,
    /// The room channel it was created with (None: no room channel).
    pub room: Option<String>,
    channel_limits: crate::channel::ChannelConfig,
    /// `--client-publish` patterns.
    publish_policy: Vec<String>,
    changed: watch::Sender<u64>,
    inner: Mutex<Inner>,
    /// Serialises upstream batches of one session (a WebSocket reader, concurrent POST /send).
    /// (In an `Arc`: [`crate::AppState::apply_client_batch`] moves the guard into its task.)
    pub upstream: Arc<tokio::sync::Mutex<()>>,
    /// The upstream message and byte rates of this session.
    pub rates: SessionRates,
    /// Most pongs queued; the oldest goes first.
    max_control: usize,
    budget: Arc<ReplayBudget>,
    /// Protocol v3: the principal it belongs to and its credential's expiry (`crate::v3`).
    pub auth: crate::v3::SessionAuth,
}

/// What an upstream batch produced.
#[derive(Debug, Default)]
pub struct Upstream {
    /// What the accepted ordered frames ask of the channels, in seq order; the caller runs
    /// them (`Registry::apply_actions`), then calls [`Session::finish_batch`].
    pub actions: Vec<Action>,
    /// The client closed the session.
    pub client_closed: bool,
    /// A protocol error ended the session (the transport got the close).
    pub error: Option<Close>,
    /// The control queue was full and its oldest pong was dropped.
    pub control_dropped: bool,
}

const RETIRED_CONNS: usize = 64;

/// The close reason of a session ended by its replay bounds (its own or its IP's share).
pub const REPLAY_OVERFLOW: &str = "replay buffer overflow";

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving rather than cascade.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The close a peer gets for a batch that does not decode: 4003 when it is over a limit, else 4000.
pub fn close_for_wire_error(error: realtime_client::core::wire::WireError) -> Close {
    use realtime_client::core::wire::WireError;
    let code = match error {
        WireError::BodyTooLarge | WireError::HeaderTooLong => close_code::LIMIT_EXCEEDED,
        _ => close_code::PROTOCOL_ERROR,
    };
    close(code, error.as_str(), Retry::Default)
}

pub fn close(code: u16, reason: &str, retry: Retry) -> Close {
    debug_assert!(!reason.contains('\r'));
    Close { code, reason: reason.to_owned(), retry }
}

impl Session {
    fn new(id: String, secret: String, room: Option<String>, config: &Config, budget: Arc<ReplayBudget>, ip_slot: Option<SessionSlot>) -> Self {
        Session {
            id,
            secret,
            room,
            channel_limits: config.channels,
            publish_policy: config.client_publish.clone(),
            changed: watch::channel(0).0,
            rates: SessionRates::new(&config.limits),
            max_control: config.limits.max_control_frames.max(1),
            budget: budget.clone(),
            inner: Mutex::new(Inner {
                // The replay buffer holds the IP slot: it charges the IP for what it buffers.
                replay: Replay::new(budget, ip_slot, config.limits.replay_share_per_ip()),
                client_seq: 0,
                ack_seq: 0,
                ack_pending: false,
                ack_due: false,
                channels: HashSet::new(),
                subscribe_rate: channels::SubscribeRate::new(config.channels.subscribe_burst()),
                control: VecDeque::new(),
                attached: None,
                next_generation: 1,
                idle_since: Some(Instant::now()),
                poll_generation: 0,
                retired_conns: VecDeque::new(),
                ended: false,
            }),
            upstream: Arc::new(tokio::sync::Mutex::new(())),
            auth: crate::v3::SessionAuth::default(),
        }
    }

    /// A short tag for logs (a hash of the id): the id itself is a resume credential's half and
    /// never goes into logs at info level.
    pub fn tag(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.id.hash(&mut hasher);
        format!("{:08x}", hasher.finish() as u32)
    }

    /// Constant-time comparison of the resume secret.
    pub fn key_matches(&self, key: &str) -> bool {
        self.secret.as_bytes().ct_eq(key.as_bytes()).into()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|value| *value = value.wrapping_add(1));
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.inner).ended
    }

    /// Whether `conn` was replaced by a newer transport of this session.
    pub fn is_retired(&self, conn: u32) -> bool {
        lock(&self.inner).retired_conns.contains(&conn)
    }

    /// The current attachment, if it is a poll connection numbered `conn`.
    pub fn poll_attachment(&self, conn: u32) -> Option<Arc<Attachment>> {
        let inner = lock(&self.inner);
        match &inner.attached {
            Some(attached) if !inner.ended && attached.kind == TransportKind::Poll && attached.conn == conn => {
                Some(attached.clone())
            }
            _ => None,
        }
    }

    /// Attaches a new transport, replacing (close 4004) any previous one. `resume_from` is the
    /// client's `rt_last` when resuming, None for a fresh session. A resume is checked against
    /// the resume rules (see PROTOCOL.md) under the same lock as it attaches, so no trim can come
    /// in between: None when the session cannot resume from there (nothing was changed).
    fn attach(&self, kind: TransportKind, conn: u32, resume_from: Option<u64>, config: &Config) -> Option<(Arc<Attachment>, Hello)> {
        let mut inner = lock(&self.inner);
        if resume_from.is_some_and(|last| inner.ended || !inner.replay.can_resume_from(last)) {
            return None;
        }
        if let Some(old) = inner.attached.take() {
            old.request_stop(Stop::Close(close(close_code::REPLACED, "replaced", Retry::Never)));
            if old.conn != conn {
                inner.retired_conns.push_back(old.conn);
                if inner.retired_conns.len() > RETIRED_CONNS {
                    inner.retired_conns.pop_front();
                }
            }
        }
        let generation = inner.next_generation;
        inner.next_generation = inner.next_generation.saturating_add(1);
        let attachment = Arc::new(Attachment { generation, kind, conn, stop: Mutex::new(None), aborted: AtomicBool::new(false) });
        inner.attached = Some(attachment.clone());
        inner.control.clear();
        inner.ack_due = false;
        if let Some(last) = resume_from {
            inner.replay.ack_through(last);
            inner.replay.set_sent_up_to(last);
        } else {
            inner.replay.set_sent_up_to(0);
        }
        // Poll attachments are idle between polls; WebSocket and SSE are live until detached.
        inner.idle_since = if kind == TransportKind::Poll { Some(Instant::now()) } else { None };
        // The hello's `ack=` never covers a publish whose `nack` the client has not acknowledged
        // (PROTOCOL §8.11 item 3): the client would settle that publish as accepted before the
        // replayed `nack` arrives. It resends the rest; they are dropped as duplicates.
        let ack = match inner.replay.lowest_unacked_nack() {
            Some(refused) => inner.ack_seq.min(refused.saturating_sub(1)),
            None => inner.ack_seq,
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            session_id: self.id.clone(),
            secret: self.secret.clone(),
            heartbeat_ms: config.heartbeat_ms,
            max_body_bytes: config.max_message_bytes as u64,
            ack,
            resumed: resume_from.is_some(),
        };
        drop(inner);
        self.bump();
        Some((attachment, hello))
    }

    /// The attached transport, if any (v3: a refused upload closes it, PROTOCOL §9.4).
    pub fn current_attachment(&self) -> Option<Arc<Attachment>> {
        let inner = lock(&self.inner);
        inner.attached.clone().filter(|_| !inner.ended)
    }

    /// Queues an unnumbered frame for the attached transport (v3 `authed`), as a pong is.
    pub fn push_control(&self, frame: Frame) {
        let mut inner = lock(&self.inner);
        while inner.control.len() >= self.max_control {
            inner.control.pop_front();
        }
        inner.control.push_back(frame);
        drop(inner);
        self.bump();
    }

    /// Asks `attachment` to stop and wakes its writer.
    pub fn stop_transport(&self, attachment: &Attachment, stop: Stop) {
        let inner = lock(&self.inner);
        attachment.request_stop(stop);
        drop(inner);
        self.bump();
    }

    /// Breaks off the current transport as a network failure would (`POST /realtime/kick`, test
    /// and demo only): it ends without a close frame and the session stays resumable. Returns
    /// the kind of transport that was attached, or None when there is none.
    pub fn kick(&self) -> Option<TransportKind> {
        let inner = lock(&self.inner);
        let attached = inner.attached.as_ref().filter(|_| !inner.ended)?;
        attached.aborted.store(true, Ordering::Release);
        let kind = attached.kind;
        drop(inner);
        self.bump();
        Some(kind)
    }

    /// The transport `attachment` ended; the session waits for a resume.
    pub fn detach(&self, attachment: &Attachment) {
        let mut inner = lock(&self.inner);
        if inner.attached.as_ref().is_some_and(|current| current.generation == attachment.generation) {
            inner.attached = None;
            inner.idle_since = Some(Instant::now());
        }
    }

    /// Collects what `attachment` should send now, as owned frames (see [`Self::pull_shared`]).
    pub fn pull(&self, attachment: &Attachment, poll_generation: Option<u64>) -> Pull {
        match self.pull_shared(attachment, poll_generation) {
            Pull::Frames(frames) => Pull::Frames(frames.into_iter().map(Outgoing::into_frame).collect()),
            Pull::Stop(stop) => Pull::Stop(stop),
        }
    }

    /// Collects what `attachment` should send now. `poll_generation` is Some for a held poll.
    pub fn pull_shared(&self, attachment: &Attachment, poll_generation: Option<u64>) -> Pull<Outgoing> {
        // The stop is read under the session lock: `attach` and `end` detach the transport and
        // set its stop in one critical section, so a transport that is no longer current always
        // finds its stop here (a replaced one gets its 4004, never a silent end).
        let mut inner = lock(&self.inner);
        if let Some(stop) = attachment.take_stop() {
            return Pull::Stop(stop);
        }
        let current = inner.attached.as_ref().is_some_and(|current| current.generation == attachment.generation);
        if inner.ended || !current {
            return Pull::Stop(Stop::Silent);
        }
        if poll_generation.is_some_and(|generation| generation != inner.poll_generation) {
            return Pull::Stop(Stop::Silent); // A newer poll superseded this one.
        }
        let mut frames: Vec<Outgoing> = inner.control.drain(..).map(Outgoing::Frame).collect();
        // Ordered frames precede the ack (PROTOCOL §8.11 item 3).
        inner.replay.take_unsent(&mut frames);
        if inner.ack_due {
            inner.ack_due = false;
            frames.push(Outgoing::Frame(Frame::Ack { seq: inner.ack_seq }));
        }
        Pull::Frames(frames)
    }

    /// Starts a poll on the attached poll connection: `last` is the cumulative ack.
    /// Returns the poll's generation; the previous held poll is superseded.
    pub fn begin_poll(&self, last: u64) -> u64 {
        let mut inner = lock(&self.inner);
        let last = last.min(inner.replay.next_seq().saturating_sub(1));
        // Messages the client does not have (after `last`, or after its earlier ack if that is
        // higher: a late poll's `rt_last` is no gap) that left the replay buffer, trimmed by a
        // limit, cannot be sent again: a partial replay would be a gap, so the session ends (the
        // poll answers with the close) and the client's resume gets a fresh session.
        let window_passed = inner.replay.known_delivered(last).saturating_add(1) < inner.replay.first_available();
        inner.replay.ack_through(last);
        inner.replay.set_sent_up_to(last);
        inner.poll_generation = inner.poll_generation.wrapping_add(1);
        inner.idle_since = None;
        let generation = inner.poll_generation;
        drop(inner);
        if window_passed {
            self.end(Stop::Close(close(close_code::LIMIT_EXCEEDED, "replay window passed", Retry::Default)));
        }
        self.bump();
        generation
    }

    /// A poll ended; if it was the newest, the session is idle until the next one.
    pub fn end_poll(&self, generation: u64) {
        let mut inner = lock(&self.inner);
        if inner.poll_generation == generation {
            inner.idle_since = Some(Instant::now());
        }
    }

    /// Queues an outgoing message. Returns false if the session had to be ended (slow consumer).
    pub fn push_message(&self, event: Option<String>, payload: Payload, config: &Config) -> bool {
        let message = self.budget.share(event, payload);
        self.push_shared(message, config)
    }

    /// Queues a message stored once for every member it goes to (see [`Self::push_message`]).
    pub fn push_shared(&self, message: Arc<SharedMessage>, config: &Config) -> bool {
        self.push_items(config, |inner| inner.replay.push(message))
    }

    /// Handles a batch of client frames. Messages are checked for duplicates and gaps; the
    /// caller broadcasts `accepted`. A protocol error ends the session.
    pub fn handle_client_frames(&self, frames: Vec<Frame>) -> Upstream {
        let mut result = Upstream::default();
        let mut inner = lock(&self.inner);
        if inner.ended {
            return result;
        }
        // One pong per batch answers its latest ping: a batch of pings is not a pong amplifier.
        let mut ping = None;
        for frame in frames {
            match frame {
                Frame::Message(_) | Frame::ChannelMessage(_) | Frame::Subscribe { .. } | Frame::Unsubscribe { .. } => {
                    let seq = frame.ordered_seq().unwrap_or(0);
                    inner.ack_pending = true;
                    if seq == 0 {
                        result.error = Some(close(close_code::PROTOCOL_ERROR, "bad sequence number", Retry::Default));
                        break;
                    }
                    if seq <= inner.client_seq {
                        continue; // A duplicate after a resume: acked, not applied again.
                    }
                    if seq > inner.client_seq.saturating_add(1) {
                        result.error = Some(close(close_code::PROTOCOL_ERROR, "sequence gap", Retry::Default));
                        break;
                    }
                    inner.client_seq = seq;
                    match self.classify(&mut inner, frame) {
                        Ok(action) => result.actions.push(action),
                        Err(error) => {
                            result.error = Some(error);
                            break;
                        }
                    }
                }
                Frame::Ack { seq } => {
                    if seq >= inner.replay.next_seq() {
                        result.error = Some(close(close_code::PROTOCOL_ERROR, "ack beyond last sent message", Retry::Default));
                        break;
                    }
                    inner.replay.ack_through(seq);
                }
                Frame::Ping { time } => ping = Some(time),
                Frame::Pong { .. } => {}
                Frame::Close(_) => {
                    result.client_closed = true;
                    break;
                }
                _ => {
                    // hello, and the server's own frames.
                    result.error = Some(close(close_code::PROTOCOL_ERROR, "unexpected frame from client", Retry::Default));
                    break;
                }
            }
        }
        if let Some(time) = ping {
            // Bounded: the oldest pong goes first (its ping is the most likely to be timed out).
            while inner.control.len() >= self.max_control {
                inner.control.pop_front();
                result.control_dropped = true;
            }
            inner.control.push_back(Frame::Pong { time });
        }
        drop(inner);
        if let Some(error) = &result.error {
            self.end(Stop::Close(error.clone()));
        } else if result.client_closed {
            self.end(Stop::Silent);
        }
        self.bump();
        result
    }

    /// Ends the session: the attached transport stops as told; the registry drops it later.
    pub fn end(&self, stop: Stop) {
        let mut inner = lock(&self.inner);
        inner.ended = true;
        if let Some(attached) = inner.attached.take() {
            attached.request_stop(stop);
        }
        inner.replay.discard();
        drop(inner);
        self.bump();
    }

    /// Whether the registry should drop this session now, and how its transport must stop.
    fn expired(&self, config: &Config, now: Instant) -> Option<Stop> {
        let mut inner = lock(&self.inner);
        if inner.ended {
            return Some(Stop::Silent);
        }
        if !inner.replay.enforce_limits(config, now) {
            return Some(Stop::Close(close(close_code::LIMIT_EXCEEDED, REPLAY_OVERFLOW, Retry::Default)));
        }
        let idle_too_long = inner.idle_since.is_some_and(|since| now.duration_since(since) > config.resume_window);
        let idle_unresumable = inner.idle_since.is_some() && !inner.replay.is_resumable();
        (idle_too_long || idle_unresumable).then_some(Stop::Silent)
    }
}

/// Milliseconds since the Unix epoch, for ping timestamps.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

