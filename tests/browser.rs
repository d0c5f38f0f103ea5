//! Browser tests: the public JS-facing API against a live reference server, in headless Chromium.
//!
//! `make test` starts the server and passes its URL at compile time (a browser has no
//! environment) through `REALTIME_TEST_URL`. Every test uses its own room, so tests can share
//! the server.
#![cfg(target_arch = "wasm32")]

mod support;

use js_sys::{Uint8Array, JSON};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

use realtime_client::RealtimeClient;
use support::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The behaviour suite runs once per transport, each forced with `transports: [name]`.
macro_rules! on_every_transport {
    ($($test:ident),* $(,)?) => {
        mod websocket {
            use super::*;
            $( #[wasm_bindgen_test] async fn $test() { super::$test("websocket").await } )*
        }
        mod sse {
            use super::*;
            $( #[wasm_bindgen_test] async fn $test() { super::$test("sse").await } )*
        }
        mod long_polling {
            use super::*;
            $( #[wasm_bindgen_test] async fn $test() { super::$test("long-polling").await } )*
        }
    };
}

on_every_transport!(
    text_binary_and_json_come_back_with_their_kind_kept,
    two_clients_in_one_room_see_each_other,
    a_named_event_reaches_its_listener_and_not_message,
    after_close_the_state_is_closed_and_no_listener_fires,
    a_publish_from_the_http_endpoint_reaches_the_client,
    listeners_unsubscribe_and_a_throwing_listener_is_reported,
);

async fn text_binary_and_json_come_back_with_their_kind_kept(transport: &str) {
    let room = unique_room("kinds");
    let client = client(&room, &only(transport));
    let messages = Recorder::attach(&client, "message");
    JsFuture::from(client.connect()).await.expect("connects");
    assert_eq!(client.state().as_string().as_deref(), Some("open"));
    assert_eq!(client.transport().as_string().as_deref(), Some(transport));
    assert!(client.session_id().as_string().is_some_and(|id| !id.is_empty()));

    JsFuture::from(client.send(JsValue::from_str("hello"))).await.expect("text acked");
    let bytes = Uint8Array::from(&[1u8, 2, 0, 255][..]);
    JsFuture::from(client.send(bytes.into())).await.expect("binary acked");
    let json = JSON::parse(r#"{"any":"json","n":[1,2]}"#).unwrap();
    JsFuture::from(client.send(json)).await.expect("json acked");

    messages.wait_for(3).await;
    let received = messages.take();
    assert_eq!(received[0].0.as_string().as_deref(), Some("hello"));
    assert_eq!(kind(&received[0].1), "text");
    let echoed = received[1].0.dyn_ref::<Uint8Array>().expect("binary arrives as Uint8Array").to_vec();
    assert_eq!(echoed, vec![1, 2, 0, 255]);
    assert_eq!(kind(&received[1].1), "binary");
    assert_eq!(JSON::stringify(&received[2].0).unwrap().as_string().as_deref(), Some(r#"{"any":"json","n":[1,2]}"#));
    assert_eq!(kind(&received[2].1), "json");
    // Sequence numbers count up from 1 per session.
    let seqs: Vec<f64> = received.iter().map(|(_, info)| get(info, "seq").as_f64().unwrap()).collect();
    assert_eq!(seqs, vec![1.0, 2.0, 3.0]);

    let stats = client.stats();
    assert_eq!(get(&stats, "messagesOut").as_f64(), Some(3.0));
    assert_eq!(get(&stats, "messagesIn").as_f64(), Some(3.0));
    assert_eq!(get(&stats, "transport").as_string().as_deref(), Some(transport));
    client.close();
}

async fn two_clients_in_one_room_see_each_other(transport: &str) {
    let room = unique_room("pair");
    let alice = client(&room, &only(transport));
    let bob = client(&room, &only(transport));
    let alice_inbox = Recorder::attach(&alice, "message");
    let bob_inbox = Recorder::attach(&bob, "message");
    JsFuture::from(alice.connect()).await.unwrap();
    JsFuture::from(bob.connect()).await.unwrap();
    assert_ne!(alice.session_id().as_string(), bob.session_id().as_string());

    JsFuture::from(alice.send(JsValue::from_str("from alice"))).await.unwrap();
    JsFuture::from(bob.send(JsValue::from_str("from bob"))).await.unwrap();
    alice_inbox.wait_for(2).await;
    bob_inbox.wait_for(2).await;
    for inbox in [&alice_inbox, &bob_inbox] {
        let mut texts: Vec<String> = inbox.take().iter().filter_map(|(data, _)| data.as_string()).collect();
        texts.sort();
        assert_eq!(texts, vec!["from alice".to_owned(), "from bob".to_owned()]);
    }

    // A client in another room hears nothing of it.
    let other_room = unique_room("other");
    let stranger = client(&other_room, &only(transport));
    let stranger_inbox = Recorder::attach(&stranger, "message");
    JsFuture::from(stranger.connect()).await.unwrap();
    JsFuture::from(alice.send(JsValue::from_str("private"))).await.unwrap();
    bob_inbox.wait_for(1).await;
    assert_eq!(texts(&bob_inbox.take()), ["private"]);
    // "Nothing" needs a bound: a marker published into the stranger's own room after "private"
    // reached bob. One connection delivers in order, so anything misrouted to the stranger would
    // have come before the marker.
    publish(&other_room, None, "text/plain", "marker").await;
    stranger_inbox.wait_for(1).await;
    assert_eq!(texts(&stranger_inbox.take()), ["marker"], "the stranger heard another room");
    for client in [alice, bob, stranger] {
        client.close();
    }
}

async fn a_named_event_reaches_its_listener_and_not_message(transport: &str) {
    let room = unique_room("named");
    let client = client(&room, &only(transport));
    let plain = Recorder::attach(&client, "message");
    let ticker = Recorder::attach(&client, "ticker");
    JsFuture::from(client.connect()).await.unwrap();
    let price = JSON::parse(r#"{"price":1}"#).unwrap();
    JsFuture::from(client.emit("ticker", price).expect("valid name")).await.unwrap();
    JsFuture::from(client.send(JsValue::from_str("plain"))).await.unwrap();
    plain.wait_for(1).await;
    ticker.wait_for(1).await;
    let (data, info) = ticker.take().remove(0);
    assert_eq!(get(&data, "price").as_f64(), Some(1.0));
    assert_eq!(get(&info, "event").as_string().as_deref(), Some("ticker"));
    let (data, info) = plain.take().remove(0);
    assert_eq!(data.as_string().as_deref(), Some("plain"));
    assert!(get(&info, "event").is_null());

    // Lifecycle names cannot be emitted; bad names are refused.
    for name in ["open", "close", "error", "state", "transport", "reconnecting", "reset", "message"] {
        assert!(client.emit(name, JsValue::from_str("x")).is_err(), "{name}");
    }
    assert!(client.emit("has space", JsValue::from_str("x")).is_err());
    client.close();
}

async fn after_close_the_state_is_closed_and_no_listener_fires(transport: &str) {
    let room = unique_room("closed");
    let client = client(&room, &only(transport));
    JsFuture::from(client.connect()).await.unwrap();
    let states = Recorder::attach(&client, "state");
    let closes = Recorder::attach(&client, "close");
    client.close();
    assert_eq!(client.state().as_string().as_deref(), Some("closed"));
    assert!(client.transport().is_null());
    assert_eq!(closes.len(), 1, "close fires once, during close()");
    assert_eq!(states.take().iter().filter_map(|(state, _)| state.as_string()).collect::<Vec<_>>(), vec!["closed"]);

    // Everything registered from now on must stay silent while the room is busy.
    let after: Vec<Recorder> = ["message", "open", "close", "error", "state", "reconnecting"]
        .iter()
        .map(|name| Recorder::attach(&client, name))
        .collect();
    let witness = self::client(&room, &only(transport));
    let witness_inbox = Recorder::attach(&witness, "message");
    JsFuture::from(witness.connect()).await.unwrap();
    publish(&room, None, "text/plain", "after close").await;
    witness_inbox.wait_for(1).await;
    for recorder in &after {
        assert_eq!(recorder.len(), 0, "a listener fired after close()");
    }

    // Sending on a closed client rejects with an Error.
    let error = JsFuture::from(client.send(JsValue::from_str("late"))).await.expect_err("rejects");
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(error_message(&error), "client is closed");
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("closed"));
    witness.close();
}

async fn a_publish_from_the_http_endpoint_reaches_the_client(transport: &str) {
    let room = unique_room("publish");
    let client = client(&room, &only(transport));
    let messages = Recorder::attach(&client, "message");
    let alerts = Recorder::attach(&client, "alert");
    JsFuture::from(client.connect()).await.unwrap();
    publish(&room, None, "text/plain", "from the backend").await;
    publish(&room, Some("alert"), "application/json", r#"{"level":"high"}"#).await;
    messages.wait_for(1).await;
    alerts.wait_for(1).await;
    assert_eq!(messages.take()[0].0.as_string().as_deref(), Some("from the backend"));
    let (data, info) = alerts.take().remove(0);
    assert_eq!(get(&data, "level").as_string().as_deref(), Some("high"));
    assert_eq!(kind(&info), "json");
    client.close();
}

#[wasm_bindgen_test]
fn bad_urls_and_options_throw_clear_errors() {
    let url = |url: &str| RealtimeClient::new(JsValue::from_str(url), None);
    for bad in ["ws://127.0.0.1/realtime", "ftp://x", "/realtime", "http://"] {
        let error = url(bad).err().map(JsValue::from).expect("throws");
        assert!(error.is_instance_of::<js_sys::Error>());
        assert!(error_message(&error).starts_with("url "), "{bad}: {}", error_message(&error));
        assert_eq!(get(&error, "code").as_string().as_deref(), Some("invalid-argument"), "{bad}");
    }
    let error = RealtimeClient::new(JsValue::from_f64(1.0), None).err().map(JsValue::from).unwrap();
    assert_eq!(error_message(&error), "url must be a string");

    let with = |options: &str| {
        RealtimeClient::new(JsValue::from_str(&server_url("lobby")), Some(JSON::parse(options).unwrap()))
            .err()
            .map(|error| error_message(&JsValue::from(error)))
    };
    assert_eq!(
        with(r#"{"transport":["websocket"]}"#).as_deref(),
        Some("unknown option 'transport' (expected one of transports, connectTimeoutMs, reconnect, outbox, token, credentials)")
    );
    assert_eq!(
        with(r#"{"connectTimeoutMs":"5000"}"#).as_deref(),
        Some("option 'connectTimeoutMs' must be a whole number from 1 to 600000")
    );
    assert!(with(r#"{"transports":"websocket"}"#).unwrap().starts_with("option 'transports' must be an array"));
    assert_eq!(with(r#"{"transports":[]}"#).as_deref(), Some("option 'transports' must name at least one transport"));
    assert_eq!(with(r#"{"transports":["websocket","websocket"]}"#).as_deref(), Some("option 'transports' names 'websocket' twice"));
    assert!(with(r#"{"transports":["carrier-pigeon"]}"#).unwrap().starts_with("unknown transport 'carrier-pigeon'"));
    assert!(with(r#"{"reconnect":{"tries":3}}"#).unwrap().starts_with("unknown option 'reconnect.tries'"));
    assert_eq!(with(r#"[]"#).as_deref(), Some("options must be an object"));
    // A token of another type says what is wrong, never its value.
    assert_eq!(
        with(r#"{"token":12345}"#).as_deref(),
        Some("option 'token' must be a string or a function returning a string or a Promise of one, not number")
    );
    assert_eq!(with(r#"{"credentials":"always"}"#).as_deref(), Some("option 'credentials' must be 'include', 'same-origin' or 'omit'"));
    assert_eq!(with(r#"{"token":"a.b.c","credentials":"include"}"#), None);
    // The whole documented set is accepted.
    assert_eq!(
        with(r#"{"transports":["websocket","sse","long-polling"],"connectTimeoutMs":5000,
                "reconnect":{"initialDelayMs":100,"maxDelayMs":1000,"multiplier":1.5,"maxAttempts":3},
                "outbox":{"maxMessages":10,"maxBytes":1000}}"#),
        None
    );
    assert_eq!(with(r#"{"reconnect":false}"#), None);
}

async fn listeners_unsubscribe_and_a_throwing_listener_is_reported(transport: &str) {
    let room = unique_room("listeners");
    let client = client(&room, &only(transport));
    let kept = Recorder::attach(&client, "message");
    let dropped = Recorder::attach(&client, "message");
    dropped.unsubscribe();
    let errors = Recorder::attach(&client, "error");
    let thrower = js_sys::Function::new_no_args("throw new Error('listener bug')");
    client.on("message", thrower.into()).unwrap();
    JsFuture::from(client.connect()).await.unwrap();
    JsFuture::from(client.send(JsValue::from_str("x"))).await.unwrap();
    kept.wait_for(1).await;
    errors.wait_for(1).await;
    assert_eq!(dropped.len(), 0);
    let (error, _) = errors.take().remove(0);
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("listener-threw"));
    assert_eq!(error_message(&error), "a listener of 'message' threw: listener bug");
    assert_eq!(error_message(&get(&error, "cause")), "listener bug", "error.cause is what the listener threw");
    // The client is unharmed.
    JsFuture::from(client.send(JsValue::from_str("y"))).await.unwrap();
    kept.wait_for(2).await;
    assert!(client.on("message", JsValue::from_f64(1.0)).is_err(), "a listener must be a function");
    client.close();
}

/// The `send()`s of one task share a batch: 100 sends in one synchronous loop reach the server in
/// a handful of WebSocket messages (the server counts them), each acknowledged on its own and
/// echoed once, in order.
#[wasm_bindgen_test]
async fn sends_of_one_task_reach_the_server_in_one_websocket_message() {
    let room = unique_room("batched");
    let client = client(&room, &only("websocket"));
    let echoes = Recorder::attach(&client, "message");
    JsFuture::from(client.connect()).await.expect("connects");
    let before = websocket_messages(base_url()).await;
    let sends: Vec<JsFuture> = (0..100).map(|index| JsFuture::from(client.send(JsValue::from_str(&format!("m{index}"))))).collect();
    for send in sends {
        send.await.expect("each send is acknowledged");
    }
    let used = websocket_messages(base_url()).await - before;
    echoes.wait_for(100).await;
    let expected: Vec<String> = (0..100).map(|index| format!("m{index}")).collect();
    assert_eq!(texts(&echoes.take()), expected);
    log(&format!("batched: 100 sends of one task took {used} WebSocket messages"));
    // One batch, plus perhaps an ack of the echoes; one message per send would be 100.
    assert!((1.0..=5.0).contains(&used), "100 sends of one task took {used} WebSocket messages");
    client.close();
}

fn kind(info: &JsValue) -> String {
    get(info, "kind").as_string().unwrap_or_default()
}
