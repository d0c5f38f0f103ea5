//! The WebSocket adapter.
//!
//! `binaryType` is `arraybuffer`: reading a Blob is asynchronous and would reorder messages
//! (MDN: WebSocket.binaryType). Text messages carry frames without raw binary bodies; binary
//! messages carry the rest; both decode the same way.

use crate::prelude::*;
use js_sys::ArrayBuffer;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::core::session::{ConnId, Input};
use crate::transport::listener::Listener;
use crate::transport::{js_error_message, push_number, InputSink, Transport};

/// One WebSocket connection.
pub struct WebSocketTransport {
    socket: WebSocket,
    listeners: Vec<Listener>,
    conn: ConnId,
    sink: InputSink,
}

impl WebSocketTransport {
    /// Opens `url` and sends `first` as the first message once open (the session and the
    /// credential, PROTOCOL.md §9.3; nothing for a probe); failures (even a synchronous one,
    /// like a bad URL) arrive as `Input::Closed`.
    pub fn open(conn: ConnId, url: &str, first: Vec<u8>, sink: InputSink) -> Option<WebSocketTransport> {
        let socket = match WebSocket::new(url) {
            Ok(socket) => socket,
            Err(error) => {
                let mut reason = String::from("websocket failed to open: ");
                reason.push_str(&js_error_message(&error));
                sink(Input::Closed { conn, reason });
                return None;
            }
        };
        socket.set_binary_type(BinaryType::Arraybuffer);
        let mut listeners = Vec::with_capacity(3);
        let on_open = sink.clone();
        let opened = socket.clone();
        listeners.push(Listener::new(&socket, "open", move |_| {
            if !first.is_empty() && opened.send_with_u8_array(&first).is_err() {
                on_open(Input::Closed { conn, reason: String::from("websocket send failed") });
                return;
            }
            on_open(Input::Opened { conn });
        }));
        let on_message = sink.clone();
        listeners.push(Listener::new(&socket, "message", move |event| {
            // The event name fixes the type: no `instanceof` check (and no import for one).
            let data = event.unchecked_ref::<MessageEvent>().data();
            let bytes = if let Some(text) = data.as_string() {
                text.into_bytes()
            } else if let Some(buffer) = data.dyn_ref::<ArrayBuffer>() {
                crate::transport::bytes_of(buffer)
            } else {
                return;
            };
            on_message(Input::Data { conn, bytes });
        }));
        // An `error` event is always followed by `close` (HTML spec), so only `close` reports.
        let on_close = sink.clone();
        listeners.push(Listener::new(&socket, "close", move |event| {
            let mut reason = String::from("websocket closed (code ");
            push_number(&mut reason, u64::from(event.unchecked_ref::<CloseEvent>().code()));
            reason.push(')');
            on_close(Input::Closed { conn, reason });
        }));
        Some(WebSocketTransport { socket, listeners, conn, sink })
    }
}

impl Transport for WebSocketTransport {
    fn transmit(&self, data: &[u8], _binary: bool) {
        // Always a binary message: sending text would decode the UTF-8 batch into a JS string
        // for the browser to encode it back (profiled: about 1 us per send). The server reads
        // both kinds the same way (PROTOCOL.md §3.1).
        let result = self.socket.send_with_u8_array(data);
        if let Err(error) = result {
            let mut reason = String::from("websocket send failed: ");
            reason.push_str(&js_error_message(&error));
            (self.sink)(Input::Closed { conn: self.conn, reason });
        }
    }
}

impl Drop for WebSocketTransport {
    fn drop(&mut self) {
        // Listeners first, then close, then (as fields drop) the closures.
        for listener in &mut self.listeners {
            listener.detach();
        }
        let _ = self.socket.close();
    }
}
