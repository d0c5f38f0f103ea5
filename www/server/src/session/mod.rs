//! Sessions, rooms, sequence numbers, acks and the replay buffer; no I/O here.
//!
//! A [`Session`] outlives its transports: a transport *attaches* to it (WebSocket, SSE stream or
//! long-poll connection), pulls frames from it with [`Session::pull`], and detaches when it ends.
//! Outgoing messages are appended to the replay buffer (never sent from here), and every change
//! bumps a `watch` counter that the attached transport waits on, so no wake-up can be lost.
//!
//! Invariants:
//! - outgoing seqs are 1, 2, 3, ... per session; the replay buffer holds a contiguous run of them;
//! - `sent_up_to` is the highest seq handed to the current transport (reset to the client's
//!   `rt_last` on resume and on each poll), `sent_up_to < next_seq`;
//! - a message leaves the buffer only when acked, or (after which the session is no longer
//!   resumable) when it was sent and a limit is hit;
//! - lock order: the registry lock, then a session lock, then an attachment's stop slot, never
//!   the reverse; no lock is held across an `.await` or while another session's lock is taken.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use realtime_client::core::wire::{close_code, Close, Frame, Hello, Message, Payload, Retry, PROTOCOL_VERSION};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::Config;

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

    /// Whether [`Session::kick`] broke this transport off.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

/// What a transport gets from [`Session::pull`].
#[derive(Debug)]
pub enum Pull {
    /// Frames to send now, possibly none.
    Frames(Vec<Frame>),
    /// Stop this transport.
    Stop(Stop),
}

#[derive(Debug)]
struct Buffered {
    message: Message,
    bytes: usize,
    at: Instant,
}

#[derive(Debug)]
struct Inner {
    next_seq: u64,
    replay: VecDeque<Buffered>,
    replay_bytes: usize,
    resumable: bool,
    /// Highest client seq received.
    client_seq: u64,
    ack_due: bool,
    control: VecDeque<Frame>,
    attached: Option<Arc<Attachment>>,
    next_generation: u64,
    sent_up_to: u64,
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
    pub room: String,
    changed: watch::Sender<u64>,
    inner: Mutex<Inner>,
    /// Serialises upstream batches of one session (a WebSocket reader, concurrent POST /send).
    pub upstream: tokio::sync::Mutex<()>,
}

/// What an upstream batch produced.
#[derive(Debug, Default)]
pub struct Upstream {
    /// Accepted messages to broadcast to the room, in order.
    pub accepted: Vec<(Option<String>, Payload)>,
    /// The client closed the session.
    pub client_closed: bool,
    /// A protocol error ended the session (the transport got the close).
    pub error: Option<Close>,
}

const RETIRED_CONNS: usize = 64;

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
    fn new(id: String, secret: String, room: String) -> Self {
        Session {
            id,
            secret,
            room,
            changed: watch::channel(0).0,
            inner: Mutex::new(Inner {
                next_seq: 1,
                replay: VecDeque::new(),
                replay_bytes: 0,
                resumable: true,
                client_seq: 0,
                ack_due: false,
                control: VecDeque::new(),
                attached: None,
                next_generation: 1,
                sent_up_to: 0,
                idle_since: Some(Instant::now()),
                poll_generation: 0,
                retired_conns: VecDeque::new(),
                ended: false,
            }),
            upstream: tokio::sync::Mutex::new(()),
        }
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

    /// Whether a client that has delivered every seq up to `last` can resume (see PROTOCOL.md).
    fn can_resume_from(inner: &Inner, last: u64) -> bool {
        let first_buffered = inner.replay.front().map_or(inner.next_seq, |entry| entry.message.seq);
        inner.resumable && !inner.ended && last + 1 >= first_buffered && last < inner.next_seq
    }

    /// Attaches a new transport, replacing (close 4004) any previous one. `resume_from` is the
    /// client's `rt_last` when resuming, None for a fresh session.
    fn attach(&self, kind: TransportKind, conn: u32, resume_from: Option<u64>, config: &Config) -> (Arc<Attachment>, Hello) {
        let mut inner = lock(&self.inner);
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
        inner.next_generation += 1;
        let attachment = Arc::new(Attachment { generation, kind, conn, stop: Mutex::new(None), aborted: AtomicBool::new(false) });
        inner.attached = Some(attachment.clone());
        inner.control.clear();
        inner.ack_due = false;
        if let Some(last) = resume_from {
            Self::ack_through(&mut inner, last);
            inner.sent_up_to = last;
        } else {
            inner.sent_up_to = 0;
        }
        // Poll attachments are idle between polls; WebSocket and SSE are live until detached.
        inner.idle_since = if kind == TransportKind::Poll { Some(Instant::now()) } else { None };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            session_id: self.id.clone(),
            secret: self.secret.clone(),
            heartbeat_ms: config.heartbeat_ms,
            max_body_bytes: config.max_message_bytes as u64,
            ack: inner.client_seq,
            resumed: resume_from.is_some(),
        };
        drop(inner);
        self.bump();
        (attachment, hello)
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

    fn ack_through(inner: &mut Inner, seq: u64) {
        while let Some(front) = inner.replay.front() {
            if front.message.seq > seq {
                break;
            }
            inner.replay_bytes -= front.bytes;
            inner.replay.pop_front();
        }
    }

    /// Collects what `attachment` should send now. `poll_generation` is Some for a held poll.
    pub fn pull(&self, attachment: &Attachment, poll_generation: Option<u64>) -> Pull {
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
        let mut frames: Vec<Frame> = inner.control.drain(..).collect();
        if inner.ack_due {
            inner.ack_due = false;
            frames.push(Frame::Ack { seq: inner.client_seq });
        }
        let sent_up_to = inner.sent_up_to;
        let start = inner.replay.partition_point(|entry| entry.message.seq <= sent_up_to);
        for entry in inner.replay.range(start..) {
            frames.push(Frame::Message(entry.message.clone()));
        }
        if let Some(last) = inner.replay.back() {
            inner.sent_up_to = inner.sent_up_to.max(last.message.seq);
        }
        Pull::Frames(frames)
    }

    /// Starts a poll on the attached poll connection: `last` is the cumulative ack.
    /// Returns the poll's generation; the previous held poll is superseded.
    pub fn begin_poll(&self, last: u64) -> u64 {
        let mut inner = lock(&self.inner);
        let last = last.min(inner.next_seq - 1);
        // Messages after `last` that left the replay buffer cannot be sent again: a partial
        // replay would be a gap, so the session ends (the poll answers with the close) and the
        // client's resume gets a fresh session, as a refused resume would.
        let first_available = inner.replay.front().map_or(inner.next_seq, |entry| entry.message.seq);
        let window_passed = last + 1 < first_available;
        Self::ack_through(&mut inner, last);
        inner.sent_up_to = last;
        inner.poll_generation += 1;
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
        let mut inner = lock(&self.inner);
        if inner.ended {
            return true;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let bytes = payload.len() + event.as_ref().map_or(0, String::len) + 32;
        inner.replay.push_back(Buffered { message: Message { seq, event, payload }, bytes, at: Instant::now() });
        inner.replay_bytes += bytes;
        let healthy = Self::enforce_limits(&mut inner, config, Instant::now());
        drop(inner);
        if !healthy {
            self.end(Stop::Close(close(close_code::LIMIT_EXCEEDED, "replay buffer overflow", Retry::Default)));
        }
        self.bump();
        healthy
    }

    /// Trims sent messages over the count, byte or age limits (the session stops being
    /// resumable). Returns false when unsent messages alone exceed the limits.
    fn enforce_limits(inner: &mut Inner, config: &Config, now: Instant) -> bool {
        let over = |inner: &Inner| {
            inner.replay.len() > config.replay_max_messages
                || inner.replay_bytes > config.replay_max_bytes
                || inner.replay.front().is_some_and(|entry| now.duration_since(entry.at) > config.replay_max_age)
        };
        while over(inner) {
            match inner.replay.front() {
                Some(front) if front.message.seq <= inner.sent_up_to => {
                    inner.resumable = false;
                    inner.replay_bytes -= front.bytes;
                    inner.replay.pop_front();
                }
                _ => break,
            }
        }
        // Age alone never kills: an old unsent message on a detached session expires with it.
        inner.replay.len() <= config.replay_max_messages && inner.replay_bytes <= config.replay_max_bytes
    }

    /// Handles a batch of client frames. Messages are checked for duplicates and gaps; the
    /// caller broadcasts `accepted`. A protocol error ends the session.
    pub fn handle_client_frames(&self, frames: Vec<Frame>) -> Upstream {
        let mut result = Upstream::default();
        let mut inner = lock(&self.inner);
        if inner.ended {
            return result;
        }
        for frame in frames {
            match frame {
                Frame::Message(message) => {
                    inner.ack_due = true;
                    if message.seq == 0 {
                        result.error = Some(close(close_code::PROTOCOL_ERROR, "bad sequence number", Retry::Default));
                        break;
                    }
                    if message.seq <= inner.client_seq {
                        continue; // A duplicate after a resume: acked, not re-broadcast.
                    }
                    if message.seq > inner.client_seq + 1 {
                        result.error = Some(close(close_code::PROTOCOL_ERROR, "sequence gap", Retry::Default));
                        break;
                    }
                    inner.client_seq = message.seq;
                    result.accepted.push((message.event, message.payload));
                }
                Frame::Ack { seq } => {
                    if seq >= inner.next_seq {
                        result.error = Some(close(close_code::PROTOCOL_ERROR, "ack beyond last sent message", Retry::Default));
                        break;
                    }
                    Self::ack_through(&mut inner, seq);
                }
                Frame::Ping { time } => inner.control.push_back(Frame::Pong { time }),
                Frame::Pong { .. } => {}
                Frame::Close(_) => {
                    result.client_closed = true;
                    break;
                }
                Frame::Hello(_) => {
                    result.error = Some(close(close_code::PROTOCOL_ERROR, "unexpected hello from client", Retry::Default));
                    break;
                }
            }
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
        inner.resumable = false;
        if let Some(attached) = inner.attached.take() {
            attached.request_stop(stop);
        }
        inner.replay.clear();
        inner.replay_bytes = 0;
        drop(inner);
        self.bump();
    }

    /// Whether the registry should drop this session now, and how its transport must stop.
    fn expired(&self, config: &Config, now: Instant) -> Option<Stop> {
        let mut inner = lock(&self.inner);
        if inner.ended {
            return Some(Stop::Silent);
        }
        if !Self::enforce_limits(&mut inner, config, now) {
            return Some(Stop::Close(close(close_code::LIMIT_EXCEEDED, "replay buffer overflow", Retry::Default)));
        }
        let idle_too_long = inner.idle_since.is_some_and(|since| now.duration_since(since) > config.resume_window);
        let idle_unresumable = inner.idle_since.is_some() && !inner.resumable;
        (idle_too_long || idle_unresumable).then_some(Stop::Silent)
    }
}

/// The query parameters of a connect request that matter to the session logic.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    pub room: String,
    pub conn: u32,
    pub resume: Option<ResumeRequest>,
}

#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub session_id: String,
    pub key: String,
    pub last: u64,
}

/// The outcome of a connect.
pub enum Connect {
    Attached { session: Arc<Session>, attachment: Arc<Attachment>, hello: Hello },
    /// The request came from a conn this session already replaced.
    Retired,
    /// The session limit is reached.
    Full,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<String, Arc<Session>>,
    rooms: HashMap<String, Vec<Arc<Session>>>,
}

/// Every session, by id and by room.
#[derive(Default)]
pub struct Registry {
    maps: Mutex<Maps>,
}

impl Registry {
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
        if let Some(resume) = &request.resume {
            if let Some(session) = self.get(&resume.session_id) {
                if session.key_matches(&resume.key) && session.room == request.room {
                    if session.is_retired(request.conn) {
                        return Connect::Retired;
                    }
                    let resumable = Session::can_resume_from(&lock(&session.inner), resume.last);
                    if resumable {
                        let (attachment, hello) = session.attach(kind, request.conn, Some(resume.last), config);
                        return Connect::Attached { session, attachment, hello };
                    }
                }
            }
        }
        let mut maps = lock(&self.maps);
        if maps.sessions.len() >= config.max_sessions {
            return Connect::Full;
        }
        let session = Arc::new(Session::new(random_token(), random_token(), request.room.clone()));
        maps.sessions.insert(session.id.clone(), session.clone());
        maps.rooms.entry(session.room.clone()).or_default().push(session.clone());
        drop(maps);
        let (attachment, hello) = session.attach(kind, request.conn, None, config);
        Connect::Attached { session, attachment, hello }
    }

    /// Delivers a message to every session of `room`. Returns how many received it.
    pub fn broadcast(&self, room: &str, event: Option<String>, payload: Payload, config: &Config) -> usize {
        let members: Vec<Arc<Session>> = lock(&self.maps).rooms.get(room).cloned().unwrap_or_default();
        let mut delivered = 0;
        for member in &members {
            if member.push_message(event.clone(), payload.clone(), config) {
                delivered += 1;
            }
        }
        delivered
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
            return 0;
        }
        let mut maps = lock(&self.maps);
        for session in &expired {
            maps.sessions.remove(&session.id);
            if let Some(members) = maps.rooms.get_mut(&session.room) {
                members.retain(|member| !Arc::ptr_eq(member, session));
                if members.is_empty() {
                    maps.rooms.remove(&session.room);
                }
            }
        }
        expired.len()
    }

    /// Every session (for shutdown).
    pub fn all(&self) -> Vec<Arc<Session>> {
        lock(&self.maps).sessions.values().cloned().collect()
    }
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

/// Milliseconds since the Unix epoch, for ping timestamps.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_22_base64url_chars() {
        let token = random_token();
        assert_eq!(token.len(), 22);
        assert!(realtime_client::core::wire::is_valid_token(&token));
        assert_ne!(token, random_token());
    }
}
