//! The SSE adapter: the browser's `EventSource` down, `fetch` POSTs up.
//!
//! Each SSE event carries one frame; its `event:` field is the frame type, so the adapter
//! listens to each type by name. EventSource reconnects on its own after an error; that would
//! fight the core's policy (and replay nothing), so on the first error it is closed and the core
//! decides (MDN: EventSource error event).

use crate::prelude::*;
use core::cell::Cell;
use alloc::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};

use crate::core::session::{ConnId, Input};
use crate::transport::http::HttpRequest;
use crate::transport::listener::Listener;
use crate::transport::{js_error_message, upload, InputSink, Transport};

/// The SSE event names the server uses: one per frame type it sends (PROTOCOL.md §3.2, §8.2).
const FRAME_EVENTS: [&str; 12] =
    ["hello", "msg", "ack", "ping", "pong", "close", "subscribed", "unsubscribed", "gap", "nack", "pending", "authed"];

/// One SSE connection.
pub struct EventSourceTransport {
    source: EventSource,
    listeners: Vec<Listener>,
    conn: ConnId,
    sink: InputSink,
    /// fetch's `credentials` mode for the uploads and the bind (the `credentials` option).
    credentials: Option<&'static str>,
    // A `Cell`, not a `RefCell`: replaced whole, never borrowed (no borrow panic site).
    upload: Cell<Option<HttpRequest>>,
}

impl EventSourceTransport {
    /// Opens the event stream (with `withCredentials` when `credentials` is 'include'); failures
    /// arrive as `Input::Closed`.
    pub fn open(conn: ConnId, url: &str, credentials: Option<&'static str>, sink: InputSink) -> Option<EventSourceTransport> {
        let init = web_sys::EventSourceInit::new();
        init.set_with_credentials(credentials == Some("include"));
        let source = match EventSource::new_with_event_source_init_dict(url, &init) {
            Ok(source) => source,
            Err(error) => {
                let mut reason = String::from("event stream failed to open: ");
                reason.push_str(&js_error_message(&error));
                sink(Input::Closed { conn, reason });
                return None;
            }
        };
        let mut listeners = Vec::with_capacity(FRAME_EVENTS.len() + 2);
        let opened = Rc::new(Cell::new(false));
        for name in FRAME_EVENTS {
            let sink = sink.clone();
            listeners.push(Listener::new(&source, name, move |event| {
                // The event name fixes the type: no `instanceof` check.
                if let Some(text) = event.unchecked_ref::<MessageEvent>().data().as_string() {
                    sink(Input::Data { conn, bytes: text.into_bytes() });
                }
            }));
        }
        let on_open = sink.clone();
        let was_opened = opened.clone();
        listeners.push(Listener::new(&source, "open", move |_| {
            was_opened.set(true);
            on_open(Input::Opened { conn });
        }));
        let on_error = sink.clone();
        let error_source = source.clone();
        listeners.push(Listener::new(&source, "error", move |_| {
            // Stop EventSource's own reconnect before the core decides what to do.
            error_source.close();
            let reason = if opened.get() {
                "event stream broke"
            } else {
                // The browser does not expose why (status, content type, network).
                "event stream failed to connect (refused, non-2xx status or not text/event-stream)"
            };
            on_error(Input::Closed { conn, reason: String::from(reason) });
        }));
        Some(EventSourceTransport { source, listeners, conn, sink, credentials, upload: Cell::new(None) })
    }
}

impl Transport for EventSourceTransport {
    fn post(&self, url: &str, body: &[u8]) {
        self.upload.set(upload(self.conn, url, body, self.credentials, &self.sink));
    }
}

impl Drop for EventSourceTransport {
    fn drop(&mut self) {
        for listener in &mut self.listeners {
            listener.detach();
        }
        self.source.close();
    }
}
