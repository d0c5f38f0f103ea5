//! Channels in a real browser: many subscriptions over one connection, each in order and exactly
//! once both ways, across cuts and a WebSocket -> SSE -> long-polling downgrade through the fault
//! proxy, and recovered from the channels' history after a session reset.
//!
//! The proxy's mode is global, so these tests live in their own binary (run one after another).
#![cfg(target_arch = "wasm32")]

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

use realtime_client::RealtimeClient;
use support::*;

wasm_bindgen_test_configure!(run_in_browser);

const CHANNELS: usize = 20;

fn call(object: &JsValue, name: &str, args: &[JsValue]) -> JsValue {
    let function: Function = Reflect::get(object, &JsValue::from_str(name)).expect("a member").unchecked_into();
    function.apply(object, &args.iter().collect::<Array>()).expect("the call does not throw")
}

/// Every call of one listener of a Subscription.
struct Calls {
    calls: Rc<RefCell<Vec<(JsValue, JsValue)>>>,
    _callback: Closure<dyn FnMut(JsValue, JsValue)>,
}

impl Calls {
    fn attach(subscription: &JsValue, event: &str) -> Calls {
        let calls = Rc::new(RefCell::new(Vec::new()));
        let sink = calls.clone();
        let callback = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |first, second| sink.borrow_mut().push((first, second)));
        call(subscription, "on", &[JsValue::from_str(event), callback.as_ref().clone()]);
        Calls { calls, _callback: callback }
    }

    fn len(&self) -> usize {
        self.calls.borrow().len()
    }
}

/// One channel of a test: its Subscription and what its listeners saw.
struct Channel {
    name: String,
    subscription: JsValue,
    messages: Calls,
    subscribed: Calls,
    gaps: Calls,
}

fn subscribe(client: &RealtimeClient, name: &str) -> Channel {
    let subscription = client.subscribe(JsValue::from_str(name), JsValue::UNDEFINED).expect("subscribe accepts the name");
    Channel {
        name: name.to_owned(),
        messages: Calls::attach(&subscription, "message"),
        subscribed: Calls::attach(&subscription, "subscribed"),
        gaps: Calls::attach(&subscription, "gap"),
        subscription,
    }
}

async fn ready(channel: &Channel) {
    JsFuture::from(get(&channel.subscription, "ready").unchecked_into::<js_sys::Promise>()).await.expect("subscribed");
}

/// POSTs `body` to channel `name` through the backend publish endpoint of the direct server.
async fn backend_publish(name: &str, body: &str) {
    let url = format!("{}/publish?channel={name}", base_url());
    let status = post_status(&url, &[("Content-Type", "text/plain")], body).await;
    assert_eq!(status, 202, "backend publish to {name}");
}

/// Checks one channel's deliveries: offsets 1, 2, 3, ... with no gap and no double, and each of
/// the two senders' messages ("c<i>" from the client, "b<i>" from the backend) once, in order.
fn check_channel(channel: &Channel, per_sender: usize) {
    let calls = channel.messages.calls.borrow();
    let mut next_offset = None;
    let (mut client_next, mut backend_next) = (0usize, 0usize);
    for (data, info) in calls.iter() {
        assert_eq!(get(info, "channel").as_string().as_deref(), Some(channel.name.as_str()));
        let offset = get(info, "offset").as_f64().expect("an offset");
        if let Some(expected) = next_offset {
            assert_eq!(offset, expected, "{}: offsets go up by one", channel.name);
        }
        next_offset = Some(offset + 1.0);
        let text = data.as_string().expect("a text message");
        let (sender, number) = text.split_at(1);
        let number: usize = number.parse().expect("a numbered message");
        match sender {
            "c" => {
                assert_eq!(number, client_next, "{}: the client's messages once and in order", channel.name);
                client_next += 1;
            }
            _ => {
                assert_eq!(number, backend_next, "{}: the backend's messages once and in order", channel.name);
                backend_next += 1;
            }
        }
    }
    assert_eq!((client_next, backend_next), (per_sender, per_sender), "{}: everything arrived", channel.name);
    assert_eq!(channel.gaps.len(), 0, "{}: no gap", channel.name);
}

async fn wait_all(channels: &[Channel], each: usize, limit_ms: u32) {
    wait_until(limit_ms, || channels.iter().all(|channel| channel.messages.len() >= each)).await;
    let counts: Vec<usize> = channels.iter().map(|channel| channel.messages.len()).collect();
    assert!(counts.iter().all(|&count| count >= each), "expected {each} per channel, got {counts:?}");
}

/// Sends messages `from..to` both ways on every channel (the client's not awaited: they are
/// acknowledged while the faults go on).
async fn traffic(channels: &[Channel], from: usize, to: usize, pending: &mut Vec<JsFuture>) {
    for number in from..to {
        for channel in channels {
            let promise = call(&channel.subscription, "publish", &[JsValue::from_str(&format!("c{number}"))]);
            pending.push(JsFuture::from(promise.unchecked_into::<js_sys::Promise>()));
            backend_publish(&channel.name, &format!("b{number}")).await;
        }
    }
}

#[wasm_bindgen_test]
async fn twenty_channels_share_one_sse_stream_over_http1_each_in_order_both_ways() {
    let sse_before = http_count(&http_versions(base_url()).await, "sse", "http1");
    let client = client_of(base_url(), &unique_room("unused"), &only("sse"));
    let prefix = unique_room("sse-chan");
    let channels: Vec<Channel> = (0..CHANNELS).map(|index| subscribe(&client, &format!("{prefix}-{index}"))).collect();
    assert_eq!(client.subscriptions().length() as usize, CHANNELS);
    // subscribe() of a held channel is the same object.
    let again = client.subscribe(JsValue::from_str(&channels[3].name), JsValue::UNDEFINED).unwrap();
    assert!(Object::is(&again, &channels[3].subscription));
    JsFuture::from(client.connect()).await.expect("connects");
    for channel in &channels {
        ready(channel).await;
    }
    let mut pending = Vec::new();
    traffic(&channels, 0, 20, &mut pending).await;
    for promise in pending {
        promise.await.expect("every publish acknowledged");
    }
    wait_all(&channels, 40, 20_000).await;
    for channel in &channels {
        check_channel(channel, 20);
        assert_eq!(channel.subscribed.len(), 1);
    }
    // One event stream for all of them: the six-connection limit of HTTP/1.1 does not matter.
    // (The server counts the SSE requests it served; this binary's tests run one at a time.)
    let streams = http_count(&http_versions(base_url()).await, "sse", "http1") - sse_before;
    assert_eq!(streams, 1.0, "one SSE request, over HTTP/1.1, for {CHANNELS} channels");
    client.close();
}

#[wasm_bindgen_test]
async fn twenty_channels_through_cuts_and_a_downgrade_lose_nothing_and_double_nothing() {
    forget_rungs();
    proxy("/reset").await;
    let client = proxied_client(&unique_room("unused"), &JsValue::UNDEFINED);
    let prefix = unique_room("chaos-chan");
    let channels: Vec<Channel> = (0..CHANNELS).map(|index| subscribe(&client, &format!("{prefix}-{index}"))).collect();
    JsFuture::from(client.connect()).await.expect("connects");
    for channel in &channels {
        ready(channel).await;
    }
    let mut pending = Vec::new();
    // 200 each way per channel, in four rounds: a cut, the WebSocket refused (SSE), then SSE
    // refused too (long polling), each followed by a cut that forces the client to move.
    traffic(&channels, 0, 50, &mut pending).await;
    proxy("/cut").await;
    traffic(&channels, 50, 100, &mut pending).await;
    proxy("/mode?websocket=refuse").await;
    proxy("/cut").await;
    traffic(&channels, 100, 150, &mut pending).await;
    proxy("/mode?websocket=refuse&sse=refuse").await;
    proxy("/cut").await;
    traffic(&channels, 150, 200, &mut pending).await;
    for promise in pending {
        promise.await.expect("every publish acknowledged");
    }
    wait_all(&channels, 400, 60_000).await;
    for channel in &channels {
        check_channel(channel, 200);
    }
    assert_eq!(client.transport().as_string().as_deref(), Some("long-polling"));
    client.close();
    proxy("/reset").await;
}

/// Ends the client's session on the server (`kick?reset=1`: as if its resume window had passed).
async fn force_reset(session_id: &str) {
    let url = format!("{}/kick?sid={session_id}&reset=1", base_url());
    let authorization = format!("Bearer {}", admin_token());
    let status = post_status(&url, &[("Authorization", &authorization)], "").await;
    assert_eq!(status, 204, "kick?reset=1");
}

#[wasm_bindgen_test]
async fn a_forced_session_reset_is_recovered_from_history_for_every_channel() {
    let client = client_of(base_url(), &unique_room("unused"), &JsValue::UNDEFINED);
    let resets = Recorder::attach(&client, "reset");
    let prefix = unique_room("recover-chan");
    let channels: Vec<Channel> = (0..CHANNELS).map(|index| subscribe(&client, &format!("{prefix}-{index}"))).collect();
    JsFuture::from(client.connect()).await.expect("connects");
    for channel in &channels {
        ready(channel).await;
    }
    let mut pending = Vec::new();
    traffic(&channels, 0, 10, &mut pending).await;
    for promise in pending.drain(..) {
        promise.await.expect("acknowledged");
    }
    wait_all(&channels, 20, 20_000).await;
    let session_id = client.session_id().as_string().expect("a session");
    force_reset(&session_id).await;
    // Published while the client has no session: only the channels' history holds them.
    for number in 10..20 {
        for channel in &channels {
            backend_publish(&channel.name, &format!("b{number}")).await;
        }
    }
    resets.wait_for(1).await;
    assert_ne!(client.session_id().as_string(), Some(session_id), "a fresh session");
    wait_until(20_000, || channels.iter().all(|channel| channel.subscribed.len() >= 2)).await;
    for channel in &channels {
        let again = channel.subscribed.calls.borrow();
        assert_eq!(again.len(), 2, "{}: subscribed again after the reset", channel.name);
        assert_eq!(get(&again[1].0, "recovered").as_bool(), Some(true), "{}: recovered from history", channel.name);
    }
    for number in 10..20 {
        for channel in &channels {
            let promise = call(&channel.subscription, "publish", &[JsValue::from_str(&format!("c{number}"))]);
            pending.push(JsFuture::from(promise.unchecked_into::<js_sys::Promise>()));
        }
    }
    for promise in pending {
        promise.await.expect("acknowledged in the fresh session");
    }
    // The backend's 10..20 came from history, then the client's 10..20; each sender in order.
    wait_until(20_000, || channels.iter().all(|channel| channel.messages.len() >= 40)).await;
    for channel in &channels {
        check_channel(channel, 20);
    }
    client.close();
}
