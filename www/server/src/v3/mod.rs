//! Protocol v3 (PROTOCOL.md §9): no secret in any URL. The session (`sid`, `key`, `last`) and
//! the credential travel in `session` and `token` frames: a WebSocket's first message
//! ([`ws`]), the body of `POST /realtime/bind` for an event stream that announced itself with
//! `pending` ([`sse`]), every `POST /realtime/poll` body and every upload ([`poll`]). Served beside
//! v2: a request with `rt_v=3` takes these paths, any other version the v2 handlers (which the
//! dispatchers here call), until the browser client speaks v3 and v2 goes.
//!
//! Every v3 connect's credential goes through the configured [`auth::Authenticator`] before its
//! hello ([`connect`]). A session belongs to the principal that created it ([`SessionAuth`]): a
//! resume by another principal gets a fresh session and ends the old one; the messages its
//! clients publish carry the principal's subject as `f`; an in-band `token` must name the same
//! principal ([`take_tokens`]); the sweeper closes a connection whose credential expired
//! ([`expire_credentials`], once a second).
//!
//! Invariants: a v3 request with `rt_sid` or `rt_key` in its query is refused (400) before
//! anything else; no credential, session key or stream id is logged (at any level) or put in
//! a response; a v2 request is served only while the authenticator is open (it cannot carry a
//! credential).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use realtime_client::core::wire::{close_code, Close, Credential, Frame, HelloAuth, Retry, SessionFrame, PROTOCOL_V3};

use crate::client_ip::ClientIp;
use crate::metrics::LimitKind;
use crate::params::{ParamError, Params};
use crate::session::{close, lock, pattern_allows, Attachment, Connect, ConnectRequest, Outgoing, Owner, ResumeRequest, Session, Stop, TransportKind};
use crate::writer::FrameSink;
use crate::AppState;

pub mod auth;
pub mod poll;
pub mod sse;
pub mod ws;

use auth::{millis_until, Principal, Refusal};

/// What the server keeps for v3 beside the sessions: event streams waiting for their bind.
#[derive(Default)]
pub struct V3State {
    pub streams: sse::PendingStreams,
    /// WebSockets that have not sent their first message yet ([`ws`]).
    pub first_message_waits: Arc<crate::limits::Waits>,
}

/// Whether the query asks for protocol v3 (`rt_v=3`).
pub fn is_v3(params: &Params) -> bool {
    params.version.as_deref() == Some("3")
}

/// The connect request of a v3 query (room, conn, since), refusing session credentials in it.
pub fn base_request(params: &Params) -> Result<ConnectRequest, ParamError> {
    if params.session_id.is_some() || params.key.is_some() {
        return Err(ParamError::Bad("protocol v3 takes no rt_sid or rt_key in the query: send them in a session frame"));
    }
    Ok(ConnectRequest { room: params.room()?, conn: params.conn()?, resume: None, since: params.since()? })
}

/// The body limit an opening decodes with: room for the largest credential even on a server
/// whose message limit is smaller.
pub fn opening_body_limit(config: &crate::Config) -> usize {
    config.max_message_bytes.max(realtime_client::core::wire::MAX_CREDENTIAL_BYTES)
}

/// A connection's opening: its `session` frame and, when one followed it, its credential.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    pub session: SessionFrame,
    pub credential: Option<Credential>,
}

/// Splits the opening (`session`, then an optional `token`) off `frames`; the rest follows.
pub fn opening(frames: Vec<Frame>) -> Result<(Opening, Vec<Frame>), &'static str> {
    let mut frames = frames.into_iter();
    let Some(Frame::Session(session)) = frames.next() else {
        return Err("the first frame must be session");
    };
    let mut rest: Vec<Frame> = frames.collect();
    let credential = match rest.first() {
        Some(Frame::Token(_)) => match rest.remove(0) {
            Frame::Token(credential) => Some(credential),
            _ => None,
        },
        _ => None,
    };
    Ok((Opening { session, credential }, rest))
}

/// A session's v3 state: None until a v3 connect binds it (a v2 session stays None).
#[derive(Debug, Default)]
pub struct SessionAuth {
    binding: Mutex<Option<Binding>>,
}

#[derive(Debug, Clone)]
struct Binding {
    /// The principal's subject (None: an open server).
    subject: Option<Arc<str>>,
    /// The claims of the latest credential (its channel patterns, for the permission checks).
    principal: Option<Principal>,
    expires_at: Option<SystemTime>,
}

impl SessionAuth {
    /// Whether a v3 connect created this session.
    pub fn is_v3(&self) -> bool {
        lock(&self.binding).is_some()
    }

    /// The verified subject its clients publish as (None: a v2 session, or an open server).
    pub fn subject(&self) -> Option<Arc<str>> {
        lock(&self.binding).as_ref().and_then(|binding| binding.subject.clone())
    }

    /// The claims of the session's latest credential.
    pub fn principal(&self) -> Option<Principal> {
        lock(&self.binding).as_ref().and_then(|binding| binding.principal.clone())
    }

    /// Whether `principal` may resume or refresh this session: a v3 session of the same subject.
    pub fn belongs_to(&self, principal: Option<&Principal>) -> bool {
        match &*lock(&self.binding) {
            None => false,
            Some(binding) => binding.subject.as_deref() == principal.map(|principal| principal.subject.as_str()),
        }
    }

    /// Binds the session to `principal` (a fresh session), or takes its newer credential (a
    /// resume or refresh by the same principal: the caller checked [`Self::belongs_to`]).
    pub fn bind(&self, principal: Option<Principal>) {
        let subject = principal.as_ref().map(|principal| Arc::from(principal.subject.as_str()));
        let expires_at = principal.as_ref().and_then(|principal| principal.expires_at);
        *lock(&self.binding) = Some(Binding { subject, principal, expires_at });
    }

    /// Whether the credential's `channels` claim lets the session subscribe to `channel` (no
    /// claim, or no principal: yes; the server's own limits apply either way).
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.claim_allows(|principal| principal.channels.as_deref(), channel)
    }

    /// Whether the credential's `publish` claim lets its clients publish to `channel` (beside
    /// `--client-publish`, which applies either way).
    pub fn may_publish(&self, channel: &str) -> bool {
        self.claim_allows(|principal| principal.publish.as_deref(), channel)
    }

    fn claim_allows(&self, claim: impl Fn(&Principal) -> Option<&[String]>, channel: &str) -> bool {
        let binding = lock(&self.binding);
        let patterns = binding.as_ref().and_then(|binding| binding.principal.as_ref()).and_then(claim);
        patterns.is_none_or(|patterns| patterns.iter().any(|pattern| pattern_allows(pattern, channel)))
    }

    /// When the session's credential expires (None: never, or not bound).
    pub fn expires_at(&self) -> Option<SystemTime> {
        lock(&self.binding).as_ref().and_then(|binding| binding.expires_at)
    }

    /// Whether the session's credential has expired by `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        lock(&self.binding).as_ref().and_then(|binding| binding.expires_at).is_some_and(|at| at <= now)
    }
}

/// The outcome of a v3 connect.
pub enum Opened {
    /// Attached; `first` is the hello (`v=3`, with `exp` and `sub` when there is a principal).
    Attached { session: Arc<Session>, attachment: Arc<Attachment>, first: Frame },
    /// Refused in-protocol: the credential (4005, 4001), or a replaced connection (4004).
    Closed(Close),
    /// A session limit refused it (the trip not yet counted).
    Limit(LimitKind, &'static str),
}

/// The close a credential refusal is sent as: 4005 says come back with a new credential now.
pub fn refusal_close(refusal: Refusal) -> Close {
    let retry = if refusal.code == auth::CREDENTIAL_REFUSED { Retry::AfterMs(0) } else { Retry::Never };
    close(refusal.code, refusal.reason, retry)
}

/// The close a limit refusal is sent as on a stream, the trip counted.
pub fn limit_close(state: &AppState, kind: LimitKind, reason: &str) -> Close {
    state.metrics.trip(kind);
    close(close_code::LIMIT_EXCEEDED, reason, state.config.limits.retry())
}

/// Verifies the opening's credential, then connects or resumes as v2 does from `rt_sid`,
/// `rt_key` and `rt_last` (PROTOCOL §4), on `base`'s room, conn and since.
pub fn connect(state: &AppState, base: &ConnectRequest, opening: &Opening, kind: TransportKind, ip: ClientIp) -> Opened {
    // Counted before the signature check: over the IP's rate a connect costs one lookup.
    if !state.config.authenticator.is_open() {
        if let Err(kind) = state.ip_limits.admit_credential(ip.0) {
            return Opened::Limit(kind, "too many credential checks from this address");
        }
    }
    let principal = match state.config.authenticator.verify(opening.credential.as_ref().map(|credential| credential.0.as_str())) {
        Ok(principal) => principal,
        Err(refusal) => {
            tracing::info!(transport = kind.as_str(), code = refusal.code, reason = refusal.reason, "credential refused");
            return Opened::Closed(refusal_close(refusal));
        }
    };
    let mut request = base.clone();
    request.resume = opening.session.resume.as_ref().map(|resume| ResumeRequest {
        session_id: resume.session_id.clone(),
        key: resume.secret.clone(),
        last: resume.last,
    });
    // A resume by another principal is a failed resume (PROTOCOL §9.4, §8.11 decision 10): a
    // fresh session, bound to this principal before it joins its room; the old one ends with
    // 4004 once the fresh one is certain, as any replaced session does.
    let (session, attachment, mut hello) = match state.connect_as(&request, kind, ip, Owner::V3(principal.as_ref())) {
        Connect::Attached { session, attachment, hello } => (session, attachment, hello),
        Connect::Retired => return Opened::Closed(close(close_code::REPLACED, "replaced", Retry::Never)),
        Connect::Full => return Opened::Limit(LimitKind::sessions_total, "too many sessions"),
        Connect::Refused(kind) => return Opened::Limit(kind, "too many sessions from this address"),
    };
    hello.version = PROTOCOL_V3;
    let auth = HelloAuth {
        expires_in_ms: principal.as_ref().and_then(|principal| principal.expires_at).map(millis_until),
        subject: principal.as_ref().map(|principal| principal.subject.clone()),
    };
    // A fresh session is bound already; a resume takes the newer credential, whose claims may
    // be narrower than the ones its subscriptions were made under.
    session.auth.bind(principal);
    revoke_disallowed(state, &session);
    let first = if auth == HelloAuth::default() { Frame::Hello(hello) } else { Frame::AuthHello(hello, auth) };
    Opened::Attached { session, attachment, first }
}

/// Takes the in-band `token` frame out of a v3 session's batch (PROTOCOL §9.4): it must verify
/// and name the session's principal, and is answered with `authed`; one that does not is the
/// close (4005) the caller ends the connection with. A batch holds at most one `token` (more is
/// a protocol error, 4000, before any is verified); the caller has charged it to the session's
/// rate ([`tokens_in`]) before this runs. A session whose credential expired without a refresh
/// in this batch is refused the same way. A v2 session's batch is left as it is (a `token`
/// there is a protocol error, as any unexpected frame).
pub fn take_tokens(state: &AppState, session: &Session, frames: &mut Vec<Frame>) -> Result<(), Close> {
    if !session.auth.is_v3() {
        return Ok(());
    }
    if let Some(close) = too_many_tokens(session, frames) {
        return Err(close);
    }
    let mut outcome = Ok(());
    frames.retain(|frame| {
        let Frame::Token(credential) = frame else { return true };
        if outcome.is_ok() {
            outcome = refresh(state, session, credential);
        }
        false
    });
    outcome?;
    if session.auth.expired(SystemTime::now()) {
        return Err(refusal_close(Refusal::credential("token expired")));
    }
    Ok(())
}

/// The close (4000) of a v3 batch with more than one `token`: checked when the batch is
/// decoded, before the rate is charged or any credential verified.
pub fn too_many_tokens(session: &Session, frames: &[Frame]) -> Option<Close> {
    (session.auth.is_v3() && tokens_in(frames) > 1).then(|| close(close_code::PROTOCOL_ERROR, "one token per batch", Retry::Default))
}

/// How many `token` frames `frames` holds (each is charged to the rate as a message).
pub fn tokens_in(frames: &[Frame]) -> usize {
    frames.iter().filter(|frame| matches!(frame, Frame::Token(_))).count()
}

fn refresh(state: &AppState, session: &Session, credential: &Credential) -> Result<(), Close> {
    let principal = state.config.authenticator.verify(Some(&credential.0)).map_err(refusal_close)?;
    if !session.auth.belongs_to(principal.as_ref()) {
        tracing::info!(session = %session.tag(), "refresh names another principal");
        return Err(refusal_close(Refusal::credential("the credential names another principal")));
    }
    // A refresh only moves forward: an older, still valid credential (perhaps with broader
    // claims) cannot replace the one the session holds.
    let new_expiry = principal.as_ref().and_then(|principal| principal.expires_at);
    if let (Some(current), Some(new_expiry)) = (session.auth.expires_at(), new_expiry) {
        if new_expiry < current {
            tracing::info!(session = %session.tag(), "refresh with a credential older than the session's");
            return Err(refusal_close(Refusal::credential("the credential expires before the session's")));
        }
    }
    let expires_in_ms = principal.as_ref().and_then(|principal| principal.expires_at).map(millis_until);
    session.auth.bind(principal);
    session.push_control(Frame::Authed { expires_in_ms });
    revoke_disallowed(state, session);
    Ok(())
}

/// Ends (`unsubscribed code=4013`) every subscription of `session` that its credential's
/// `channels` claim does not allow (after a bind or a refresh, PROTOCOL §9.4).
fn revoke_disallowed(state: &AppState, session: &Session) {
    for channel in session.channel_names() {
        if !session.auth.may_subscribe(&channel) {
            state.registry.channels().unsubscribe(&channel, &session.id);
            session.forget_channel(&channel);
            session.push_unsubscribed(&channel, None, Some(crate::channel::Refusal::NotAllowed), &state.config);
        }
    }
}

/// Closes (4005) the connection of every session whose credential expired without a refresh;
/// the session stays resumable (PROTOCOL §9.4). Run by the sweeper once a second.
pub fn expire_credentials(state: &AppState) {
    let now = SystemTime::now();
    for session in state.registry.all() {
        if !session.auth.expired(now) {
            continue;
        }
        if let Some(attachment) = session.current_attachment().filter(|attachment| !attachment.stop_requested()) {
            tracing::info!(session = %session.tag(), "credential expired");
            session.stop_transport(&attachment, Stop::Close(expired_close()));
        }
    }
}

/// `close code=4005 retry=0` "token expired".
pub fn expired_close() -> Close {
    refusal_close(Refusal::credential("token expired"))
}

/// A probe's sink that says `v=3` in its hello (a probe is otherwise the same in v3).
pub struct V3Hello<S>(pub S);

impl<S: FrameSink + Sync> FrameSink for V3Hello<S> {
    async fn send_outgoing(&mut self, frames: &[Outgoing]) -> bool {
        let frames: Vec<Outgoing> = frames
            .iter()
            .map(|frame| match frame {
                Outgoing::Frame(Frame::Hello(hello)) => {
                    let mut hello = hello.clone();
                    hello.version = PROTOCOL_V3;
                    Outgoing::Frame(Frame::Hello(hello))
                }
                other => other.clone(),
            })
            .collect();
        self.0.send_outgoing(&frames).await
    }

    async fn keep_alive(&mut self) -> bool {
        self.0.keep_alive().await
    }

    async fn gone(&self) {
        self.0.gone().await
    }

    async fn finish(&mut self, close: Option<&Close>) {
        self.0.finish(close).await
    }
}
