//! Shared helpers of the browser tests: the server URL, recorders for listeners, bounded waits
//! and the HTTP publish endpoint.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Reflect, JSON};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

use realtime_client::RealtimeClient;

/// The reference server's realtime base URL, fixed at compile time by `make test`.
pub fn base_url() -> &'static str {
    option_env!("REALTIME_TEST_URL")
        .expect("REALTIME_TEST_URL is not set: run the browser tests through `make test`, which starts the server")
}

/// The base URL with a room.
pub fn server_url(room: &str) -> String {
    format!("{}?room={room}", base_url())
}

/// A room name no other test uses.
pub fn unique_room(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

/// `{ transports: [transport] }`: forces one transport.
pub fn only(transport: &str) -> JsValue {
    JSON::parse(&format!(r#"{{"transports":["{transport}"]}}"#)).unwrap()
}

/// A client for `room` with `options`.
pub fn client(room: &str, options: &JsValue) -> RealtimeClient {
    RealtimeClient::new(JsValue::from_str(&server_url(room)), Some(options.clone())).expect("valid client")
}

/// Reads a property.
pub fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// The `message` of an Error.
pub fn error_message(error: &JsValue) -> String {
    get(error, "message").as_string().unwrap_or_default()
}

/// Records every call of a listener as `(first argument, second argument)`.
pub struct Recorder {
    calls: Rc<RefCell<Vec<(JsValue, JsValue)>>>,
    unsubscribe: Function,
    // Owned here so that the listener lives exactly as long as the recorder.
    _callback: Closure<dyn FnMut(JsValue, JsValue)>,
}

impl Recorder {
    /// Subscribes to `event` on `client`.
    pub fn attach(client: &RealtimeClient, event: &str) -> Recorder {
        let calls = Rc::new(RefCell::new(Vec::new()));
        let sink = calls.clone();
        let callback = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |first, second| {
            sink.borrow_mut().push((first, second));
        });
        let listener: &JsValue = callback.as_ref();
        let unsubscribe = client.on(event, listener.clone()).expect("listener accepted");
        Recorder { calls, unsubscribe, _callback: callback }
    }

    /// Calls so far.
    pub fn len(&self) -> usize {
        self.calls.borrow().len()
    }

    /// Takes the recorded calls.
    pub fn take(&self) -> Vec<(JsValue, JsValue)> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    /// Calls the unsubscribe function `on()` returned.
    pub fn unsubscribe(&self) {
        self.unsubscribe.call0(&JsValue::UNDEFINED).expect("unsubscribe works");
    }

    /// Waits until at least `count` calls arrived; fails the test after 10 s.
    pub async fn wait_for(&self, count: usize) {
        wait_until(10_000, || self.len() >= count).await;
        assert!(self.len() >= count, "expected {count} calls, got {}", self.len());
    }
}

/// Polls `condition` every 5 ms until it holds or `limit_ms` passed. The limit is an upper bound
/// for a failing test, never a delay a passing test depends on.
pub async fn wait_until(limit_ms: u32, mut condition: impl FnMut() -> bool) {
    let mut waited = 0;
    while !condition() && waited < limit_ms {
        TimeoutFuture::new(5).await;
        waited += 5;
    }
}

/// POSTs to the publish endpoint and checks the 202.
pub async fn publish(room: &str, event: Option<&str>, content_type: &str, body: &str) {
    let status = publish_status(room, event, content_type, body).await;
    assert_eq!(status, 202, "publish answered {status}");
}

/// POSTs to the publish endpoint and returns the status.
pub async fn publish_status(room: &str, event: Option<&str>, content_type: &str, body: &str) -> u16 {
    publish_status_at(base_url(), room, event, content_type, body).await
}

/// POSTs to the publish endpoint of the server at `base` and returns the status.
pub async fn publish_status_at(base: &str, room: &str, event: Option<&str>, content_type: &str, body: &str) -> u16 {
    let mut url = format!("{base}/publish?room={room}");
    if let Some(event) = event {
        url.push_str("&event=");
        url.push_str(event);
    }
    post_status(&url, &[("Content-Type", content_type)], body).await
}

/// POSTs `body` to `url` with `headers` and returns the status.
pub async fn post_status(url: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    let request = Request::new_with_str_and_init(url, &init).unwrap();
    for (name, value) in headers {
        request.headers().set(name, value).unwrap();
    }
    let window = web_sys::window().expect("a window");
    let response = JsFuture::from(window.fetch_with_request(&request)).await.expect("POST request");
    response.unchecked_into::<Response>().status()
}

/// A callback that does nothing, as a JS function.
pub fn noop() -> Function {
    Function::new_no_args("")
}

/// The realtime URL through the fault proxy, with a room.
pub fn proxied_url(room: &str) -> String {
    let base = option_env!("REALTIME_PROXY_URL")
        .expect("REALTIME_PROXY_URL is not set: run the browser tests through `make test`, which starts the fault proxy");
    format!("{base}?room={room}")
}

/// A client that reaches the server through the fault proxy.
pub fn proxied_client(room: &str, options: &JsValue) -> RealtimeClient {
    RealtimeClient::new(JsValue::from_str(&proxied_url(room)), Some(options.clone())).expect("valid client")
}

/// POSTs to the fault proxy's control port (`/mode?websocket=refuse`, `/reset`, `/cut`, ...).
pub async fn proxy(path_and_query: &str) {
    let control = option_env!("REALTIME_PROXY_CONTROL").expect("REALTIME_PROXY_CONTROL is not set");
    let init = RequestInit::new();
    init.set_method("POST");
    let request = Request::new_with_str_and_init(&format!("{control}{path_and_query}"), &init).unwrap();
    let window = web_sys::window().expect("a window");
    let response = JsFuture::from(window.fetch_with_request(&request)).await.expect("proxy control request");
    let status = response.unchecked_into::<Response>().status();
    assert_eq!(status, 200, "proxy control {path_and_query} answered {status}");
}

/// GETs the fault proxy's `/stats` as a JS object.
pub async fn proxy_stats() -> JsValue {
    let control = option_env!("REALTIME_PROXY_CONTROL").expect("REALTIME_PROXY_CONTROL is not set");
    let window = web_sys::window().expect("a window");
    let response = JsFuture::from(window.fetch_with_str(&format!("{control}/stats"))).await.expect("proxy stats");
    let response: Response = response.unchecked_into();
    JsFuture::from(response.json().unwrap()).await.expect("stats are JSON")
}

/// Milliseconds on the page's monotonic clock.
pub fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
        .ok()
        .and_then(|performance| {
            let now = js_sys::Reflect::get(&performance, &JsValue::from_str("now")).ok()?;
            now.dyn_into::<Function>().ok()?.call0(&performance).ok()?.as_f64()
        })
        .unwrap_or(0.0)
}

/// Forgets the transports remembered in sessionStorage, so a test starts from the top rung.
pub fn forget_rungs() {
    if let Some(storage) = web_sys::window().and_then(|window| window.session_storage().ok().flatten()) {
        storage.clear().expect("sessionStorage clears");
    }
}

/// Names of the chaos setup: a second server with a 1 s heartbeat behind a proxy that can also
/// kill and restart it.
pub struct Chaos;

impl Chaos {
    /// The realtime URL through the chaos proxy, with a room.
    pub fn url(room: &str) -> String {
        let base = option_env!("REALTIME_CHAOS_URL").expect("REALTIME_CHAOS_URL is not set: run through `make test`");
        format!("{base}?room={room}")
    }

    /// POSTs to the chaos proxy's control port and returns the JSON answer.
    pub async fn control(path_and_query: &str) -> JsValue {
        let control = option_env!("REALTIME_CHAOS_CONTROL").expect("REALTIME_CHAOS_CONTROL is not set");
        let init = RequestInit::new();
        init.set_method("POST");
        let request = Request::new_with_str_and_init(&format!("{control}{path_and_query}"), &init).unwrap();
        let window = web_sys::window().expect("a window");
        let response: Response = JsFuture::from(window.fetch_with_request(&request)).await.expect("chaos control").unchecked_into();
        assert_eq!(response.status(), 200, "chaos control {path_and_query}");
        JsFuture::from(response.json().unwrap()).await.unwrap_or(JsValue::NULL)
    }

    /// Publishes straight to the chaos server (around the proxy and its faults).
    pub async fn publish(room: &str, event: Option<&str>, body: &str) {
        let base = option_env!("REALTIME_CHAOS_UPSTREAM").expect("REALTIME_CHAOS_UPSTREAM is not set");
        let status = publish_status_at(base, room, event, "text/plain", body).await;
        assert_eq!(status, 202, "chaos publish answered {status}");
    }
}

/// The texts of recorded string payloads.
pub fn texts(recorded: &[(JsValue, JsValue)]) -> Vec<String> {
    recorded.iter().filter_map(|(data, _)| data.as_string()).collect()
}

/// The reference server over HTTPS (HTTP/2 by ALPN, development certificate trusted through its
/// SPKI fingerprint), fixed at compile time by `make test`.
pub fn tls_base_url() -> &'static str {
    option_env!("REALTIME_TLS_URL")
        .expect("REALTIME_TLS_URL is not set: run the browser tests through `make test`, which starts the TLS server")
}

/// A client of `base` (a realtime base URL) for `room` with `options`.
pub fn client_of(base: &str, room: &str, options: &JsValue) -> RealtimeClient {
    RealtimeClient::new(JsValue::from_str(&format!("{base}?room={room}")), Some(options.clone())).expect("valid client")
}

/// The admin token of the reference servers that .ci/browser-tests.sh starts: `GET .../stats` is
/// an admin endpoint (`Authorization: Bearer <token>`).
pub fn admin_token() -> &'static str {
    option_env!("REALTIME_ADMIN_TOKEN")
        .expect("REALTIME_ADMIN_TOKEN is not set: run the browser tests through `make test`, which gives the servers one")
}

/// GETs `{base}/stats` with the admin token: realtime requests per endpoint and HTTP version,
/// `{"sse":{"http1":N,"http2":N},...}`.
pub async fn http_versions(base: &str) -> JsValue {
    let window = web_sys::window().expect("a window");
    let request = Request::new_with_str(&format!("{base}/stats")).unwrap();
    request.headers().set("Authorization", &format!("Bearer {}", admin_token())).unwrap();
    let response: Response =
        JsFuture::from(window.fetch_with_request(&request)).await.expect("stats request").unchecked_into();
    assert_eq!(response.status(), 200, "{base}/stats");
    JsFuture::from(response.json().unwrap()).await.expect("stats are JSON")
}

/// One counter of an [`http_versions`] answer.
pub fn http_count(stats: &JsValue, endpoint: &str, version: &str) -> f64 {
    get(&get(stats, endpoint), version).as_f64().unwrap_or_else(|| panic!("stats lack {endpoint}.{version}"))
}

/// The WebSocket messages the server at `base` received from clients since it started.
pub async fn websocket_messages(base: &str) -> f64 {
    let stats = http_versions(base).await;
    get(&stats, "websocketMessages").as_f64().expect("stats count websocketMessages")
}

/// POSTs a text message to `{base}/publish` and checks the 202.
pub async fn publish_to(base: &str, room: &str, body: &str) {
    let status = publish_status_at(base, room, None, "text/plain", body).await;
    assert_eq!(status, 202, "publish to {base} answered {status}");
}

/// The fault proxy's realtime base URL (no query).
pub fn proxy_base_url() -> &'static str {
    option_env!("REALTIME_PROXY_URL")
        .expect("REALTIME_PROXY_URL is not set: run the browser tests through `make test`, which starts the fault proxy")
}

/// The sessionStorage key of the rung memory of the endpoint `base` (a URL without query).
pub fn rung_key(base: &str) -> String {
    format!("realtime-client:rung:{base}")
}

fn session_storage() -> web_sys::Storage {
    web_sys::window().and_then(|window| window.session_storage().ok().flatten()).expect("sessionStorage")
}

/// The raw rung memory of the endpoint `base` (`"<name>|<expiry epoch ms>"`), if any.
pub fn stored_rung(base: &str) -> Option<String> {
    session_storage().get_item(&rung_key(base)).expect("sessionStorage reads")
}

/// Writes the rung memory of the endpoint `base`, as an earlier page of the tab would have.
pub fn store_rung(base: &str, value: &str) {
    session_storage().set_item(&rung_key(base), value).expect("sessionStorage writes");
}

/// Splits a rung memory value into its name and expiry (epoch ms); fails the test if malformed.
pub fn parse_rung(value: &str) -> (String, f64) {
    let (name, expiry) = value.split_once('|').unwrap_or_else(|| panic!("rung memory {value:?} has no '|'"));
    let expiry: f64 = expiry.parse().unwrap_or_else(|_| panic!("rung memory {value:?}: expiry is not a number"));
    (name.to_owned(), expiry)
}

/// Waits until the client reports `transport` as in use, at most `limit_ms`; true if it did.
pub async fn wait_for_transport(client: &RealtimeClient, transport: &str, limit_ms: u32) -> bool {
    wait_until(limit_ms, || client.transport().as_string().as_deref() == Some(transport)).await;
    client.transport().as_string().as_deref() == Some(transport)
}

/// Writes a line to the browser console (shown in the test runner's output).
pub fn log(line: &str) {
    web_sys::console::log_1(&JsValue::from_str(line));
}

/// One readable line for a listener's arguments: strings as they are, Errors as `code: message`,
/// other values as JSON.
pub fn describe(first: &JsValue, second: &JsValue) -> String {
    let one = |value: &JsValue| -> String {
        if let Some(text) = value.as_string() {
            return format!("{text:?}");
        }
        if value.is_instance_of::<js_sys::Error>() {
            return format!("Error({}: {})", get(value, "code").as_string().unwrap_or_default(), error_message(value));
        }
        JSON::stringify(value).ok().and_then(|text| text.as_string()).unwrap_or_else(|| format!("{value:?}"))
    };
    if second.is_undefined() {
        one(first)
    } else {
        format!("{} {}", one(first), one(second))
    }
}

/// Every call of several listeners of one client, in the order they happened:
/// `"+<ms since attach> <event> <arguments>"`.
pub struct EventLog {
    entries: Rc<RefCell<Vec<String>>>,
    _callbacks: Vec<Closure<dyn FnMut(JsValue, JsValue)>>,
}

impl EventLog {
    /// Subscribes to each of `events` on `client`.
    pub fn attach(client: &RealtimeClient, events: &[&str]) -> EventLog {
        let entries = Rc::new(RefCell::new(Vec::new()));
        let started = now_ms();
        let callbacks = events
            .iter()
            .map(|&event| {
                let sink = entries.clone();
                let name = event.to_owned();
                let callback = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |first: JsValue, second: JsValue| {
                    sink.borrow_mut().push(format!("+{:.0}ms {name} {}", now_ms() - started, describe(&first, &second)));
                });
                let listener: &JsValue = callback.as_ref();
                client.on(event, listener.clone()).expect("listener accepted");
                callback
            })
            .collect();
        EventLog { entries, _callbacks: callbacks }
    }

    /// The entries so far.
    pub fn entries(&self) -> Vec<String> {
        self.entries.borrow().clone()
    }

    /// Writes the entries to the console, each prefixed by `label`.
    pub fn dump(&self, label: &str) {
        for entry in self.entries.borrow().iter() {
            log(&format!("{label}: {entry}"));
        }
    }
}
