//! Which HTTP version carried each realtime request: one counter per endpoint and version, bumped
//! by a middleware and read at `GET /realtime/stats`, so tests (and people) can see that a browser
//! really multiplexed its streams over HTTP/2; and how many WebSocket messages clients sent, so
//! they can see that sends are batched. Relaxed atomics; nothing else is recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The endpoints counted, in the order of the JSON answer.
const ENDPOINTS: [(&str, &str); 5] = [
    ("/realtime", "websocket"),
    ("/realtime/sse", "sse"),
    ("/realtime/poll", "poll"),
    ("/realtime/send", "send"),
    ("/realtime/publish", "publish"),
];
const VERSIONS: [&str; 2] = ["http1", "http2"];

/// Requests per endpoint and HTTP version, and WebSocket messages received.
#[derive(Debug, Default)]
pub struct HttpVersions {
    counts: [[AtomicU64; VERSIONS.len()]; ENDPOINTS.len()],
    websocket_messages: AtomicU64,
}

impl HttpVersions {
    /// Counts one request (HTTP/1.0 and 1.1 as `http1`, HTTP/2 as `http2`; other paths and
    /// versions are not counted).
    pub fn record(&self, path: &str, version: Version) {
        let Some(endpoint) = ENDPOINTS.iter().position(|(endpoint, _)| *endpoint == path) else { return };
        let column = match version {
            Version::HTTP_10 | Version::HTTP_11 => 0,
            Version::HTTP_2 => 1,
            _ => return,
        };
        self.counts[endpoint][column].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one text or binary WebSocket message from a client (a batch of frames).
    pub fn record_websocket_message(&self) {
        self.websocket_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// `{"websocketMessages":N,"websocket":{"http1":N,"http2":N},"sse":{...},"poll":{...},
    /// "send":{...},"publish":{...}}`
    pub fn to_json(&self) -> String {
        let endpoints: Vec<String> = ENDPOINTS
            .iter()
            .zip(&self.counts)
            .map(|((_, name), counts)| {
                let versions: Vec<String> = VERSIONS
                    .iter()
                    .zip(counts)
                    .map(|(version, count)| format!("\"{version}\":{}", count.load(Ordering::Relaxed)))
                    .collect();
                format!("\"{name}\":{{{}}}", versions.join(","))
            })
            .collect();
        format!("{{\"websocketMessages\":{},{}}}", self.websocket_messages.load(Ordering::Relaxed), endpoints.join(","))
    }
}

/// Middleware: counts the request's HTTP version.
pub async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    state.http_versions.record(request.uri().path(), request.version());
    next.run(request).await
}

/// `GET /realtime/stats`: the counters as JSON, never cached. Behind the admin token
/// ([`crate::admin::require_token`]): load figures are not for the public.
pub async fn handle(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        state.http_versions.to_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_endpoint_and_version() {
        let versions = HttpVersions::default();
        versions.record("/realtime/sse", Version::HTTP_2);
        versions.record("/realtime/sse", Version::HTTP_2);
        versions.record("/realtime/poll", Version::HTTP_11);
        versions.record("/realtime", Version::HTTP_10);
        versions.record("/realtime/stats", Version::HTTP_2);
        versions.record("/elsewhere", Version::HTTP_2);
        versions.record_websocket_message();
        versions.record_websocket_message();
        assert_eq!(
            versions.to_json(),
            r#"{"websocketMessages":2,"websocket":{"http1":1,"http2":0},"sse":{"http1":0,"http2":2},"poll":{"http1":1,"http2":0},"send":{"http1":0,"http2":0},"publish":{"http1":0,"http2":0}}"#
        );
    }
}
