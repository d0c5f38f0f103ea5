//! One `fetch` request that is aborted when dropped (each in-flight request owns its
//! `AbortController`), shared by the SSE and long-polling adapters.
//!
//! The completion callback runs only if the request was not dropped first, so a transport that
//! was torn down never reports again.
//!
//! No async runtime: the request chains `Promise.then` by hand with one closure (wasm-bindgen's
//! futures executor cost 1.7 KB gzipped). Ownership of that closure, the part that needs proof:
//! - JS holds the closure's function only while a promise of this request is pending, and a
//!   pending promise always settles: the fetch and the body read resolve or reject on their own,
//!   and dropping [`HttpRequest`] aborts them, which rejects both.
//! - Until then the closure is kept alive by the request's shared state, which the closure
//!   itself holds (a deliberate cycle, so that dropping `HttpRequest` cannot free a closure
//!   that a pending promise will still call).
//! - The cycle is broken when the last promise settles: [`finish`] takes the closure out of the
//!   state and drops it while it runs. wasm-bindgen's glue counts calls in progress and frees a
//!   closure dropped during its own call only once that call returns, so nothing is freed under
//!   the running code; the state goes with it.

use crate::prelude::*;
use core::cell::Cell;
use alloc::rc::Rc;

use js_sys::{ArrayBuffer, Promise};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortController, Response};

use crate::transport::js_error_message;

#[wasm_bindgen(module = "/src/client/hub.js")]
extern "C" {
    /// `fetch(url, { method, cache: 'no-store', signal?, body? })` (`request` in hub.js); a
    /// 401 or 403 rejects with a string: `HTTP <status>: <the server's reason, printable>`.
    fn request(url: &str, method: &str, signal: Option<web_sys::AbortSignal>, body: Option<&str>, credentials: Option<&str>) -> Promise;
}

/// What a request must answer with to count as a success.
#[derive(Clone, Copy)]
pub enum Expect {
    /// Any 2xx; the body is ignored.
    Success,
    /// A 2xx with this content type; the body is returned.
    Body(&'static str),
}

/// Why a request failed.
pub struct Failure {
    /// For the app's events.
    pub reason: String,
    /// The server refused the client (HTTP 401 or 403, told by hub.js's `request`): retrying
    /// cannot help.
    pub refused: bool,
}

type Done = Box<dyn FnOnce(Result<Vec<u8>, Failure>)>;

/// What a request holds while a promise of it is pending.
struct State {
    expect: Expect,
    what: &'static str,
    /// Set when the [`HttpRequest`] is dropped: the result is then discarded.
    cancelled: Cell<bool>,
    /// The one closure both promises of the request call (see the module docs).
    /// `Cell`s, taken and put back, never borrowed (no borrow panic site).
    step: Cell<Option<crate::transport::Callback>>,
    done: Cell<Option<Done>>,
}

/// An in-flight request; dropping it aborts the fetch and silences its callback.
pub struct HttpRequest {
    controller: Option<AbortController>,
    state: Rc<State>,
}

impl HttpRequest {
    /// Starts `method url` with an optional UTF-8 body and fetch's `credentials` mode (None: the
    /// default); `done` gets the body or a reason.
    pub fn start(
        method: &str,
        url: &str,
        body: Option<&str>,
        credentials: Option<&'static str>,
        expect: Expect,
        what: &'static str,
        done: impl FnOnce(Result<Vec<u8>, Failure>) + 'static,
    ) -> HttpRequest {
        let controller = AbortController::new().ok();
        let state = Rc::new(State {
            expect,
            what,
            cancelled: Cell::new(false),
            step: Cell::new(None),
            done: Cell::new(Some(Box::new(done))),
        });
        let held = state.clone();
        let step = crate::transport::callback(move |value| on_settled(&held, value));
        // The init object is shaped by hub.js: `RequestInit`'s setters would be one import each,
        // and `Reflect.set` with a key string per field costs more than one call. A string body
        // is sent as `text/plain;charset=UTF-8` (Fetch: extract a body), which keeps the POST a
        // "simple request": no CORS preflight round trip. `fetch` rejects (never throws) on a
        // bad URL or a network error.
        let signal = controller.as_ref().map(AbortController::signal);
        wait(&request(url, method, signal, body, credentials), &step);
        state.step.set(Some(step));
        HttpRequest { controller, state }
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        self.state.cancelled.set(true);
        if let Some(controller) = &self.controller {
            controller.abort();
        }
    }
}

/// Calls `step` with whatever `promise` settles to, value or reason alike: the value's type
/// tells them apart (a `Response` or an `ArrayBuffer` on success, an exception otherwise).
fn wait(promise: &Promise, step: &crate::transport::Callback) {
    promise.unchecked_ref::<Thenable>().then(step, step);
}

#[wasm_bindgen]
extern "C" {
    /// A promise, seen through a `then` that takes the crate's closure type (js-sys's `then2`
    /// takes `FnMut`s).
    type Thenable;
    #[wasm_bindgen(method)]
    fn then(this: &Thenable, on_fulfilled: &crate::transport::Callback, on_rejected: &crate::transport::Callback);
}

/// One promise of the request settled with `value`.
fn on_settled(state: &Rc<State>, value: JsValue) {
    let failed = |detail: &str| {
        let mut reason = String::from(state.what);
        reason.push_str(" failed: ");
        reason.push_str(detail);
        Err(Failure { reason, refused: false })
    };
    let result = if let Some(buffer) = value.dyn_ref::<ArrayBuffer>() {
        Ok(crate::transport::bytes_of(buffer))
    } else if let Some(response) = value.dyn_ref::<Response>() {
        // Only a 2xx gets here: hub.js's `request` rejects every other status.
        match state.expect {
            Expect::Success => Ok(Vec::new()),
            Expect::Body(content_type) => {
                let actual = response.headers().get("content-type").ok().flatten().unwrap_or_default();
                if actual.starts_with(content_type) {
                    let pending = response.array_buffer();
                    let step = state.step.take();
                    if let (Ok(promise), Some(step)) = (&pending, &step) {
                        // The body comes in a second promise, to the same closure.
                        wait(promise, step);
                    }
                    let waiting = pending.is_ok() && step.is_some();
                    state.step.set(step);
                    if waiting {
                        return;
                    }
                    match pending {
                        Err(error) => failed(&js_error_message(&error)),
                        Ok(_) => failed("body could not be read"),
                    }
                } else {
                    let mut detail = String::from("wrong content type '");
                    detail.push_str(&actual);
                    detail.push_str("', expected ");
                    detail.push_str(content_type);
                    failed(&detail)
                }
            }
        }
    } else if let Some(refusal) = value.as_string() {
        // Only hub.js's `request` rejects with a string: the server refused the client.
        let mut failure = failed(&refusal);
        if let Err(failure) = &mut failure {
            failure.refused = true;
        }
        failure
    } else {
        failed(&js_error_message(&value))
    };
    finish(state, result);
}

/// The request is over: frees the closure (see the module docs), then reports unless cancelled.
fn finish(state: &Rc<State>, result: Result<Vec<u8>, Failure>) {
    let step = state.step.take();
    let done = state.done.take();
    if let (false, Some(done)) = (state.cancelled.get(), done) {
        done(result);
    }
    drop(step);
}
