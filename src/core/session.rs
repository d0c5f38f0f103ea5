//! The session state machine: one logical session carried by a succession of connections.
//!
//! Sans-IO in the quinn-proto style. The adapter feeds [`Input`]s and user commands with the
//! current time, arms one timer at [`Session::poll_timeout`], and carries out the
//! [`Effect`]s it drains; the facade turns drained [`Event`]s into JS callbacks.
//!
//! Connections play roles. While connecting, *candidates* race down the transport ladder: the
//! preferred rung gets a head start, then the next one is opened beside it, and the first to
//! deliver the server's hello becomes *active* (the others are closed). On a lower rung, a
//! *probe* (a throwaway connection that only waits for a hello) re-tests a better rung with
//! backoff; once it proves the rung, a *migrating* connection resumes the session there, and the
//! old active connection becomes *draining*: it is still read, never written, until the server
//! closes it or a deadline passes.
//!
//! Invariants:
//! - Every connection has a fresh [`ConnId`]; inputs from a connection the session no longer
//!   holds are ignored (browsers deliver late events from abandoned transports).
//! - A connection counts as established only once the server's hello arrived on it.
//! - Only the active connection is written to. At most one upstream POST is in flight.
//! - Outgoing messages keep their sequence number until acked; after a resume the unacked tail is
//!   sent again in order, and the server drops what it already had. Incoming messages are
//!   delivered at most once and in order: a sequence number at or below the last delivered one is
//!   dropped, whichever connection carried it; a gap is a protocol error.
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
    /// The rung to start on (remembered from an earlier page view), if still allowed.
    pub initial_transport: Option<TransportKind>,
    /// How long a connection may take to deliver the server's hello.
    pub connect_timeout_ms: u64,
    /// How long a rung may go without a hello before the next rung is raced beside it.
    pub head_start_ms: u64,
    /// Reconnect policy, or `None` to never reconnect.
    pub reconnect: Option<BackoffConfig>,
    /// Re-probe policy for a better rung while on a lower one (`None`: never upgrade).
    pub upgrade: Option<BackoffConfig>,
    /// How long a replaced connection is still read after a migration.
    pub drain_timeout_ms: u64,
    /// Most messages the outbox holds (queued plus sent but unacked).
    pub outbox_max_messages: usize,
    /// Most payload bytes the outbox holds.
    pub outbox_max_bytes: usize,
    /// How long received messages may wait before the client acks them on a WebSocket.
    pub ack_delay_ms: u64,
    /// The same over SSE, where every ack costs a POST.
    pub http_ack_delay_ms: u64,
    /// A connection that stays up this long resets the backoff attempt counter.
    pub stable_after_ms: u64,
    /// Seed of the jitter generator (the adapter passes a random number).
    pub jitter_seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            transports: TransportKind::ALL.to_vec(),
            initial_transport: None,
            connect_timeout_ms: 5_000,
            head_start_ms: 300,
            reconnect: Some(BackoffConfig::default()),
            upgrade: Some(BackoffConfig {
                initial_delay_ms: 2_000,
                max_delay_ms: 60_000,
                multiplier: 2.0,
                max_attempts: None,
            }),
            drain_timeout_ms: 5_000,
            outbox_max_messages: 10_000,
            outbox_max_bytes: 16 << 20,
            ack_delay_ms: 20,
            http_ack_delay_ms: 200,
            stable_after_ms: 5_000,
            jitter_seed: 1,
        }
    }
}

/// What a transport adapter reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The transport is open at its level (WebSocket or EventSource `open`).
    Opened { conn: ConnId },
    /// Bytes arrived: whole frames (a WebSocket message, an SSE event, a poll response body).
    Data { conn: ConnId, bytes: Vec<u8> },
    /// The upstream POST of this connection completed with a 2xx.
    Posted { conn: ConnId },
    /// The transport ended or failed; `reason` says why, for the app's events.
    Closed { conn: ConnId, reason: String },
    /// The server refused the client outright (HTTP 401 or 403): retrying cannot help.
    Refused { conn: ConnId, reason: String },
}

/// Page and network lifecycle signals the adapter forwards (window events, a clock jump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// `offline`: the connection is suspect.
    Offline,
    /// `online`: check the connection, or retry now if there is none.
    Online,
    /// `visibilitychange` to visible: timers may have been throttled; check now.
    Visible,
    /// `pageshow` from the back/forward cache: the connections were dropped at `pagehide`.
    PageShow,
    /// The wall clock jumped ahead of the monotonic one: the machine slept.
    ClockJump,
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open a connection of `kind` to `url` (for long polling: issue its first poll).
    Open { conn: ConnId, kind: TransportKind, url: String },
    /// Send encoded frames on a WebSocket; `binary` says a text message cannot hold them.
    Transmit { conn: ConnId, data: Vec<u8>, binary: bool },
    /// POST encoded frames (UTF-8) upstream for an SSE or long-polling connection; report
    /// `Posted` or `Closed`.
    Post { conn: ConnId, url: String, body: Vec<u8> },
    /// Issue the next long poll of the connection.
    Poll { conn: ConnId, url: String },
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
    Transport { from: Option<TransportKind>, to: TransportKind, reason: String },
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Racing to become active while connecting.
    Candidate,
    /// The connection the session reads and writes.
    Active,
    /// A throwaway connection testing a better rung.
    Probe,
    /// Resuming the session on a proven better rung.
    Migrating,
    /// Replaced by a migration: read until the server closes it, never written.
    Draining,
}

struct Connection {
    id: ConnId,
    kind: TransportKind,
    role: Role,
    established: bool,
    /// Connect deadline before the hello; drain deadline while draining.
    deadline: Option<Millis>,
    last_received: Millis,
    last_sent: Millis,
    post_in_flight: bool,
}

struct SessionIds {
    id: String,
    secret: String,
}

/// How much later than its latest deadline the session may run before it counts as having
/// slept (a throttled or frozen page, a suspended machine).
const LATE_MARGIN_MS: u64 = 1_000;

/// Largest batch put into one WebSocket message or POST body; beyond it a new one starts.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// The session state machine. See the module docs.
pub struct Session {
    config: SessionConfig,
    endpoint: Endpoint,
    state: State,
    next_conn: u32,
    conns: Vec<Connection>,
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
    reconnect_at: Option<Millis>,
    stable_at: Option<Millis>,
    /// Rungs not yet tried in the current connect round, in order.
    untried: Vec<TransportKind>,
    race_at: Option<Millis>,
    last_failure: String,
    /// The rung of the last active connection (remembered across reconnects).
    last_transport: Option<TransportKind>,
    /// The rung an earlier page remembered, tried first until a connection of ours worked.
    remembered: Option<TransportKind>,
    upgrade_backoff: Option<Backoff>,
    probe_at: Option<Millis>,
    /// Set while a liveness check waits for any traffic from the server.
    suspect_until: Option<Millis>,
    /// When the session last handled anything: a long gap means the page was frozen or
    /// throttled, and silence found then is checked before it is believed.
    last_step: Millis,
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
            upgrade_backoff: config.upgrade.map(Backoff::new),
            last_transport: None,
            remembered: config.initial_transport.filter(|kind| config.transports.contains(kind)),
            endpoint,
            state: State::Idle,
            next_conn: 0,
            conns: Vec::new(),
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
            reconnect_at: None,
            stable_at: None,
            untried: Vec::new(),
            race_at: None,
            last_failure: String::new(),
            probe_at: None,
            suspect_until: None,
            last_step: 0,
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

    /// The transport of the active connection, if any.
    pub fn transport(&self) -> Option<TransportKind> {
        self.active().map(|conn| conn.kind)
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

    /// Connections held (of any role); at most a handful.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
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
        self.start_round(now);
        self.last_step = now;
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
        self.pump_out(now);
        Ok(id)
    }

    /// Closes for good: says goodbye to the server, rejects what is pending.
    pub fn close(&mut self, now: Millis) {
        if self.state == State::Closed {
            return;
        }
        if let Some(active) = self.active() {
            let (id, kind) = (active.id, active.kind);
            // Over HTTP the goodbye would be a POST that the teardown aborts at once; the
            // server expires the session instead.
            if kind == TransportKind::WebSocket {
                self.pending_batch.clear();
                self.queue_frame(&Frame::Close(Close {
                    code: close_code::NORMAL,
                    reason: String::from("client closed"),
                    retry: Retry::Never,
                }));
                self.flush(now);
            }
            let _ = id;
        }
        self.finish(close_code::NORMAL, String::from("client closed"), "client closed");
    }

    // --- Transport inputs ----------------------------------------------------------------

    /// Feeds a transport event.
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        let id = match &input {
            Input::Opened { conn }
            | Input::Data { conn, .. }
            | Input::Posted { conn }
            | Input::Closed { conn, .. }
            | Input::Refused { conn, .. } => *conn,
        };
        let Some(role) = self.conn(id).map(|conn| conn.role) else {
            return; // A late event from an abandoned connection.
        };
        match input {
            Input::Opened { .. } => {}
            Input::Posted { .. } => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.post_in_flight = false;
                }
                self.pump_out(now);
            }
            Input::Data { bytes, .. } => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.last_received = now;
                }
                if role == Role::Active {
                    self.suspect_until = None;
                }
                match wire::decode_all(&bytes, self.max_body_bytes) {
                    Ok(frames) => {
                        for frame in frames {
                            self.handle_frame(now, id, frame);
                            if self.conn(id).is_none() {
                                break; // The frame ended this connection.
                            }
                        }
                    }
                    Err(error) => self.conn_failed(now, id, error.as_str(), true),
                }
                self.after_poll_response(now, id);
                self.flush(now);
            }
            Input::Closed { reason, .. } => self.conn_failed(now, id, &reason, false),
            Input::Refused { reason, .. } => {
                if role == Role::Probe {
                    self.conn_failed(now, id, &reason, false);
                } else {
                    let mut message = String::from("server refused the client: ");
                    message.push_str(&reason);
                    self.events.push_back(Event::Error { message });
                    self.finish(close_code::UNAUTHORIZED, reason, "server refused the client");
                }
            }
        }
        self.last_step = now;
    }

    /// A page or network lifecycle signal. Several in a row cost one check or one attempt.
    pub fn handle_wake(&mut self, now: Millis, wake: Wake) {
        match self.state {
            State::Open if self.active().is_some() && wake != Wake::PageShow => self.check_liveness(now),
            // Waiting out a backoff delay, or suspended at pagehide: try now.
            State::Reconnecting if self.conns.is_empty() && wake != Wake::Offline => {
                self.reconnect_at = Some(now);
                self.handle_timeout(now);
            }
            _ => {}
        }
        self.flush(now);
        self.last_step = now;
    }

    /// `pagehide`: drop the connections (an open WebSocket keeps a page out of the back/forward
    /// cache) but keep the session, so that `pageshow` resumes it.
    pub fn suspend(&mut self, now: Millis) {
        if !matches!(self.state, State::Open | State::Connecting | State::Reconnecting) {
            return;
        }
        self.drop_all_conns();
        self.reconnect_at = None;
        self.race_at = None;
        self.probe_at = None;
        self.stable_at = None;
        self.ack_due = None;
        self.suspect_until = None;
        self.untried.clear();
        self.set_state(State::Reconnecting);
        self.events.push_back(Event::Reconnecting {
            attempt: self.backoff.as_ref().map_or(0, Backoff::attempt),
            delay_ms: 0,
            reason: String::from("page hidden: resuming when it is shown again"),
        });
        self.last_step = now;
    }

    /// Sends a ping and gives the server a short grace to answer; no answer means dead.
    fn check_liveness(&mut self, now: Millis) {
        if self.suspect_until.is_some() {
            return; // A check is already under way.
        }
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        if kind != TransportKind::LongPolling {
            self.queue_frame(&Frame::Ping { time: now });
        }
        // A held long poll answers within one interval; other transports answer the ping.
        let grace = if kind == TransportKind::LongPolling { self.heartbeat_ms + 1_000 } else { (self.heartbeat_ms / 2).clamp(1_000, 5_000) };
        self.suspect_until = Some(now + grace);
    }

    /// Fires due timers. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Millis) {
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|conn| conn.deadline.is_some_and(|deadline| now >= deadline))
            .map(|conn| conn.id)
            .collect();
        for id in expired {
            match self.conn(id).map(|conn| conn.role) {
                Some(Role::Draining) => self.drop_conn(id),
                Some(_) => self.conn_failed(now, id, "connect timeout: no hello from the server", false),
                None => {}
            }
        }
        if self.race_at.is_some_and(|at| now >= at) {
            self.race_at = None;
            self.open_next_candidate(now);
        }
        if self.reconnect_at.is_some_and(|at| now >= at) {
            self.reconnect_at = None;
            self.start_round(now);
        }
        if self.probe_at.is_some_and(|at| now >= at) {
            self.probe_at = None;
            self.open_probe(now);
        }
        if self.stable_at.is_some_and(|at| now >= at) {
            self.stable_at = None;
            if let Some(backoff) = self.backoff.as_mut() {
                backoff.reset();
            }
        }
        // A gap longer than any deadline we set means the page was frozen or throttled.
        let woke_late = self.last_step > 0 && now > self.last_step + self.heartbeat_ms + LATE_MARGIN_MS;
        if self.suspect_until.is_some_and(|until| now >= until) {
            self.suspect_until = None;
            self.active_lost(now, String::from("liveness check failed: no answer from the server"), Retry::Default);
        }
        if let Some((id, last_received, last_sent, kind)) =
            self.active().map(|conn| (conn.id, conn.last_received, conn.last_sent, conn.kind))
        {
            if now >= last_received + self.liveness_timeout() && (woke_late || self.suspect_until.is_some()) {
                // Silence seen only because we slept: ask before believing it (the socket may
                // hold data the page has not read yet).
                self.check_liveness(now);
            } else if now >= last_received + self.liveness_timeout() {
                self.active_lost(now, String::from("heartbeat timeout: no traffic from the server"), Retry::Default);
            } else if now >= last_sent + self.heartbeat_ms && kind != TransportKind::LongPolling && self.can_write() {
                // A long poll is itself the client's heartbeat, and so is a POST in flight.
                self.queue_frame(&Frame::Ping { time: now });
            }
            let _ = id;
        }
        if self.ack_due.is_some_and(|due| now >= due) {
            self.queue_ack();
        }
        self.flush(now);
        self.last_step = now;
    }

    /// The next instant `handle_timeout` has work to do, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut consider = |at: Option<Millis>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |next| next.min(at)));
            }
        };
        for conn in &self.conns {
            consider(conn.deadline);
        }
        consider(self.race_at);
        consider(self.reconnect_at);
        consider(self.probe_at);
        consider(self.stable_at);
        consider(self.ack_due);
        consider(self.suspect_until);
        if let Some(conn) = self.active().filter(|_| self.suspect_until.is_none()) {
            consider(Some(conn.last_received + self.liveness_timeout()));
            if conn.kind != TransportKind::LongPolling && !conn.post_in_flight {
                consider(Some(conn.last_sent + self.heartbeat_ms));
            }
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

    // --- Connections ---------------------------------------------------------------------

    fn conn(&self, id: ConnId) -> Option<&Connection> {
        self.conns.iter().find(|conn| conn.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns.iter_mut().find(|conn| conn.id == id)
    }

    fn active(&self) -> Option<&Connection> {
        self.conns.iter().find(|conn| conn.role == Role::Active)
    }

    fn active_mut(&mut self) -> Option<&mut Connection> {
        self.conns.iter_mut().find(|conn| conn.role == Role::Active)
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

    fn rank(&self, kind: TransportKind) -> usize {
        self.config.transports.iter().position(|&allowed| allowed == kind).unwrap_or(usize::MAX)
    }

    fn open_conn(&mut self, now: Millis, kind: TransportKind, role: Role, resume: bool, probe: bool) -> ConnId {
        self.next_conn = self.next_conn.wrapping_add(1);
        let id = ConnId(self.next_conn);
        let resume = if resume {
            self.ids.as_ref().map(|ids| (ids.id.as_str(), ids.secret.as_str(), self.last_delivered))
        } else {
            None
        };
        let url = self.endpoint.connect_url(kind, ConnectParams { conn: id.0, resume, probe });
        self.effects.push_back(Effect::Open { conn: id, kind, url });
        self.conns.push(Connection {
            id,
            kind,
            role,
            established: false,
            deadline: Some(now + self.config.connect_timeout_ms),
            last_received: now,
            last_sent: now,
            post_in_flight: false,
        });
        id
    }

    /// Closes and forgets a connection.
    fn drop_conn(&mut self, id: ConnId) {
        if let Some(index) = self.conns.iter().position(|conn| conn.id == id) {
            self.conns.remove(index);
            self.effects.push_back(Effect::Close { conn: id });
        }
    }

    fn drop_all_conns(&mut self) {
        for conn in std::mem::take(&mut self.conns) {
            self.effects.push_back(Effect::Close { conn: conn.id });
        }
        self.pending_batch.clear();
        self.pending_binary = false;
    }

    // --- Connect rounds: the ladder, raced ----------------------------------------------

    /// Starts walking the ladder: the remembered rung first, then the others in order.
    fn start_round(&mut self, now: Millis) {
        let first = self
            .last_transport
            .or(self.remembered)
            .filter(|kind| self.config.transports.contains(kind))
            .unwrap_or(self.config.transports[0]);
        self.untried = std::iter::once(first)
            .chain(self.config.transports.iter().copied().filter(|&kind| kind != first))
            .collect();
        self.last_failure.clear();
        self.open_next_candidate(now);
    }

    /// Opens the next untried rung beside those already racing; arms the next head start.
    fn open_next_candidate(&mut self, now: Millis) {
        if self.untried.is_empty() {
            return;
        }
        let kind = self.untried.remove(0);
        self.open_conn(now, kind, Role::Candidate, true, false);
        self.race_at = if self.untried.is_empty() { None } else { Some(now + self.config.head_start_ms) };
    }

    /// A connection failed (closed, timed out, or broke the protocol).
    fn conn_failed(&mut self, now: Millis, id: ConnId, reason: &str, protocol: bool) {
        let Some(conn) = self.conn(id) else { return };
        let (role, kind) = (conn.role, conn.kind);
        if protocol {
            let mut message = String::from("protocol error: ");
            message.push_str(reason);
            self.events.push_back(Event::Error { message });
        }
        match role {
            Role::Active => {
                let mut message = String::new();
                if protocol {
                    message.push_str("protocol error: ");
                }
                message.push_str(reason);
                self.active_lost(now, message, Retry::Default);
            }
            Role::Candidate => {
                self.drop_conn(id);
                self.last_failure = String::from(kind.as_str());
                self.last_failure.push_str(" failed: ");
                self.last_failure.push_str(reason);
                if !protocol {
                    // A rung that fails says why (a protocol error has said so already).
                    self.events.push_back(Event::Error { message: self.last_failure.clone() });
                }
                let racing = self.conns.iter().any(|conn| conn.role == Role::Candidate);
                if !racing && !self.untried.is_empty() {
                    // A refused rung costs nothing: the next one starts now.
                    self.open_next_candidate(now);
                } else if !racing {
                    self.race_at = None;
                    let reason = std::mem::take(&mut self.last_failure);
                    self.schedule_reconnect(now, reason, Retry::Default);
                }
            }
            Role::Probe | Role::Migrating => {
                self.drop_conn(id);
                if role == Role::Migrating && self.active().is_none() {
                    // The old connection was already handed over: the session has none left.
                    let mut message = String::from("upgrade failed: ");
                    message.push_str(reason);
                    self.active_lost(now, message, Retry::Default);
                } else {
                    self.schedule_probe(now);
                }
            }
            Role::Draining => self.drop_conn(id),
        }
    }

    /// The active connection is gone: drop everything and schedule the next round.
    fn active_lost(&mut self, now: Millis, reason: String, advice: Retry) {
        self.drop_all_conns();
        self.suspect_until = None;
        self.stable_at = None;
        self.ack_due = None;
        self.probe_at = None;
        self.race_at = None;
        self.untried.clear();
        if self.state == State::Closed {
            return;
        }
        self.schedule_reconnect(now, reason, advice);
    }

    fn schedule_reconnect(&mut self, now: Millis, reason: String, advice: Retry) {
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
        // Full jitter may draw 0; one millisecond keeps every deadline after `now`.
        let delay = delay.max(1);
        self.reconnect_at = Some(now + delay);
        self.set_state(State::Reconnecting);
        self.events.push_back(Event::Reconnecting { attempt, delay_ms: delay, reason });
    }

    // --- Background upgrade ----------------------------------------------------------------

    /// The best allowed rung above the active one, if any.
    fn better_rung(&self) -> Option<TransportKind> {
        let active = self.active()?;
        let rank = self.rank(active.kind);
        self.config.transports.first().copied().filter(|&best| self.rank(best) < rank)
    }

    fn schedule_probe(&mut self, now: Millis) {
        if self.better_rung().is_none() {
            return;
        }
        if let Some(backoff) = self.upgrade_backoff.as_mut() {
            let ceiling_floor = self.config.upgrade.map_or(0, |config| config.initial_delay_ms / 2);
            // Half fixed, half jittered: a probe never comes sooner than half the ceiling.
            let delay = ceiling_floor + backoff.next_delay(&mut self.jitter) / 2;
            self.probe_at = Some(now + delay);
        }
    }

    fn open_probe(&mut self, now: Millis) {
        let busy = self.conns.iter().any(|conn| matches!(conn.role, Role::Probe | Role::Migrating));
        if let (Some(kind), false) = (self.better_rung(), busy) {
            self.open_conn(now, kind, Role::Probe, false, true);
        }
    }

    // --- Frames --------------------------------------------------------------------------

    fn handle_frame(&mut self, now: Millis, id: ConnId, frame: Frame) {
        let Some(conn) = self.conn(id) else { return };
        let (role, established) = (conn.role, conn.established);
        match (role, frame) {
            (Role::Draining, Frame::Message(message)) => self.handle_message(now, id, message),
            (Role::Draining, Frame::Ack { seq }) => self.handle_ack(now, id, seq),
            (Role::Draining, Frame::Close(_)) => self.drop_conn(id),
            (Role::Draining, _) => {}
            (_, Frame::Hello(hello)) if !established => self.handle_hello(now, id, role, hello),
            (_, Frame::Hello(_)) => self.conn_failed(now, id, "second hello on one connection", true),
            (_, Frame::Close(close)) if !established => {
                // A racing connection the server retired (another attach of ours won there).
                let mut reason = String::from("server closed the connection: ");
                reason.push_str(&close.reason);
                self.conn_failed(now, id, &reason, false);
            }
            (Role::Active, Frame::Close(close)) if close.code == close_code::REPLACED => self.handle_replaced(now, id),
            (_, _) if !established => self.conn_failed(now, id, "expected hello as the first frame", true),
            (Role::Active, Frame::Message(message)) => self.handle_message(now, id, message),
            (Role::Active, Frame::Ack { seq }) => self.handle_ack(now, id, seq),
            (Role::Active, Frame::Ping { time }) => self.queue_frame(&Frame::Pong { time }),
            (Role::Active, Frame::Pong { time }) => {
                if time <= now {
                    self.stats.rtt_ms = Some(now - time);
                }
            }
            (Role::Active, Frame::Close(close)) => self.handle_close(now, close),
            // A migrating connection carries nothing but its hello before it becomes active.
            (_, _) => {}
        }
    }

    fn handle_hello(&mut self, now: Millis, id: ConnId, role: Role, hello: Hello) {
        if hello.version != wire::PROTOCOL_VERSION {
            self.events.push_back(Event::Error { message: String::from("server speaks an unsupported protocol version") });
            self.finish(close_code::UNSUPPORTED_VERSION, String::from("unsupported protocol version"), "unsupported protocol version");
            return;
        }
        match role {
            Role::Probe => {
                // The rung works. Drop the throwaway connection and resume the session there.
                let kind = self.conn(id).map(|conn| conn.kind);
                self.drop_conn(id);
                if let Some(kind) = kind {
                    self.open_conn(now, kind, Role::Migrating, true, false);
                }
            }
            Role::Candidate | Role::Migrating => self.promote(now, id, role, hello),
            Role::Active | Role::Draining => {}
        }
    }

    /// Makes `id` the active connection after its hello.
    fn promote(&mut self, now: Millis, id: ConnId, role: Role, hello: Hello) {
        let asked_to_resume = self.ids.is_some();
        let resumed = asked_to_resume && hello.resumed;
        let previous = self.active().map(|conn| (conn.id, conn.kind));
        // The losers of a race, and (after a migration) the connection being replaced.
        let others: Vec<(ConnId, Role)> =
            self.conns.iter().filter(|conn| conn.id != id).map(|conn| (conn.id, conn.role)).collect();
        for (other, other_role) in others {
            match other_role {
                Role::Active if resumed => {
                    let deadline = now + self.config.drain_timeout_ms;
                    if let Some(conn) = self.conn_mut(other) {
                        conn.role = Role::Draining;
                        conn.deadline = Some(deadline);
                    }
                }
                Role::Draining => {}
                _ => self.drop_conn(other),
            }
        }
        if asked_to_resume && !hello.resumed {
            self.reset_session();
        }
        self.ids = Some(SessionIds { id: hello.session_id.clone(), secret: hello.secret });
        self.heartbeat_ms = hello.heartbeat_ms.max(1);
        self.max_body_bytes = usize::try_from(hello.max_body_bytes).unwrap_or(usize::MAX);
        self.race_at = None;
        self.untried.clear();
        self.pending_batch.clear();
        self.pending_binary = false;
        let Some(conn) = self.conn_mut(id) else { return };
        conn.role = Role::Active;
        conn.established = true;
        conn.deadline = None;
        conn.last_received = now;
        let kind = conn.kind;
        if role == Role::Candidate {
            self.stable_at = Some(now + self.config.stable_after_ms);
        }
        self.handle_ack(now, id, hello.ack);
        self.set_state(State::Open);
        let from = previous.map(|(_, kind)| kind).or(self.last_transport);
        if from != Some(kind) {
            let reason = if role == Role::Migrating {
                self.stats.upgrades += 1;
                String::from("upgrade: the better transport works again")
            } else if self.rank(kind) > 0 && self.last_failure.is_empty() && self.remembered == Some(kind) {
                String::from("remembered: this transport worked last time")
            } else if self.rank(kind) > 0 {
                self.stats.fallbacks += 1;
                let mut reason = String::from("fallback: ");
                reason.push_str(if self.last_failure.is_empty() { "a better transport gave no hello in time" } else { &self.last_failure });
                reason
            } else {
                String::from("connected")
            };
            self.events.push_back(Event::Transport { from, to: kind, reason });
        }
        self.last_transport = Some(kind);
        self.last_failure.clear();
        if role == Role::Candidate || !resumed {
            self.events.push_back(Event::Open { session_id: hello.session_id, transport: kind, resumed });
        }
        // Everything unacked goes again, in order: the server drops what it already has.
        for message in self.outbox.iter_mut() {
            message.transmitted = false;
        }
        // A long poll continues from `after_poll_response`, once the whole response is handled.
        // One ping right away measures the round-trip time without waiting for a heartbeat.
        self.queue_frame(&Frame::Ping { time: now });
        self.pump_out(now);
        if self.better_rung().is_some() {
            if role == Role::Candidate {
                if let Some(backoff) = self.upgrade_backoff.as_mut() {
                    backoff.reset();
                }
            }
            self.schedule_probe(now);
        } else {
            self.probe_at = None;
        }
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

    fn handle_message(&mut self, now: Millis, id: ConnId, message: Message) {
        if message.seq <= self.last_delivered {
            return; // Already delivered (a replay overlapping what we had).
        }
        if message.seq != self.last_delivered + 1 {
            self.conn_failed(now, id, "gap in server sequence numbers", true);
            return;
        }
        self.last_delivered = message.seq;
        self.stats.messages_in += 1;
        self.stats.bytes_in += message.payload.len() as u64;
        if self.ack_due.is_none() {
            let delay = match self.active().map(|conn| conn.kind) {
                Some(TransportKind::WebSocket) => self.config.ack_delay_ms,
                _ => self.config.http_ack_delay_ms,
            };
            self.ack_due = Some(now + delay);
        }
        self.events.push_back(Event::Message { seq: message.seq, event: message.event, payload: message.payload });
    }

    fn handle_ack(&mut self, now: Millis, id: ConnId, seq: u64) {
        if seq >= self.next_seq {
            self.conn_failed(now, id, "server acknowledged a message never sent", true);
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

    /// The server moved the session off the active connection. During our own migration that
    /// is the handover: the old connection drains and the session waits for the new one's hello
    /// (sends queue meanwhile). Otherwise one of our own late attaches won at the server: resume,
    /// whatever the frame's retry advice, since the session itself is alive.
    fn handle_replaced(&mut self, now: Millis, id: ConnId) {
        let migrating = self.conns.iter().any(|conn| conn.role == Role::Migrating);
        if migrating {
            let deadline = now + self.config.drain_timeout_ms;
            if let Some(conn) = self.conn_mut(id) {
                conn.role = Role::Draining;
                conn.deadline = Some(deadline);
            }
            self.pending_batch.clear();
            self.pending_binary = false;
        } else {
            self.active_lost(now, String::from("server moved the session to another connection"), Retry::Default);
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
            self.finish(close.code, close.reason, "server closed the session");
            return;
        }
        let mut reason = String::from("server closed the connection: ");
        reason.push_str(&close.reason);
        self.active_lost(now, reason, close.retry);
    }

    /// Enters `Closed`: drops every connection and fails everything pending.
    fn finish(&mut self, code: u16, reason: String, failure: &'static str) {
        self.drop_all_conns();
        self.suspect_until = None;
        self.reconnect_at = None;
        self.stable_at = None;
        self.ack_due = None;
        self.race_at = None;
        self.probe_at = None;
        self.untried.clear();
        for message in self.outbox.drain(..) {
            self.events.push_back(Event::SendFailed { id: message.id, reason: failure });
        }
        self.outbox_bytes = 0;
        self.set_state(State::Closed);
        self.events.push_back(Event::Closed { code, reason });
    }

    // --- Output --------------------------------------------------------------------------

    /// After a long-poll response: the next poll at once (or, when draining, the end).
    fn after_poll_response(&mut self, _now: Millis, id: ConnId) {
        let Some(conn) = self.conn(id) else { return };
        if conn.kind != TransportKind::LongPolling {
            return;
        }
        match (conn.role, conn.established) {
            (Role::Active, true) => self.issue_poll(id),
            (Role::Draining, _) => self.drop_conn(id),
            // A first poll must bring the hello.
            (_, false) => self.conn_failed(_now, id, "poll answered without a hello", true),
            _ => {}
        }
    }

    fn issue_poll(&mut self, id: ConnId) {
        let Some(ids) = self.ids.as_ref() else { return };
        let url = self.endpoint.poll_url(id.0, &ids.id, &ids.secret, self.last_delivered);
        // The poll's `rt_last` acknowledges everything delivered so far.
        self.last_acked = self.last_delivered;
        self.effects.push_back(Effect::Poll { conn: id, url });
    }

    /// Whether the active connection can take more frames now.
    fn can_write(&self) -> bool {
        self.active().is_some_and(|conn| !conn.post_in_flight)
    }

    /// Hands unsent messages and queued control frames to the active connection.
    fn pump_out(&mut self, now: Millis) {
        if !self.can_write() {
            return;
        }
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        let carrier = if kind == TransportKind::WebSocket { Carrier::Binary } else { Carrier::Text };
        // Sent messages form a prefix of the outbox (sending goes in order; a resume clears all).
        let mut index = self.outbox.partition_point(|message| message.transmitted);
        while index < self.outbox.len() {
            let message = &self.outbox[index];
            let bound = wire::message_size_bound(message.event.as_deref(), &message.payload);
            if !self.pending_batch.is_empty() && self.pending_batch.len() + bound > MAX_BATCH_BYTES {
                if kind != TransportKind::WebSocket {
                    break; // The rest goes in the next POST, once this one is answered.
                }
                self.flush(now);
            }
            let message = &mut self.outbox[index];
            message.transmitted = true;
            if matches!(message.payload, Payload::Binary(_)) && carrier == Carrier::Binary {
                self.pending_binary = true;
            }
            wire::encode_message(message.seq, message.event.as_deref(), &message.payload, carrier, &mut self.pending_batch);
            index += 1;
        }
        self.flush(now);
    }

    fn queue_ack(&mut self) {
        self.ack_due = None;
        let kind = self.active().map(|conn| conn.kind);
        if self.last_delivered > self.last_acked && kind.is_some() && kind != Some(TransportKind::LongPolling) {
            self.last_acked = self.last_delivered;
            self.queue_frame(&Frame::Ack { seq: self.last_delivered });
        }
    }

    fn queue_frame(&mut self, frame: &Frame) {
        let Some(kind) = self.active().map(|conn| conn.kind) else { return };
        let carrier = if kind == TransportKind::WebSocket { Carrier::Binary } else { Carrier::Text };
        if matches!(frame, Frame::Message(Message { payload: Payload::Binary(_), .. })) && carrier == Carrier::Binary {
            self.pending_binary = true;
        }
        wire::encode(frame, carrier, &mut self.pending_batch);
    }

    /// Hands the frames queued during this step to the active connection as one batch.
    fn flush(&mut self, now: Millis) {
        if self.pending_batch.is_empty() || !self.can_write() {
            return;
        }
        // An ack that is due soon rides along for free.
        if self.ack_due.is_some() {
            self.queue_ack();
        }
        let data = std::mem::take(&mut self.pending_batch);
        let binary = std::mem::replace(&mut self.pending_binary, false);
        let post_url = match (self.active().map(|conn| conn.kind), self.ids.as_ref()) {
            (Some(TransportKind::WebSocket), _) | (None, _) => None,
            (Some(_), Some(ids)) => self.active().map(|conn| self.endpoint.send_url(conn.id.0, &ids.id, &ids.secret)),
            (Some(_), None) => None,
        };
        let Some(conn) = self.active_mut() else { return };
        conn.last_sent = now;
        let id = conn.id;
        match post_url {
            None => self.effects.push_back(Effect::Transmit { conn: id, data, binary }),
            Some(url) => {
                conn.post_in_flight = true;
                self.effects.push_back(Effect::Post { conn: id, url, body: data });
            }
        }
    }
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
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
            // Invariant: handling a timeout moves every deadline past now, or the adapter spins.
            if let Some(next) = self.session.poll_timeout() {
                assert!(next > at, "deadline {next} not past now {at} after handle_timeout");
            }
        }

        /// Runs timers until `until`, firing each deadline at its exact time.
        fn run_until(&mut self, until: Millis) {
            while let Some(at) = self.session.poll_timeout().filter(|&at| at <= until) {
                self.advance_to(at.max(self.now));
            }
            self.now = until;
        }

        /// connect() with the whole ladder allowed; the WebSocket says hello.
        fn open_default_websocket(&mut self) -> ConnId {
            self.session.connect(self.now);
            let conn = match self.effects().as_slice() {
                [Effect::Open { conn, kind: TransportKind::WebSocket, .. }] => *conn,
                other => panic!("unexpected effects {other:?}"),
            };
            self.data(conn, &[hello("s1", 0, false)]);
            self.effects();
            conn
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

    /// The single-rung configuration most traces use; the ladder has its own tests.
    fn ws_only() -> SessionConfig {
        SessionConfig { transports: vec![TransportKind::WebSocket], ..SessionConfig::default() }
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
        let mut h = Harness::new(ws_only());
        assert_eq!(h.session.state(), State::Idle);
        let conn = h.open();
        let events = h.events();
        assert_eq!(
            events,
            vec![
                Event::State(State::Connecting),
                Event::State(State::Open),
                Event::Transport { from: None, to: TransportKind::WebSocket, reason: "connected".into() },
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
        let mut h = Harness::new(ws_only());
        h.open();
        h.effects();
        h.session.send(h.now, None, Payload::Binary(vec![0, 255])).unwrap();
        assert!(matches!(h.effects().as_slice(), [Effect::Transmit { binary: true, .. }]));
    }

    #[test]
    fn lost_connection_reconnects_with_jittered_backoff_and_resumes() {
        let mut h = Harness::new(ws_only());
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
        let resent: Vec<_> = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
        assert_eq!(resent, vec![&text(2, "two")]);
        assert!(first < second);
    }

    #[test]
    fn refused_resume_emits_one_reset_and_rejects_only_what_may_have_arrived() {
        let mut h = Harness::new(ws_only());
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
        let resent: Vec<_> = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
        assert_eq!(resent, vec![&text(1, "queued")]);
        h.data(conn2, &[Frame::Ack { seq: 1 }]);
        assert!(h.events().contains(&Event::Delivered { up_to_id: queued }));
    }

    #[test]
    fn malformed_frames_are_protocol_errors_that_reconnect() {
        let mut h = Harness::new(ws_only());
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
        let mut h = Harness::new(ws_only());
        h.session.connect(h.now);
        let conn = match h.effects().as_slice() {
            [Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.data(conn, &[text(1, "early")]);
        assert!(h.events().contains(&Event::Error { message: "protocol error: expected hello as the first frame".into() }));

        let mut h = Harness::new(ws_only());
        let conn = h.open();
        h.events();
        h.data(conn, &[text(2, "skipped one")]);
        assert!(h.events().contains(&Event::Error { message: "protocol error: gap in server sequence numbers".into() }));
    }

    #[test]
    fn connect_timeout_without_hello_retries() {
        let mut h = Harness::new(SessionConfig { connect_timeout_ms: 3_000, ..ws_only() });
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
            Event::Reconnecting { reason, .. } if reason == "websocket failed: connect timeout: no hello from the server"
        )));
    }

    #[test]
    fn heartbeat_pings_when_idle_and_declares_a_silent_connection_dead() {
        let mut h = Harness::new(ws_only());
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
        let mut h = Harness::new(ws_only());
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
        let mut h = Harness::new(ws_only());
        let conn = h.open();
        h.events();
        h.data(conn, &[Frame::Close(Close { code: 4001, reason: "bad token".into(), retry: Retry::Never })]);
        let events = h.events();
        assert_eq!(events[0], Event::Error { message: "server refused the session: bad token".into() });
        assert_eq!(events.last(), Some(&Event::Closed { code: 4001, reason: "bad token".into() }));
        assert_eq!(h.session.state(), State::Closed);
        assert_eq!(h.session.poll_timeout(), None);

        // retry=N: reconnect after exactly N ms.
        let mut h = Harness::new(ws_only());
        let conn = h.open();
        h.events();
        h.data(conn, &[Frame::Close(Close { code: 1001, reason: "restart".into(), retry: Retry::AfterMs(1234) })]);
        assert!(h.events().iter().any(|event| matches!(event, Event::Reconnecting { delay_ms: 1234, .. })));
    }

    #[test]
    fn reconnect_false_closes_on_first_loss_and_max_attempts_gives_up() {
        let mut h = Harness::new(SessionConfig { reconnect: None, ..ws_only() });
        let conn = h.open();
        h.session.handle_input(h.now, Input::Closed { conn, reason: "gone".into() });
        assert_eq!(h.session.state(), State::Closed);

        let config = SessionConfig {
            reconnect: Some(BackoffConfig { max_attempts: Some(2), ..BackoffConfig::default() }),
            ..ws_only()
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
        let mut h = Harness::new(ws_only());
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
        let config = SessionConfig { outbox_max_messages: 2, outbox_max_bytes: 10, ..ws_only() };
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
        let mut h = Harness::new(ws_only());
        h.open();
        let id = h.session.send(h.now, None, Payload::Text("x".into())).unwrap();
        h.events();
        h.session.close(h.now);
        assert!(h.events().contains(&Event::SendFailed { id, reason: "client closed" }));
        assert_eq!(h.session.outbox_len(), 0);
    }

    // --- The ladder ----------------------------------------------------------------------

    fn opened(effects: &[Effect]) -> Vec<(ConnId, TransportKind, String)> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Open { conn, kind, url } => Some((*conn, *kind, url.clone())),
                _ => None,
            })
            .collect()
    }

    fn posted(effects: &[Effect]) -> Vec<Frame> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Post { body, .. } => {
                    assert!(std::str::from_utf8(body).is_ok(), "POST bodies are text");
                    Some(wire::decode_all(body, 1 << 20).unwrap())
                }
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn transport_events(events: &[Event]) -> Vec<(Option<TransportKind>, TransportKind, String)> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::Transport { from, to, reason } => Some((*from, *to, reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_refused_websocket_costs_nothing_sse_starts_at_once() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        let [(ws, TransportKind::WebSocket, _)] = opened(&h.effects())[..] else { panic!() };
        h.now += 3;
        h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "websocket closed (code 1006)".into() });
        let effects = h.effects();
        assert_eq!(effects[0], Effect::Close { conn: ws });
        let [(sse, TransportKind::Sse, ref url)] = opened(&effects)[..] else { panic!("{effects:?}") };
        assert_eq!(url, "http://127.0.0.1:8080/realtime/sse?room=lobby&rt_v=1&rt_conn=2");
        h.data(sse, &[hello("s1", 0, false)]);
        let events = h.events();
        assert_eq!(
            transport_events(&events),
            vec![(None, TransportKind::Sse, "fallback: websocket failed: websocket closed (code 1006)".into())]
        );
        assert_eq!(h.session.transport(), Some(TransportKind::Sse));
        assert_eq!(h.session.stats().fallbacks, 1);
        assert!(!events.iter().any(|event| matches!(event, Event::Reconnecting { .. })), "no backoff between rungs");
    }

    #[test]
    fn a_silent_websocket_gets_a_head_start_then_sse_races_and_wins() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.session.handle_input(h.now, Input::Opened { conn: ws }); // Upgraded, then silence.
        assert_eq!(h.session.poll_timeout(), Some(1_300), "the head start");
        h.run_until(1_299);
        assert!(h.effects().is_empty());
        h.run_until(1_300);
        let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
        assert_eq!(h.session.connection_count(), 2, "raced, not replaced");
        h.now = 1_310;
        h.data(sse, &[hello("s1", 0, false)]);
        assert_eq!(h.effects().iter().filter(|effect| **effect == Effect::Close { conn: ws }).count(), 1, "loser closed");
        // The loser's late hello is ignored.
        h.data(ws, &[hello("s-other", 0, false)]);
        assert_eq!(h.session.session_id(), Some("s1"));
        assert_eq!(h.session.transport(), Some(TransportKind::Sse));
        assert_eq!(h.session.connection_count(), 1);
    }

    #[test]
    fn websocket_silent_and_sse_buffered_lead_to_long_polling_within_two_head_starts() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        h.effects();
        h.run_until(1_300);
        let [(_, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
        h.run_until(1_600);
        let [(poll, TransportKind::LongPolling, ref url)] = opened(&h.effects())[..] else { panic!() };
        assert!(url.starts_with("http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=1&rt_conn=3"));
        h.now = 1_605;
        h.data(poll, &[hello("s1", 0, false), text(1, "first")]);
        assert_eq!(h.session.transport(), Some(TransportKind::LongPolling));
        let effects = h.effects();
        assert_eq!(effects.iter().filter(|effect| matches!(effect, Effect::Close { .. })).count(), 2);
        // The next poll goes out at once and acknowledges what was delivered.
        let polls: Vec<&String> = effects.iter().filter_map(|effect| match effect {
            Effect::Poll { url, .. } => Some(url),
            _ => None,
        }).collect();
        assert_eq!(polls, vec!["http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=1&rt_conn=3&rt_sid=s1&rt_key=secret&rt_last=1"]);
        assert!(h.events().iter().any(|event| matches!(event, Event::Message { seq: 1, .. })));
    }

    #[test]
    fn every_rung_failing_backs_off_then_retries_from_the_top() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        for _ in 0..3 {
            let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
            h.session.handle_input(h.now, Input::Closed { conn, reason: "refused".into() });
        }
        let events = h.events();
        assert!(matches!(
            events.last(),
            Some(Event::Reconnecting { attempt: 1, reason, .. }) if reason == "long-polling failed: refused"
        ));
        h.run_until(h.now + 500);
        assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::WebSocket, _)]));
    }

    #[test]
    fn a_reconnect_starts_on_the_rung_that_worked() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "refused".into() });
        let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(sse, &[hello("s1", 0, false)]);
        h.session.handle_input(h.now, Input::Closed { conn: sse, reason: "stream broke".into() });
        h.run_until(h.now + 500);
        let effects = h.effects();
        assert!(matches!(opened(&effects)[..], [(_, TransportKind::Sse, _)]), "{effects:?}");
    }

    #[test]
    fn the_remembered_rung_from_an_earlier_page_is_tried_first() {
        let config = SessionConfig { initial_transport: Some(TransportKind::LongPolling), ..SessionConfig::default() };
        let mut h = Harness::new(config);
        h.session.connect(h.now);
        let [(poll, TransportKind::LongPolling, _)] = opened(&h.effects())[..] else { panic!() };
        h.data(poll, &[hello("s1", 0, false)]);
        assert_eq!(
            transport_events(&h.events()),
            vec![(None, TransportKind::LongPolling, "remembered: this transport worked last time".into())]
        );
        assert_eq!(h.session.stats().fallbacks, 0, "nothing failed");
        // Still on a lower rung: the better one gets probed.
        h.run_until(1_000 + 2_000);
        assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::WebSocket, _)]));
    }

    #[test]
    fn upstream_posts_are_serialised_one_at_a_time() {
        let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::Sse], ..SessionConfig::default() });
        h.session.connect(h.now);
        let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(sse, &[hello("s1", 0, false)]);
        let effects = h.effects();
        assert_eq!(posted(&effects), vec![Frame::Ping { time: 1_000 }]);
        let Effect::Post { url, .. } = effects.iter().find(|effect| matches!(effect, Effect::Post { .. })).unwrap() else { panic!() };
        assert_eq!(url, "http://127.0.0.1:8080/realtime/send?room=lobby&rt_v=1&rt_conn=1&rt_sid=s1&rt_key=secret");
        h.session.send(h.now, None, Payload::Binary(vec![1, 2, 3])).unwrap();
        h.session.send(h.now, None, Payload::Text("b".into())).unwrap();
        assert!(posted(&h.effects()).is_empty(), "a POST is in flight");
        h.session.handle_input(h.now, Input::Posted { conn: sse });
        assert_eq!(
            posted(&h.effects()),
            vec![
                Frame::Message(Message { seq: 1, event: None, payload: Payload::Binary(vec![1, 2, 3]) }),
                text(2, "b"),
            ]
        );
        // A failed POST is a failed connection.
        h.session.handle_input(h.now, Input::Closed { conn: sse, reason: "upload failed: HTTP 500".into() });
        assert_eq!(h.session.state(), State::Reconnecting);
    }

    /// Falls back from a refused WebSocket to SSE; returns the SSE connection.
    fn on_sse_after_fallback(h: &mut Harness) -> ConnId {
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "refused".into() });
        let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(sse, &[hello("s1", 0, false)]);
        h.events();
        h.effects();
        sse
    }

    #[test]
    fn a_probe_proves_the_better_rung_then_the_session_migrates_without_loss_or_double() {
        let mut h = Harness::new(SessionConfig::default());
        let sse = on_sse_after_fallback(&mut h);
        h.data(sse, &[text(1, "a"), text(2, "b")]);
        let unacked = h.session.send(h.now, None, Payload::Text("up".into())).unwrap();
        h.events();
        // The probe comes within the first upgrade delay (1 to 2 s).
        let probe_at = h.session.poll_timeout().filter(|_| true).unwrap();
        h.run_until(1_000 + 2_000);
        let effects = h.effects();
        let [(probe, TransportKind::WebSocket, ref url)] = opened(&effects)[..] else { panic!("{effects:?} {probe_at}") };
        assert!(url.ends_with("rt_probe=1") && !url.contains("rt_sid"), "{url}");
        assert_eq!(h.session.transport(), Some(TransportKind::Sse), "nothing moves before the proof");

        // The probe says hello: it is dropped and the session resumes on the WebSocket.
        h.data(probe, &[hello("throwaway", 0, false)]);
        let effects = h.effects();
        assert!(effects.contains(&Effect::Close { conn: probe }));
        let [(migrating, TransportKind::WebSocket, ref url)] = opened(&effects)[..] else { panic!() };
        assert!(url.ends_with("rt_sid=s1&rt_key=secret&rt_last=2"), "{url}");

        // The old stream still delivers until the server moves the session.
        h.data(sse, &[text(3, "c")]);
        h.data(migrating, &[hello("s1", 0, true), text(3, "c"), text(4, "d")]);
        let events = h.events();
        assert_eq!(
            transport_events(&events),
            vec![(Some(TransportKind::Sse), TransportKind::WebSocket, "upgrade: the better transport works again".into())]
        );
        assert!(!events.iter().any(|event| matches!(event, Event::Open { .. } | Event::Reset { .. })));
        assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
        assert_eq!(h.session.stats().upgrades, 1);
        // The unacked message goes again on the new transport.
        let frames = transmitted(&h.effects());
        assert!(frames.contains(&text(1, "up")), "{frames:?}");
        // Late frames on the draining stream are deduplicated, then its close drops it.
        h.data(sse, &[text(4, "d"), Frame::Close(Close { code: 4004, reason: "replaced".into(), retry: Retry::Default })]);
        assert_eq!(h.session.connection_count(), 1);
        h.data(migrating, &[text(5, "e"), Frame::Ack { seq: 1 }]);
        let events = h.events();
        assert!(events.contains(&Event::Delivered { up_to_id: unacked }));
        assert_eq!(h.session.state(), State::Open);
        assert_eq!(h.session.stats().messages_in, 5, "a b c d e, each once");
    }

    #[test]
    fn a_failed_probe_backs_off_and_the_session_stays_put() {
        let mut h = Harness::new(SessionConfig::default());
        let sse = on_sse_after_fallback(&mut h);
        let mut probes = Vec::new();
        let mut last = h.now;
        for _ in 0..4 {
            let at = h.session.poll_timeout().unwrap();
            h.run_until(at);
            // Heartbeat pings may come first; wait for the probe.
            let mut found = opened(&h.effects());
            while found.is_empty() {
                h.data(sse, &[Frame::Ping { time: h.now }]);
                let at = h.session.poll_timeout().unwrap();
                h.run_until(at);
                found = opened(&h.effects());
            }
            let (probe, kind, _) = found[0].clone();
            assert_eq!(kind, TransportKind::WebSocket);
            probes.push(h.now - last);
            h.session.handle_input(h.now, Input::Closed { conn: probe, reason: "refused".into() });
            last = h.now;
            h.data(sse, &[Frame::Ping { time: h.now }]);
        }
        assert_eq!(h.session.transport(), Some(TransportKind::Sse));
        assert_eq!(h.session.state(), State::Open);
        assert!(probes[3] > probes[0], "probes back off: {probes:?}");
    }

    #[test]
    fn a_migration_the_server_cannot_resume_is_a_reset_and_the_old_stream_is_dropped() {
        let mut h = Harness::new(SessionConfig::default());
        let sse = on_sse_after_fallback(&mut h);
        h.run_until(1_000 + 2_000);
        let [(probe, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(probe, &[hello("x", 0, false)]);
        let [(migrating, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(migrating, &[hello("s2", 0, false)]);
        let events = h.events();
        assert_eq!(events.iter().filter(|event| matches!(event, Event::Reset { .. })).count(), 1);
        assert!(h.effects().contains(&Effect::Close { conn: sse }));
        assert_eq!(h.session.session_id(), Some("s2"));
    }

    #[test]
    fn no_probe_on_the_best_rung_or_when_upgrades_are_off() {
        let mut h = Harness::new(SessionConfig { upgrade: None, ..SessionConfig::default() });
        let sse = on_sse_after_fallback(&mut h);
        for step in 1..=20 {
            h.run_until(1_000 + step * 10_000);
            h.data(sse, &[Frame::Ping { time: h.now }]);
        }
        assert_eq!(h.session.state(), State::Open);
        assert!(opened(&h.effects()).is_empty(), "no probe when upgrades are off");

        let mut h = Harness::new(SessionConfig::default());
        let conn = h.open_default_websocket();
        for step in 1..=20 {
            h.run_until(1_000 + step * 10_000);
            h.data(conn, &[Frame::Ping { time: h.now }]);
        }
        assert!(opened(&h.effects()).is_empty(), "no probe on the best rung");
    }

    #[test]
    fn the_old_stream_closing_before_the_new_hello_is_a_handover_not_a_loss() {
        let mut h = Harness::new(SessionConfig::default());
        let sse = on_sse_after_fallback(&mut h);
        h.data(sse, &[text(1, "a")]);
        h.run_until(1_000 + 2_000);
        let [(probe, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(probe, &[hello("x", 0, false)]);
        let [(migrating, ..)] = opened(&h.effects())[..] else { panic!() };
        // The server retires the old stream first (its close frame says retry=no) ...
        h.data(sse, &[text(2, "b"), Frame::Close(Close { code: 4004, reason: "replaced".into(), retry: Retry::Never })]);
        assert_eq!(h.session.state(), State::Open);
        assert_eq!(h.session.transport(), None, "between transports");
        let queued = h.session.send(h.now, None, Payload::Text("meanwhile".into())).unwrap();
        assert!(transmitted(&h.effects()).is_empty() && posted(&h.effects()).is_empty());
        // ... then the new connection says hello and replays from what was delivered.
        h.data(migrating, &[hello("s1", 0, true), text(2, "b"), text(3, "c")]);
        let events = h.events();
        let seqs: Vec<u64> = events.iter().filter_map(|event| match event {
            Event::Message { seq, .. } => Some(*seq),
            _ => None,
        }).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(
            transport_events(&events),
            vec![(Some(TransportKind::Sse), TransportKind::WebSocket, "upgrade: the better transport works again".into())]
        );
        assert!(transmitted(&h.effects()).contains(&text(1, "meanwhile")));
        h.data(migrating, &[Frame::Ack { seq: 1 }]);
        assert!(h.events().contains(&Event::Delivered { up_to_id: queued }));
    }

    #[test]
    fn a_racing_connection_retired_by_the_server_is_dropped_without_a_protocol_error() {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(ws, &[Frame::Close(Close { code: 4004, reason: "replaced".into(), retry: Retry::Never })]);
        let events = h.events();
        assert!(!events.iter().any(|event| matches!(event, Event::Error { message } if message.starts_with("protocol"))));
        assert_eq!(h.session.state(), State::Connecting);
    }

    // --- Liveness and the page lifecycle -------------------------------------------------

    #[test]
    fn a_late_timer_checks_before_it_declares_the_connection_dead() {
        let mut h = Harness::new(ws_only());
        let conn = h.open();
        h.effects();
        h.events();
        // The tab was frozen for a minute: the first thing that runs is the timer.
        h.now = 61_000;
        h.session.handle_timeout(h.now);
        assert_eq!(h.session.state(), State::Open, "throttling alone is no disconnect");
        assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: 61_000 }]);
        // The socket had data waiting: it arrives, and the connection lives on.
        h.data(conn, &[Frame::Pong { time: 61_000 }]);
        h.run_until(61_000 + 9_000);
        assert_eq!(h.session.state(), State::Open);

        // Frozen again, and this time the connection really is dead: found within the grace.
        h.now = 200_000;
        h.session.handle_timeout(h.now);
        assert_eq!(h.session.state(), State::Open);
        h.run_until(200_000 + 5_000);
        assert_eq!(h.session.state(), State::Reconnecting);
        assert!(h.events().iter().any(|event| matches!(
            event,
            Event::Reconnecting { reason, .. } if reason == "liveness check failed: no answer from the server"
        )));
    }

    #[test]
    fn offline_makes_the_connection_suspect_and_a_silent_one_is_replaced() {
        let mut h = Harness::new(ws_only());
        let conn = h.open();
        h.effects();
        h.now += 100;
        h.session.handle_wake(h.now, Wake::Offline);
        h.session.handle_wake(h.now, Wake::Offline);
        assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: h.now }], "one check for two signals");
        h.run_until(h.now + 5_000);
        assert!(h.effects().contains(&Effect::Close { conn }));
        assert_eq!(h.session.state(), State::Reconnecting);
    }

    #[test]
    fn online_or_visible_while_waiting_to_reconnect_tries_at_once_and_coalesces() {
        let mut h = Harness::new(SessionConfig {
            reconnect: Some(BackoffConfig { initial_delay_ms: 30_000, ..BackoffConfig::default() }),
            ..ws_only()
        });
        let conn = h.open();
        h.session.handle_input(h.now, Input::Closed { conn, reason: "network changed".into() });
        h.effects();
        h.now += 50;
        h.session.handle_wake(h.now, Wake::Online);
        h.session.handle_wake(h.now, Wake::Visible);
        h.session.handle_wake(h.now, Wake::ClockJump);
        let opens = opened(&h.effects());
        assert_eq!(opens.len(), 1, "three signals, one attempt: {opens:?}");
        assert!(opens[0].2.contains("rt_sid=s1"), "it resumes");
    }

    #[test]
    fn pagehide_suspends_and_pageshow_resumes_the_same_session() {
        let mut h = Harness::new(ws_only());
        let conn = h.open();
        h.data(conn, &[text(1, "a")]);
        h.events();
        h.effects();
        h.session.suspend(h.now);
        assert_eq!(h.effects(), vec![Effect::Close { conn }]);
        assert_eq!(h.session.poll_timeout(), None, "nothing runs while hidden");
        h.now += 60_000;
        h.session.handle_wake(h.now, Wake::PageShow);
        let opens = opened(&h.effects());
        assert!(opens[0].2.ends_with("rt_sid=s1&rt_key=secret&rt_last=1"), "{opens:?}");
    }

    #[test]
    fn a_refusal_stops_the_retries_with_an_error_and_a_close() {
        let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::LongPolling], ..SessionConfig::default() });
        h.session.connect(h.now);
        let [(poll, ..)] = opened(&h.effects())[..] else { panic!() };
        h.session.handle_input(h.now, Input::Refused { conn: poll, reason: "poll failed: HTTP 401".into() });
        let events = h.events();
        assert!(events.contains(&Event::Error { message: "server refused the client: poll failed: HTTP 401".into() }));
        assert_eq!(events.last(), Some(&Event::Closed { code: 4001, reason: "poll failed: HTTP 401".into() }));
        assert_eq!(h.session.poll_timeout(), None);
    }

    #[test]
    fn batches_stay_within_the_batch_limit_and_keep_order() {
        let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::Sse], ..SessionConfig::default() });
        h.session.connect(h.now);
        let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
        let mut first_hello = hello("s1", 0, false);
        if let Frame::Hello(hello) = &mut first_hello {
            hello.max_body_bytes = 1 << 20;
        }
        h.data(sse, &[first_hello]);
        h.session.handle_input(h.now, Input::Posted { conn: sse });
        h.effects();
        for index in 0..100 {
            h.session.send(h.now, None, Payload::Binary(vec![index as u8; 2_000])).unwrap();
        }
        let mut seqs = Vec::new();
        for _ in 0..10 {
            for effect in h.effects() {
                if let Effect::Post { body, .. } = effect {
                    assert!(body.len() <= MAX_BATCH_BYTES, "{} bytes", body.len());
                    for frame in wire::decode_all(&body, 1 << 20).unwrap() {
                        if let Frame::Message(message) = frame {
                            seqs.push(message.seq);
                        }
                    }
                }
            }
            h.session.handle_input(h.now, Input::Posted { conn: sse });
        }
        assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    }
}
