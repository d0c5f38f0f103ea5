//! The facade: the only `#[wasm_bindgen]` surface. It converts JS values, validates options once
//! and turns misuse into real `Error`s. Its JS half, `hub.js` (a snippet of the generated glue),
//! keeps the listeners and the promises and shapes the objects listeners receive: the wasm calls
//! it with plain arguments instead of building objects through `Reflect` (measured smaller).
//!
//! Invariants:
//! - Only this module knows JsValue-level types of the public API and TypeScript.
//! - A listener that throws is reported as an 'error' event (or on the console, if it was an
//!   'error' listener) and never corrupts client state (hub.js catches it).
//! - Promises returned by `send`/`emit` settle exactly once: resolved on the server's ack,
//!   rejected when the message can no longer be delivered.

use crate::prelude::*;
mod channels;
mod driver;
mod options;
mod payload;
mod rung_memory;
mod typescript;

use alloc::rc::{Rc, Weak};

use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::core::endpoint::Endpoint;
use crate::core::endpoint::TransportKind;
use crate::core::session::{ErrorCode, Event, Session, TransportCause};
use crate::core::wire::Payload;
use driver::{Driver, EventHandler};
use payload::payload_from;
use rung_memory::{recall_rung, rung_memory_key};

// The JS half of the facade (hub.js, a snippet of the generated glue): the listener registry,
// the objects listeners receive, the promises and the Errors. Nothing in it throws into the wasm
// (a listener's exception is caught there), so none of these imports needs `catch`.
#[wasm_bindgen(module = "/src/client/hub.js")]
extern "C" {
    /// The registry and promises of one client (`hub()` in hub.js).
    type Hub;
    /// `room`: the URL's room channel; `call`: the Subscriptions' way into the wasm (channels.rs).
    /// `options`: the constructor's (hub.js keeps its `token`, validated by `options()`).
    #[wasm_bindgen(js_name = hub)]
    fn new_hub(room: Option<&str>, call: &JsValue, options: &JsValue) -> Hub;
    /// Calls the token source; it answers through `call` (ops 3 and 4, channels.rs).
    #[wasm_bindgen(method)]
    fn token(this: &Hub);
    /// Adds a listener, or returns the `Error` for a bad name or a listener that is not a function.
    #[wasm_bindgen(method, catch)]
    fn on(this: &Hub, event: &str, listener: &JsValue) -> Result<Function, JsValue>;
    /// The `Error` for an event name that `emit()` refuses (a lifecycle name, an invalid name).
    #[wasm_bindgen(catch)]
    fn emittable(event: &str) -> Result<(), JsValue>;
    #[wasm_bindgen(method)]
    fn off(this: &Hub, event: &str, listener: &JsValue);
    #[wasm_bindgen(method)]
    fn wait(this: &Hub, open: bool) -> Promise;
    #[wasm_bindgen(method, js_name = send)]
    fn track_send(this: &Hub, id: f64) -> Promise;
    /// A message; a channel's has its channel, epoch (hex) and offset.
    #[wasm_bindgen(method)]
    #[allow(clippy::too_many_arguments)]
    fn message(this: &Hub, event: Option<&str>, kind: u32, data: &JsValue, channel: Option<&str>, epoch: Option<&str>, offset: Option<f64>, from: Option<&str>);
    /// Validates subscribe()'s arguments, then the Subscription object of `channel` (the live
    /// one, or a new one): `[subscription, epoch, offset]`, the last two those of `since` if
    /// given; else the Error.
    #[wasm_bindgen(method, catch)]
    fn subscribe(this: &Hub, channel: &JsValue, options: &JsValue) -> Result<js_sys::Array, JsValue>;
    /// The live Subscription objects.
    #[wasm_bindgen(method)]
    fn subscriptions(this: &Hub) -> js_sys::Array;
    /// Every other event and notice, by `Js` kind (hub.js says what a, b, c, x and y are).
    #[wasm_bindgen(method)]
    fn event(this: &Hub, kind: u32, a: Option<&str>, b: Option<&str>, c: Option<&str>, x: f64, y: f64);

    /// The `room=` of the URL's query as the server reads it (the first one), or none.
    #[wasm_bindgen(js_name = room)]
    fn room_of(url: &str) -> Option<String>;

    /// An `Error` with its stable `code`.
    #[wasm_bindgen(js_name = error)]
    fn new_error(code: &str, message: &str) -> JsValue;
    /// A promise rejected with `value`.
    fn reject(value: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = stats)]
    #[allow(clippy::too_many_arguments)]
    fn stats_object(
        messages_in: f64,
        messages_out: f64,
        bytes_in: f64,
        bytes_out: f64,
        reconnects: f64,
        fallbacks: f64,
        upgrades: f64,
        rtt_ms: Option<f64>,
        transport: Option<&str>,
        outbox: f64,
    ) -> JsValue;
}

/// The kinds of `Hub::event`, numbered as hub.js's `event()` expects them (passed as a plain
/// number: an exported enum would show in the package's types).
#[derive(Clone, Copy)]
enum Js {
    State = 0,
    Open = 1,
    Transport = 2,
    Reconnecting = 3,
    Reset = 4,
    Error = 5,
    Close = 6,
    Delivered = 7,
    Failed = 8,
    Freed = 9,
    Closing = 10,
    Subscribed = 11,
    Unsubscribed = 12,
    Gap = 13,
    SubscriptionError = 14,
}

/// What a method throws if it finds the client's state still borrowed, which can only happen
/// after an earlier trap inside the client: the instance is then broken, and says so.
pub(crate) const BROKEN: &str = "realtime-client is broken by an earlier fatal error; create a new client";

/// The Rust half of the facade: the JS half (listeners, promises), the rung memory. Owned by
/// the client, known weakly to the driver.
struct Facade {
    hub: Hub,
    /// The sessionStorage key under which the rung that worked for this endpoint is kept; none
    /// for a client with a restricted ladder.
    memory_key: Option<String>,
    /// The preferred rung of this client's ladder.
    top_rung: Option<TransportKind>,
    /// The rung in use, if it was reached by falling back (then it is remembered while in use).
    current_rung: core::cell::Cell<Option<TransportKind>>,
    /// The callback hub.js's Subscriptions call; dropped with the facade (channels.rs).
    _call: channels::Call,
}

/// A realtime connection to a server, over WebSocket, SSE or long polling.
#[wasm_bindgen]
pub struct RealtimeClient {
    driver: Rc<Driver>,
    facade: Rc<Facade>,
}

#[wasm_bindgen]
impl RealtimeClient {
    /// Creates an idle client for `url` (`http://` or `https://`). Throws on a bad URL or option.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "string")] url: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "RealtimeClientOptions")] options: Option<JsValue>,
    ) -> Result<RealtimeClient, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let Some(url) = url.as_string() else {
            return Err(invalid_argument("url must be a string"));
        };
        let endpoint = Endpoint::parse(&url).map_err(|error| invalid_argument(error.as_str()))?;
        let (mut config, credentials) = options::parse(&options)?;
        config.jitter_seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
        let room = room_of(&url);
        config.room = room.clone();
        // Only a client with the whole default ladder shares the rung memory: a restricted one
        // would remember (and be steered by) a rung it chose, not one the network forced.
        let memory_key = (config.transports == TransportKind::ALL).then(|| rung_memory_key(&url));
        config.initial_transport = memory_key.as_deref().and_then(recall_rung);
        let top_rung = config.transports.first().copied();
        let driver = Driver::new(Session::new(endpoint, config), credentials);
        let weak_driver = Rc::downgrade(&driver);
        let facade = Rc::new_cyclic(|weak_facade: &Weak<Facade>| {
            let call = channels::callback(weak_driver, weak_facade.clone());
            Facade {
                hub: new_hub(room.as_deref(), call.as_ref(), &options),
                memory_key,
                top_rung,
                current_rung: core::cell::Cell::new(None),
                _call: call,
            }
        });
        let weak_facade: Weak<Facade> = Rc::downgrade(&facade);
        driver.set_handler(weak_facade.clone() as Weak<dyn EventHandler>);
        Ok(RealtimeClient { driver, facade })
    }

    /// Adds a listener for a lifecycle event, 'message' (unnamed messages) or a named event.
    /// Returns a function that removes it. (Typed by overloads in the TypeScript section.)
    #[wasm_bindgen(skip_typescript)]
    pub fn on(
        &self,
        event: &str,
        #[wasm_bindgen(unchecked_param_type = "(...args: any[]) => void")] listener: JsValue,
    ) -> Result<Function, JsValue> {
        self.facade.hub.on(event, &listener)
    }

    /// Removes a listener added with `on()`.
    #[wasm_bindgen(skip_typescript)]
    pub fn off(&self, event: &str, #[wasm_bindgen(unchecked_param_type = "(...args: any[]) => void")] listener: JsValue) {
        self.facade.hub.off(event, &listener);
    }

    /// Connects; resolves once the session is open, rejects if the client closes first.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn connect(&self) -> Promise {
        let open = self.driver.with_session(|session| session.state() == crate::core::session::State::Open);
        let promise = self.facade.hub.wait(open);
        if !open {
            self.driver.connect();
        }
        promise
    }

    /// Sends a message: a string (text), a Uint8Array or ArrayBuffer (binary), or any other
    /// JSON-serialisable value (json). Resolves when the server has acknowledged it.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn send(&self, #[wasm_bindgen(unchecked_param_type = "string | Uint8Array | ArrayBuffer | unknown")] data: JsValue) -> Promise {
        self.send_message(None, &data)
    }

    /// Sends a named event; listeners registered with `on(event)` receive it. Throws for
    /// lifecycle names and invalid names.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn emit(&self, event: &str, #[wasm_bindgen(unchecked_param_type = "string | Uint8Array | ArrayBuffer | unknown")] data: JsValue) -> Result<Promise, JsValue> {
        emittable(event)?;
        Ok(self.send_message(Some(event.to_owned()), &data))
    }

    /// Closes for good: pending sends reject, the `close` listeners run, then every listener is
    /// dropped and everything the client registered in the page is released. Idempotent.
    pub fn close(&self) {
        if self.driver.with_session(|session| session.state() != crate::core::session::State::Closed) {
            self.facade.notify(Js::Closing, None, None, 0.0);
        }
        self.driver.command(|session, now| session.close(now));
    }

    /// 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'.
    #[wasm_bindgen(getter, unchecked_return_type = "ClientState")]
    pub fn state(&self) -> JsValue {
        JsValue::from_str(self.driver.with_session(|session| session.state().as_str()))
    }

    /// The transport of the open connection, or null.
    #[wasm_bindgen(getter, unchecked_return_type = "TransportName | null")]
    pub fn transport(&self) -> JsValue {
        self.driver.with_session(|session| session.transport().map_or(JsValue::NULL, |kind| JsValue::from_str(kind.as_str())))
    }

    /// The session id once a server said hello, else null.
    #[wasm_bindgen(getter, js_name = sessionId, unchecked_return_type = "string | null")]
    pub fn session_id(&self) -> JsValue {
        self.driver.with_session(|session| session.session_id().map_or(JsValue::NULL, JsValue::from_str))
    }

    /// Counters: messages and bytes in/out, reconnects, fallbacks, upgrades, rttMs, transport.
    #[wasm_bindgen(unchecked_return_type = "ClientStats")]
    pub fn stats(&self) -> JsValue {
        let (stats, transport, outbox) =
            self.driver.with_session(|session| (session.stats(), session.transport(), session.outbox_len()));
        stats_object(
            stats.messages_in as f64,
            stats.messages_out as f64,
            stats.bytes_in as f64,
            stats.bytes_out as f64,
            stats.reconnects as f64,
            stats.fallbacks as f64,
            stats.upgrades as f64,
            stats.rtt_ms.map(|rtt| rtt as f64),
            transport.map(TransportKind::as_str),
            outbox as f64,
        )
    }
}

impl RealtimeClient {
    fn send_message(&self, event: Option<String>, data: &JsValue) -> Promise {
        channels::publish(&self.driver, &self.facade, None, event, data)
    }
}

impl Drop for RealtimeClient {
    fn drop(&mut self) {
        // Tear down transports and the timer even if JS still holds listeners.
        self.driver.command(|session, now| session.close(now));
        // Freed inside one of its own listeners, the close events are still queued in the outer
        // pump, which will find no facade to give them to: settle the promises here.
        self.facade.notify(Js::Freed, None, None, 0.0);
    }
}

impl EventHandler for Facade {
    fn handle_events(&self, events: Vec<Event>) {
        for event in events {
            self.dispatch(event);
        }
    }

    fn need_token(&self) {
        self.hub.token();
    }
}

impl Facade {
    /// Tells the JS half (`Hub::event`) with up to two strings and one number.
    fn notify(&self, kind: Js, a: Option<&str>, b: Option<&str>, x: f64) {
        self.hub.event(kind as u32, a, b, None, x, 0.0);
    }

    /// Gives a message to hub.js (which parses JSON text: an 'error' event if it does not parse).
    /// (hub.js numbers what it delivers itself: `info.seq` is not the wire seq.) `from`: the
    /// publisher's verified subject.
    fn message(&self, event: Option<&str>, payload: Payload, channel: Option<(&str, crate::core::wire::Position)>, from: Option<&str>) {
        let (kind, data) = match payload {
            Payload::Text(text) => (0, JsValue::from_str(&text)),
            Payload::Json(text) => (1, JsValue::from_str(&text)),
            Payload::Binary(bytes) => (2, Uint8Array::from(bytes.as_slice()).into()),
        };
        let epoch = channel.map(|(_, position)| channels::epoch_hex(position.epoch));
        let offset = channel.map(|(_, position)| position.offset as f64);
        self.hub.message(event, kind, &data, channel.map(|(name, _)| name), epoch.as_deref(), offset, from);
    }

    fn dispatch(&self, event: Event) {
        match event {
            Event::State(state) => self.notify(Js::State, Some(state.as_str()), None, 0.0),
            Event::Open { session_id, transport, resumed } => {
                if let Some(rung) = self.current_rung.get() {
                    self.remember(rung);
                }
                self.notify(Js::Open, Some(&session_id), Some(transport.as_str()), f64::from(u8::from(resumed)));
            }
            Event::Message { event, payload, .. } => self.message(event.as_deref(), payload, None, None),
            Event::ChannelMessage { channel, position, event, payload, from, .. } => {
                self.message(event.as_deref(), payload, Some((&channel, position)), from.as_deref());
            }
            Event::Subscribed { channel, recovered, position } => {
                let epoch = channels::epoch_hex(position.epoch);
                let (offset, recovered) = (position.offset as f64, f64::from(u8::from(recovered)));
                self.hub.event(Js::Subscribed as u32, Some(&channel), Some(&epoch), None, offset, recovered);
            }
            Event::Unsubscribed { channel, code, reason } => {
                self.hub.event(Js::Unsubscribed as u32, Some(&channel), Some(code.as_str()), Some(&reason), 0.0, 0.0);
            }
            Event::Gap { channel, epoch, from, to } => {
                let epoch = channels::epoch_hex(epoch);
                self.hub.event(Js::Gap as u32, Some(&channel), Some(&epoch), None, from as f64, to as f64);
            }
            Event::SubscriptionError { channel, code, message } => {
                self.hub.event(Js::SubscriptionError as u32, Some(&channel), Some(code.as_str()), Some(&message), 0.0, 0.0);
            }
            Event::Delivered { up_to_id } => self.notify(Js::Delivered, None, None, up_to_id as f64),
            Event::SendFailed { id, code, reason } => self.notify(Js::Failed, Some(code.as_str()), Some(reason), id as f64),
            Event::Transport { from, to, cause, reason } => {
                // Only a rung the network forced is remembered (falling back, or the remembered
                // one working again); reaching the top rung forgets it.
                let forced = matches!(cause, TransportCause::Fallback | TransportCause::Remembered);
                self.current_rung.set(if forced && Some(to) != self.top_rung { Some(to) } else { None });
                match self.current_rung.get() {
                    Some(rung) => self.remember(rung),
                    None => self.forget_rung(),
                }
                self.hub.event(Js::Transport as u32, from.map(TransportKind::as_str), Some(to.as_str()), Some(&reason), 0.0, 0.0);
            }
            Event::Reconnecting { attempt, delay_ms, reason } => {
                if let Some(rung) = self.current_rung.get() {
                    // Also what `pagehide` ends in: a reload starts on the rung in use now.
                    self.remember(rung);
                }
                self.hub.event(Js::Reconnecting as u32, Some(&reason), None, None, f64::from(attempt), delay_ms as f64);
            }
            Event::Reset { reason } => self.notify(Js::Reset, Some(reason), None, 0.0),
            Event::Error { code, message } => self.notify(Js::Error, Some(code.as_str()), Some(&message), 0.0),
            Event::Closed { code, reason, cause } => {
                if let Some(rung) = self.current_rung.get() {
                    // Still in use until now: its memory counts from here.
                    self.remember(rung);
                }
                // Rejects the waiting connect()s, dispatches 'close', then drops the listeners
                // if the app closed.
                self.notify(Js::Close, Some(&reason), Some(cause.as_str()), f64::from(code));
            }
        }
    }
}

fn rejected(code: ErrorCode, message: &str) -> Promise {
    reject(&new_error(code.as_str(), message))
}

fn invalid_argument(message: &str) -> JsValue {
    new_error(ErrorCode::InvalidArgument.as_str(), message)
}
