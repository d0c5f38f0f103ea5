//! One `fetch` request that is aborted when dropped (each in-flight request owns its
//! `AbortController`), shared by the SSE and long-polling adapters.
//!
//! The completion callback runs only if the request was not dropped first, so a transport that
//! was torn down never reports again.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::{ArrayBuffer, Promise, Uint8Array};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, RequestCache, RequestInit, Response};

use crate::transport::{js_error_message, push_number};

#[wasm_bindgen]
extern "C" {
    // The global `fetch`, present in windows and workers alike.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &RequestInit) -> Promise;
}

/// What a request must answer with to count as a success.
#[derive(Clone, Copy)]
pub enum Expect {
    /// Any 2xx; the body is ignored.
    Success,
    /// A 200 with this content type; the body is returned.
    Body(&'static str),
}

/// Why a request failed.
pub struct Failure {
    /// For the app's events.
    pub reason: String,
    /// The server refused the client (HTTP 401 or 403): retrying cannot help.
    pub refused: bool,
}

/// An in-flight request; dropping it aborts the fetch and silences its callback.
pub struct HttpRequest {
    controller: Option<AbortController>,
    cancelled: Rc<Cell<bool>>,
}

impl HttpRequest {
    /// Starts `method url` with an optional UTF-8 body; `done` gets the body or a reason.
    pub fn start(
        method: &str,
        url: &str,
        body: Option<&str>,
        expect: Expect,
        what: &'static str,
        done: impl FnOnce(Result<Vec<u8>, Failure>) + 'static,
    ) -> HttpRequest {
        let controller = AbortController::new().ok();
        let init = RequestInit::new();
        init.set_method(method);
        init.set_cache(RequestCache::NoStore);
        if let Some(controller) = &controller {
            init.set_signal(Some(&controller.signal()));
        }
        if let Some(body) = body {
            // text/plain keeps the POST a "simple request": no CORS preflight round trip.
            if let Ok(headers) = Headers::new() {
                let _ = headers.set("Content-Type", "text/plain;charset=UTF-8");
                init.set_headers(&headers);
            }
            init.set_body(&JsValue::from_str(body));
        }
        let promise = global_fetch(url, &init);
        let cancelled = Rc::new(Cell::new(false));
        let watch = cancelled.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = complete(promise, expect, what).await;
            if !watch.get() {
                done(result);
            }
        });
        HttpRequest { controller, cancelled }
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        self.cancelled.set(true);
        if let Some(controller) = &self.controller {
            controller.abort();
        }
    }
}

async fn complete(promise: Promise, expect: Expect, what: &'static str) -> Result<Vec<u8>, Failure> {
    let failed = |detail: &str| {
        let mut reason = String::from(what);
        reason.push_str(" failed: ");
        reason.push_str(detail);
        Failure { reason, refused: false }
    };
    let response = match JsFuture::from(promise).await {
        Ok(response) => response,
        Err(error) => return Err(failed(&js_error_message(&error))),
    };
    let Ok(response) = response.dyn_into::<Response>() else {
        return Err(failed("fetch returned no response"));
    };
    let status = response.status();
    match expect {
        Expect::Success if response.ok() => Ok(Vec::new()),
        Expect::Body(content_type) if status == 200 => {
            let actual = response.headers().get("content-type").ok().flatten().unwrap_or_default();
            if !actual.starts_with(content_type) {
                let mut detail = String::from("wrong content type '");
                detail.push_str(&actual);
                detail.push_str("', expected ");
                detail.push_str(content_type);
                return Err(failed(&detail));
            }
            let buffer = match response.array_buffer() {
                Ok(promise) => JsFuture::from(promise).await,
                Err(error) => Err(error),
            };
            match buffer {
                Ok(buffer) => match buffer.dyn_ref::<ArrayBuffer>() {
                    Some(buffer) => Ok(Uint8Array::new(buffer).to_vec()),
                    None => Err(failed("body is not bytes")),
                },
                Err(error) => Err(failed(&js_error_message(&error))),
            }
        }
        _ => {
            let mut detail = String::from("HTTP ");
            push_number(&mut detail, u64::from(status));
            let mut failure = failed(&detail);
            failure.refused = status == 401 || status == 403;
            Err(failure)
        }
    }
}
