//! `POST /realtime/publish?room=R[&event=E]`: a backend publishes one message to every session
//! of a room. The Content-Type picks the payload kind; `application/x-realtime-frames` publishes a
//! batch of `msg` frames in one request (for bursts: one HTTP request per message would be the
//! bottleneck).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use realtime_client::core::wire::{is_valid_channel_name, is_valid_event_name, Frame, Payload};

use crate::channel::encode_epoch;
use crate::session::Delivery;

use crate::limits::{decode_batch, BatchError};
use crate::metrics::LimitKind;
use crate::params::{is_valid_room, Params};
use crate::{busy, refusal, text_error, AppState};

pub async fn handle(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    // `room=R` (the v1 answer: a count; creates nothing) or `channel=C` (PROTOCOL §8.9: JSON,
    // creates the channel).
    let target = match (params.room.as_deref(), params.channel.as_deref()) {
        (Some(room), _) if !is_valid_room(room) => {
            return text_error(StatusCode::BAD_REQUEST, "bad room name: 1-64 characters of A-Z a-z 0-9 _ . : -");
        }
        (Some(room), None) => Target::Room(room),
        (None, Some(channel)) if is_valid_channel_name(channel) => Target::Channel(channel),
        (None, Some(_)) => return text_error(StatusCode::BAD_REQUEST, "bad channel name: 1-128 characters of A-Z a-z 0-9 _ . : / -"),
        (Some(_), Some(_)) => return text_error(StatusCode::BAD_REQUEST, "room and channel parameters both given"),
        (None, None) => return text_error(StatusCode::BAD_REQUEST, "missing room or channel parameter"),
    };
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
    // Over the global replay budget nothing more is stored: the backend retries later. (A cheap
    // early check; the atomic one is the reservation before the fan-out.)
    if state.over_replay_budget() {
        return refusal(&state, LimitKind::replay_budget, StatusCode::SERVICE_UNAVAILABLE, "replay budget exhausted");
    }
    if content_type == "application/x-realtime-frames" {
        return publish_batch(&state, target, params.event.as_deref(), &body).await;
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
    let messages = vec![(params.event.clone(), payload)];
    publish_messages(&state, target, messages).await
}

/// What a backend publishes to.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Room(&'a str),
    Channel(&'a str),
}

/// Publishes `messages` in order, all or nothing against the replay budget, and answers.
async fn publish_messages(state: &Arc<AppState>, target: Target<'_>, messages: Vec<(Option<String>, Payload)>) -> Response {
    let (name, create) = match target {
        Target::Room(room) => (room, false),
        Target::Channel(channel) => (channel, true),
    };
    let Some(_reserved) = state.reserve_publish(name, &messages) else {
        return refusal(state, LimitKind::replay_budget, StatusCode::SERVICE_UNAVAILABLE, "replay budget exhausted");
    };
    let Ok(delivery) = state.publish_fan_out(name, messages, create).await else {
        return busy(state, StatusCode::SERVICE_UNAVAILABLE, "server busy: too many large fan-outs");
    };
    tracing::debug!(channel = name, delivered = delivery.delivered, "published");
    let body = match target {
        Target::Room(_) => delivery.delivered.to_string(),
        Target::Channel(channel) => channel_answer(channel, &delivery),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::ACCEPTED;
    if matches!(target, Target::Channel(_)) {
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    }
    response
}

/// The JSON answer of a `channel=` publish (PROTOCOL §8.9): one message
/// `{"channel","epoch","offset","sessions"}`; a batch `{"channels":[{"channel","epoch","first",
/// "last"}],"deliveries"}` (one entry per epoch its offsets ran in).
fn channel_answer(channel: &str, delivery: &Delivery) -> String {
    use realtime_client::core::wire::Position;
    if let [Position { epoch, offset }] = delivery.positions.as_slice() {
        return serde_json::json!({"channel": channel, "epoch": encode_epoch(*epoch), "offset": offset, "sessions": delivery.delivered})
            .to_string();
    }
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut run: Option<(u64, u64, u64)> = None;
    for position in &delivery.positions {
        match &mut run {
            Some((epoch, _, last)) if *epoch == position.epoch => *last = position.offset,
            _ => {
                if let Some((epoch, first, last)) = run.take() {
                    entries.push(serde_json::json!({"channel": channel, "epoch": encode_epoch(epoch), "first": first, "last": last}));
                }
                run = Some((position.epoch, position.offset, position.offset));
            }
        }
    }
    if let Some((epoch, first, last)) = run {
        entries.push(serde_json::json!({"channel": channel, "epoch": encode_epoch(epoch), "first": first, "last": last}));
    }
    serde_json::json!({"channels": entries, "deliveries": delivery.delivered}).to_string()
}

/// Most messages one batch may publish.
const MAX_BATCH_MESSAGES: usize = 10_000;

/// A batch of `msg` frames (wire protocol v1; their `s` is ignored), each published in order. A
/// frame's own event name wins over the `event` parameter. Nothing is published unless the whole
/// batch decodes.
async fn publish_batch(state: &Arc<AppState>, target: Target<'_>, default_event: Option<&str>, body: &[u8]) -> Response {
    let frames = match decode_batch(body, state.config.max_message_bytes, MAX_BATCH_MESSAGES) {
        Ok(frames) => frames,
        Err(BatchError::Wire(error)) => return text_error(StatusCode::BAD_REQUEST, &format!("bad batch: {error}")),
        Err(BatchError::TooManyFrames) => {
            state.metrics.trip(LimitKind::frames_per_batch);
            return text_error(StatusCode::PAYLOAD_TOO_LARGE, "batch too large: at most 10000 messages");
        }
    };
    let mut messages = Vec::with_capacity(frames.len());
    for frame in frames {
        match frame {
            Frame::Message(message) => messages.push(message),
            _ => return text_error(StatusCode::BAD_REQUEST, "bad batch: only msg frames can be published"),
        }
    }
    let messages: Vec<_> = messages
        .into_iter()
        .map(|message| (message.event.or_else(|| default_event.map(str::to_owned)), message.payload))
        .collect();
    publish_messages(state, target, messages).await
}
