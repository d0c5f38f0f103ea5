//! The session state machine: one logical session carried by a succession of connections.
//!
//! Sans-IO in the quinn-proto style. The adapter feeds [`Input`]s and user commands with the
//! current time, arms one timer at [`Session::poll_timeout`], and carries out the
//! [`Effect`]s it drains; the facade turns drained [`Event`]s into JS callbacks.
//!
//! Invariants:
//! - Every connection has a fresh [`ConnId`]; inputs from any connection but the current one are
//!   ignored (browsers deliver late events from abandoned transports).
//! - A connection counts as established only once the server's hello arrived on it.
//! - Outgoing messages keep their sequence number until acked; after a resume the unacked tail is
//!   sent again in order, and the server drops what it already had. Incoming messages are
//!   delivered at most once: a sequence number at or below the last delivered one is dropped.
//! - A disconnect is a state, not an error: it emits `Reconnecting` and schedules a retry.
//! - Nothing here panics on network input; a frame that does not decode is a protocol error that
//!   replaces the connection.

use std::collections::VecDeque;

use crate::core::backoff::{Backoff, BackoffConfig, Jitter};
use crate::core::endpoint::{ConnectParams, Endpoint, TransportKind};
use crate::core::wire::{self, close_code, Carrier, Close, Frame, Hello, Message, Payload, Retry};
use crate::core::Millis;

/// Identifies one transport connection of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// The client's lifecycle state, as the JS API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, `connect()` not called yet.
    Idle,
    /// First connection attempt under way.
    Connecting,
    /// A connection is established (its hello arrived).
    Open,
    /// The connection was lost; a retry is scheduled or under way.
    Reconnecting,
    /// Closed for good (by the user, the server, or exhausted retries).
    Closed,
}

impl State {
    /// The name used in the JS API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Open => "open",
            State::Reconnecting => "reconnecting",
            State::Closed => "closed",
        }
    }
}

/// Session options, validated by the facade.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Allowed transports, in preference order (never empty, no repeats).
    pub transports: Vec<TransportKind>,
    /// How long a connection may take to deliver the server's hello.
    pub connect_timeout_ms: u64,
    /// Reconnect policy, or `None` to never reconnect.
    pub reconnect: Option<BackoffConfig>,
    /// Most messages the outbox holds (queued plus sent but unacked).
    pub outbox_max_messages: usize,
    /// Most payload bytes the outbox holds.
    pub outbox_max_bytes: usize,
    /// How long received messages may wait before the client acks them.
    pub ack_delay_ms: u64,
    /// A connection that stays up this long resets the backoff attempt counter.
    pub stable_after_ms: u64,
    /// Seed of the jitter generator (the adapter passes a random number).
    pub jitter_seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            transports: TransportKind::ALL.to_vec(),
            connect_timeout_ms: 5_000,
            reconnect: Some(BackoffConfig::default()),
            outbox_max_messages: 10_000,
            outbox_max_bytes: 16 << 20,
            ack_delay_ms: 20,
            stable_after_ms: 5_000,
            jitter_seed: 1,
        }
    }
}

/// What a transport adapter reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The transport is open at its level (WebSocket `open`); the session waits for hello.
    Opened { conn: ConnId },
    /// Bytes arrived: one or more whole frames.
    Data { conn: ConnId, bytes: Vec<u8> },
    /// The transport ended or failed; `reason` says why, for the app's events.
    Closed { conn: ConnId, reason: String },
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open a connection of `kind` to `url`.
    Open { conn: ConnId, kind: TransportKind, url: String },
    /// Send these encoded frames on the connection; `binary` says a text carrier cannot hold them.
    Transmit { conn: ConnId, data: Vec<u8>, binary: bool },
    /// Tear the connection down (listeners first, then close, then drop).
    Close { conn: ConnId },
}

/// What the application is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The state changed.
    State(State),
    /// The session is open on a connection (also after every reconnect).
    Open { session_id: String, transport: TransportKind, resumed: bool },
    /// A message from the server, delivered exactly once and in order.
    Message { seq: u64, event: Option<String>, payload: Payload },
    /// Every outgoing message with an id up to this one was acknowledged by the server.
    Delivered { up_to_id: u64 },
    /// This outgoing message will never be delivered.
    SendFailed { id: u64, reason: &'static str },
    /// The transport in use changed.
    Transport { from: Option<TransportKind>, to: TransportKind, reason: &'static str },
    /// The connection was lost; the next attempt is in `delay_ms`.
    Reconnecting { attempt: u32, delay_ms: u64, reason: String },
    /// The server could not resume the session: this is a fresh one.
    Reset { reason: &'static str },
    /// Something went wrong that the app should know about (the session may still recover).
    Error { message: String },
    /// Closed for good.
    Closed { code: u16, reason: String },
}

/// Why `send` refused a message.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client is closed.
    Closed,
    /// The outbox is full (count or bytes).
    OutboxFull,
    /// The payload exceeds the server's message size limit.
    TooLarge,
    /// The event name is not valid.
    BadEventName,
}

impl SendError {
    /// A lowercase, human message.
    pub fn as_str(self) -> &'static str {
        match self {
            SendError::Closed => "client is closed",
            SendError::OutboxFull => "outbox is full: too many unacknowledged messages",
            SendError::TooLarge => "message is larger than the server accepts",
            SendError::BadEventName => "event name must be 1-64 characters of A-Z a-z 0-9 _ . : / -",
        }
    }
}

/// Counters for `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered to the app.
    pub messages_in: u64,
    /// Messages acknowledged by the server.
    pub messages_out: u64,
    /// Payload bytes delivered to the app.
    pub bytes_in: u64,
    /// Payload bytes acknowledged by the server.
    pub bytes_out: u64,
    /// Reconnect attempts scheduled.
    pub reconnects: u64,
    /// Switches to a lower rung.
    pub fallbacks: u64,
    /// Switches to a higher rung.
    pub upgrades: u64,
    /// Last measured round-trip time.
    pub rtt_ms: Option<u64>,
}

struct Outgoing {
    id: u64,
    seq: u64,
    event: Option<String>,
    payload: Payload,
    /// Whether it was ever handed to a transport (then the server may have it).
    transmitted: bool,
}

struct Connection {
    id: ConnId,
    kind: TransportKind,
    established: bool,
    last_received: Millis,
    last_sent: Millis,
}

struct SessionIds {
    id: String,
    secret: String,
}

/// Largest batch put into one transmit; beyond it a new one starts.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// The session state machine. See the module docs.
pub struct Session {
    config: SessionConfig,
    endpoint: Endpoint,
    state: State,
    next_conn: u32,
    current: Option<Connection>,
    ids: Option<SessionIds>,
    heartbeat_ms: u64,
    max_body_bytes: usize,
    /// Highest server sequence number delivered to the app.
    last_delivered: u64,
    /// Highest server sequence number acked to the server.
    last_acked: u64,
    ack_due: Option<Millis>,
    next_seq: u64,
    next_id: u64,
    outbox: VecDeque<Outgoing>,
    outbox_bytes: usize,
    backoff: Option<Backoff>,
    jitter: Jitter,
    connect_deadline: Option<Millis>,
    reconnect_at: Option<Millis>,
    stable_at: Option<Millis>,
    last_transport: Option<TransportKind>,
    pending_batch: Vec<u8>,
    pending_binary: bool,
    stats: Stats,
    effects: VecDeque<Effect>,
    events: VecDeque<Event>,
}

impl Session {
    /// A session in the `Idle` state.
    pub fn new(endpoint: Endpoint, config: SessionConfig) -> Session {
        debug_assert!(!config.transports.is_empty());
        Session {
            jitter: Jitter::new(config.jitter_seed),
            backoff: config.reconnect.map(Backoff::new),
            endpoint,
            state: State::Idle,
            next_conn: 0,
            current: None,
            ids: None,
            heartbeat_ms: 25_000,
            max_body_bytes: wire::DEFAULT_MAX_BODY_BYTES,
            last_delivered: 0,
            last_acked: 0,
            ack_due: None,
            next_seq: 1,
            next_id: 1,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            connect_deadline: None,
            reconnect_at: None,
            stable_at: None,
            last_transport: None,
            pending_batch: Vec::new(),
            pending_binary: false,
            stats: Stats::default(),
            effects: VecDeque::new(),
            events: VecDeque::new(),
            config,
        }
    }

    // --- Queries -------------------------------------------------------------------------

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The transport of the established connection, if any.
    pub fn transport(&self) -> Option<TransportKind> {
        self.current.as_ref().filter(|conn| conn.established).map(|conn| conn.kind)
    }

    /// The session id, once a hello has arrived.
    pub fn session_id(&self) -> Option<&str> {
        self.ids.as_ref().map(|ids| ids.id.as_str())
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Messages waiting for the server's ack (queued or in flight).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    // --- User commands -------------------------------------------------------------------

    /// Starts connecting. A no-op unless idle or closed.
    pub fn connect(&mut self, now: Millis) {
        if !matches!(self.state, State::Idle | State::Closed) {
            return;
        }
        if self.state == State::Closed {
            // A new life: a fresh session, counters kept.
            self.ids = None;
            self.last_delivered = 0;
            self.last_acked = 0;
            self.next_seq = 1;
            self.backoff = self.config.reconnect.map(Backoff::new);
        }
        self.set_state(State::Connecting);
        self.open_connection(now);
    }

    /// Queues a message; returns its id, which later `Delivered`/`SendFailed` events name.
    pub fn send(&mut self, now: Millis, event: Option<String>, payload: Payload) -> Result<u64, SendError> {
        if self.state == State::Closed {
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
        if self.outbox.len() >= self.config.outbox_max_messages
            || self.outbox_bytes + payload.len() > self.config.outbox_max_bytes
        {
            return Err(SendError::OutboxFull);
        }
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox_bytes += payload.len();
        self.outbox.push_back(Outgoing { id, seq, event, payload, transmitted: false });
        if self.is_established() {
            self.transmit_unsent(now);
            self.flush(now);
        }
        Ok(id)
    }

    /// Closes for good: says goodbye to the server, rejects what is pending.
    pub fn close(&mut self, now: Millis) {
        if self.state == State::Closed {
            return;
        }
        if self.is_established() {
            self.queue_frame(&Frame::Close(Close {
                code: close_code::NORMAL,
                reason: String::from("client closed"),
                retry: Retry::Never,
            }));
            self.flush(now);
        }
        self.finish(close_code::NORMAL, String::from("client closed"), "client closed");
    }

    // --- Transport inputs ----------------------------------------------------------------

    /// Feeds a transport event.
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        let conn = match &input {
            Input::Opened { conn } | Input::Data { conn, .. } | Input::Closed { conn, .. } => *conn,
        };
        if self.current.as_ref().map(|current| current.id) != Some(conn) {
            return; // A late event from an abandoned connection.
        }
        match input {
            Input::Opened { .. } => {}
            Input::Data { bytes, .. } => {
                if let Some(current) = self.current.as_mut() {
                    current.last_received = now;
                }
                match wire::decode_all(&bytes, self.max_body_bytes) {
                    Ok(frames) => {
                        for frame in frames {
                            self.handle_frame(now, frame);
                            if self.current.as_ref().map(|current| current.id) != Some(conn) {
                                break; // The frame ended this connection.
                            }
                        }
                    }
                    Err(error) => self.protocol_error(now, error.as_str()),
                }
                self.flush(now);
            }
            Input::Closed { reason, .. } => self.connection_lost(now, reason, Retry::Default),
        }
    }

    /// Fires due timers. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.connect_deadline.is_some_and(|deadline| now >= deadline) {
            self.connect_deadline = None;
            self.connection_lost(now, String::from("connect timeout: no hello from the server"), Retry::Default);
        }
        if self.reconnect_at.is_some_and(|at| now >= at) {
            self.reconnect_at = None;
            self.open_connection(now);
        }
        if self.stable_at.is_some_and(|at| now >= at) {
            self.stable_at = None;
            if let Some(backoff) = self.backoff.as_mut() {
                backoff.reset();
            }
        }
        if let Some((last_received, last_sent)) =
            self.current.as_ref().filter(|conn| conn.established).map(|conn| (conn.last_received, conn.last_sent))
        {
            if now >= last_received + self.liveness_timeout() {
                self.connection_lost(now, String::from("heartbeat timeout: no traffic from the server"), Retry::Default);
            } else if now >= last_sent + self.heartbeat_ms {
                self.queue_frame(&Frame::Ping { time: now });
            }
        }
        if self.ack_due.is_some_and(|due| now >= due) {
            self.queue_ack();
        }
        self.flush(now);
    }

    /// The next instant `handle_timeout` has work to do, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut consider = |at: Option<Millis>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |next| next.min(at)));
            }
        };
        consider(self.connect_deadline);
        consider(self.reconnect_at);
        consider(self.stable_at);
        consider(self.ack_due);
        if let Some(conn) = self.current.as_ref().filter(|conn| conn.established) {
            consider(Some(conn.last_received + self.liveness_timeout()));
            consider(Some(conn.last_sent + self.heartbeat_ms));
        }
        next
    }

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // --- Internals -----------------------------------------------------------------------

    fn is_established(&self) -> bool {
        self.current.as_ref().is_some_and(|conn| conn.established)
    }

    /// No traffic for a heartbeat interval plus half of one means the connection is dead: the
    /// server pings whenever it has been quiet for an interval.
    fn liveness_timeout(&self) -> u64 {
        self.heartbeat_ms + self.heartbeat_ms / 2
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::State(state));
        }
    }

    fn preferred_transport(&self) -> TransportKind {
        // The last transport that worked, if still allowed; else the first preference.
        self.last_transport
            .filter(|kind| self.config.transports.contains(kind))
            .unwrap_or(self.config.transports[0])
    }

    fn open_connection(&mut self, now: Millis) {
        self.next_conn = self.next_conn.wrapping_add(1);
        let conn = ConnId(self.next_conn);
        let kind = self.preferred_transport();
        let resume = self.ids.as_ref().map(|ids| (ids.id.as_str(), ids.secret.as_str(), self.last_delivered));
        let url = self.endpoint.connect_url(kind, ConnectParams { conn: conn.0, resume });
        self.effects.push_back(Effect::Open { conn, kind, url });
        self.current = Some(Connection { id: conn, kind, established: false, last_received: now, last_sent: now });
        self.connect_deadline = Some(now + self.config.connect_timeout_ms);
    }

    fn handle_frame(&mut self, now: Millis, frame: Frame) {
        let established = self.is_established();
        match frame {
            Frame::Hello(hello) if !established => self.handle_hello(now, hello),
            Frame::Hello(_) => self.protocol_error(now, "second hello on one connection"),
            _ if !established => self.protocol_error(now, "expected hello as the first frame"),
            Frame::Message(message) => self.handle_message(now, message),
            Frame::Ack { seq } => self.handle_ack(now, seq),
            Frame::Ping { time } => self.queue_frame(&Frame::Pong { time }),
            Frame::Pong { time } => {
                if time <= now {
                    self.stats.rtt_ms = Some(now - time);
                }
            }
            Frame::Close(close) => self.handle_close(now, close),
        }
    }

    fn handle_hello(&mut self, now: Millis, hello: Hello) {
        if hello.version != wire::PROTOCOL_VERSION {
            self.events.push_back(Event::Error { message: String::from("server speaks an unsupported protocol version") });
            self.finish(close_code::UNSUPPORTED_VERSION, String::from("unsupported protocol version"), "unsupported protocol version");
            return;
        }
        let asked_to_resume = self.ids.is_some();
        if asked_to_resume && !hello.resumed {
            self.reset_session();
        }
        self.ids = Some(SessionIds { id: hello.session_id.clone(), secret: hello.secret });
        self.heartbeat_ms = hello.heartbeat_ms.max(1);
        self.max_body_bytes = usize::try_from(hello.max_body_bytes).unwrap_or(usize::MAX);
        self.connect_deadline = None;
        self.stable_at = Some(now + self.config.stable_after_ms);
        let kind = match self.current.as_mut() {
            Some(conn) => {
                conn.established = true;
                conn.last_received = now;
                conn.kind
            }
            None => return,
        };
        self.handle_ack(now, hello.ack);
        self.set_state(State::Open);
        if self.last_transport != Some(kind) {
            let from = self.last_transport;
            self.last_transport = Some(kind);
            self.events.push_back(Event::Transport { from, to: kind, reason: "connected" });
        }
        self.events.push_back(Event::Open { session_id: hello.session_id, transport: kind, resumed: hello.resumed });
        // Everything unacked goes again, in order: the server drops what it already has.
        for message in self.outbox.iter_mut() {
            message.transmitted = false;
        }
        self.transmit_unsent(now);
        // One ping right away measures the round-trip time without waiting for a heartbeat.
        self.queue_frame(&Frame::Ping { time: now });
    }

    /// The server could not resume: start over on the fresh session it gave us.
    fn reset_session(&mut self) {
        self.last_delivered = 0;
        self.last_acked = 0;
        self.ack_due = None;
        // A message that went out may or may not have reached the old session: reject it rather
        // than risk a double. Messages never sent are safe to renumber and send.
        let mut kept = VecDeque::with_capacity(self.outbox.len());
        let mut next_seq = 1;
        for mut message in self.outbox.drain(..) {
            if message.transmitted {
                self.outbox_bytes -= message.payload.len();
                self.events.push_back(Event::SendFailed {
                    id: message.id,
                    reason: "session reset: the message may not have been delivered",
                });
            } else {
                message.seq = next_seq;
                next_seq += 1;
                kept.push_back(message);
            }
        }
        self.outbox = kept;
        self.next_seq = next_seq;
        self.events.push_back(Event::Reset { reason: "the server could not resume the session" });
    }

    fn handle_message(&mut self, now: Millis, message: Message) {
        if message.seq <= self.last_delivered {
            return; // Already delivered (a replay overlapping what we had).
        }
        if message.seq != self.last_delivered + 1 {
            self.protocol_error(now, "gap in server sequence numbers");
            return;
        }
        self.last_delivered = message.seq;
        self.stats.messages_in += 1;
        self.stats.bytes_in += message.payload.len() as u64;
        if self.ack_due.is_none() {
            self.ack_due = Some(now + self.config.ack_delay_ms);
        }
        self.events.push_back(Event::Message { seq: message.seq, event: message.event, payload: message.payload });
    }

    fn handle_ack(&mut self, now: Millis, seq: u64) {
        if seq >= self.next_seq {
            self.protocol_error(now, "server acknowledged a message never sent");
            return;
        }
        let mut up_to_id = None;
        while self.outbox.front().is_some_and(|message| message.seq <= seq) {
            if let Some(message) = self.outbox.pop_front() {
                self.outbox_bytes -= message.payload.len();
                self.stats.messages_out += 1;
                self.stats.bytes_out += message.payload.len() as u64;
                up_to_id = Some(message.id);
            }
        }
        if let Some(up_to_id) = up_to_id {
            self.events.push_back(Event::Delivered { up_to_id });
        }
    }

    fn handle_close(&mut self, now: Millis, close: Close) {
        let fatal = matches!(close.code, close_code::UNAUTHORIZED | close_code::UNSUPPORTED_VERSION);
        if fatal || close.retry == Retry::Never || (close.code == close_code::NORMAL && close.retry == Retry::Default) {
            if fatal {
                let mut message = String::from("server refused the session: ");
                message.push_str(&close.reason);
                self.events.push_back(Event::Error { message });
            }
            if let Some(conn) = self.current.take() {
                self.effects.push_back(Effect::Close { conn: conn.id });
            }
            self.finish(close.code, close.reason, "server closed the session");
            return;
        }
        let mut reason = String::from("server closed the connection: ");
        reason.push_str(&close.reason);
        self.connection_lost(now, reason, close.retry);
    }

    fn protocol_error(&mut self, now: Millis, what: &str) {
        let mut message = String::from("protocol error: ");
        message.push_str(what);
        self.events.push_back(Event::Error { message: message.clone() });
        self.connection_lost(now, message, Retry::Default);
    }

    /// The current connection is gone: tear it down and schedule the next attempt.
    fn connection_lost(&mut self, now: Millis, reason: String, advice: Retry) {
        if let Some(conn) = self.current.take() {
            self.effects.push_back(Effect::Close { conn: conn.id });
        }
        self.pending_batch.clear();
        self.pending_binary = false;
        self.connect_deadline = None;
        self.stable_at = None;
        self.ack_due = None;
        if self.state == State::Closed {
            return;
        }
        let delay = match (self.backoff.as_mut(), advice) {
            (_, Retry::Never) | (None, _) => None,
            (Some(backoff), _) if !backoff.can_retry() => None,
            (Some(backoff), Retry::AfterMs(ms)) => {
                backoff.next_delay(&mut self.jitter);
                Some(ms)
            }
            (Some(backoff), Retry::Default) => Some(backoff.next_delay(&mut self.jitter)),
        };
        let Some(delay) = delay else {
            self.finish(1006, reason, "gave up reconnecting");
            return;
        };
        let attempt = self.backoff.as_ref().map_or(0, Backoff::attempt);
        self.stats.reconnects += 1;
        self.reconnect_at = Some(now + delay);
        self.set_state(State::Reconnecting);
        self.events.push_back(Event::Reconnecting { attempt, delay_ms: delay, reason });
    }

    /// Enters `Closed`: drops the connection and fails everything pending.
    fn finish(&mut self, code: u16, reason: String, failure: &'static str) {
        if let Some(conn) = self.current.take() {
            self.effects.push_back(Effect::Close { conn: conn.id });
        }
        self.connect_deadline = None;
        self.reconnect_at = None;
        self.stable_at = None;
        self.ack_due = None;
        self.pending_batch.clear();
        for message in self.outbox.drain(..) {
            self.events.push_back(Event::SendFailed { id: message.id, reason: failure });
        }
        self.outbox_bytes = 0;
        self.set_state(State::Closed);
        self.events.push_back(Event::Closed { code, reason });
    }

    fn transmit_unsent(&mut self, now: Millis) {
        let mut index = 0;
        while index < self.outbox.len() {
            if !self.outbox[index].transmitted {
                self.outbox[index].transmitted = true;
                let message = &self.outbox[index];
                let frame = Frame::Message(Message {
                    seq: message.seq,
                    event: message.event.clone(),
                    payload: message.payload.clone(),
                });
                self.queue_frame(&frame);
                if self.pending_batch.len() >= MAX_BATCH_BYTES {
                    self.flush(now);
                }
            }
            index += 1;
        }
    }

    fn queue_ack(&mut self) {
        self.ack_due = None;
        if self.last_delivered > self.last_acked && self.is_established() {
            self.last_acked = self.last_delivered;
            self.queue_frame(&Frame::Ack { seq: self.last_delivered });
        }
    }

    fn queue_frame(&mut self, frame: &Frame) {
        if !self.is_established() {
            return;
        }
        if matches!(frame, Frame::Message(Message { payload: Payload::Binary(_), .. })) {
            self.pending_binary = true;
        }
        wire::encode(frame, Carrier::Binary, &mut self.pending_batch);
    }

    /// Hands the frames queued during this step to the transport as one batch.
    fn flush(&mut self, now: Millis) {
        if self.pending_batch.is_empty() {
            return;
        }
        // An ack that is due soon rides along for free.
        if self.ack_due.is_some() {
            self.queue_ack();
        }
        let Some(conn) = self.current.as_mut() else {
            self.pending_batch.clear();
            return;
        };
        conn.last_sent = now;
        let data = std::mem::take(&mut self.pending_batch);
        self.effects.push_back(Effect::Transmit { conn: conn.id, data, binary: self.pending_binary });
        self.pending_binary = false;
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:8080/realtime?room=lobby";

    struct Harness {
        session: Session,
        now: Millis,
    }

    impl Harness {
        fn new(config: SessionConfig) -> Harness {
            Harness { session: Session::new(Endpoint::parse(URL).unwrap(), config), now: 1_000 }
        }

        fn effects(&mut self) -> Vec<Effect> {
            std::iter::from_fn(|| self.session.poll_effect()).collect()
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.session.poll_event()).collect()
        }

        fn data(&mut self, conn: ConnId, frames: &[Frame]) {
            let mut bytes = Vec::new();
            for frame in frames {
                wire::encode(frame, Carrier::Binary, &mut bytes);
            }
            self.session.handle_input(self.now, Input::Data { conn, bytes });
        }

        fn advance_to(&mut self, at: Millis) {
            self.now = at;
            self.session.handle_timeout(at);
        }

        /// Runs timers until `until`, firing each deadline at its exact time.
        fn run_until(&mut self, until: Millis) {
            while let Some(at) = self.session.poll_timeout().filter(|&at| at <= until) {
                self.advance_to(at.max(self.now));
            }
            self.now = until;
        }

        /// connect(), the socket opens, the hello arrives; returns the connection.
        fn open(&mut self) -> ConnId {
            self.session.connect(self.now);
            let conn = match self.effects().as_slice() {
                [Effect::Open { conn, kind: TransportKind::WebSocket, url }] => {
                    assert_eq!(url, "ws://127.0.0.1:8080/realtime?room=lobby&rt_v=1&rt_conn=1");
                    *conn
                }
                other => panic!("unexpected effects {other:?}"),
            };
            self.session.handle_input(self.now, Input::Opened { conn });
            self.data(conn, &[hello("s1", 0, false)]);
            conn
        }
    }

    fn hello(session_id: &str, ack: u64, resumed: bool) -> Frame {
        Frame::Hello(Hello {
            version: 1,
            session_id: session_id.into(),
            secret: "secret".into(),
            heartbeat_ms: 10_000,
            max_body_bytes: 1024,
            ack,
            resumed,
        })
    }

    fn text(seq: u64, body: &str) -> Frame {
        Frame::Message(Message { seq, event: None, payload: Payload::Text(body.into()) })
    }

    fn transmitted(effects: &[Effect]) -> Vec<Frame> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Transmit { data, .. } => Some(wire::decode_all(data, 1 << 20).unwrap()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn connect_open_message_close_trace() {
        let mut h = Harness::new(SessionConfig::default());
        assert_eq!(h.session.state(), State::Idle);
        let conn = h.open();
        let events = h.events();
        assert_eq!(
            events,
            vec![
                Event::State(State::Connecting),
                Event::State(State::Open),
                Event::Transport { from: None, to: TransportKind::WebSocket, reason: "connected" },
                Event::Open { session_id: "s1".into(), transport: TransportKind::WebSocket, resumed: false },
            ]
        );
        assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
        assert_eq!(h.session.session_id(), Some("s1"));
        // The RTT probe goes out right after the hello.
        assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: 1_000 }]);
        h.now += 7;
        h.data(conn, &[Frame::Pong { time: 1_000 }]);
        assert_eq!(h.session.stats().rtt_ms, Some(7));

        // An outgoing message is transmitted at once and delivered on ack.
        let id = h.session.send(h.now, Some("chat".into()), Payload::Json("{}".into())).unwrap();
        let effects = h.effects();
        assert_eq!(
            transmitted(&effects),
            vec![Frame::Message(Message { seq: 1, event: Some("chat".into()), payload: Payload::Json("{}".into()) })]
        );
        assert!(matches!(effects[0], Effect::Transmit { binary: false, .. }));
        h.data(conn, &[Frame::Ack { seq: 1 }]);
        assert_eq!(h.events(), vec![Event::Delivered { up_to_id: id }]);

        // Incoming messages are delivered and acked after the ack delay, once.
        h.data(conn, &[text(1, "a"), text(2, "b"), text(2, "b")]);
        let events = h.events();
        assert_eq!(events.len(), 2);
        assert!(h.effects().is_empty(), "ack is debounced");
        h.run_until(h.now + 20);
        assert_eq!(transmitted(&h.effects()), vec![Frame::Ack { seq: 2 }]);

        // close() says goodbye, tears down, and nothing fires afterwards.
        h.session.close(h.now);
        let effects = h.effects();
        assert!(matches!(transmitted(&effects).as_slice(), [Frame::Close(Close { code: 1000, .. })]));
        assert_eq!(effects.last(), Some(&Effect::Close { conn }));
        assert_eq!(
            h.events(),
            vec![Event::State(State::Closed), Event::Closed { code: 1000, reason: "client closed".into() }]
        );
        h.data(conn, &[text(3, "late")]);
        assert!(h.events().is_empty());
        assert_eq!(h.session.send(h.now, None, Payload::Text("x".into())), Err(SendError::Closed));
    }

    #[test]
    fn binary_payloads_ask_for_a_binary_carrier() {
        let mut h = Harness::new(SessionConfig::default());
        h.open();
        h.effects();
        h.session.send(h.now, None, Payload::Binary(vec![0, 255])).unwrap();
        assert!(matches!(h.effects().as_slice(), [Effect::Transmit { binary: true, .. }]));
    }

    #[test]
    fn lost_connection_reconnects_with_jittered_backoff_and_resumes() {
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.data(conn, &[text(1, "a")]);
        // Two messages: the first reaches the server and is acked, the second is lost in flight.
        let first = h.session.send(h.now, None, Payload::Text("one".into())).unwrap();
        let second = h.session.send(h.now, None, Payload::Text("two".into())).unwrap();
        h.data(conn, &[Frame::Ack { seq: 1 }]);
        h.events();
        h.effects();

        h.session.handle_input(h.now, Input::Closed { conn, reason: "socket closed (1006)".into() });
        let effects = h.effects();
        assert_eq!(effects, vec![Effect::Close { conn }]);
        let events = h.events();
        let delay = match events.as_slice() {
            [Event::State(State::Reconnecting), Event::Reconnecting { attempt: 1, delay_ms, reason }] => {
                assert_eq!(reason, "socket closed (1006)");
                *delay_ms
            }
            other => panic!("{other:?}"),
        };
        assert!(delay <= 500);
        assert_eq!(h.session.transport(), None);

        // Nothing before the delay; then a resume request naming the last delivered seq.
        let reconnect_at = h.now + delay;
        assert_eq!(h.session.poll_timeout(), Some(reconnect_at));
        h.advance_to(reconnect_at);
        let conn2 = match h.effects().as_slice() {
            [Effect::Open { conn, url, .. }] => {
                assert!(url.ends_with("rt_conn=2&rt_sid=s1&rt_key=secret&rt_last=1"), "{url}");
                *conn
            }
            other => panic!("{other:?}"),
        };
        // The late close of the old socket is ignored.
        h.session.handle_input(h.now, Input::Closed { conn, reason: "late".into() });
        assert!(h.events().is_empty());

        // The server resumed, had message 1; message 2 goes again, and replays are deduplicated.
        h.data(conn2, &[hello("s1", 1, true), text(1, "a"), text(2, "b")]);
        let events = h.events();
        assert!(events.contains(&Event::Open { session_id: "s1".into(), transport: TransportKind::WebSocket, resumed: true }));
        let messages: Vec<_> = events.iter().filter(|event| matches!(event, Event::Message { .. })).collect();
        assert_eq!(messages.len(), 1, "seq 1 was already delivered");
        assert!(!events.iter().any(|event| matches!(event, Event::Transport { .. })), "same transport: no event");
        let frames = transmitted(&h.effects());
        assert_eq!(frames[0], text(2, "two"));
        assert!(first < second);
    }

    #[test]
    fn refused_resume_emits_one_reset_and_rejects_only_what_may_have_arrived() {
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.data(conn, &[text(1, "a")]);
        let in_flight = h.session.send(h.now, None, Payload::Text("maybe".into())).unwrap();
        h.effects();
        h.session.handle_input(h.now, Input::Closed { conn, reason: "gone".into() });
        let queued = h.session.send(h.now, None, Payload::Text("queued".into())).unwrap();
        h.events();
        h.run_until(h.now + 600);
        let conn2 = match h.effects().as_slice() {
            [.., Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.data(conn2, &[hello("s2", 0, false), text(1, "fresh")]);
        let events = h.events();
        let resets = events.iter().filter(|event| matches!(event, Event::Reset { .. })).count();
        assert_eq!(resets, 1);
        assert!(events.contains(&Event::SendFailed {
            id: in_flight,
            reason: "session reset: the message may not have been delivered"
        }));
        assert!(events.iter().any(|event| matches!(event, Event::Message { seq: 1, .. })), "fresh seq 1 delivered");
        // The queued message is renumbered from 1 on the fresh session.
        let frames = transmitted(&h.effects());
        assert_eq!(frames[0], text(1, "queued"));
        h.data(conn2, &[Frame::Ack { seq: 1 }]);
        assert!(h.events().contains(&Event::Delivered { up_to_id: queued }));
    }

    #[test]
    fn malformed_frames_are_protocol_errors_that_reconnect() {
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.events();
        h.effects();
        h.session.handle_input(h.now, Input::Data { conn, bytes: b"msg s=1 k=t n=99\nshort".to_vec() });
        let events = h.events();
        assert_eq!(events[0], Event::Error { message: "protocol error: frame truncated".into() });
        assert!(matches!(events.last(), Some(Event::Reconnecting { .. })));
        assert_eq!(h.effects(), vec![Effect::Close { conn }]);
    }

    #[test]
    fn frames_before_hello_and_gaps_are_protocol_errors() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        let conn = match h.effects().as_slice() {
            [Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.data(conn, &[text(1, "early")]);
        assert!(h.events().contains(&Event::Error { message: "protocol error: expected hello as the first frame".into() }));

        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.events();
        h.data(conn, &[text(2, "skipped one")]);
        assert!(h.events().contains(&Event::Error { message: "protocol error: gap in server sequence numbers".into() }));
    }

    #[test]
    fn connect_timeout_without_hello_retries() {
        let mut h = Harness::new(SessionConfig { connect_timeout_ms: 3_000, ..SessionConfig::default() });
        h.session.connect(h.now);
        let conn = match h.effects().as_slice() {
            [Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.session.handle_input(h.now, Input::Opened { conn }); // Accepted, then silent.
        assert_eq!(h.session.poll_timeout(), Some(4_000));
        h.advance_to(4_000);
        assert_eq!(h.effects(), vec![Effect::Close { conn }]);
        assert!(h.events().iter().any(|event| matches!(
            event,
            Event::Reconnecting { reason, .. } if reason.starts_with("connect timeout")
        )));
    }

    #[test]
    fn heartbeat_pings_when_idle_and_declares_a_silent_connection_dead() {
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.effects();
        h.events();
        // Idle for one interval: a ping goes out.
        h.run_until(1_000 + 10_000);
        assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: 11_000 }]);
        // Nothing from the server for 1.5 intervals: dead, replaced.
        h.run_until(1_000 + 15_000);
        assert!(h.effects().contains(&Effect::Close { conn }));
        assert!(h.events().iter().any(|event| matches!(
            event,
            Event::Reconnecting { reason, .. } if reason.starts_with("heartbeat timeout")
        )));
    }

    #[test]
    fn traffic_keeps_the_connection_alive() {
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        for step in 1..=10 {
            h.run_until(1_000 + step * 9_000);
            h.data(conn, &[Frame::Ping { time: h.now }]);
        }
        assert_eq!(h.session.state(), State::Open);
    }

    #[test]
    fn server_close_advice_is_honoured() {
        // retry=no: closed for good.
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.events();
        h.data(conn, &[Frame::Close(Close { code: 4001, reason: "bad token".into(), retry: Retry::Never })]);
        let events = h.events();
        assert_eq!(events[0], Event::Error { message: "server refused the session: bad token".into() });
        assert_eq!(events.last(), Some(&Event::Closed { code: 4001, reason: "bad token".into() }));
        assert_eq!(h.session.state(), State::Closed);
        assert_eq!(h.session.poll_timeout(), None);

        // retry=N: reconnect after exactly N ms.
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.events();
        h.data(conn, &[Frame::Close(Close { code: 1001, reason: "restart".into(), retry: Retry::AfterMs(1234) })]);
        assert!(h.events().iter().any(|event| matches!(event, Event::Reconnecting { delay_ms: 1234, .. })));
    }

    #[test]
    fn reconnect_false_closes_on_first_loss_and_max_attempts_gives_up() {
        let mut h = Harness::new(SessionConfig { reconnect: None, ..SessionConfig::default() });
        let conn = h.open();
        h.session.handle_input(h.now, Input::Closed { conn, reason: "gone".into() });
        assert_eq!(h.session.state(), State::Closed);

        let config = SessionConfig {
            reconnect: Some(BackoffConfig { max_attempts: Some(2), ..BackoffConfig::default() }),
            ..SessionConfig::default()
        };
        let mut h = Harness::new(config);
        h.session.connect(h.now);
        for _ in 0..3 {
            let conn = match h.effects().as_slice() {
                [.., Effect::Open { conn, .. }] => *conn,
                other => panic!("{other:?}"),
            };
            h.session.handle_input(h.now, Input::Closed { conn, reason: "refused".into() });
            h.run_until(h.now + 2_000);
        }
        assert_eq!(h.session.state(), State::Closed);
        assert!(h.events().iter().any(|event| matches!(event, Event::Closed { code: 1006, .. })));
    }

    #[test]
    fn the_attempt_counter_resets_only_after_a_stable_connection() {
        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open();
        h.session.handle_input(h.now, Input::Closed { conn, reason: "x".into() });
        h.run_until(h.now + 1_000);
        let conn = match h.effects().as_slice() {
            [.., Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.data(conn, &[hello("s1", 0, true)]);
        // Dropped again at once: attempt 2.
        h.session.handle_input(h.now, Input::Closed { conn, reason: "x".into() });
        assert!(h.events().iter().any(|event| matches!(event, Event::Reconnecting { attempt: 2, .. })));
        h.run_until(h.now + 2_000);
        let conn = match h.effects().as_slice() {
            [.., Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.data(conn, &[hello("s1", 0, true)]);
        // Up for longer than stable_after_ms: the next loss is attempt 1 again.
        for step in 1..=3 {
            h.run_until(h.now + 2_000);
            h.data(conn, &[Frame::Ping { time: step }]);
        }
        h.events();
        h.session.handle_input(h.now, Input::Closed { conn, reason: "x".into() });
        assert!(h.events().iter().any(|event| matches!(event, Event::Reconnecting { attempt: 1, .. })));
    }

    #[test]
    fn outbox_limits_are_enforced_with_clear_errors() {
        let config = SessionConfig { outbox_max_messages: 2, outbox_max_bytes: 10, ..SessionConfig::default() };
        let mut h = Harness::new(config);
        // Queued while idle: allowed up to the limits.
        h.session.send(h.now, None, Payload::Text("12345".into())).unwrap();
        assert_eq!(h.session.send(h.now, None, Payload::Text("123456".into())), Err(SendError::OutboxFull));
        h.session.send(h.now, None, Payload::Text("1".into())).unwrap();
        assert_eq!(h.session.send(h.now, None, Payload::Text("1".into())), Err(SendError::OutboxFull));
        assert_eq!(h.session.send(h.now, Some("bad name".into()), Payload::Text("1".into())), Err(SendError::BadEventName));
        // Hello lowers the size limit to 1024 bytes.
        h.open();
        let big = Payload::Binary(vec![0; 1025]);
        assert_eq!(h.session.send(h.now, None, big), Err(SendError::TooLarge));
    }

    #[test]
    fn close_rejects_pending_messages() {
        let mut h = Harness::new(SessionConfig::default());
        h.open();
        let id = h.session.send(h.now, None, Payload::Text("x".into())).unwrap();
        h.events();
        h.session.close(h.now);
        assert!(h.events().contains(&Event::SendFailed { id, reason: "client closed" }));
        assert_eq!(h.session.outbox_len(), 0);
    }
}
