//! SSE transport: `GET /realtime/sse`. One frame per event, `event:` = frame type, `id:` = seq
//! on messages, the frame (SSE carrier: no CR) split on LF over `data: ` lines. Upstream goes
//! through `POST /realtime/send`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use realtime_client::core::wire::{self, close_code, Carrier, Close, Frame, Retry};
use tokio::sync::mpsc;

use crate::client_ip::ClientIp;
use crate::metrics::LimitKind;
use crate::params::{ParamError, Params};
use crate::probe;
use crate::session::{close, Connect, Outgoing, TransportKind};
use crate::writer::{self, FrameSink};
use crate::{busy, refusal, text_error, AppState};

/// Chunks of at most this many bytes go into the body channel (a larger frame goes alone), and
/// the channel holds at most [`CHANNEL_CHUNKS`]: what a stalled stream holds is bounded.
const CHUNK_BYTES: usize = 64 * 1024;
pub(crate) const CHANNEL_CHUNKS: usize = 4;

pub async fn handle(State(state): State<Arc<AppState>>, Extension(ip): Extension<ClientIp>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref());
    let (request, probe) = match params.connect_request().and_then(|request| Ok((request, params.is_probe()?))) {
        Ok(parsed) => parsed,
        // Answered in-protocol, as on a WebSocket: a bare 400 would look like a failed rung to
        // the client, which would then retry for ever. The close frame tells it to stop.
        Err(ParamError::UnsupportedVersion) => {
            let close = close(close_code::UNSUPPORTED_VERSION, ParamError::UnsupportedVersion.as_str(), Retry::Never);
            return stream_response(Bytes::from(encode_event(&Frame::Close(close))));
        }
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
            probe::hold(state, guard, SseSink { sender }, gone, keep_alive, probe::AtDeadline::End).await;
        });
        return sse_response(channel_body(receiver));
    }
    let Some(stream_slot) = state.stream_slot(ip) else {
        return busy(&state, StatusCode::SERVICE_UNAVAILABLE, "too many streams from this address");
    };
    let (session, attachment, hello) = match state.connect(&request, TransportKind::Sse, ip) {
        Connect::Attached { session, attachment, hello } => (session, attachment, hello),
        Connect::Full => return refusal(&state, LimitKind::sessions_total, StatusCode::SERVICE_UNAVAILABLE, "too many sessions"),
        Connect::Refused(kind) => return refusal(&state, kind, StatusCode::SERVICE_UNAVAILABLE, "too many sessions from this address"),
        Connect::Retired => {
            let close = close(close_code::REPLACED, "replaced", Retry::Never);
            return stream_response(Bytes::from(encode_event(&Frame::Close(close))));
        }
    };
    tracing::info!(session = %session.tag(), room = ?session.room, resumed = hello.resumed, transport = "sse", "attached");
    let (sender, receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let live = state.live_guard();
    tokio::spawn(async move {
        let _held = (live, stream_slot);
        let sink = SseSink { sender };
        let keep_alive = Some(state.config.sse_keepalive);
        writer::run(state.clone(), session.clone(), attachment.clone(), sink, vec![Frame::Hello(hello)], keep_alive).await;
        session.detach(&attachment);
        tracing::info!(session = %session.tag(), transport = "sse", "detached");
    });
    sse_response(channel_body(receiver))
}

/// A streaming body fed by a channel; it ends when every sender is dropped.
pub(crate) fn channel_body(mut receiver: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context).map(|item| item.map(Ok::<_, Infallible>)));
    Body::from_stream(stream)
}

pub(crate) fn stream_response(bytes: Bytes) -> Response {
    sse_response(Body::from(bytes))
}

pub(crate) fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}

/// The frame's type name, used as the SSE `event:` field.
pub fn frame_type(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Message(_) => "msg",
        Frame::Ack { .. } => "ack",
        Frame::Ping { .. } => "ping",
        Frame::Pong { .. } => "pong",
        Frame::Close(_) => "close",
        Frame::ChannelMessage(_) => "msg",
        Frame::Subscribe { .. } => "subscribe",
        Frame::Subscribed { .. } => "subscribed",
        Frame::Unsubscribe { .. } => "unsubscribe",
        Frame::Unsubscribed { .. } => "unsubscribed",
        Frame::Gap { .. } => "gap",
        Frame::Nack { .. } => "nack",
        Frame::Session(_) => "session",
        Frame::Token(_) => "token",
        Frame::Authed { .. } => "authed",
        Frame::Pending { .. } => "pending",
        Frame::AuthHello(..) => "hello",
        Frame::Attributed { .. } => "msg",
    }
}

/// One SSE event holding exactly one frame.
pub fn encode_event(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_outgoing_event(&Outgoing::Frame(frame.clone()), &mut out);
    out
}

/// Appends one SSE event holding `frame` (a shared message is encoded from its one copy).
pub fn encode_outgoing_event(frame: &Outgoing, out: &mut Vec<u8>) {
    let mut encoded = Vec::new();
    frame.encode(Carrier::Sse, &mut encoded);
    debug_assert!(!encoded.contains(&b'\r'));
    out.reserve(encoded.len() + 64);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(match frame {
        Outgoing::Frame(frame) => frame_type(frame),
        Outgoing::Message { .. } => "msg",
    }.as_bytes());
    out.push(b'\n');
    if let Some(seq) = frame.message_seq() {
        out.extend_from_slice(b"id: ");
        wire::push_decimal(out, seq);
        out.push(b'\n');
    }
    for line in encoded.split(|&byte| byte == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

pub(crate) struct SseSink {
    pub(crate) sender: mpsc::Sender<Bytes>,
}

impl FrameSink for SseSink {
    async fn send_outgoing(&mut self, frames: &[Outgoing]) -> bool {
        let mut out = Vec::new();
        for frame in frames {
            encode_outgoing_event(frame, &mut out);
            if out.len() >= CHUNK_BYTES && self.sender.send(Bytes::from(std::mem::take(&mut out))).await.is_err() {
                return false;
            }
        }
        out.is_empty() || self.sender.send(Bytes::from(out)).await.is_ok()
    }

    async fn keep_alive(&mut self) -> bool {
        self.sender.send(Bytes::from_static(b": ka\n\n")).await.is_ok()
    }

    /// The body is dropped when its connection closes, which closes the channel.
    async fn gone(&self) {
        self.sender.closed().await
    }

    async fn finish(&mut self, _close: Option<&Close>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use realtime_client::core::wire::{Message, Payload};

    #[test]
    fn events_split_frames_on_lf() {
        let frame = Frame::Message(Message { seq: 3, event: None, payload: Payload::Text("a\nb".into()) });
        assert_eq!(encode_event(&frame), b"event: msg\nid: 3\ndata: msg s=3 k=t n=3\ndata: a\ndata: b\n\n");
        assert_eq!(encode_event(&Frame::Ack { seq: 2 }), b"event: ack\ndata: ack s=2\ndata: \n\n");
    }
}
