//! Long polling and uploads in v3 (PROTOCOL §9.3). `POST /realtime/poll?rt_v=3` carries
//! `session [sid key last]` (and `token` on an attach) in its body; the rules of §3.3 apply with
//! `last` for `rt_last`. `POST /realtime/send?rt_v=3` starts its body with `session sid= key=`,
//! then the batch, in which `token` frames are in-band refreshes.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use realtime_client::core::wire::{self, close_code, Frame, Retry};

use super::{base_request, connect, expired_close, is_v3, opening, take_tokens, Opened};
use crate::client_ip::ClientIp;
use crate::limits::decode_batch;
use crate::params::{ParamError, Params};
use crate::poll::{continue_poll, frames_response, outgoing_response, send_batch};
use crate::session::{close, Outgoing, Pull, TransportKind};
use crate::{busy, probe, refusal, text_error, AppState};

/// Largest poll body: a `session` frame and a credential, with room to spare.
pub const POLL_BODY_BYTES: usize = 16 * 1024;

/// `GET /realtime/poll` (v2): served while no authentication is configured, else refused
/// in-protocol (a v2 poll cannot carry a credential).
pub async fn handle_get_poll(state: State<Arc<AppState>>, ip: Extension<ClientIp>, query: RawQuery) -> Response {
    if state.config.authenticator.is_open() {
        return crate::poll::handle_poll(state, ip, query).await;
    }
    let close = close(close_code::UNSUPPORTED_VERSION, ParamError::UnsupportedVersion.as_str(), Retry::Never);
    frames_response(&[Frame::Close(close)])
}

/// `POST /realtime/poll?rt_v=3`.
pub async fn handle_poll(State(state): State<Arc<AppState>>, Extension(ip): Extension<ClientIp>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    if !is_v3(&params) {
        // A v2 poll is a GET; answered in-protocol, as any unsupported version.
        let close = close(close_code::UNSUPPORTED_VERSION, ParamError::UnsupportedVersion.as_str(), Retry::Never);
        return frames_response(&[Frame::Close(close)]);
    }
    let (base, probe) = match base_request(&params).and_then(|base| Ok((base, params.is_probe()?))) {
        Ok(parsed) => parsed,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    if probe {
        let Some(_guard) = state.probe_guard() else {
            return text_error(StatusCode::SERVICE_UNAVAILABLE, "too many probes");
        };
        let mut hello = probe::hello(&state.config);
        hello.version = wire::PROTOCOL_V3;
        return frames_response(&[Frame::Hello(hello)]);
    }
    if body.len() > POLL_BODY_BYTES {
        return text_error(StatusCode::PAYLOAD_TOO_LARGE, "poll body too large");
    }
    // A body that is not `session [token]` is a protocol error, answered in-protocol (§9.2).
    let opening = match decode_batch(&body, super::opening_body_limit(&state.config), 4).map_err(|error| error.as_str()).and_then(opening) {
        Ok((opening, rest)) if rest.is_empty() => opening,
        Ok(_) => return frames_response(&[Frame::Close(close(close_code::PROTOCOL_ERROR, "a poll holds session and token only", Retry::Default))]),
        Err(reason) => return frames_response(&[Frame::Close(close(close_code::PROTOCOL_ERROR, reason, Retry::Default))]),
    };
    if let Some(resume) = &opening.session.resume {
        if let Some(session) = state.registry.get(&resume.session_id) {
            if session.key_matches(&resume.secret) {
                if let Some(attachment) = session.poll_attachment(base.conn) {
                    // A continue: a token here is a refresh (counted against the IP's credential
                    // checks before it is verified); an expired credential ends the poll.
                    if opening.credential.is_some() {
                        if let Err(kind) = state.ip_limits.admit_credential(ip.0) {
                            return refusal(&state, kind, StatusCode::SERVICE_UNAVAILABLE, "too many credential checks from this address");
                        }
                    }
                    let mut frames: Vec<Frame> = opening.credential.iter().cloned().map(Frame::Token).collect();
                    if let Err(close) = take_tokens(&state, &session, &mut frames) {
                        return frames_response(&[Frame::Close(close)]);
                    }
                    if session.auth.expired(SystemTime::now()) {
                        return frames_response(&[Frame::Close(expired_close())]);
                    }
                    let Some(slot) = state.stream_slot(ip) else {
                        return busy(&state, StatusCode::SERVICE_UNAVAILABLE, "too many streams from this address");
                    };
                    return continue_poll(state, session, attachment, resume.last, slot).await;
                }
            }
        }
    }
    match connect(&state, &base, &opening, TransportKind::Poll, ip) {
        Opened::Attached { session, attachment, first } => {
            tracing::info!(session = %session.tag(), room = ?session.room, transport = "poll", v = 3, "attached");
            let mut frames = vec![Outgoing::Frame(first)];
            if let Pull::Frames(replay) = session.pull_shared(&attachment, None) {
                frames.extend(replay);
            }
            outgoing_response(&frames)
        }
        Opened::Closed(close) => frames_response(&[Frame::Close(close)]),
        Opened::Limit(kind, reason) => refusal(&state, kind, StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// `POST /realtime/send`: v3 here, other versions to [`crate::poll::handle_send`].
pub async fn handle_send(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    if !is_v3(&params) {
        if state.config.authenticator.is_open() {
            return crate::poll::handle_send(State(state), RawQuery(query), body).await;
        }
        return text_error(StatusCode::BAD_REQUEST, ParamError::UnsupportedVersion.as_str());
    }
    if let Err(error) = base_request(&params) {
        return text_error(StatusCode::BAD_REQUEST, error.as_str());
    }
    let resume = match wire::decode(&body, state.config.max_message_bytes) {
        Ok((Frame::Session(session), used)) => match session.resume {
            Some(resume) => (resume, used),
            None => return text_error(StatusCode::BAD_REQUEST, "an upload starts with session sid= key="),
        },
        Ok(_) => return text_error(StatusCode::BAD_REQUEST, "an upload starts with session sid= key="),
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    let (resume, used) = resume;
    let Some(session) = state.registry.get(&resume.session_id).filter(|session| !session.is_ended()) else {
        return text_error(StatusCode::NOT_FOUND, "unknown session");
    };
    if !session.key_matches(&resume.secret) {
        return text_error(StatusCode::FORBIDDEN, "wrong session key");
    }
    let batch = body.slice(used.min(body.len())..);
    drop(body);
    let refused = session.clone();
    let tokens_state = state.clone();
    send_batch(state, session, batch, move |frames| {
        take_tokens(&tokens_state, &refused, frames).map_err(|close| {
            // The refusal goes to the session's connection; the batch is not applied (its
            // messages are resent after the client reconnects with a new credential).
            if let Some(attachment) = refused.current_attachment() {
                refused.stop_transport(&attachment, crate::session::Stop::Close(close.clone()));
            }
            text_error(StatusCode::UNAUTHORIZED, &close.reason)
        })
    })
    .await
}
