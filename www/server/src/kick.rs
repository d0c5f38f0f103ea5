//! `POST /realtime/kick?sid=<session id>`: breaks off a session's current transport as a failed
//! network would, for the demo's "Drop connection" button and for tests. Enabled only by
//! `--allow-kick` (TEST AND DEMO ONLY, off by default), and like every admin endpoint it needs the
//! admin token ([`crate::admin`]): without both, anyone who knows a session id could disrupt
//! that session. The token is checked before this handler runs.
//!
//! The transport ends without a goodbye: a WebSocket's TCP connection is dropped without a close
//! frame, an SSE stream just ends, a held poll (or the next poll of that connection) is aborted
//! mid-response. The session stays resumable, so the client notices the loss, reconnects and
//! resumes (`resumed=1`) with every message published meanwhile.
//!
//! With `&reset=1` the session also ends, as if its resume window had passed: the client's
//! resume is refused and it gets a fresh session (a `reset`), which is how tests force the
//! recovery of channels from their history.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::{text_error, AppState};

pub async fn handle(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    if !state.config.allow_kick {
        return text_error(StatusCode::FORBIDDEN, "kick is disabled (start the server with --allow-kick)");
    }
    let query = query.unwrap_or_default();
    let Some(session_id) = form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "sid").map(|(_, value)| value)
    else {
        return text_error(StatusCode::BAD_REQUEST, "missing sid parameter");
    };
    let Some(session) = state.registry.get(&session_id).filter(|session| !session.is_ended()) else {
        return text_error(StatusCode::NOT_FOUND, "unknown session");
    };
    let reset = form_urlencoded::parse(query.as_bytes()).any(|(name, value)| name == "reset" && value == "1");
    let kicked = session.kick();
    if reset {
        session.end(crate::session::Stop::Silent);
    }
    match kicked {
        Some(kind) => {
            // Session ids only at debug level: with the resume secret they name a session, and
            // logs travel further than the server.
            tracing::debug!(session = %session.tag(), transport = kind.as_str(), "kicked");
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        None => text_error(StatusCode::CONFLICT, "the session has no transport attached"),
    }
}
