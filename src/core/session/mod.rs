//! The session state machine: one logical session carried by a succession of connections.
//!
//! Sans-IO in the quinn-proto style. The adapter feeds [`Input`]s and user commands with the
//! current time, arms one timer at [`Session::poll_timeout`], and carries out the
//! [`Effect`]s it drains; the facade turns drained [`Event`]s into JS callbacks.
//!
//! The machine in parts, one module each: [`types`] (the public vocabulary), `conns` (the
//! connection table and roles), `ladder` (the raced connect rounds and failures), `upgrade`
//! (probe, migration, drain), `frames` (hello, promotion, reset, server close), `outbox` (send,
//! ack, renumber on reset), `inbox` (delivered and acked sequence numbers, ack debounce),
//! `liveness` (heartbeat, throttled timers, wake, suspend), `batch` (the upstream batch and the
//! long-poll loop), `channels` (subscriptions, positions and the channel frames of protocol v2)
//! and `timers` (the one table `handle_timeout` and `poll_timeout` both read).
//!
//! Connections play roles. While connecting, *candidates* race down the transport ladder: the
//! preferred rung gets a head start (shorter once its transport opened and stayed silent as long
//! as opening it took), then the next one is opened beside it, and the first to
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

use crate::prelude::*;
use crate::core::backoff::{Backoff, Jitter};
use crate::core::endpoint::{Endpoint, TransportKind};
use crate::core::wire::{self, close_code, Close, Frame, Retry};
use crate::core::Millis;

mod auth;
mod batch;
mod channels;
mod conns;
mod frames;
mod inbox;
mod ladder;
mod limits;
mod liveness;
mod outbox;
mod timers;
mod types;
mod upgrade;

pub use limits::{MAX_BODY_BYTES, MAX_HEARTBEAT_MS, MAX_RETRY_MS, MIN_HEARTBEAT_MS};
pub use types::{ConnId, Effect, ErrorCode, Event, Input, SendError, SessionConfig, State, Stats, TransportCause, Wake};

use auth::Auth;
use batch::Batch;
use channels::Channels;
use conns::{Conns, Role};
use ladder::Failure;
use inbox::Inbox;
use outbox::Outbox;
use timers::{Timer, Timers};

struct SessionIds {
    id: String,
    secret: String,
}

/// The session state machine. See the module docs.
pub struct Session {
    config: SessionConfig,
    endpoint: Endpoint,
    state: State,
    conns: Conns,
    ids: Option<SessionIds>,
    heartbeat_ms: u64,
    max_body_bytes: usize,
    inbox: Inbox,
    outbox: Outbox,
    channels: Channels,
    timers: Timers,
    backoff: Option<Backoff>,
    jitter: Jitter,
    /// Rungs not yet tried in the current connect round, in order.
    untried: Vec<TransportKind>,
    last_failure: String,
    /// The rung of the last active connection (remembered across reconnects).
    last_transport: Option<TransportKind>,
    /// The rung an earlier page remembered, tried first until a connection of ours worked.
    remembered: Option<TransportKind>,
    upgrade_backoff: Option<Backoff>,
    /// When the session last handled anything: a long gap means the page was frozen or
    /// throttled, and silence found then is checked before it is believed.
    last_step: Millis,
    batch: Batch,
    auth: Auth,
    stats: Stats,
    effects: Queue<Effect>,
    events: Queue<Event>,
}

/// A first-in first-out queue (a `VecDeque` costs kilobytes of wasm per element type): `push`
/// appends to `incoming`; `pop` takes from `outgoing`, an iterator over an earlier `incoming`,
/// and once it is spent takes the current `incoming` whole. Every item left in `outgoing` was
/// pushed before any in `incoming`, so the order is kept; nothing is indexed, so nothing can
/// panic.
struct Queue<T> {
    incoming: Vec<T>,
    outgoing: alloc::vec::IntoIter<T>,
}

impl<T> Default for Queue<T> {
    fn default() -> Queue<T> {
        Queue { incoming: Vec::new(), outgoing: Vec::new().into_iter() }
    }
}

impl<T> Queue<T> {
    fn push(&mut self, item: T) {
        self.incoming.push(item);
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.outgoing.next() {
            return Some(item);
        }
        self.outgoing = core::mem::take(&mut self.incoming).into_iter();
        self.outgoing.next()
    }
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
            conns: Conns::default(),
            ids: None,
            heartbeat_ms: 25_000,
            max_body_bytes: wire::DEFAULT_MAX_BODY_BYTES,
            inbox: Inbox::default(),
            outbox: Outbox::default(),
            channels: Channels::new(config.room.as_deref()),
            timers: Timers::default(),
            untried: Vec::new(),
            last_failure: String::new(),
            last_step: 0,
            batch: Batch::default(),
            auth: Auth::default(),
            stats: Stats::default(),
            effects: Queue::default(),
            events: Queue::default(),
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
            self.inbox = Inbox::default();
            self.outbox.next_seq = 1;
            self.reset_channels();
            self.backoff = self.config.reconnect.map(Backoff::new);
        }
        self.set_state(State::Connecting);
        self.start_round(now);
        self.last_step = now;
    }

    /// Closes for good: says goodbye to the server, rejects what is pending.
    pub fn close(&mut self, now: Millis) {
        if self.state == State::Closed {
            return;
        }
        // Over HTTP the goodbye would be a POST that the teardown aborts at once; the server
        // expires the session instead.
        if self.transport() == Some(TransportKind::WebSocket) {
            // Sends of this task that wait for their flush go first, in the goodbye's message.
            self.encode_unsent(now);
            self.queue_frame(&Frame::Close(Close {
                code: close_code::NORMAL,
                reason: String::from("client closed"),
                retry: Retry::Never,
            }));
            self.flush(now);
        }
        self.finish(close_code::NORMAL, String::from("client closed"), ErrorCode::Closed, "client closed");
    }

    // --- Transport inputs ----------------------------------------------------------------

    /// Feeds a transport event.
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        match input {
            Input::TokenReady(credential) => self.token_ready(now, credential.map(|credential| credential.0)),
            Input::TokenFailed { reason } => self.token_failed(now, reason),
            _ => self.input_of_conn(now, input),
        }
        self.last_step = now;
    }

    fn input_of_conn(&mut self, now: Millis, input: Input) {
        let id = match &input {
            Input::Opened { conn }
            | Input::Data { conn, .. }
            | Input::Posted { conn }
            | Input::Closed { conn, .. }
            | Input::Refused { conn, .. } => *conn,
            Input::TokenReady(_) | Input::TokenFailed { .. } => return,
        };
        let Some(role) = self.conn(id).map(|conn| conn.role) else {
            return; // A late event from an abandoned connection.
        };
        match input {
            Input::Opened { .. } => self.candidate_opened(now, id),
            Input::Posted { .. } => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.post_in_flight = false;
                    conn.post_deadline = None;
                }
                self.pump_out(now);
            }
            Input::Data { bytes, .. } => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.last_received = now;
                }
                if role == Role::Active {
                    self.timers.clear(Timer::Suspect);
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
                    Err(error) => self.conn_failed(now, id, error.as_str(), Failure::Protocol),
                }
                self.after_poll_response(now, id);
                // An ack in the data may have opened the window for messages still held.
                self.pump_out(now);
            }
            Input::Closed { reason, .. } => self.conn_failed(now, id, &reason, Failure::Transport),
            Input::Refused { reason, .. } => {
                if role == Role::Probe {
                    self.conn_failed(now, id, &reason, Failure::Transport);
                } else {
                    let mut message = String::from("server refused the client: ");
                    message.push_str(&reason);
                    self.events.push(Event::Error { code: ErrorCode::Unauthorized, message });
                    self.finish(close_code::UNAUTHORIZED, reason, ErrorCode::Unauthorized, "server refused the client");
                }
            }
            Input::TokenReady(_) | Input::TokenFailed { .. } => {}
        }
        self.last_step = now;
    }

    // --- Time ----------------------------------------------------------------------------

    /// Fires due timers. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Millis) {
        let expired: Vec<(ConnId, Role, bool)> = self
            .conns
            .iter()
            .filter(|conn| conn.deadline.is_some_and(|deadline| now >= deadline))
            .map(|conn| (conn.id, conn.role, false))
            .chain(
                self.conns
                    .iter()
                    .filter(|conn| conn.post_deadline.is_some_and(|deadline| now >= deadline))
                    .map(|conn| (conn.id, conn.role, true)),
            )
            .collect();
        for (id, role, upload) in expired {
            match role {
                Role::Draining => self.drop_conn(id),
                // A hung upload blocks every later one while the event stream keeps the
                // liveness check happy: replace the connection, the resume resends the rest.
                _ if upload => self.conn_failed(now, id, "upload timeout: the server did not answer a POST", Failure::Timeout),
                _ => self.conn_failed(now, id, "connect timeout: no hello from the server", Failure::Timeout),
            }
        }
        if self.timers.take_due(Timer::Race, now) {
            self.open_next_candidate(now);
        }
        if self.timers.take_due(Timer::Reconnect, now) {
            self.start_round(now);
        }
        if self.timers.take_due(Timer::Probe, now) {
            self.open_probe(now);
        }
        if self.timers.take_due(Timer::Refresh, now) {
            self.refresh_due(now);
        }
        if self.timers.take_due(Timer::TokenAsk, now) {
            self.token_failed(now, String::from("no answer in time"));
        }
        if self.timers.take_due(Timer::Resubscribe, now) {
            self.resubscribe_due(now);
        }
        if self.timers.take_due(Timer::Stable, now) {
            if let Some(backoff) = self.backoff.as_mut() {
                backoff.reset();
            }
        }
        self.check_traffic(now);
        if self.timers.get(Timer::Ack).is_some_and(|due| now >= due) {
            self.queue_ack();
        }
        self.flush(now);
        self.last_step = now;
    }

    /// The next instant `handle_timeout` has work to do, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let connection_deadlines = self.conns.iter().flat_map(|conn| conn.deadline.into_iter().chain(conn.post_deadline));
        connection_deadlines.chain(self.timers.next()).chain(self.traffic_deadline()).min()
    }

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.events.push(Event::State(state));
        }
    }
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests;
