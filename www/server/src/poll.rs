//! Long polling: `GET /realtime/poll` (downstream) and `POST /realtime/send` (upstream for
//! polling and SSE). A poll whose `rt_conn` is not the session's attached poll connection
//! attaches (hello, at once); a poll on the attached connection acks through `rt_last`, then is
//! answered with everything after `rt_last`, or held until there is something or `hold`.
//!
//! A held poll carries no pings, and the client declares a transport dead after 1.5 × the
//! heartbeat without traffic, so the hold is `min(poll_hold, heartbeat)` (`poll_hold_for`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use realtime_client::core::wire::{close_code, Carrier, Frame, Retry};
use tokio::time::{sleep_until, Instant};

use crate::client_ip::ClientIp;
use crate::limits::{decode_batch, BatchError, Throttle};
use crate::metrics::LimitKind;
use crate::params::{ParamError, Params};
use crate::probe;
use crate::session::{close, close_for_wire_error, Connect, Outgoing, Pull, Session, Stop, TransportKind};
use crate::writer::going_away;
use crate::{busy, refusal, text_error, AppState};

/// MIME type of a poll response body: a batch of frames, binary carrier.
pub const FRAMES_CONTENT_TYPE: &str = "application/x-realtime-frames";

pub async fn handle_poll(State(state): State<Arc<AppState>>, Extension(ip): Extension<ClientIp>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref());
    let (request, probe) = match params.connect_request().and_then(|request| Ok((request, params.is_probe()?))) {
        Ok(parsed) => parsed,
        // Answered in-protocol, as on a WebSocket: a bare 400 would look like a failed rung to
        // the client, which would then retry for ever. The close frame tells it to stop.
        Err(ParamError::UnsupportedVersion) => {
            let close = close(close_code::UNSUPPORTED_VERSION, ParamError::UnsupportedVersion.as_str(), Retry::Never);
            return frames_response(&[Frame::Close(close)]);
        }
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    if probe {
        // One response holding the hello; no session, nothing held.
        let Some(_guard) = state.probe_guard() else {
            return text_error(StatusCode::SERVICE_UNAVAILABLE, "too many probes");
        };
        return frames_response(&[Frame::Hello(probe::hello(&state.config))]);
    }
    if let Some(resume) = &request.resume {
        if let Some(session) = state.registry.get(&resume.session_id) {
            if session.key_matches(&resume.key) {
                if let Some(attachment) = session.poll_attachment(request.conn) {
                    // A held poll counts as a stream of its IP.
                    let Some(slot) = state.stream_slot(ip) else {
                        return busy(&state, StatusCode::SERVICE_UNAVAILABLE, "too many streams from this address");
                    };
                    return continue_poll(state, session, attachment, resume.last, slot).await;
                }
            }
        }
    }
    match state.connect(&request, TransportKind::Poll, ip) {
        Connect::Attached { session, attachment, hello } => {
            tracing::info!(session = %session.tag(), room = ?session.room, resumed = hello.resumed, transport = "poll", "attached");
            let mut frames = vec![Outgoing::Frame(Frame::Hello(hello))];
            if let Pull::Frames(replay) = session.pull_shared(&attachment, None) {
                frames.extend(replay);
            }
            outgoing_response(&frames)
        }
        Connect::Retired => frames_response(&[Frame::Close(close(close_code::REPLACED, "replaced", Retry::Never))]),
        Connect::Full => refusal(&state, LimitKind::sessions_total, StatusCode::SERVICE_UNAVAILABLE, "too many sessions"),
        Connect::Refused(kind) => refusal(&state, kind, StatusCode::SERVICE_UNAVAILABLE, "too many sessions from this address"),
    }
}

/// Ends a held poll's claim on the session when the request finishes or is dropped.
struct PollGuard {
    session: Arc<Session>,
    generation: u64,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.session.end_poll(self.generation);
    }
}

pub(crate) async fn continue_poll(
    state: Arc<AppState>,
    session: Arc<Session>,
    attachment: Arc<crate::session::Attachment>,
    last: u64,
    _slot: crate::limits::StreamSlot,
) -> Response {
    let _live = state.live_guard();
    let mut changed = session.subscribe();
    let mut shutdown = state.shutdown_receiver();
    let generation = session.begin_poll(last);
    let _guard = PollGuard { session: session.clone(), generation };
    let deadline = Instant::now() + poll_hold_for(&state.config);
    loop {
        changed.mark_unchanged();
        if attachment.is_aborted() {
            return broken_response(); // Kicked (`POST /realtime/kick`).
        }
        match session.pull_shared(&attachment, Some(generation)) {
            Pull::Frames(frames) if !frames.is_empty() => return outgoing_response(&frames),
            Pull::Frames(_) => {}
            Pull::Stop(Stop::Silent) => return frames_response(&[]),
            Pull::Stop(Stop::Close(close)) => return frames_response(&[Frame::Close(close)]),
        }
        tokio::select! {
            result = changed.changed() => if result.is_err() { return frames_response(&[]) },
            _ = sleep_until(deadline) => return frames_response(&[]),
            _ = AppState::shutting_down(&mut shutdown) => return frames_response(&[Frame::Close(going_away())]),
        }
    }
}

/// Longest a poll is held with nothing to send: `poll_hold` (25 s), but never longer than the
/// heartbeat interval announced in hello, since the empty answer is the poll's heartbeat.
pub fn poll_hold_for(config: &crate::Config) -> std::time::Duration {
    config.poll_hold.min(config.heartbeat())
}

/// A response whose body fails, so the server aborts it mid-way (HTTP/1.1: the connection closes
/// before the last chunk; HTTP/2: the stream is reset) and the client's read fails like a network
/// error would. An empty answer would only look like the end of a hold.
fn broken_response() -> Response {
    let failure = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "transport kicked");
    let mut response = Response::new(Body::from_stream(futures_util::stream::once(async move { Err::<Bytes, _>(failure) })));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FRAMES_CONTENT_TYPE));
    response
}

pub(crate) fn frames_response(frames: &[Frame]) -> Response {
    let frames: Vec<Outgoing> = frames.iter().cloned().map(Outgoing::Frame).collect();
    outgoing_response(&frames)
}

/// A poll answer; its body is handed to the connection, whose writes have the edge's deadline.
pub(crate) fn outgoing_response(frames: &[Outgoing]) -> Response {
    let mut body = Vec::new();
    for frame in frames {
        frame.encode(Carrier::Binary, &mut body);
    }
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FRAMES_CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /realtime/send`: a batch of client frames (text carrier) for an SSE or poll session.
pub async fn handle_send(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    if let Err(error) = params.check_version() {
        return text_error(StatusCode::BAD_REQUEST, error.as_str());
    }
    let resume = match params.resume() {
        Ok(Some(resume)) => resume,
        Ok(None) => return text_error(StatusCode::BAD_REQUEST, "rt_sid and rt_key are required"),
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    let Some(session) = state.registry.get(&resume.session_id).filter(|session| !session.is_ended()) else {
        return text_error(StatusCode::NOT_FOUND, "unknown session");
    };
    if !session.key_matches(&resume.key) {
        return text_error(StatusCode::FORBIDDEN, "wrong session key");
    }
    send_batch(state, session, body, |_| Ok(())).await
}

/// Decodes and applies an upload's batch for `session` (whose key was checked); `before` sees
/// the decoded frames first (v3 takes its in-band tokens out there) and may answer instead.
pub(crate) async fn send_batch(
    state: Arc<AppState>,
    session: Arc<Session>,
    body: Bytes,
    before: impl FnOnce(&mut Vec<Frame>) -> Result<(), Response>,
) -> Response {
    // One send at a time per session (the client sends one POST at a time): a second one is
    // answered at once rather than parked with its body and its decoded copy.
    let Ok(serial) = session.upstream.clone().try_lock_owned() else {
        return busy(&state, StatusCode::TOO_MANY_REQUESTS, "a send of this session is already in progress");
    };
    let limits = &state.config.limits;
    let body_bytes = body.len();
    let mut frames = match decode_batch(&body, state.config.max_message_bytes, limits.max_frames_per_batch) {
        Ok(frames) => frames,
        Err(BatchError::Wire(error)) => {
            tracing::info!(session = %session.tag(), error = error.as_str(), "malformed upstream batch");
            let close = close_for_wire_error(error);
            let status = if close.code == close_code::LIMIT_EXCEEDED { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            session.end(Stop::Close(close));
            return text_error(status, error.as_str());
        }
        Err(error @ BatchError::TooManyFrames) => {
            state.metrics.trip(LimitKind::frames_per_batch);
            session.end(Stop::Close(close(close_code::LIMIT_EXCEEDED, error.as_str(), Retry::Default)));
            return text_error(StatusCode::PAYLOAD_TOO_LARGE, error.as_str());
        }
    };
    drop(body);
    if let Some(close) = crate::v3::too_many_tokens(&session, &frames) {
        tracing::info!(session = %session.tag(), "more than one token in a batch");
        if let Some(attachment) = session.current_attachment() {
            session.stop_transport(&attachment, Stop::Close(close.clone()));
        }
        return text_error(StatusCode::BAD_REQUEST, &close.reason);
    }
    // Over its rates the answer is delayed (bounded), then the batch is refused, not processed.
    // A `token` counts as a message: its signature check is paid for before `before` makes it.
    let messages = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).count();
    let charged = messages.saturating_add(crate::v3::tokens_in(&frames));
    match session.rates.admit(charged.max(1), messages > 0, body_bytes, limits.rate_slowdown, state.registry.budget(), limits.replay_budget_bytes).await {
        Throttle::Admitted => {}
        Throttle::Refused(LimitKind::replay_budget) => {
            return refusal(&state, LimitKind::replay_budget, StatusCode::SERVICE_UNAVAILABLE, "server busy");
        }
        Throttle::Refused(kind) => return refusal(&state, kind, StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded"),
    }
    if let Err(response) = before(&mut frames) {
        return response;
    }
    let outcome = state.apply_client_batch(session.clone(), frames, serial).await;
    if let Some(error) = outcome.error {
        tracing::info!(session = %session.tag(), reason = %error.reason, "protocol error");
        return text_error(StatusCode::BAD_REQUEST, &error.reason);
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
