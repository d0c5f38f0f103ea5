//! The long-polling adapter: `fetch` GETs that the server holds (up to ~25 s) and answers with a
//! batch of frames, and `fetch` POSTs upstream. The core decides when the next poll goes out.
//!
//! Invariant: at most one poll and one upload in flight; replacing or dropping either aborts it.

use core::cell::Cell;

use crate::core::session::{ConnId, Input};
use crate::transport::http::{Expect, HttpRequest};
use crate::transport::{failure_input, upload, InputSink, Transport};

/// The content type of a poll response (wire protocol v1).
pub const FRAMES_CONTENT_TYPE: &str = "application/x-realtime-frames";

/// One long-polling connection.
pub struct LongPollTransport {
    conn: ConnId,
    sink: InputSink,
    /// fetch's `credentials` mode (the `credentials` option; None: the default).
    credentials: Option<&'static str>,
    // `Cell`s, not `RefCell`s: replaced whole, never borrowed (no borrow panic site).
    poll: Cell<Option<HttpRequest>>,
    upload: Cell<Option<HttpRequest>>,
}

impl LongPollTransport {
    /// Issues the first poll (which attaches the session and brings the hello); `body` holds
    /// its `session` and `token` frames (empty for a probe).
    pub fn open(conn: ConnId, url: &str, body: &[u8], credentials: Option<&'static str>, sink: InputSink) -> LongPollTransport {
        let transport = LongPollTransport { conn, sink, credentials, poll: Cell::new(None), upload: Cell::new(None) };
        transport.poll(url, body);
        transport
    }
}

impl Transport for LongPollTransport {
    fn poll(&self, url: &str, body: &[u8]) {
        let sink = self.sink.clone();
        let conn = self.conn;
        // A POST with a text body (PROTOCOL.md §9.3): a simple request, no preflight. The core
        // encodes frames as text, so the conversion never fails in practice.
        let body = core::str::from_utf8(body).unwrap_or("");
        let request = HttpRequest::start("POST", url, Some(body), self.credentials, Expect::Body(FRAMES_CONTENT_TYPE), "poll", move |result| {
            sink(match result {
                Ok(bytes) => Input::Data { conn, bytes },
                Err(failure) => failure_input(conn, failure),
            })
        });
        // Replacing the previous (completed) request is harmless; an in-flight one is aborted.
        self.poll.set(Some(request));
    }

    fn post(&self, url: &str, body: &[u8]) {
        self.upload.set(upload(self.conn, url, body, self.credentials, &self.sink));
    }
}
