//! WebSocket in v3 (PROTOCOL §9.3): `GET /realtime?rt_v=3` upgrades at once; the client's first
//! message (at most 16 KiB, within 10 s, else the connection is dropped / closed 4003) is
//! `session` and an optional `token`; the hello answers it. From there on, as v2 (`crate::ws`),
//! with in-band `token` refreshes. Any other version goes to the v2 handler.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use realtime_client::core::wire::{close_code, Frame, Retry};

use super::{base_request, connect, is_v3, limit_close, opening, Opened, V3Hello};
use crate::client_ip::ClientIp;
use crate::limits::{decode_batch, BatchError};
use crate::metrics::LimitKind;
use crate::params::Params;
use crate::session::{close, close_for_wire_error, ConnectRequest};
use crate::writer::{self, FrameSink};
use crate::ws::{close_at_once, WsSink};
use crate::{probe, text_error, AppState, ProbeGuard};

/// Longest wait for the client's first message.
pub const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(10);
/// Largest first message.
pub const FIRST_MESSAGE_BYTES: usize = 16 * 1024;

/// `GET /realtime`: v3 here, other versions to [`crate::ws::handle`].
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Extension(ip): Extension<ClientIp>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let params = Params::parse(query.as_deref());
    if !is_v3(&params) {
        if state.config.authenticator.is_open() {
            return crate::ws::handle(State(state), Extension(ip), RawQuery(query), upgrade).await;
        }
        // v2 carries no credential: with authentication configured it is an unsupported version.
        return upgrade.on_upgrade(|socket| close_at_once(socket, close(close_code::UNSUPPORTED_VERSION, "unsupported protocol version", Retry::Never)));
    }
    let probe = match params.is_probe() {
        Ok(probe) => probe,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    let base = match base_request(&params) {
        Ok(base) => base,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, error.as_str()),
    };
    if probe {
        let Some(guard) = state.probe_guard() else {
            return text_error(StatusCode::SERVICE_UNAVAILABLE, "too many probes");
        };
        return upgrade.read_buffer_size(4096).max_message_size(FIRST_MESSAGE_BYTES).on_upgrade(move |socket| serve_probe(state, socket, guard));
    }
    let limit = state.config.max_batch_bytes();
    upgrade.read_buffer_size(4096).max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| serve(state, socket, base, ip))
}

/// A v3 probe: as v2's (`crate::ws`), with `v=3` in its hello.
async fn serve_probe(state: Arc<AppState>, socket: WebSocket, guard: ProbeGuard) {
    let (sink, mut stream) = socket.split();
    let gone = async move {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    probe::hold(state, guard, V3Hello(WsSink { sink }), gone, None, probe::AtDeadline::Close).await;
}

/// The client's first message: its bytes, or how the connection ends without one.
enum First {
    Bytes(Vec<u8>),
    /// Gone, silent too long or closed: drop the connection.
    Drop,
    /// Over the size limit: close 4003.
    TooLarge,
}

async fn first_message(state: &AppState, stream: &mut SplitStream<WebSocket>) -> First {
    let read = async {
        loop {
            match stream.next().await {
                None | Some(Ok(Message::Close(_))) => return First::Drop,
                Some(Err(error)) => return if crate::ws::is_capacity_error(error) { First::TooLarge } else { First::Drop },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(text))) => return First::Bytes(text.as_str().as_bytes().to_vec()),
                Some(Ok(Message::Binary(bytes))) => return First::Bytes(bytes.to_vec()),
            }
        }
    };
    match tokio::time::timeout(FIRST_MESSAGE_WAIT, read).await {
        Err(_) => First::Drop,
        Ok(First::Bytes(bytes)) => {
            state.http_versions.record_websocket_message();
            if bytes.len() > FIRST_MESSAGE_BYTES { First::TooLarge } else { First::Bytes(bytes) }
        }
        Ok(other) => other,
    }
}

async fn serve(state: Arc<AppState>, socket: WebSocket, base: ConnectRequest, ip: ClientIp) {
    let _live = state.live_guard();
    let (sink, mut stream) = socket.split();
    let mut sink = WsSink { sink };
    // The connection counts against the IP's streams while it waits for its first message.
    let Some(_stream_slot) = state.stream_slot(ip) else {
        let close = close(close_code::LIMIT_EXCEEDED, "too many streams from this address", state.config.limits.retry());
        sink.send_frames(&[Frame::Close(close.clone())]).await;
        return sink.finish(Some(&close)).await;
    };
    // Until its first message the connection may buffer up to the batch limit (axum's
    // WebSocket does not let the limit be raised after a small first one): few may wait at once.
    let limits = &state.config.limits;
    let waiting = state.v3.first_message_waits.admit(ip.0, limits.max_first_message_waits_per_ip, limits.max_first_message_waits, LimitKind::first_message_waits);
    let Ok(waiting) = waiting else {
        let close = limit_close(&state, LimitKind::first_message_waits, "too many connections waiting for their first message");
        sink.send_frames(&[Frame::Close(close.clone())]).await;
        return sink.finish(Some(&close)).await;
    };
    let first = first_message(&state, &mut stream).await;
    drop(waiting);
    let bytes = match first {
        First::Bytes(bytes) => bytes,
        First::Drop => {
            tracing::info!(transport = "websocket", "v3: no first message");
            return;
        }
        First::TooLarge => {
            let close = close(close_code::LIMIT_EXCEEDED, "first message too large", Retry::Default);
            sink.send_frames(&[Frame::Close(close.clone())]).await;
            return sink.finish(Some(&close)).await;
        }
    };
    let opened = match decode_batch(&bytes, super::opening_body_limit(&state.config), 4) {
        Err(BatchError::Wire(error)) => Err(close_for_wire_error(error)),
        Err(error @ BatchError::TooManyFrames) => Err(close(close_code::PROTOCOL_ERROR, error.as_str(), Retry::Default)),
        Ok(frames) => match opening(frames) {
            Err(reason) => Err(close(close_code::PROTOCOL_ERROR, reason, Retry::Default)),
            Ok((_, rest)) if !rest.is_empty() => Err(close(close_code::PROTOCOL_ERROR, "the first message holds session and token only", Retry::Default)),
            Ok((opening, _)) => Ok(opening),
        },
    };
    drop(bytes);
    let opening = match opened {
        Ok(opening) => opening,
        Err(close) => {
            tracing::info!(transport = "websocket", reason = %close.reason, "v3: bad first message");
            sink.send_frames(&[Frame::Close(close.clone())]).await;
            return sink.finish(Some(&close)).await;
        }
    };
    let (session, attachment, first) = match connect(&state, &base, &opening, crate::session::TransportKind::WebSocket, ip) {
        Opened::Attached { session, attachment, first } => (session, attachment, first),
        Opened::Closed(close) => {
            sink.send_frames(&[Frame::Close(close.clone())]).await;
            return sink.finish(Some(&close)).await;
        }
        Opened::Limit(kind, reason) => {
            let close = limit_close(&state, kind, reason);
            sink.send_frames(&[Frame::Close(close.clone())]).await;
            return sink.finish(Some(&close)).await;
        }
    };
    let resumed = matches!(&first, Frame::Hello(hello) | Frame::AuthHello(hello, _) if hello.resumed);
    tracing::info!(session = %session.tag(), room = ?session.room, resumed, transport = "websocket", v = 3, "attached");
    let mut send_task = tokio::spawn(writer::run(state.clone(), session.clone(), attachment.clone(), sink, vec![first], None));
    let mut receive_task = tokio::spawn(crate::ws::receive(state.clone(), session.clone(), attachment.clone(), stream, true));
    tokio::select! {
        _ = &mut send_task => receive_task.abort(),
        _ = &mut receive_task => {
            let _ = tokio::time::timeout(state.config.limits.stream_write_timeout.saturating_mul(2), &mut send_task).await;
            send_task.abort();
        }
    }
    session.detach(&attachment);
    tracing::info!(session = %session.tag(), transport = "websocket", "detached");
}
