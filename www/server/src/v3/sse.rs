//! SSE in v3 (PROTOCOL §9.3): `GET /realtime/sse?rt_v=3` opens the stream with
//! `pending stream=<id>` (128 random bits); `POST /realtime/bind` with `session stream=<id>
//! [sid key last]` and an optional `token` binds it once: `204`, then the hello and the rest go
//! on the stream. An unbound stream ends after 10 s with `close code=4005 retry=0`; meanwhile it
//! holds one of its IP's stream slots. The stream id is no credential (it lets no one read the
//! stream), but it is not logged either.
//!
//! Invariant: a pending stream is in [`PendingStreams`] until exactly one of its bind or its
//! timeout removes it (under the map's lock), so a stream binds at most once and a racing second
//! bind gets 404.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use realtime_client::core::wire::{close_code, Close, Frame, Retry};
use tokio::sync::{mpsc, oneshot};

use super::{base_request, connect, is_v3, limit_close, opening, Opened, V3Hello};
use crate::client_ip::ClientIp;
use crate::limits::{decode_batch, ip_key};
use crate::params::Params;
use crate::session::{close, lock, random_token, Attachment, ConnectRequest, Session, TransportKind};
use crate::sse::{channel_body, encode_event, sse_response, stream_response, SseSink, CHANNEL_CHUNKS};
use crate::writer::{self, going_away, FrameSink};
use crate::metrics::LimitKind;
use crate::{busy, probe, refusal, text_error, AppState};

/// Longest an event stream waits for its bind.
pub const BIND_WAIT: Duration = Duration::from_secs(10);
/// Largest bind body: a `session` frame and a credential, with room to spare.
pub const BIND_BODY_BYTES: usize = 16 * 1024;

/// Event streams waiting for their bind, by stream id, and how many each IP key has.
#[derive(Default)]
pub struct PendingStreams {
    streams: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    by_id: HashMap<String, PendingStream>,
    per_ip: HashMap<IpAddr, usize>,
}

impl PendingStreams {
    /// Inserts the stream unless its IP has `per_ip` waiting or all have `total`: the check and
    /// the insert are one step under the map's lock.
    fn insert(&self, id: String, stream: PendingStream, per_ip: usize, total: usize) -> Result<(), LimitKind> {
        let mut pending = lock(&self.streams);
        let key = ip_key(stream.ip.0);
        let of_ip = pending.per_ip.get(&key).copied().unwrap_or(0);
        if pending.by_id.len() >= total {
            return Err(LimitKind::sessions_total);
        }
        if of_ip >= per_ip {
            return Err(LimitKind::pending_streams_per_ip);
        }
        pending.per_ip.insert(key, of_ip + 1);
        pending.by_id.insert(id, stream);
        Ok(())
    }

    fn take(&self, id: &str) -> Option<PendingStream> {
        let mut pending = lock(&self.streams);
        let stream = pending.by_id.remove(id)?;
        let key = ip_key(stream.ip.0);
        if let Some(count) = pending.per_ip.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                pending.per_ip.remove(&key);
            }
        }
        Some(stream)
    }

    /// Streams waiting now.
    pub fn len(&self) -> usize {
        lock(&self.streams).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct PendingStream {
    /// The room, conn and since of the stream's own query.
    base: ConnectRequest,
    ip: ClientIp,
    bound: oneshot::Sender<Bound>,
}

/// What a bind hands its stream.
enum Bound {
    Attached { session: Arc<Session>, attachment: Arc<Attachment>, first: Frame },
    Closed(Close),
}

/// `GET /realtime/sse`: v3 here, other versions to [`crate::sse::handle`].
pub async fn handle(State(state): State<Arc<AppState>>, Extension(ip): Extension<ClientIp>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref());
    if !is_v3(&params) {
        if state.config.authenticator.is_open() {
            return crate::sse::handle(State(state), Extension(ip), RawQuery(query)).await;
        }
        let close = close(close_code::UNSUPPORTED_VERSION, "unsupported protocol version", Retry::Never);
        return stream_response(Bytes::from(encode_event(&Frame::Close(close))));
    }
    let (base, probe) = match base_request(&params).and_then(|base| Ok((base, params.is_probe()?))) {
        Ok(parsed) => parsed,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    if probe {
        let Some(guard) = state.probe_guard() else {
            return text_error(StatusCode::SERVICE_UNAVAILABLE, "too many probes");
        };
        let (sender, receiver) = mpsc::channel::<Bytes>(16);
        let watcher = sender.clone();
        let keep_alive = Some(state.config.sse_keepalive);
        tokio::spawn(async move {
            let gone = async move { watcher.closed().await };
            probe::hold(state, guard, V3Hello(SseSink { sender }), gone, keep_alive, probe::AtDeadline::End).await;
        });
        return sse_response(channel_body(receiver));
    }
    let Some(stream_slot) = state.stream_slot(ip) else {
        return busy(&state, StatusCode::SERVICE_UNAVAILABLE, "too many streams from this address");
    };
    // Unbound streams hold no session: they are capped per IP, and in total at the session cap.
    let id = random_token();
    let (bound_sender, mut bound) = oneshot::channel();
    let per_ip = state.config.limits.max_pending_streams_per_ip;
    if let Err(kind) = state.v3.streams.insert(id.clone(), PendingStream { base, ip, bound: bound_sender }, per_ip, state.config.max_sessions) {
        return refusal(&state, kind, StatusCode::SERVICE_UNAVAILABLE, "too many streams waiting for their bind");
    }
    let (sender, receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let live = state.live_guard();
    tokio::spawn(async move {
        let _held = (live, stream_slot);
        let mut sink = SseSink { sender };
        let mut shutdown = state.shutdown_receiver();
        // Whoever removes the entry owns the stream's fate: when the stream gives up (timeout,
        // shutdown, gone) but a bind took the entry first, the bind's outcome is on its way (a
        // bind answers at once), so that is what the stream serves.
        let waited = if !sink.send_frames(&[Frame::Pending { stream: id.clone() }]).await {
            Err(None)
        } else {
            tokio::select! {
                // The bind took the entry and sent its outcome (or dropped it: nothing to do).
                outcome = &mut bound => Ok(outcome.ok()),
                _ = tokio::time::sleep(BIND_WAIT) => Err(Some(close(super::auth::CREDENTIAL_REFUSED, "stream not bound", Retry::AfterMs(0)))),
                _ = sink.gone() => Err(None),
                _ = AppState::shutting_down(&mut shutdown) => Err(Some(going_away())),
            }
        };
        let outcome = match waited {
            Ok(outcome) => outcome,
            Err(give_up) if state.v3.streams.take(&id).is_some() => give_up.map(Bound::Closed),
            Err(_) => tokio::time::timeout(BIND_WAIT, bound).await.ok().and_then(Result::ok),
        };
        serve_bound(state, sink, outcome).await;
    });
    sse_response(channel_body(receiver))
}

/// Serves a stream once its bind (or its timeout) decided: the close, or the session.
async fn serve_bound(state: Arc<AppState>, mut sink: SseSink, outcome: Option<Bound>) {
    match outcome {
        None => {}
        Some(Bound::Closed(close)) => {
            sink.send_frames(&[Frame::Close(close)]).await;
        }
        Some(Bound::Attached { session, attachment, first }) => {
            tracing::info!(session = %session.tag(), room = ?session.room, transport = "sse", v = 3, "attached");
            let keep_alive = Some(state.config.sse_keepalive);
            // A stream gone meanwhile ends the writer at its first write; the session detaches.
            writer::run(state.clone(), session.clone(), attachment.clone(), sink, vec![first], keep_alive).await;
            session.detach(&attachment);
            tracing::info!(session = %session.tag(), transport = "sse", "detached");
        }
    }
}

/// `POST /realtime/bind?rt_v=3`: binds a pending event stream to a session.
pub async fn handle_bind(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    if !is_v3(&params) {
        return text_error(StatusCode::BAD_REQUEST, "bind is protocol v3: rt_v=3");
    }
    if let Err(error) = base_request(&params) {
        return text_error(StatusCode::BAD_REQUEST, error.as_str());
    }
    let frames = match decode_batch(&body, super::opening_body_limit(&state.config), 4) {
        Ok(frames) => frames,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    let opening = match opening(frames) {
        Ok((opening, rest)) if rest.is_empty() => opening,
        Ok(_) => return text_error(StatusCode::BAD_REQUEST, "a bind holds session and token only"),
        Err(reason) => return text_error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(stream) = opening.session.stream.as_deref() else {
        return text_error(StatusCode::BAD_REQUEST, "session frame without stream");
    };
    let Some(pending) = state.v3.streams.take(stream) else {
        return text_error(StatusCode::NOT_FOUND, "unknown or already bound stream");
    };
    let bound = match connect(&state, &pending.base, &opening, TransportKind::Sse, pending.ip) {
        Opened::Attached { session, attachment, first } => Bound::Attached { session, attachment, first },
        Opened::Closed(close) => Bound::Closed(close),
        Opened::Limit(kind, reason) => Bound::Closed(limit_close(&state, kind, reason)),
    };
    // The stream went away meanwhile: the session waits for a resume, as after any lost stream.
    if let Err(Bound::Attached { session, attachment, .. }) = pending.bound.send(bound) {
        session.detach(&attachment);
    }
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
