//! Trace tests of the session machine with simulated time: script in, expected effects and
//! events out.

use super::*;
use crate::core::backoff::BackoffConfig;
use crate::core::session::batch::{MAX_BATCH_BYTES, MAX_IN_FLIGHT};
use crate::core::wire::{Carrier, Hello, Message, Payload};

mod auth;
mod batching;
mod channel_properties;
mod channels;
mod head_start;
mod ladder;
mod properties;
mod regressions;
mod traces;

const URL: &str = "http://127.0.0.1:8080/realtime?room=lobby";

struct Harness {
    session: Session,
    now: Millis,
}

impl Harness {
    fn new(config: SessionConfig) -> Harness {
        Harness { session: Session::new(Endpoint::parse(URL).unwrap(), config), now: 1_000 }
    }

    /// The effects of the task that ends now: a flush it asked for runs first, as the driver's
    /// microtask does.
    fn effects(&mut self) -> Vec<Effect> {
        if self.session.poll_flush() {
            self.session.handle_flush(self.now);
        }
        self.pending_effects()
    }

    /// The effects so far, with the task still running (no flush).
    fn pending_effects(&mut self) -> Vec<Effect> {
        std::iter::from_fn(|| self.session.poll_effect()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    fn data(&mut self, conn: ConnId, frames: &[Frame]) {
        let mut bytes = Vec::new();
        for frame in frames {
            wire::encode(frame, Carrier::Binary, &mut bytes);
        }
        self.session.handle_input(self.now, Input::Data { conn, bytes });
    }

    fn advance_to(&mut self, at: Millis) {
        self.now = at;
        self.session.handle_timeout(at);
        // Invariant: handling a timeout moves every deadline past now, or the adapter spins.
        if let Some(next) = self.session.poll_timeout() {
            assert!(next > at, "deadline {next} not past now {at} after handle_timeout");
        }
    }

    /// Runs timers until `until`, firing each deadline at its exact time.
    fn run_until(&mut self, until: Millis) {
        while let Some(at) = self.session.poll_timeout().filter(|&at| at <= until) {
            self.advance_to(at.max(self.now));
        }
        self.now = until;
    }

    /// connect() with the whole ladder allowed; the WebSocket says hello.
    fn open_default_websocket(&mut self) -> ConnId {
        self.session.connect(self.now);
        let conn = match self.effects().as_slice() {
            [Effect::Open { conn, kind: TransportKind::WebSocket, .. }] => *conn,
            other => panic!("unexpected effects {other:?}"),
        };
        self.data(conn, &[hello("s1", 0, false)]);
        self.effects();
        conn
    }

    /// connect(), the socket opens, the hello arrives; returns the connection.
    fn open(&mut self) -> ConnId {
        self.session.connect(self.now);
        let conn = match self.effects().as_slice() {
            [Effect::Open { conn, kind: TransportKind::WebSocket, url, .. }] => {
                assert_eq!(url, "ws://127.0.0.1:8080/realtime?room=lobby&rt_v=3&rt_conn=1");
                *conn
            }
            other => panic!("unexpected effects {other:?}"),
        };
        self.session.handle_input(self.now, Input::Opened { conn });
        self.data(conn, &[hello("s1", 0, false)]);
        conn
    }
}

/// The single-rung configuration most traces use; the ladder has its own tests.
fn ws_only() -> SessionConfig {
    SessionConfig { transports: vec![TransportKind::WebSocket], ..SessionConfig::default() }
}

fn hello(session_id: &str, ack: u64, resumed: bool) -> Frame {
    Frame::Hello(Hello {
        version: 3,
        session_id: session_id.into(),
        secret: "secret".into(),
        heartbeat_ms: 10_000,
        max_body_bytes: 1024,
        ack,
        resumed,
    })
}

fn text(seq: u64, body: &str) -> Frame {
    Frame::Message(Message { seq, event: None, payload: Payload::Text(body.into()) })
}

fn transmitted(effects: &[Effect]) -> Vec<Frame> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Transmit { data, .. } => Some(wire::decode_all(data, 1 << 20).unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn opened(effects: &[Effect]) -> Vec<(ConnId, TransportKind, String)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            // The URL, then the opening frames (PROTOCOL.md §9.3) as text, if any.
            Effect::Open { conn, kind, url, body } if body.is_empty() => Some((*conn, *kind, url.clone())),
            Effect::Open { conn, kind, url, body } => Some((*conn, *kind, format!("{url} {}", String::from_utf8_lossy(body).trim_end()))),
            _ => None,
        })
        .collect()
}

fn posted(effects: &[Effect]) -> Vec<Frame> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Post { body, .. } => {
                assert!(std::str::from_utf8(body).is_ok(), "POST bodies are text");
                let mut frames = wire::decode_all(body, 1 << 20).unwrap();
                // Every upload starts with its session (PROTOCOL.md §9.3), a bind too.
                assert!(matches!(frames.first(), Some(Frame::Session(_))), "{frames:?}");
                frames.remove(0);
                Some(frames)
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn transport_events(events: &[Event]) -> Vec<(Option<TransportKind>, TransportKind, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Transport { from, to, reason, .. } => Some((*from, *to, reason.clone())),
            _ => None,
        })
        .collect()
}

/// Falls back from a refused WebSocket to SSE; returns the SSE connection.
fn on_sse_after_fallback(h: &mut Harness) -> ConnId {
    h.session.connect(h.now);
    let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
    h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "refused".into() });
    let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(sse, &[hello("s1", 0, false)]);
    h.events();
    // The first upload (the RTT ping) is answered, as a server does.
    for effect in h.effects() {
        if let Effect::Post { conn, .. } = effect {
            h.session.handle_input(h.now, Input::Posted { conn });
        }
    }
    sse
}
