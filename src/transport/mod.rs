//! Browser adapters (wasm32 only): they turn browser events into core [`Input`]s and carry out
//! core effects. No policy lives here: what to open, when to give up and what to send next is
//! the core's business.
//!
//! Invariant: every JS callback is owned by a [`listener::Listener`] guard, a [`timer::Timeout`]
//! or an in-flight [`http::HttpRequest`],
//! which unregister on drop; callbacks capture only an [`InputSink`] (a `Weak` handle), never
//! the thing that owns them.

use crate::prelude::*;
pub mod event_source;
pub mod http;
pub mod listener;
pub mod long_poll;
pub mod timer;
pub mod websocket;

use alloc::rc::Rc;

use js_sys::ArrayBuffer;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::core::session::{ConnId, Input};

/// The crate's one closure type for every JS callback (listeners, the timer, the microtask, the
/// fetch chain, the channel calls of hub.js): each further type ships its own glue shims (a
/// wasm export and a JS wrapper), and a mutable closure (`FnMut`) its own `makeMutClosure`. It
/// is a `Fn` so that JS may call it again from inside its own call (a listener that publishes
/// from inside a publish's events) instead of throwing; it returns what JS asked for, or
/// `undefined`.
pub type Callback = wasm_bindgen::closure::Closure<dyn Fn(JsValue) -> JsValue>;

/// Wraps `callback` (no result) in the crate's one closure type.
pub fn callback(callback: impl Fn(JsValue) + 'static) -> Callback {
    Callback::new(move |value| {
        callback(value);
        JsValue::UNDEFINED
    })
}

/// Where adapters report what happened. It holds only a weak handle on the client.
pub type InputSink = Rc<dyn Fn(Input)>;

/// A live transport connection; dropping it tears it down without firing further inputs.
///
/// Each adapter implements what its transport can do; the core never asks a transport for
/// something else (a WebSocket is never polled), so the defaults only report the mismatch.
pub trait Transport {
    /// Sends encoded frames on a WebSocket. Failures are reported through the sink.
    fn transmit(&self, _data: &[u8], _binary: bool) {}
    /// POSTs encoded frames upstream (SSE, long polling).
    fn post(&self, _url: &str, _body: &[u8]) {}
    /// Issues the next long poll, POSTing `body`.
    fn poll(&self, _url: &str, _body: &[u8]) {}
}

/// Starts an upstream POST that reports `Posted` or `Closed` for `conn`.
pub fn upload(conn: ConnId, url: &str, body: &[u8], credentials: Option<&'static str>, sink: &InputSink) -> Option<http::HttpRequest> {
    // The core encodes upstream batches with the text carrier, so this never fails in practice.
    let Ok(body) = core::str::from_utf8(body) else {
        sink(Input::Closed { conn, reason: String::from("upload failed: batch is not text") });
        return None;
    };
    let sink = sink.clone();
    Some(http::HttpRequest::start("POST", url, Some(body), credentials, http::Expect::Success, "upload", move |result| {
        sink(match result {
            Ok(_) => Input::Posted { conn },
            Err(failure) => failure_input(conn, failure),
        })
    }))
}

/// The input a failed request reports.
pub fn failure_input(conn: ConnId, failure: http::Failure) -> Input {
    if failure.refused {
        Input::Refused { conn, reason: failure.reason }
    } else {
        Input::Closed { conn, reason: failure.reason }
    }
}

#[wasm_bindgen]
extern "C" {
    // The page's `window`; `None` in a worker. A binding of our own: `web_sys::window()` goes
    // through `globalThis` lookups, an `instanceof` and a lazy cell, all shipped.
    #[wasm_bindgen(thread_local_v2, js_name = window)]
    static WINDOW: Option<web_sys::Window>;
}

#[wasm_bindgen]
extern "C" {
    // A `Uint8Array` as the glue sees it: `subarray()` returns a view (no copy) that the glue
    // copies straight into a Vec. `Uint8Array::to_vec` ships a length assertion (a panic site).
    #[wasm_bindgen(js_name = Uint8Array)]
    type Bytes;
    #[wasm_bindgen(constructor, js_class = Uint8Array)]
    fn new(buffer: &ArrayBuffer) -> Bytes;
    #[wasm_bindgen(method, js_name = subarray)]
    fn copy_into_wasm(this: &Bytes) -> Vec<u8>;
}

/// The bytes of an `ArrayBuffer`, copied into wasm memory.
pub fn bytes_of(buffer: &ArrayBuffer) -> Vec<u8> {
    Bytes::new(buffer).copy_into_wasm()
}

/// The page's window, or `None` in a worker.
pub fn window() -> Option<web_sys::Window> {
    WINDOW.with(Clone::clone)
}

#[wasm_bindgen(module = "/src/client/hub.js")]
extern "C" {
    /// The message of a JS exception, for events and errors (gloo's `js_to_js_error` in
    /// spirit): its `message` (an `Error`, a `DOMException`) if that is a string, or the value
    /// itself if it is a string, else "unknown error". In hub.js (`messageOf`), which the
    /// facade's listener errors use too: one copy, and no `Reflect.get` import.
    #[wasm_bindgen(js_name = messageOf)]
    pub fn js_error_message(error: &JsValue) -> String;
}

/// Appends `value` in decimal to `text` (no `core::fmt` in the shipped path).
pub fn push_number(text: &mut String, value: u64) {
    let mut digits = Vec::with_capacity(20);
    crate::core::wire::push_decimal(&mut digits, value);
    for digit in digits {
        text.push(char::from(digit));
    }
}
