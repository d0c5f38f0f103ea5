//! Credentials (PROTOCOL.md §9): what a connection's opening frames say, the token source asked
//! before every connect round and ahead of every expiry, the in-band refresh, and the refusals
//! 4005 (a new credential, at once once, then with the backoff) and 4001 (the end).
//!
//! Invariants:
//! - No secret goes into a URL: the session (`sid`, `key`, `last`) and the credential travel in
//!   `session` and `token` frames, in a WebSocket's first message, a poll's body, the SSE bind's
//!   body and every upload.
//! - With a token source, every connect round waits for a credential asked for that round: one is
//!   never reused past a refusal or a lost connection (a round after a refresh uses the refreshed
//!   one only for the upgrade of the open session).
//! - At most one [`Effect::NeedToken`] is outstanding; an answer nobody waits for is dropped.
//! - A credential appears in no event, error message or `Debug` output.

use crate::prelude::*;
use crate::core::endpoint::TransportKind;
use crate::core::session::conns::Role;
use crate::core::session::ladder::Failure;
use crate::core::session::limits::after;
use crate::core::session::timers::Timer;
use crate::core::session::{ConnId, Effect, ErrorCode, Event, Session, State};
use crate::core::wire::{self, Carrier, Close, Credential, Frame, Resume, Retry, SessionFrame};
use crate::core::Millis;

/// The close code of a refused credential: fetch a new one and come back (PROTOCOL.md §9.5).
pub const CREDENTIAL_REFUSED: u16 = 4005;
/// The most a refresh ahead of expiry is early, and its share of the credential's life.
const REFRESH_MARGIN_MS: u64 = 30_000;
/// First delay of the retries of a refresh whose token source failed (doubling, capped).
const REFRESH_RETRY_MS: u64 = 1_000;
/// How long the token source may take: a source that never answers fails like one that throws
/// (the round backs off and asks again), instead of holding the client in `connecting` for ever.
pub const TOKEN_ASK_TIMEOUT_MS: u64 = 15_000;

/// Why a token was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// The connect round waits for it.
    Connect,
    /// The open session's credential expires soon.
    Refresh,
}

#[derive(Debug, Default)]
pub(super) struct Auth {
    /// The credential of this connect round (or, once open, the last one the server accepted or
    /// was sent), if any.
    credential: Option<String>,
    /// The round may open: the credential was asked for it (or there is no token source).
    ready: bool,
    /// The token asked for and not answered yet.
    asking: Option<Ask>,
    /// When the open session's credential expires.
    expires_at: Option<Millis>,
    /// Failed refreshes in a row (their retry delay doubles).
    refresh_failures: u32,
    /// Refusals (4005) in a row since the last hello: the first reconnects at once.
    pub(super) refusals: u32,
}

impl Session {
    /// The frames that open a connection: `session` (resuming `resume`, binding `stream`) and
    /// `token` when a credential is known.
    pub(super) fn opening(&self, resume: Option<Resume>, stream: Option<String>) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode_client_frame(&Frame::Session(SessionFrame { resume, stream }), Carrier::Text, &mut out);
        if let Some(credential) = &self.auth.credential {
            wire::encode_client_frame(&Frame::Token(Credential(credential.clone())), Carrier::Text, &mut out);
        }
        out
    }

    /// The `session sid key` that starts an upload or a continuing poll (None before a hello).
    pub(super) fn session_frame(&self, last: Option<u64>) -> Option<Vec<u8>> {
        let ids = self.ids.as_ref()?;
        let resume = Resume { session_id: ids.id.clone(), secret: ids.secret.clone(), last: last.unwrap_or(0) };
        let mut out = Vec::new();
        wire::encode_client_frame(&Frame::Session(SessionFrame { resume: Some(resume), stream: None }), Carrier::Text, &mut out);
        if last.is_none() {
            // An upload names no `last`: drop the ` last=0` the encoder wrote before the LF.
            out.truncate(out.len().saturating_sub(b" last=0\n".len()));
            out.push(b'\n');
        }
        Some(out)
    }

    /// Whether the connect round may open now; if not, the credential has been asked for.
    pub(super) fn credential_ready(&mut self, now: Millis) -> bool {
        if !self.config.token_source || self.auth.ready {
            self.auth.ready = false;
            return true;
        }
        // A refresh still out now serves the round; so does a connect ask.
        if self.auth.asking.is_none() {
            self.ask_token(now);
        }
        self.auth.asking = Some(Ask::Connect);
        false
    }

    /// Asks the token source, with a deadline for its answer.
    fn ask_token(&mut self, now: Millis) {
        self.effects.push(Effect::NeedToken);
        self.timers.set(Timer::TokenAsk, after(now, TOKEN_ASK_TIMEOUT_MS));
    }

    /// The token source answered.
    pub(super) fn token_ready(&mut self, now: Millis, credential: Option<String>) {
        self.timers.clear(Timer::TokenAsk);
        let credential = credential.filter(|credential| wire::is_valid_credential(credential.as_bytes()));
        match self.auth.asking.take() {
            Some(Ask::Connect) if matches!(self.state, State::Connecting | State::Reconnecting) => {
                self.auth.credential = credential;
                self.auth.ready = true;
                if self.conns.is_empty() && !self.timers.is_set(Timer::Reconnect) {
                    self.start_round(now);
                }
            }
            Some(Ask::Refresh) => {
                let Some(credential) = credential else { return };
                let Some(kind) = self.active().map(|conn| conn.kind) else { return };
                self.auth.credential = Some(credential.clone());
                self.auth.refresh_failures = 0;
                self.queue_frame(&Frame::Token(Credential(credential)));
                if kind == TransportKind::WebSocket {
                    self.flush(now);
                } else {
                    // An upload waiting for the POST in flight carries it next.
                    self.pump_out(now);
                }
            }
            _ => {}
        }
    }

    /// The token source failed: the round backs off; a refresh retries until the expiry.
    pub(super) fn token_failed(&mut self, now: Millis, reason: String) {
        self.timers.clear(Timer::TokenAsk);
        let mut message = String::from("token source failed: ");
        message.push_str(&reason);
        match self.auth.asking.take() {
            Some(Ask::Connect) if matches!(self.state, State::Connecting | State::Reconnecting) => {
                self.events.push(Event::Error { code: ErrorCode::Unauthorized, message: message.clone() });
                if !self.timers.is_set(Timer::Reconnect) {
                    self.schedule_reconnect(now, message, Retry::Default);
                }
            }
            Some(Ask::Refresh) => {
                self.events.push(Event::Error { code: ErrorCode::Unauthorized, message });
                let delay = REFRESH_RETRY_MS.saturating_mul(1 << self.auth.refresh_failures.min(5));
                self.auth.refresh_failures += 1;
                let at = after(now, delay);
                if self.auth.expires_at.is_some_and(|expiry| at < expiry) && self.active().is_some() {
                    self.timers.set(Timer::Refresh, at);
                }
            }
            _ => {}
        }
    }

    /// A hello or an `authed` said when the credential expires: refresh at
    /// `exp - min(30 s, exp / 3)` (PROTOCOL.md §9.4).
    pub(super) fn credential_expires_in(&mut self, now: Millis, expires_in_ms: Option<u64>) {
        self.auth.refusals = 0;
        self.auth.expires_at = expires_in_ms.map(|ms| after(now, ms));
        match expires_in_ms {
            Some(ms) if self.config.token_source => {
                let early = (ms / 3).min(REFRESH_MARGIN_MS);
                // Never at `now` itself: every deadline lies after the step that arms it.
                self.timers.set(Timer::Refresh, after(now, (ms - early).max(1)));
            }
            _ => self.timers.clear(Timer::Refresh),
        }
    }

    /// The refresh is due: ask the token source (the answer goes out on the open session).
    pub(super) fn refresh_due(&mut self, now: Millis) {
        if self.active().is_some() && self.auth.asking.is_none() {
            self.auth.asking = Some(Ask::Refresh);
            self.ask_token(now);
        }
    }

    /// The server refused the credential (close 4005): tell the app, forget the credential, and
    /// connect again with a new one, at once the first time, then with the backoff.
    pub(super) fn credential_refused(&mut self, now: Millis, id: ConnId, role: Role, close: Close) {
        let mut message = String::from("credential refused: ");
        message.push_str(&close.reason);
        if matches!(role, Role::Probe | Role::Migrating) {
            self.conn_failed(now, id, &message, Failure::Transport);
            return;
        }
        self.events.push(Event::Error { code: ErrorCode::Unauthorized, message: message.clone() });
        self.auth.credential = None;
        self.auth.ready = false;
        self.auth.refusals += 1;
        let others = self.conns.iter().any(|conn| conn.id != id && conn.role == Role::Candidate);
        if role == Role::Candidate && others {
            // Another rung of the round may still be accepted.
            self.drop_conn(id);
            return;
        }
        self.drop_all_conns();
        self.timers.clear_all();
        self.untried.clear();
        if self.auth.refusals == 1 {
            self.stats.reconnects += 1;
            let attempt = self.backoff.as_ref().map_or(0, |backoff| backoff.attempt());
            self.set_state(if self.ids.is_some() || self.state != State::Connecting { State::Reconnecting } else { State::Connecting });
            self.events.push(Event::Reconnecting { attempt, delay_ms: 0, reason: message });
            self.start_round(now);
        } else {
            self.schedule_reconnect(now, message, Retry::Default);
        }
    }
}

impl Session {
    /// An event stream's `pending`: bind it to the session with a POST naming its stream
    /// (PROTOCOL.md §9.3). Its hello follows on the stream; a bind answered with an error fails
    /// the connection. A second `pending`, or one on a stream that is not waiting, is a protocol
    /// error.
    pub(super) fn bind(&mut self, now: Millis, id: ConnId, stream: String) {
        let Some(conn) = self.conn(id) else { return };
        if conn.kind != TransportKind::Sse || conn.bound || conn.attach == crate::core::session::conns::Attach::HelloOnly {
            self.conn_failed(now, id, "unexpected pending frame", Failure::Protocol);
            return;
        }
        let body = self.opening(conn.resume.clone(), Some(stream));
        let url = self.endpoint.bind_url(id.0);
        let Some(conn) = self.conn_mut(id) else { return };
        conn.bound = true;
        // No upload before the bind is answered: the server would not know the session yet.
        conn.post_in_flight = true;
        self.effects.push(Effect::Post { conn: id, url, body });
    }
}
