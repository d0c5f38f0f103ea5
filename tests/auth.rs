//! Authentication in a real browser (protocol v3, PROTOCOL.md §9), against a reference server
//! that verifies HS256 JWTs (`RT_JWT_SECRET`, a test secret the tests sign with through
//! `crypto.subtle`), behind a fault proxy that runs it: refusals of missing, forged and expired
//! tokens on every transport, channel permissions, the in-band refresh of 3 s tokens through
//! cuts, and the verified sender of a message.
//!
//! The proxy's mode is global, so these tests live in their own binary.
#![cfg(target_arch = "wasm32")]

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

use realtime_client::RealtimeClient;
use support::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const part = (text) => b64(new TextEncoder().encode(text));
export async function sign(secret, header, claims) {
    const input = part(header) + '.' + part(claims);
    const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return input + '.' + b64(await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(input)));
}
export function unixNow() { return Math.floor(Date.now() / 1000); }
// A token function: every call counts in counter.calls and answers a fresh token of `secs`.
export function tokenSource(secret, sub, channels, secs, counter) {
    return () => {
        counter.calls += 1;
        const claims = JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + secs, channels, publish: channels });
        return sign(secret, '{"alg":"HS256","typ":"JWT"}', claims);
    };
}
"#)]
extern "C" {
    fn sign(secret: &str, header: &str, claims: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_name = unixNow)]
    fn unix_now() -> f64;
    #[wasm_bindgen(js_name = tokenSource)]
    fn token_source(secret: &str, sub: &str, channels: &JsValue, secs: f64, counter: &JsValue) -> Function;
}

fn secret() -> &'static str {
    option_env!("REALTIME_JWT_SECRET").expect("REALTIME_JWT_SECRET is not set: run through .ci/browser-tests.sh")
}

/// The auth server, direct (no faults).
fn direct(room: &str) -> String {
    let base = option_env!("REALTIME_AUTH_UPSTREAM").expect("REALTIME_AUTH_UPSTREAM is not set");
    format!("{base}?room={room}")
}

/// The auth server through its fault proxy.
fn proxied(room: &str) -> String {
    let base = option_env!("REALTIME_AUTH_URL").expect("REALTIME_AUTH_URL is not set");
    format!("{base}?room={room}")
}

async fn control(path_and_query: &str) -> JsValue {
    let control = option_env!("REALTIME_AUTH_CONTROL").expect("REALTIME_AUTH_CONTROL is not set");
    let status = post_status(&format!("{control}{path_and_query}"), &[], "").await;
    assert_eq!(status, 200, "auth proxy control {path_and_query}");
    JsValue::NULL
}

async fn backend_publish(room: &str, body: &str) {
    let base = option_env!("REALTIME_AUTH_UPSTREAM").expect("REALTIME_AUTH_UPSTREAM is not set");
    let status = publish_status_at(base, room, Some("server"), "text/plain", body).await;
    assert_eq!(status, 202, "backend publish answered {status}");
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn claims(sub: &str, exp: f64, channels: &[&str]) -> String {
    let channels: Vec<String> = channels.iter().map(|pattern| format!("\"{pattern}\"")).collect();
    format!(r#"{{"sub":"{sub}","exp":{exp},"channels":[{list}],"publish":[{list}]}}"#, list = channels.join(","))
}

async fn signed(key: &str, header: &str, claims: &str) -> String {
    JsFuture::from(sign(key, header, claims)).await.expect("crypto.subtle signs").as_string().unwrap()
}

async fn valid_token(sub: &str, channels: &[&str]) -> String {
    signed(secret(), HS256, &claims(sub, unix_now() + 600.0, channels)).await
}

fn options(transport: &str, token: Option<&JsValue>) -> JsValue {
    let options = only(transport);
    if let Some(token) = token {
        Reflect::set(&options, &JsValue::from_str("token"), token).unwrap();
    }
    options
}

fn call(object: &JsValue, name: &str, args: &[JsValue]) -> JsValue {
    let function: Function = Reflect::get(object, &JsValue::from_str(name)).expect("a member").unchecked_into();
    function.apply(object, &args.iter().collect::<Array>()).expect("the call does not throw")
}

/// Listener calls of a Subscription.
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
}

const TRANSPORTS: [&str; 3] = ["websocket", "sse", "long-polling"];

#[wasm_bindgen_test]
async fn a_missing_forged_or_expired_token_is_refused_before_any_message_on_every_transport() {
    forget_rungs();
    let room = unique_room("auth-refused");
    backend_publish(&room, "history").await;
    let now = unix_now();
    let good = claims("mallory", now + 600.0, &["*"]);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("wrong key", Some(signed("another secret that is at least 32 bytes long", HS256, &good).await)),
        ("alg none", Some({
            let unsigned = signed(secret(), r#"{"alg":"none","typ":"JWT"}"#, &good).await;
            let cut = unsigned.rfind('.').unwrap();
            format!("{}.", &unsigned[..cut])
        })),
        ("altered claims", Some({
            let token = signed(secret(), HS256, &good).await;
            let parts: Vec<&str> = token.split('.').collect();
            let forged = signed(secret(), HS256, &claims("admin", now + 600.0, &["*"])).await;
            let forged_claims = forged.split('.').nth(1).unwrap().to_owned();
            format!("{}.{}.{}", parts[0], forged_claims, parts[2])
        })),
        ("expired", Some(signed(secret(), HS256, &claims("mallory", now - 120.0, &["*"])).await)),
    ];
    for transport in TRANSPORTS {
        for (name, token) in &cases {
            let token = token.as_deref().map(JsValue::from_str);
            let options = options(transport, token.as_ref());
            Reflect::set(&options, &JsValue::from_str("reconnect"), &JsValue::FALSE).unwrap();
            let client = RealtimeClient::new(JsValue::from_str(&direct(&room)), Some(options)).expect("valid client");
            let messages = Recorder::attach(&client, "server");
            let plain = Recorder::attach(&client, "message");
            let opens = Recorder::attach(&client, "open");
            let errors = Recorder::attach(&client, "error");
            let closes = Recorder::attach(&client, "close");
            let _ = client.connect();
            wait_until(15_000, || closes.len() >= 1).await;
            assert_eq!(closes.len(), 1, "{transport}, {name}: refused, then given up (reconnect: false)");
            assert_eq!((opens.len(), messages.len(), plain.len()), (0, 0, 0), "{transport}, {name}: nothing reached the client");
            let codes: Vec<String> = errors.take().iter().filter_map(|(error, _)| get(error, "code").as_string()).collect();
            assert!(codes.iter().any(|code| code == "unauthorized"), "{transport}, {name}: {codes:?}");
            client.close();
        }
    }
}

#[wasm_bindgen_test]
async fn a_channel_the_token_does_not_cover_is_unsubscribed_forbidden_and_the_others_stay() {
    forget_rungs();
    for transport in TRANSPORTS {
        let room = unique_room("auth-room");
        let token = valid_token("carol", &["auth-room-*", "open:*"]).await;
        let client = RealtimeClient::new(JsValue::from_str(&direct(&room)), Some(options(transport, Some(&JsValue::from_str(&token)))))
            .expect("valid client");
        let open = client.subscribe(JsValue::from_str("open:news"), JsValue::UNDEFINED).unwrap();
        let secret_channel = client.subscribe(JsValue::from_str("secret:plans"), JsValue::UNDEFINED).unwrap();
        let open_messages = Calls::attach(&open, "message");
        let ended = Calls::attach(&secret_channel, "unsubscribed");
        JsFuture::from(client.connect()).await.expect("connects");
        JsFuture::from(get(&open, "ready").unchecked_into::<js_sys::Promise>()).await.expect("open:news subscribed");
        wait_until(10_000, || !ended.calls.borrow().is_empty()).await;
        let code = ended.calls.borrow().first().map(|(info, _)| get(info, "code").as_string());
        assert_eq!(code, Some(Some("forbidden".to_owned())), "{transport}");
        let url = format!("{}/publish?channel=open:news", option_env!("REALTIME_AUTH_UPSTREAM").unwrap());
        assert_eq!(post_status(&url, &[("Content-Type", "text/plain")], "still here").await, 202);
        wait_until(10_000, || !open_messages.calls.borrow().is_empty()).await;
        assert_eq!(open_messages.calls.borrow().len(), 1, "{transport}: the covered channel goes on");
        assert_eq!(client.state().as_string().as_deref(), Some("open"));
        client.close();
    }
}

#[wasm_bindgen_test]
async fn info_from_is_the_verified_sender_and_null_for_a_backend_publish() {
    forget_rungs();
    for transport in TRANSPORTS {
        let room = unique_room("auth-from");
        let alice = valid_token("alice", &["auth-from-*"]).await;
        let bob = valid_token("bob", &["auth-from-*"]).await;
        let sender = RealtimeClient::new(JsValue::from_str(&direct(&room)), Some(options("websocket", Some(&JsValue::from_str(&alice)))))
            .unwrap();
        let receiver = RealtimeClient::new(JsValue::from_str(&direct(&room)), Some(options(transport, Some(&JsValue::from_str(&bob)))))
            .unwrap();
        let received = Recorder::attach(&receiver, "message");
        let published = Recorder::attach(&receiver, "server");
        JsFuture::from(sender.connect()).await.expect("alice connects");
        JsFuture::from(receiver.connect()).await.expect("bob connects");
        JsFuture::from(sender.send(JsValue::from_str("hi bob"))).await.expect("acked");
        backend_publish(&room, "from the backend").await;
        received.wait_for(1).await;
        published.wait_for(1).await;
        let (data, info) = received.take().remove(0);
        assert_eq!(data.as_string().as_deref(), Some("hi bob"));
        assert_eq!(get(&info, "from").as_string().as_deref(), Some("alice"), "{transport}");
        let (_, info) = published.take().remove(0);
        assert!(get(&info, "from").is_null(), "{transport}: a backend publish has no sender");
        sender.close();
        receiver.close();
    }
}

#[wasm_bindgen_test]
async fn three_second_tokens_refresh_in_band_through_cuts_with_nothing_lost_or_doubled() {
    forget_rungs();
    control("/reset").await;
    let room = unique_room("auth-refresh");
    let counter = Object::new();
    Reflect::set(&counter, &JsValue::from_str("calls"), &JsValue::from_f64(0.0)).unwrap();
    let channels: Array = [JsValue::from_str("auth-refresh-*")].into_iter().collect();
    let source = token_source(secret(), "dave", &channels, 3.0, &counter);
    let options = JsValue::from(Object::new());
    Reflect::set(&options, &JsValue::from_str("token"), &source).unwrap();
    let client = RealtimeClient::new(JsValue::from_str(&proxied(&room)), Some(options)).unwrap();
    let own = Recorder::attach(&client, "message");
    let published = Recorder::attach(&client, "server");
    let resets = Recorder::attach(&client, "reset");
    let errors = Recorder::attach(&client, "error");
    JsFuture::from(client.connect()).await.expect("connects");

    let started = now_ms();
    let mut acks = Vec::new();
    let mut n = 0;
    let mut next_cut = 4_000.0;
    while now_ms() - started < 20_000.0 {
        n += 1;
        acks.push(JsFuture::from(client.send(JsValue::from_str(&format!("c{n}")))));
        backend_publish(&room, &format!("s{n}")).await;
        if now_ms() - started > next_cut {
            control("/cut").await;
            next_cut += 4_000.0;
        }
        TimeoutFuture::new(100).await;
    }
    for (index, ack) in acks.into_iter().enumerate() {
        ack.await.unwrap_or_else(|error| panic!("c{} not acknowledged: {}", index + 1, error_message(&error)));
    }
    own.wait_for(n).await;
    published.wait_for(n).await;
    let expected_own: Vec<String> = (1..=n).map(|n| format!("c{n}")).collect();
    let expected_published: Vec<String> = (1..=n).map(|n| format!("s{n}")).collect();
    assert_eq!(texts(&own.take()), expected_own, "client to server: 0 lost, 0 doubled");
    assert_eq!(texts(&published.take()), expected_published, "server to client: 0 lost, 0 doubled");
    assert_eq!(resets.len(), 0, "no reset");
    let unauthorized: Vec<String> = errors
        .take()
        .iter()
        .filter(|(error, _)| get(error, "code").as_string().as_deref() == Some("unauthorized"))
        .map(|(error, _)| error_message(error))
        .collect();
    assert!(unauthorized.is_empty(), "no credential expired or was refused: {unauthorized:?}");
    let calls = get(&counter, "calls").as_f64().unwrap_or(0.0);
    let reconnects = get(&client.stats(), "reconnects").as_f64().unwrap_or(0.0);
    console_log!("{n} each way, {calls} token calls, {reconnects} reconnects");
    assert!(reconnects >= 1.0, "the proxy cut the session's connections");
    // Every connect round asks (the first connect and each reconnect), and no credential expired
    // or was refused (no `unauthorized` above) in 20 s of tokens that live under 3 s: so the
    // client held at least 7 of them, and some came by in-band refresh, not by reconnecting.
    // (A connection cut before 2/3 of its token's life needs no refresh: no tighter bound holds.)
    assert!(calls >= 7.0, "{calls} token calls in 20 s of sub-3 s tokens");
    assert!(calls >= 2.0 + reconnects, "{calls} calls for {reconnects} reconnects: no in-band refresh");
    client.close();
    control("/reset").await;
}
