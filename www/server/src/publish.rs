//! `POST /realtime/publish?room=R[&event=E]`: a backend publishes one message to every session
//! of a room. The Content-Type picks the payload kind; `application/x-realtime-frames` publishes a
//! batch of `msg` frames in one request (for bursts: one HTTP request per message would be the
//! bottleneck).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use realtime_client::core::wire::{self, is_valid_event_name, Frame, Payload};

use crate::params::{is_valid_room, Params};
use crate::{text_error, AppState};

pub async fn handle(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    let Some(room) = params.room.as_deref() else {
        return text_error(StatusCode::BAD_REQUEST, "missing room parameter");
    };
    if !is_valid_room(room) {
        return text_error(StatusCode::BAD_REQUEST, "bad room name: 1-64 characters of A-Z a-z 0-9 _ . : -");
    }
    if let Some(event) = &params.event {
        if !is_valid_event_name(event) {
            return text_error(StatusCode::BAD_REQUEST, "bad event name: 1-64 characters of A-Z a-z 0-9 _ . : / -");
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    if content_type == "application/x-realtime-frames" {
        return publish_batch(&state, room, params.event.as_deref(), &body);
    }
    if body.len() > state.config.max_message_bytes {
        return text_error(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
    }
    let payload = match content_type.as_str() {
        "text/plain" => match String::from_utf8(body.to_vec()) {
            Ok(text) => Payload::Text(text),
            Err(_) => return text_error(StatusCode::BAD_REQUEST, "text body is not valid utf-8"),
        },
        "application/json" => {
            if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return text_error(StatusCode::BAD_REQUEST, &format!("bad json: {error}"));
            }
            match String::from_utf8(body.to_vec()) {
                Ok(text) => Payload::Json(text),
                Err(_) => return text_error(StatusCode::BAD_REQUEST, "json body is not valid utf-8"),
            }
        }
        "application/octet-stream" => Payload::Binary(body.to_vec()),
        _ => {
            return text_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content type must be text/plain, application/json or application/octet-stream",
            )
        }
    };
    let delivered = state.registry.broadcast(room, params.event.clone(), payload, &state.config);
    tracing::debug!(room, delivered, "published");
    let mut response = Response::new(Body::from(delivered.to_string()));
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

/// Most messages one batch may publish.
const MAX_BATCH_MESSAGES: usize = 10_000;

/// A batch of `msg` frames (wire protocol v1; their `s` is ignored), each published in order. A
/// frame's own event name wins over the `event` parameter. Nothing is published unless the whole
/// batch decodes.
fn publish_batch(state: &AppState, room: &str, default_event: Option<&str>, body: &[u8]) -> Response {
    let frames = match wire::decode_all(body, state.config.max_message_bytes) {
        Ok(frames) => frames,
        Err(error) => return text_error(StatusCode::BAD_REQUEST, &format!("bad batch: {error}")),
    };
    if frames.len() > MAX_BATCH_MESSAGES {
        return text_error(StatusCode::PAYLOAD_TOO_LARGE, "batch too large: at most 10000 messages");
    }
    let mut messages = Vec::with_capacity(frames.len());
    for frame in frames {
        match frame {
            Frame::Message(message) => messages.push(message),
            _ => return text_error(StatusCode::BAD_REQUEST, "bad batch: only msg frames can be published"),
        }
    }
    let mut delivered = 0;
    for message in messages {
        let event = message.event.or_else(|| default_event.map(str::to_owned));
        delivered += state.registry.broadcast(room, event, message.payload, &state.config);
    }
    let mut response = Response::new(Body::from(delivered.to_string()));
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}
