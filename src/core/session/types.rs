//! The session's public vocabulary: configuration, the inputs adapters feed, the effects they
//! carry out, the events the app hears, send errors and counters.
//!
//! Nothing here has behaviour beyond naming; the machine that consumes and produces these lives
//! in the sibling modules.

use crate::prelude::*;
use crate::core::backoff::BackoffConfig;
use crate::core::endpoint::TransportKind;
use crate::core::wire::{Credential, Payload, Position};

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
    /// The `room=` of the URL: the channel a fresh session is subscribed to from its creation
    /// (PROTOCOL.md §8.5). `None`: no room channel.
    pub room: Option<String>,
    /// The app gave a `token` (PROTOCOL.md §9.6): every connect round and every refresh asks
    /// for a credential first ([`Effect::NeedToken`]).
    pub token_source: bool,
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
            room: None,
            token_source: false,
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
    /// The answer to [`Effect::NeedToken`]: the credential (None: the source gave none, connect
    /// without one). Its `Debug` is redacted.
    TokenReady(Option<Credential>),
    /// The token source threw or rejected; `reason` never holds a credential.
    TokenFailed { reason: String },
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
    /// Open a connection of `kind` to `url` and hand it `body` (PROTOCOL.md §9.3): a WebSocket
    /// sends it as its first message once open, long polling POSTs it as its first poll, SSE
    /// gets it empty (its session travels in the bind, a [`Effect::Post`]).
    Open { conn: ConnId, kind: TransportKind, url: String, body: Vec<u8> },
    /// Send encoded frames on a WebSocket; `binary` says a text message cannot hold them.
    Transmit { conn: ConnId, data: Vec<u8>, binary: bool },
    /// POST encoded frames (UTF-8) upstream for an SSE or long-polling connection; report
    /// `Posted` or `Closed`.
    Post { conn: ConnId, url: String, body: Vec<u8> },
    /// Issue the next long poll of the connection: POST `body` (its `session` frame).
    Poll { conn: ConnId, url: String, body: Vec<u8> },
    /// Call the app's token source and answer with [`Input::TokenReady`] or
    /// [`Input::TokenFailed`]. At most one is outstanding.
    NeedToken,
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
    /// A message of a channel (the room channel's too), delivered once and in order per channel.
    /// `from`: the publisher's verified subject (None: a backend publish, or an open server).
    ChannelMessage { channel: String, position: Position, seq: u64, event: Option<String>, payload: Payload, from: Option<String> },
    /// A subscription took effect at `position` (`recovered`: the messages after the position
    /// it was asked from follow).
    Subscribed { channel: String, recovered: bool, position: Position },
    /// A subscription ended: by the app (`code` `Unsubscribed`, at once), or refused or ended by
    /// the server for good.
    Unsubscribed { channel: String, code: ErrorCode, reason: String },
    /// The messages `from..=to` of `channel` in `epoch` are lost (`from` 0: unknown since the
    /// position in an older epoch).
    Gap { channel: String, epoch: u64, from: u64, to: u64 },
    /// The server ended or refused a subscription for now; the client subscribes again by
    /// itself after the delay the server asked for.
    SubscriptionError { channel: String, code: ErrorCode, message: String },
    /// Every outgoing message with an id up to this one was acknowledged by the server.
    Delivered { up_to_id: u64 },
    /// This outgoing message will never be delivered (or may not have been, for `Reset`).
    SendFailed { id: u64, code: ErrorCode, reason: &'static str },
    /// The transport in use changed.
    Transport { from: Option<TransportKind>, to: TransportKind, cause: TransportCause, reason: String },
    /// The connection was lost; the next attempt is in `delay_ms`.
    Reconnecting { attempt: u32, delay_ms: u64, reason: String },
    /// The server could not resume the session: this is a fresh one.
    Reset { reason: &'static str },
    /// Something went wrong that the app should know about (the session may still recover).
    Error { code: ErrorCode, message: String },
    /// Closed for good; `cause` says why in the error table's terms (`Closed` when the app
    /// closed).
    Closed { code: u16, reason: String, cause: ErrorCode },
}

/// Why the session moved to a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCause {
    /// The preferred rung worked.
    Connected,
    /// A better rung failed or gave no hello in time.
    Fallback,
    /// An earlier page remembered this rung and it worked at once.
    Remembered,
    /// A background probe proved a better rung and the session migrated there.
    Upgrade,
}

/// The stable code of every error the client reports: apps branch on it, never on message text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The client is closed (by the app, or for good by one of the causes below).
    Closed,
    /// The outbox is full.
    OutboxFull,
    /// A message is larger than the server accepts.
    TooLarge,
    /// The session was reset: the message was sent but may not have been delivered.
    Reset,
    /// The server refused the client (authentication or authorization).
    Unauthorized,
    /// The server speaks another protocol version.
    UnsupportedVersion,
    /// A transport failed (a rung of the ladder, or the connection was lost).
    TransportFailed,
    /// The server broke the protocol.
    Protocol,
    /// The server did not answer in time (hello, heartbeat, upload).
    Timeout,
    /// An app listener threw.
    ListenerThrew,
    /// The server ended the session and said not to come back.
    ServerClosed,
    /// Every allowed reconnect attempt failed.
    RetriesExhausted,
    /// The app passed a bad argument or option.
    InvalidArgument,
    /// The app unsubscribed (code 1000 of `unsubscribed`).
    Unsubscribed,
    /// A bad channel name (4010).
    BadChannel,
    /// Too many channels (4011).
    TooManyChannels,
    /// Subscribe rate exceeded (4012).
    RateLimited,
    /// Not allowed by the server's policy (4013).
    Forbidden,
    /// The channel was closed by the server (4014, and any code the client does not know).
    ChannelClosed,
}

impl ErrorCode {
    /// The code as JS sees it in `err.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Closed => "closed",
            ErrorCode::OutboxFull => "outbox-full",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Reset => "reset",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::TransportFailed => "transport-failed",
            ErrorCode::Protocol => "protocol",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ListenerThrew => "listener-threw",
            ErrorCode::ServerClosed => "server-closed",
            ErrorCode::RetriesExhausted => "retries-exhausted",
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::Unsubscribed => "unsubscribed",
            ErrorCode::BadChannel => "bad-channel",
            ErrorCode::TooManyChannels => "too-many-channels",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ChannelClosed => "channel-closed",
        }
    }

    /// The code of an `unsubscribed` or `nack` frame (PROTOCOL.md §8.7).
    pub fn from_channel_code(code: u16) -> ErrorCode {
        match code {
            1000 => ErrorCode::Unsubscribed,
            4010 => ErrorCode::BadChannel,
            4011 => ErrorCode::TooManyChannels,
            4012 => ErrorCode::RateLimited,
            4013 => ErrorCode::Forbidden,
            _ => ErrorCode::ChannelClosed,
        }
    }
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
    /// The channel name is not valid.
    BadChannel,
    /// A publish to the room channel, and the session has no room.
    NoRoom,
}

impl SendError {
    /// The error table's code.
    pub fn code(self) -> ErrorCode {
        match self {
            SendError::Closed => ErrorCode::Closed,
            SendError::OutboxFull => ErrorCode::OutboxFull,
            SendError::TooLarge => ErrorCode::TooLarge,
            SendError::BadEventName => ErrorCode::InvalidArgument,
            SendError::BadChannel => ErrorCode::BadChannel,
            SendError::NoRoom => ErrorCode::InvalidArgument,
        }
    }

    /// A lowercase, human message.
    pub fn as_str(self) -> &'static str {
        match self {
            SendError::Closed => "client is closed",
            SendError::OutboxFull => "outbox is full: too many unacknowledged messages",
            SendError::TooLarge => "message is larger than the server accepts",
            SendError::BadEventName => "event name must be 1-64 characters of A-Z a-z 0-9 _ . : / -",
            SendError::BadChannel => "channel name must be 1-128 characters of A-Z a-z 0-9 _ . : / -",
            SendError::NoRoom => "no room channel: the url has no room=",
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
