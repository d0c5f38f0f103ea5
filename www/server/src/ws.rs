//! WebSocket transport: `GET /realtime` with an upgrade. One send task (the shared writer loop)
//! and one receive task per socket; whichever ends first stops the other.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use realtime_client::core::wire::{close_code, Carrier, Close, Frame, Retry};

use crate::client_ip::ClientIp;
use crate::limits::{decode_batch, BatchError, Throttle};
use crate::metrics::LimitKind;
use crate::params::{ParamError, Params};
use crate::session::{close, close_for_wire_error, Attachment, Connect, ConnectRequest, Outgoing, Session, Stop, TransportKind};
use crate::writer::{self, FrameSink};
use crate::probe;
use crate::{refusal, text_error, AppState, ProbeGuard};

/// Most bytes of frames batched into one WebSocket message (a larger frame goes alone).
const BATCH_BYTES: usize = 256 * 1024;

pub async fn handle(
    State(state): State<Arc<AppState>>,
    Extension(ip): Extension<ClientIp>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let params = Params::parse(query.as_deref());
    let probe = match params.is_probe() {
        Ok(probe) => probe,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    // A version mismatch is answered in-protocol so the client learns not to retry.
    let request = match params.connect_request() {
        Ok(request) => Ok(request),
        Err(ParamError::UnsupportedVersion) => Err(()),
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    // A probe creates no session, so only the probe limit applies to it.
    let probe_guard = match (probe, &request) {
        (true, Ok(_)) => match state.probe_guard() {
            Some(guard) => Some(guard),
            None => return text_error(StatusCode::SERVICE_UNAVAILABLE, "too many probes"),
        },
        _ => None,
    };
    if !probe
        && request.as_ref().is_ok_and(|request| request.resume.is_none())
        && state.registry.len() >= state.config.max_sessions
    {
        return refusal(&state, LimitKind::sessions_total, StatusCode::SERVICE_UNAVAILABLE, "too many sessions");
    }
    let limit = state.config.max_batch_bytes();
    // A 4 KiB read buffer instead of tungstenite's 128 KiB, which it zero-fills on the first read:
    // 139 KB of resident memory per idle session became 10.9 KB (measured at 10,000 sessions).
    upgrade.read_buffer_size(4096).max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| async move {
        match (request, probe_guard) {
            (Ok(_), Some(guard)) => serve_probe(state, socket, guard).await,
            (Ok(request), None) => serve(state, socket, request, ip).await,
            (Err(()), _) => close_at_once(socket, close(close_code::UNSUPPORTED_VERSION, "unsupported protocol version", Retry::Never)).await,
        }
    })
}

/// Sends `close` as the connection's only frame, then the WebSocket close with its code.
pub(crate) async fn close_at_once(socket: WebSocket, close: Close) {
    let (sink, _) = socket.split();
    let mut sink = WsSink { sink };
    sink.send_frames(&[Frame::Close(close.clone())]).await;
    sink.finish(Some(&close)).await;
}

/// A probe: hello, then held until the client closes, `probe_hold` or shutdown. What the client
/// sends is read (to notice its close) and ignored.
async fn serve_probe(state: Arc<AppState>, socket: WebSocket, guard: ProbeGuard) {
    let (sink, mut stream) = socket.split();
    let gone = async move {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    probe::hold(state, guard, WsSink { sink }, gone, None, probe::AtDeadline::Close).await;
}

/// Refuses a connect in-protocol: close 4003 with the retry advice, so the client backs off
/// (a browser cannot read the status of a refused upgrade).
pub(crate) async fn refuse(state: &AppState, mut sink: WsSink, kind: LimitKind, reason: &str) {
    state.metrics.trip(kind);
    let close = close(close_code::LIMIT_EXCEEDED, reason, state.config.limits.retry());
    sink.send_frames(&[Frame::Close(close.clone())]).await;
    sink.finish(Some(&close)).await;
}

async fn serve(state: Arc<AppState>, socket: WebSocket, request: ConnectRequest, ip: ClientIp) {
    let _live = state.live_guard();
    let (sink, stream) = socket.split();
    let mut sink = WsSink { sink };
    let Some(_stream_slot) = state.stream_slot(ip) else {
        let close = close(close_code::LIMIT_EXCEEDED, "too many streams from this address", state.config.limits.retry());
        sink.send_frames(&[Frame::Close(close.clone())]).await;
        return sink.finish(Some(&close)).await;
    };
    let (session, attachment, hello) = match state.connect(&request, TransportKind::WebSocket, ip) {
        Connect::Attached { session, attachment, hello } => (session, attachment, hello),
        Connect::Retired => {
            let close = close(close_code::REPLACED, "replaced", Retry::Never);
            sink.send_frames(&[Frame::Close(close.clone())]).await;
            return sink.finish(Some(&close)).await;
        }
        Connect::Full => return refuse(&state, sink, LimitKind::sessions_total, "too many sessions").await,
        Connect::Refused(kind) => return refuse(&state, sink, kind, "too many sessions from this address").await,
    };
    tracing::info!(session = %session.tag(), room = ?session.room, resumed = hello.resumed, transport = "websocket", "attached");
    let first = vec![Frame::Hello(hello)];
    let mut send_task = tokio::spawn(writer::run(state.clone(), session.clone(), attachment.clone(), sink, first, None));
    let mut receive_task = tokio::spawn(receive(state.clone(), session.clone(), attachment.clone(), stream, false));
    tokio::select! {
        _ = &mut send_task => receive_task.abort(),
        _ = &mut receive_task => {
            // The receiver told the attachment how to stop; let the writer finish a write in
            // progress and send that close, each within the write deadline.
            let _ = tokio::time::timeout(state.config.limits.stream_write_timeout.saturating_mul(2), &mut send_task).await;
            send_task.abort();
        }
    }
    session.detach(&attachment);
    tracing::info!(session = %session.tag(), transport = "websocket", "detached");
}

/// Reads client messages until the socket ends, an error, or `2 × hb` without traffic.
pub(crate) async fn receive(state: Arc<AppState>, session: Arc<Session>, attachment: Arc<Attachment>, mut stream: SplitStream<WebSocket>, v3: bool) {
    let idle_limit = state.config.heartbeat() * 2;
    let max = state.config.max_message_bytes;
    let limits = &state.config.limits;
    loop {
        let message = match tokio::time::timeout(idle_limit, stream.next()).await {
            Err(_) => {
                tracing::info!(session = %session.tag(), "websocket idle too long");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                if is_capacity_error(error) {
                    session.stop_transport(&attachment, Stop::Close(close(close_code::LIMIT_EXCEEDED, "message too large", Retry::Default)));
                    return;
                }
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        let bytes = match message {
            Message::Text(text) => text.as_str().as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        state.http_versions.record_websocket_message();
        let mut frames = match decode_batch(&bytes, max, limits.max_frames_per_batch) {
            Ok(frames) => frames,
            Err(BatchError::Wire(error)) => {
                tracing::info!(session = %session.tag(), error = error.as_str(), "malformed frame");
                session.end(Stop::Close(close_for_wire_error(error)));
                return;
            }
            Err(error @ BatchError::TooManyFrames) => {
                state.metrics.trip(LimitKind::frames_per_batch);
                session.end(Stop::Close(close(close_code::LIMIT_EXCEEDED, error.as_str(), Retry::Default)));
                return;
            }
        };
        if let Some(close) = crate::v3::too_many_tokens(&session, &frames) {
            tracing::info!(session = %session.tag(), "more than one token in a batch");
            session.stop_transport(&attachment, Stop::Close(close));
            return;
        }
        // Over its rates the session's next message is read later (bounded), then refused. A
        // `token` counts as a message: its signature check is paid for before it is made.
        let messages = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).count();
        let charged = messages.saturating_add(crate::v3::tokens_in(&frames));
        match session.rates.admit(charged.max(1), messages > 0, bytes.len(), limits.rate_slowdown, state.registry.budget(), limits.replay_budget_bytes).await {
            Throttle::Admitted => {}
            Throttle::Refused(kind) => {
                state.metrics.trip(kind);
                let reason = if kind == LimitKind::replay_budget { "server busy" } else { "rate limit exceeded" };
                let close = close(close_code::LIMIT_EXCEEDED, reason, limits.retry());
                session.stop_transport(&attachment, Stop::Close(close));
                return;
            }
        }
        drop(bytes);
        let serial = session.upstream.clone().lock_owned().await;
        // v3: in-band credential refreshes (PROTOCOL §9.4) are handled here, not by the session,
        // under the upstream lock (a refresh and a batch's subscribes do not interleave).
        if v3 {
            if let Err(close) = crate::v3::take_tokens(&state, &session, &mut frames) {
                session.stop_transport(&attachment, Stop::Close(close));
                return;
            }
        }
        let outcome = state.apply_client_batch(session.clone(), frames, serial).await;
        if let Some(error) = outcome.error {
            tracing::info!(session = %session.tag(), reason = %error.reason, "protocol error");
            return;
        }
        if outcome.client_closed {
            tracing::info!(session = %session.tag(), "client closed the session");
            return;
        }
    }
    session.stop_transport(&attachment, Stop::Silent);
}

/// Whether a read failed because a message or frame was over the configured size.
pub(crate) fn is_capacity_error(error: axum::Error) -> bool {
    // axum wraps the tungstenite error it is built on; `Cargo.toml` pins the same version, so the
    // downcast works (`oversized_websocket_message_gets_limit_close` checks it still does).
    matches!(error.into_inner().downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)))
}

pub(crate) struct WsSink {
    pub(crate) sink: SplitSink<WebSocket, Message>,
}

impl FrameSink for WsSink {
    async fn send_outgoing(&mut self, frames: &[Outgoing]) -> bool {
        let mut start = 0;
        while start < frames.len() {
            let mut bytes = Vec::new();
            let mut binary = false;
            let mut end = start;
            while end < frames.len() && (end == start || bytes.len() < BATCH_BYTES) {
                let Some(frame) = frames.get(end) else { break };
                binary |= frame.is_binary();
                frame.encode(Carrier::Binary, &mut bytes);
                end += 1;
            }
            start = end;
            let message = if binary {
                Message::Binary(bytes.into())
            } else {
                match String::from_utf8(bytes) {
                    Ok(text) => Message::Text(text.into()),
                    Err(error) => Message::Binary(error.into_bytes().into()),
                }
            };
            if self.sink.send(message).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn finish(&mut self, close: Option<&Close>) {
        let frame = close.map(|close| {
            let mut reason = close.reason.clone();
            while reason.len() > 123 {
                reason.pop();
            }
            // 1000-1003 and 3000-4999 may go in a WebSocket close frame; others become 1000.
            let code = if close.code == 1000 || close.code == 1001 || (3000..5000).contains(&close.code) { close.code } else { 1000 };
            CloseFrame { code, reason: Utf8Bytes::from(reason) }
        });
        let _ = self.sink.send(Message::Close(frame)).await;
        let _ = self.sink.close().await;
    }
}
