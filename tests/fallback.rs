//! Fallback through real middlebox failures: the fault proxy (tests/fault-proxy) sits between the
//! browser and the reference server, and each test sets its mode over HTTP. Each test asserts
//! which transport ended up in use and that messages flow both ways.
//!
//! The proxy's mode is global, so these tests live in their own binary; wasm-bindgen-test runs
//! the tests of one binary one after another.
#![cfg(target_arch = "wasm32")]

mod support;

use js_sys::JSON;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

use realtime_client::RealtimeClient;
use support::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Connects through the proxy with the whole ladder and checks traffic both ways. Logs the time
/// from `connect()` to the session being open: an observation for the benchmarks' targets, not
/// an assertion (timing is measured by `make bench`, never asserted in tests).
async fn connect_and_exchange(room: &str) -> (RealtimeClient, Recorder, Recorder) {
    let client = proxied_client(room, &JsValue::UNDEFINED);
    let messages = Recorder::attach(&client, "message");
    let transports = Recorder::attach(&client, "transport");
    let started = now_ms();
    JsFuture::from(client.connect()).await.expect("connects through the broken proxy");
    console_log!("{room}: open on {} after {:.0} ms", transport_of(&client), now_ms() - started);
    // Up: a message the server acknowledges and echoes back. Down: a publish from the backend.
    JsFuture::from(client.send(JsValue::from_str("up"))).await.expect("acked");
    publish(room, None, "text/plain", "down").await;
    messages.wait_for(2).await;
    let texts: Vec<String> = messages.take().iter().filter_map(|(data, _)| data.as_string()).collect();
    assert_eq!(texts, vec!["up".to_owned(), "down".to_owned()]);
    (client, messages, transports)
}

fn transport_of(client: &RealtimeClient) -> String {
    client.transport().as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
async fn a_refused_websocket_leads_to_sse() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?websocket=refuse").await;
    let room = unique_room("refused");
    let (client, _, transports) = connect_and_exchange(&room).await;
    assert_eq!(transport_of(&client), "sse");
    let (info, _) = transports.take().remove(0);
    assert!(get(&info, "from").is_null());
    assert_eq!(get(&info, "to").as_string().as_deref(), Some("sse"));
    assert!(get(&info, "reason").as_string().unwrap().starts_with("fallback: websocket failed"));
    assert_eq!(get(&client.stats(), "fallbacks").as_f64(), Some(1.0));
    client.close();
    proxy("/reset").await;
}

#[wasm_bindgen_test]
async fn a_hanging_websocket_leads_to_sse() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?websocket=hang").await;
    let room = unique_room("hang");
    let (client, ..) = connect_and_exchange(&room).await;
    assert_eq!(transport_of(&client), "sse");
    client.close();
    proxy("/reset").await;
}

#[wasm_bindgen_test]
async fn a_silent_websocket_leads_to_sse() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?websocket=silent").await;
    let room = unique_room("silent");
    let (client, _, transports) = connect_and_exchange(&room).await;
    assert_eq!(transport_of(&client), "sse");
    let (info, _) = transports.take().remove(0);
    assert_eq!(get(&info, "to").as_string().as_deref(), Some("sse"));
    client.close();
    proxy("/reset").await;
}

#[wasm_bindgen_test]
async fn a_refused_websocket_and_a_buffered_event_stream_lead_to_long_polling() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?websocket=refuse&sse=buffer").await;
    let room = unique_room("buffered");
    let (client, ..) = connect_and_exchange(&room).await;
    assert_eq!(transport_of(&client), "long-polling");
    client.close();
    proxy("/reset").await;
}

#[wasm_bindgen_test]
async fn a_failed_rung_says_why_in_an_error_event() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?poll=refuse").await;
    let room = unique_room("why");
    let options = JSON::parse(r#"{"transports":["long-polling"],"reconnect":{"maxAttempts":1,"initialDelayMs":10}}"#).unwrap();
    let client = proxied_client(&room, &options);
    let errors = Recorder::attach(&client, "error");
    let closes = Recorder::attach(&client, "close");
    let connected = JsFuture::from(client.connect()).await;
    assert!(connected.is_err(), "connect() rejects when the client gives up");
    errors.wait_for(1).await;
    let message = error_message(&errors.take()[0].0);
    assert_eq!(message, "long-polling failed: poll failed: HTTP 503");
    closes.wait_for(1).await;
    assert_eq!(client.state().as_string().as_deref(), Some("closed"));
    proxy("/reset").await;
}

#[wasm_bindgen_test]
async fn the_session_upgrades_back_to_websocket_without_losing_doubling_or_reordering() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?websocket=refuse").await;
    let room = unique_room("upgrade");
    let client = proxied_client(&room, &JsValue::UNDEFINED);
    let messages = Recorder::attach(&client, "message");
    let server_events = Recorder::attach(&client, "server");
    let transports = Recorder::attach(&client, "transport");
    let reconnects = Recorder::attach(&client, "reconnecting");
    let errors = Recorder::attach(&client, "error");
    JsFuture::from(client.connect()).await.unwrap();
    assert_eq!(transport_of(&client), "sse");
    proxy("/mode?websocket=pass").await;

    // Traffic both ways until well after the switch: the client's own messages come back
    // through the room, the backend publishes in between.
    let mut sent = 0u32;
    let mut pending = Vec::new();
    let mut rounds = 0;
    while rounds < 400 && (transport_of(&client) != "websocket" || sent < 60) {
        sent += 1;
        pending.push(JsFuture::from(client.send(JsValue::from_str(&format!("c{sent}")))));
        if sent % 5 == 0 {
            publish(&room, Some("server"), "text/plain", &format!("s{sent}")).await;
        }
        gloo_timers::future::TimeoutFuture::new(20).await;
        rounds += 1;
    }
    let describe = |recorder: &Recorder| -> Vec<String> {
        recorder
            .take()
            .iter()
            .map(|(value, _)| {
                let reason = get(value, "reason");
                let text = if reason.is_undefined() { error_message(value) } else { reason.as_string().unwrap_or_default() };
                text
            })
            .collect()
    };
    assert_eq!(
        transport_of(&client),
        "websocket",
        "upgraded back within the test's bound; reconnects {:?}; errors {:?}; switches {:?}",
        describe(&reconnects),
        describe(&errors),
        describe(&transports)
    );
    for acked in pending {
        acked.await.expect("every message acknowledged");
    }
    messages.wait_for(sent as usize).await;
    let texts: Vec<String> = messages.take().iter().filter_map(|(data, _)| data.as_string()).collect();
    let expected: Vec<String> = (1..=sent).map(|n| format!("c{n}")).collect();
    assert_eq!(texts, expected, "every client message once, in order");
    let published = (sent / 5) as usize;
    server_events.wait_for(published).await;
    let texts: Vec<String> = server_events.take().iter().filter_map(|(data, _)| data.as_string()).collect();
    let expected: Vec<String> = (1..=published).map(|n| format!("s{}", n * 5)).collect();
    assert_eq!(texts, expected, "every published message once, in order");
    let switches: Vec<(String, String)> = transports
        .take()
        .iter()
        .map(|(info, _)| (get(info, "from").as_string().unwrap_or_default(), get(info, "to").as_string().unwrap_or_default()))
        .collect();
    assert_eq!(switches, vec![(String::new(), "sse".to_owned()), ("sse".to_owned(), "websocket".to_owned())]);
    assert_eq!(get(&client.stats(), "upgrades").as_f64(), Some(1.0));
    client.close();
    proxy("/reset").await;
}

#[wasm_bindgen_test]
async fn a_new_client_starts_on_the_rung_that_worked_for_this_endpoint() {
    forget_rungs();
    proxy("/reset").await;
    proxy("/mode?websocket=refuse").await;
    let room = unique_room("memory");
    let first = proxied_client(&room, &JsValue::UNDEFINED);
    JsFuture::from(first.connect()).await.unwrap();
    assert_eq!(transport_of(&first), "sse");
    first.close();
    let refused_before = get(&get(&proxy_stats().await, "websocket"), "refused").as_f64();

    // Like a reload of the page: a new client for the same endpoint (sessionStorage).
    let second = proxied_client(&room, &JsValue::UNDEFINED);
    let transports = Recorder::attach(&second, "transport");
    JsFuture::from(second.connect()).await.unwrap();
    assert_eq!(transport_of(&second), "sse");
    let (info, _) = transports.take().remove(0);
    assert_eq!(get(&info, "reason").as_string().as_deref(), Some("remembered: this transport worked last time"));
    let refused_after = get(&get(&proxy_stats().await, "websocket"), "refused").as_f64();
    assert_eq!(refused_before, refused_after, "the WebSocket was not tried first");
    second.close();
    proxy("/reset").await;
}
