//! Browser tests of HTTP/2: the reference server over TLS (`REALTIME_TLS_URL`, development
//! certificate trusted through `--ignore-certificate-errors-spki-list`), whose ALPN offers h2.
//!
//! Why it matters: over HTTP/1.1 Chromium opens at most six connections per host, so a page with
//! more event streams stalls at the seventh; over HTTP/2 they share one connection. Both halves
//! are asserted here, so the reason for HTTP/2 stays proven. Which version carried each request
//! is the server's own record (`GET /realtime/stats`).
#![cfg(target_arch = "wasm32")]

mod support;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

use realtime_client::RealtimeClient;
use support::*;

wasm_bindgen_test_configure!(run_in_browser);

/// How many event streams the issue asks to hold in one page.
const STREAMS: usize = 12;
/// Chromium's limit of HTTP/1.1 connections per host (per scheme, host and port).
const HTTP1_CONNECTIONS_PER_HOST: usize = 6;
/// The issue's contract: all streams open and deliver within this over HTTP/2.
const LIMIT_MS: f64 = 2_000.0;

/// Sends one message each way over `transport` on the TLS server and returns the counters' deltas.
async fn round_trip_over_tls(transport: &str) -> (JsValue, JsValue) {
    let before = http_versions(tls_base_url()).await;
    let room = unique_room(&format!("h2-{transport}"));
    let client = client_of(tls_base_url(), &room, &only(transport));
    let messages = Recorder::attach(&client, "message");
    JsFuture::from(client.connect()).await.expect("connects over TLS");
    assert_eq!(client.transport().as_string().as_deref(), Some(transport));
    JsFuture::from(client.send(JsValue::from_str("up"))).await.expect("acked");
    publish_to(tls_base_url(), &room, "down").await;
    messages.wait_for(2).await;
    let mut received = texts(&messages.take());
    received.sort();
    assert_eq!(received, ["down", "up"]);
    client.close();
    (before, http_versions(tls_base_url()).await)
}

fn delta(before: &JsValue, after: &JsValue, endpoint: &str, version: &str) -> f64 {
    http_count(after, endpoint, version) - http_count(before, endpoint, version)
}

#[wasm_bindgen_test]
async fn sse_streams_and_their_posts_go_over_h2() {
    let (before, after) = round_trip_over_tls("sse").await;
    assert!(delta(&before, &after, "sse", "http2") >= 1.0, "no SSE request over h2: {:?}", js_sys::JSON::stringify(&after));
    assert!(delta(&before, &after, "send", "http2") >= 1.0, "no upstream POST over h2");
    assert_eq!(delta(&before, &after, "sse", "http1"), 0.0, "an SSE request went over HTTP/1.1");
    assert_eq!(delta(&before, &after, "send", "http1"), 0.0, "an upstream POST went over HTTP/1.1");
}

#[wasm_bindgen_test]
async fn long_polls_and_their_posts_go_over_h2() {
    let (before, after) = round_trip_over_tls("long-polling").await;
    assert!(delta(&before, &after, "poll", "http2") >= 1.0, "no poll over h2");
    assert!(delta(&before, &after, "send", "http2") >= 1.0, "no upstream POST over h2");
    assert_eq!(delta(&before, &after, "poll", "http1"), 0.0, "a poll went over HTTP/1.1");
    assert_eq!(delta(&before, &after, "send", "http1"), 0.0, "an upstream POST went over HTTP/1.1");
}

#[wasm_bindgen_test]
async fn websocket_runs_over_h2_by_extended_connect_once_a_credentialed_h2_connection_exists() {
    // The server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441), and Chromium then opens a
    // WebSocket as a stream of an HTTP/2 connection it already has to that host; it never
    // negotiates h2 for a new WebSocket connection. A WebSocket carries cookies, so only a
    // credentialed connection qualifies: the CORS fetches and EventSources of this cross-origin
    // test page do not (they go in Chromium's privacy-mode pool), while the page's own loads of a
    // same-origin site (the demo over TLS) do. So here: one credentialed no-cors GET first.
    let init = js_sys::JSON::parse(r#"{"mode":"no-cors","credentials":"include"}"#).unwrap();
    let window = web_sys::window().expect("a window");
    // Opaque-response blocking refuses the JSON answer to a no-cors request (a TypeError), after
    // the connection was made; that connection is all this needs, and the assertions below show it.
    let _ = JsFuture::from(window.fetch_with_str_and_init(&format!("{}/stats", tls_base_url()), init.unchecked_ref())).await;
    let (before, after) = round_trip_over_tls("websocket").await;
    assert_eq!(delta(&before, &after, "websocket", "http2"), 1.0, "the WebSocket did not run over h2");
    assert_eq!(delta(&before, &after, "websocket", "http1"), 0.0, "the WebSocket used HTTP/1.1");
}

/// Opens `STREAMS` SSE-only clients of `base` in one room at once; waits until all are open or
/// `LIMIT_MS` passed, then publishes once and waits for all of them to have it (or the limit).
/// Returns (open, received, milliseconds) and closes every client.
async fn many_event_streams(base: &str) -> (usize, usize, f64) {
    let room = unique_room("many");
    let started = now_ms();
    let clients: Vec<RealtimeClient> = (0..STREAMS).map(|_| client_of(base, &room, &only("sse"))).collect();
    let inboxes: Vec<Recorder> = clients.iter().map(|client| Recorder::attach(client, "message")).collect();
    for client in &clients {
        // Not awaited: all connect at once. A stalled one may reject later, once closed.
        let connecting = JsFuture::from(client.connect());
        wasm_bindgen_futures::spawn_local(async move {
            let _ = connecting.await;
        });
    }
    let open = |clients: &[RealtimeClient]| {
        clients.iter().filter(|client| client.state().as_string().as_deref() == Some("open")).count()
    };
    let remaining = |started: f64| (LIMIT_MS - (now_ms() - started)).max(0.0) as u32;
    wait_until(remaining(started), || open(&clients) == STREAMS).await;
    let opened = open(&clients);
    let mut received = 0;
    if opened == STREAMS {
        publish_to(base, &room, "to all").await;
        wait_until(remaining(started), || inboxes.iter().all(|inbox| inbox.len() >= 1)).await;
        received = inboxes.iter().filter(|inbox| texts(&inbox.take()) == ["to all"]).count();
    }
    let elapsed = now_ms() - started;
    // Free every connection for the tests after this one.
    for client in &clients {
        client.close();
    }
    (opened, received, elapsed)
}

#[wasm_bindgen_test]
async fn twelve_event_streams_in_one_page_all_open_and_deliver_within_2s_over_h2() {
    let before = http_versions(tls_base_url()).await;
    let (opened, received, elapsed) = many_event_streams(tls_base_url()).await;
    assert_eq!(opened, STREAMS, "only {opened} of {STREAMS} event streams opened over h2 within {LIMIT_MS} ms");
    assert_eq!(received, STREAMS, "only {received} of {STREAMS} got the message over h2");
    assert!(elapsed <= LIMIT_MS, "took {elapsed} ms");
    let after = http_versions(tls_base_url()).await;
    assert!(delta(&before, &after, "sse", "http2") >= STREAMS as f64, "the streams did not run over h2");
    assert_eq!(delta(&before, &after, "sse", "http1"), 0.0);
}

#[wasm_bindgen_test]
async fn twelve_event_streams_over_http1_stall_at_six_connections_per_host() {
    // The same page against the plain HTTP server: six streams take all six connections Chromium
    // allows per host, and the rest wait for one of them to close. In protocol v3 a stream opens
    // only once its bind (a POST, PROTOCOL.md §9.3) got through, and the binds wait for a free
    // connection too: with the six taken by streams, none opens within the limit (the server
    // drops a stream left unbound for 10 s, which frees a connection). Over HTTP/1.1 at most five
    // event streams per host can be open in one browser; h2 (the test above) has no such limit.
    let before = http_versions(base_url()).await;
    let (opened, received, _) = many_event_streams(base_url()).await;
    assert_eq!(received, 0, "nothing is published unless all streams opened");
    assert!(opened < STREAMS, "all {STREAMS} event streams opened over HTTP/1.1: the per-host limit is gone?");
    assert!(opened < HTTP1_CONNECTIONS_PER_HOST, "over HTTP/1.1 a v3 stream needs a connection for its bind too: {opened} opened");
    let after = http_versions(base_url()).await;
    assert_eq!(delta(&before, &after, "sse", "http2"), 0.0, "the plain server spoke h2");
}
