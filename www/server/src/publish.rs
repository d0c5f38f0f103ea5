//! `POST /realtime/publish`: a backend publishes to a room (`room=R`, the v1 answer: a count)
//! or to channels (`channel=C`, PROTOCOL.md §8.9: JSON with the offsets assigned). The
//! Content-Type picks the payload kind; `application/x-realtime-frames` publishes a batch of
//! `msg` frames in one request (for bursts: one HTTP request per message would be the
//! bottleneck), each to its own channel (`ch`) or the `channel` parameter's.
//!
//! Invariants: a batch is all or nothing: it is decoded and checked whole (frame types, names,
//! the channel count), its budget reserved and its channels found or created before the first
//! offset is assigned, so a refused batch delivered nothing; it holds its channels' publish turn
//! for its run (consecutive offsets per channel, see `channel::Registry::publish_batch`), and
//! nothing else waits for it; every refusal is a short text
//! answer (400, 413, 415, 503), never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use realtime_client::core::wire::{is_valid_channel_name, is_valid_event_name, ChannelMessage, Frame, Payload, WireError};

use crate::channel::{encode_epoch, Refusal};
use crate::limits::{decode_batch, BatchError};
use crate::metrics::LimitKind;
use crate::params::{is_valid_room, Params};
use crate::session::Delivery;
use crate::{busy, refusal, text_error, AppState};

/// Most messages one batch may publish.
pub const MAX_BATCH_MESSAGES: usize = 10_000;

/// Most distinct channels one batch may name. Each may be created by the batch (a backend
/// publish creates its channel) and is held against other publishes for the batch's run, so a
/// batch naming thousands of channels is refused whole (413) rather than half-applied.
pub const MAX_BATCH_CHANNELS: usize = 1_000;

pub async fn handle(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::parse(query.as_deref());
    // `room=R` (the v1 answer: a count; creates nothing) or `channel=C` (PROTOCOL §8.9: JSON,
    // creates the channel). A batch whose frames all name their channel needs neither.
    let target = match (params.room.as_deref(), params.channel.as_deref()) {
        (Some(room), _) if !is_valid_room(room) => {
            return text_error(StatusCode::BAD_REQUEST, "bad room name: 1-64 characters of A-Z a-z 0-9 _ . : -");
        }
        (Some(room), None) => Target::Room(room),
        (None, Some(channel)) if is_valid_channel_name(channel) => Target::Channel(Some(channel)),
        (None, Some(_)) => return text_error(StatusCode::BAD_REQUEST, "bad channel name: 1-128 characters of A-Z a-z 0-9 _ . : / -"),
        (Some(_), Some(_)) => return text_error(StatusCode::BAD_REQUEST, "room and channel parameters both given"),
        (None, None) => Target::Channel(None),
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
        let batch = match Batch::decode(&state, target, params.event.as_deref(), &body) {
            Ok(batch) => batch,
            Err(response) => return *response,
        };
        return publish(&state, target, batch, true).await;
    }
    let channel = match target {
        Target::Room(room) => room,
        Target::Channel(Some(channel)) => channel,
        Target::Channel(None) => return text_error(StatusCode::BAD_REQUEST, "missing room or channel parameter"),
    };
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
    let batch = Batch { channels: vec![channel.to_owned()], messages: vec![(0, params.event.clone(), payload)] };
    publish(&state, target, batch, false).await
}

/// What a backend publishes to. `Channel(None)`: no parameter, only for a batch whose every
/// frame names its channel.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Room(&'a str),
    Channel(Option<&'a str>),
}

/// The messages of one request, each naming its channel by index into `channels` (distinct
/// names, in order of first appearance).
struct Batch {
    channels: Vec<String>,
    messages: Vec<(usize, Option<String>, Payload)>,
}

impl Batch {
    /// Decodes a body of `msg` frames (their `s` ignored; PROTOCOL §3.5, §8.9), checked whole:
    /// Err is the answer, and nothing was published.
    fn decode(state: &AppState, target: Target<'_>, default_event: Option<&str>, body: &[u8]) -> Result<Batch, Box<Response>> {
        let frames = match decode_batch(body, state.config.max_message_bytes, MAX_BATCH_MESSAGES) {
            Ok(frames) => frames,
            Err(BatchError::Wire(WireError::BodyTooLarge)) => {
                return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "bad batch: a payload is larger than the server's max"))
            }
            Err(BatchError::Wire(error)) => return Err(refuse(StatusCode::BAD_REQUEST, &format!("bad batch: {error}"))),
            Err(BatchError::TooManyFrames) => {
                state.metrics.trip(LimitKind::frames_per_batch);
                return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "batch too large: at most 10000 messages"));
            }
        };
        let default_channel = match target {
            Target::Room(room) => Some(room),
            Target::Channel(channel) => channel,
        };
        let mut batch = Batch { channels: Vec::new(), messages: Vec::with_capacity(frames.len()) };
        let mut index_of: HashMap<String, usize> = HashMap::new();
        for frame in frames {
            let (channel, message) = match frame {
                Frame::Message(message) => match default_channel {
                    Some(channel) => (channel.to_owned(), message),
                    None => return Err(refuse(StatusCode::BAD_REQUEST, "bad batch: a msg frame without ch needs the channel parameter")),
                },
                Frame::ChannelMessage(ChannelMessage { channel, position, message }) => {
                    if matches!(target, Target::Room(_)) {
                        return Err(refuse(StatusCode::BAD_REQUEST, "bad batch: ch needs the channel form (no room parameter)"));
                    }
                    if position.is_some() {
                        return Err(refuse(StatusCode::BAD_REQUEST, "bad batch: o and ep are assigned by the server"));
                    }
                    (channel, message)
                }
                _ => return Err(refuse(StatusCode::BAD_REQUEST, "bad batch: only msg frames can be published")),
            };
            let index = match index_of.get(&channel) {
                Some(index) => *index,
                None => {
                    if batch.channels.len() >= MAX_BATCH_CHANNELS {
                        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "batch too large: at most 1000 channels"));
                    }
                    index_of.insert(channel.clone(), batch.channels.len());
                    batch.channels.push(channel);
                    batch.channels.len() - 1
                }
            };
            // A frame's own event name wins over the `event` parameter.
            batch.messages.push((index, message.event.or_else(|| default_event.map(str::to_owned)), message.payload));
        }
        Ok(batch)
    }
}

/// A refusal of [`Batch::decode`] (boxed: a `Response` is large).
fn refuse(status: StatusCode, message: &str) -> Box<Response> {
    Box::new(text_error(status, message))
}

/// Publishes `batch` in order, all or nothing against the replay budget and the channel limit,
/// and answers: the room form a count, a single message its offset, a batch its offsets.
async fn publish(state: &Arc<AppState>, target: Target<'_>, batch: Batch, is_batch: bool) -> Response {
    let Batch { channels, messages } = batch;
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let Some(_reserved) = state.reserve_batch(&names, &messages) else {
        return refusal(state, LimitKind::replay_budget, StatusCode::SERVICE_UNAVAILABLE, "replay budget exhausted");
    };
    let create = matches!(target, Target::Channel(_));
    let Ok(delivery) = state.publish_fan_out(channels.clone(), messages, create).await else {
        return busy(state, StatusCode::SERVICE_UNAVAILABLE, "server busy: too many large fan-outs");
    };
    match delivery.refusal {
        // The room form creates nothing: a missing room reaches nobody (v1's answer "0").
        None | Some(Refusal::Closed) => {}
        Some(_) => return refusal(state, LimitKind::channels_total, StatusCode::SERVICE_UNAVAILABLE, "too many channels"),
    }
    tracing::debug!(channels = channels.len(), delivered = delivery.delivered, "published");
    let (body, json) = match target {
        Target::Room(_) => (delivery.delivered.to_string(), false),
        Target::Channel(_) if is_batch => (batch_answer(&channels, &delivery), true),
        Target::Channel(_) => (single_answer(&channels, &delivery), true),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::ACCEPTED;
    if json {
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    }
    response
}

/// One message's answer (PROTOCOL §8.9): `{"channel","epoch","offset","sessions"}`.
fn single_answer(channels: &[String], delivery: &Delivery) -> String {
    let channel = channels.first().map_or("", String::as_str);
    match delivery.positions.first() {
        Some((_, position)) => serde_json::json!({
            "channel": channel, "epoch": encode_epoch(position.epoch), "offset": position.offset, "sessions": delivery.delivered,
        }),
        None => serde_json::json!({"channel": channel, "sessions": delivery.delivered}),
    }
    .to_string()
}

/// A batch's answer (PROTOCOL §8.9): `{"channels":[{"channel","epoch","first","last"}],
/// "deliveries"}`, one entry per channel in order of first appearance (a second one for a
/// channel whose offsets ran out within the batch and went on in a new epoch).
fn batch_answer(channels: &[String], delivery: &Delivery) -> String {
    // Per channel, its runs of one epoch: (epoch, first, last).
    let mut runs: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); channels.len()];
    for (index, position) in &delivery.positions {
        let Some(channel_runs) = runs.get_mut(*index) else { continue };
        match channel_runs.last_mut() {
            Some((epoch, _, last)) if *epoch == position.epoch => *last = position.offset,
            _ => channel_runs.push((position.epoch, position.offset, position.offset)),
        }
    }
    let entries: Vec<serde_json::Value> = channels
        .iter()
        .zip(&runs)
        .flat_map(|(channel, channel_runs)| {
            channel_runs.iter().map(move |(epoch, first, last)| {
                serde_json::json!({"channel": channel, "epoch": encode_epoch(*epoch), "first": first, "last": last})
            })
        })
        .collect();
    serde_json::json!({"channels": entries, "deliveries": delivery.delivered}).to_string()
}
