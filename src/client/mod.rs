//! The facade: the only `#[wasm_bindgen]` surface. It converts JS values, validates options once,
//! calls user listeners and turns misuse into real `Error`s.
//!
//! Invariants:
//! - Only this module knows JsValue-level types of the public API and TypeScript.
//! - A listener that throws is reported as an 'error' event (or on the console, if it was an
//!   'error' listener) and never corrupts client state.
//! - Promises returned by `send`/`emit` settle exactly once: resolved on the server's ack,
//!   rejected when the message can no longer be delivered.

use crate::prelude::*;
mod driver;
mod options;
mod payload;
mod rung_memory;
mod typescript;

use core::cell::RefCell;
use alloc::rc::{Rc, Weak};

use js_sys::{Function, Object, Promise, Reflect, Uint8Array, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::endpoint::Endpoint;
use crate::core::endpoint::TransportKind;
use crate::core::session::{ErrorCode, Event, Session, TransportCause};
use crate::core::wire::{self, Payload};
use driver::{Driver, EventHandler};
use payload::payload_from;
use rung_memory::{recall_rung, rung_memory_key};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(value: &JsValue);
}

/// What a method throws if it finds the client's state still borrowed, which can only happen
/// after an earlier trap inside the client: the instance is then broken, and says so.
pub(crate) const BROKEN: &str = "realtime-client is broken by an earlier fatal error; create a new client";

/// Event names with a fixed meaning: `emit()` refuses them.
const LIFECYCLE_EVENTS: [&str; 8] = ["open", "close", "error", "state", "transport", "reconnecting", "reset", "message"];

/// A listener added with `on()`. The listener itself lives in the facade's JS `Map` under
/// `id`, so that the function `on()` returns can be `Map.prototype.delete` bound to the map and
/// the id: plain JS, safe to call at any time, even after the client was freed.
struct Subscription {
    id: u32,
    event: String,
}

struct PendingSend {
    id: u64,
    resolve: Function,
    reject: Function,
}

#[derive(Default)]
struct Hooks {
    subscriptions: Vec<Subscription>,
    /// id -> listener of every live subscription (a missing id was unsubscribed).
    listeners: js_sys::Map,
    next_subscription: u32,
    /// Unsettled sends in id order from `settled_head` on; a settled one leaves `None` behind
    /// (a Vec with a read index: no VecDeque in the wasm), compacted once half is gaps.
    pending_sends: Vec<Option<PendingSend>>,
    settled_head: usize,
    connect_waiters: Vec<(Function, Function)>,
    /// The app called `close()`: drop every listener once the `close` event has been dispatched
    /// (which happens later when `close()` runs inside a listener, during the pump).
    drop_listeners_at_close: bool,
}

/// The JS-facing half: listeners and promises. Owned by the client, known weakly to the driver.
/// JS strings of the per-message `info` object, made once per client.
struct MessageKeys {
    event: JsValue,
    seq: JsValue,
    kind: JsValue,
    text: JsValue,
    json: JsValue,
    binary: JsValue,
}

impl MessageKeys {
    fn new() -> MessageKeys {
        MessageKeys {
            event: JsValue::from_str("event"),
            seq: JsValue::from_str("seq"),
            kind: JsValue::from_str("kind"),
            text: JsValue::from_str("text"),
            json: JsValue::from_str("json"),
            binary: JsValue::from_str("binary"),
        }
    }
}

struct Facade {
    hooks: RefCell<Hooks>,
    keys: MessageKeys,
    /// The sessionStorage key under which the rung that worked for this endpoint is kept; none
    /// for a client with a restricted ladder.
    memory_key: Option<String>,
    /// The preferred rung of this client's ladder.
    top_rung: Option<TransportKind>,
    /// The rung in use, if it was reached by falling back (then it is remembered while in use).
    current_rung: core::cell::Cell<Option<TransportKind>>,
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
        let mut config = options::parse(&options).map_err(|message| invalid_argument(&message))?;
        config.jitter_seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
        // Only a client with the whole default ladder shares the rung memory: a restricted one
        // would remember (and be steered by) a rung it chose, not one the network forced.
        let memory_key = (config.transports == TransportKind::ALL).then(|| rung_memory_key(&url));
        config.initial_transport = memory_key.as_deref().and_then(recall_rung);
        let top_rung = config.transports.first().copied();
        let driver = Driver::new(Session::new(endpoint, config));
        let facade = Rc::new(Facade {
            hooks: RefCell::new(Hooks::default()),
            keys: MessageKeys::new(),
            memory_key,
            top_rung,
            current_rung: core::cell::Cell::new(None),
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
        if !LIFECYCLE_EVENTS.contains(&event) && !wire::is_valid_event_name(event) {
            return Err(invalid_argument("event name must be 1-64 characters of A-Z a-z 0-9 _ . : / -"));
        }
        if !listener.is_function() {
            return Err(invalid_argument("listener must be a function"));
        }
        let listener = listener.unchecked_into::<Function>();
        let mut hooks = self.facade.hooks();
        // Forget the subscriptions whose unsubscribe function ran since.
        let listeners = hooks.listeners.clone();
        hooks.subscriptions.retain(|subscription| !listeners.get(&JsValue::from(subscription.id)).is_undefined());
        hooks.next_subscription = hooks.next_subscription.wrapping_add(1);
        let id = hooks.next_subscription;
        hooks.subscriptions.push(Subscription { id, event: event.to_owned() });
        let key = JsValue::from(id);
        listeners.set(&key, &listener);
        let delete = Reflect::get(&listeners, &JsValue::from_str("delete")).ok().filter(JsValue::is_function).map(JsCast::unchecked_into::<Function>);
        match delete {
            Some(delete) => Ok(delete.bind1(&listeners, &key).unchecked_into::<Function>()),
            None => Err(invalid_argument("Map.prototype.delete is not a function")),
        }
    }

    /// Removes a listener added with `on()`.
    #[wasm_bindgen(skip_typescript)]
    pub fn off(&self, event: &str, #[wasm_bindgen(unchecked_param_type = "(...args: any[]) => void")] listener: JsValue) {
        let mut hooks = self.facade.hooks();
        let listeners = hooks.listeners.clone();
        hooks.subscriptions.retain(|subscription| {
            let key = JsValue::from(subscription.id);
            let matches = subscription.event == event && listeners.get(&key) == listener;
            if matches {
                listeners.delete(&key);
            }
            !matches && !listeners.get(&key).is_undefined()
        });
    }

    /// Connects; resolves once the session is open, rejects if the client closes first.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn connect(&self) -> Promise {
        if self.driver.with_session(|session| session.state() == crate::core::session::State::Open) {
            return Promise::new(&mut |resolve, _| call(&resolve, &JsValue::UNDEFINED));
        }
        let promise = Promise::new(&mut |resolve, reject| {
            {
                let mut hooks = self.facade.hooks();
                hooks.connect_waiters.push((resolve, reject));
            }
        });
        self.driver.connect();
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
        if LIFECYCLE_EVENTS.contains(&event) {
            let mut message = String::from("'");
            message.push_str(event);
            message.push_str("' is a lifecycle event name and cannot be emitted");
            return Err(invalid_argument(&message));
        }
        if !wire::is_valid_event_name(event) {
            return Err(invalid_argument("event name must be 1-64 characters of A-Z a-z 0-9 _ . : / -"));
        }
        Ok(self.send_message(Some(event.to_owned()), &data))
    }

    /// Closes for good: pending sends reject, the `close` listeners run, then every listener is
    /// dropped and everything the client registered in the page is released. Idempotent.
    pub fn close(&self) {
        if self.driver.with_session(|session| session.state() != crate::core::session::State::Closed) {
            {
                let mut hooks = self.facade.hooks();
                hooks.drop_listeners_at_close = true;
            }
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
        let object = Object::new();
        set(&object, "messagesIn", &number(stats.messages_in));
        set(&object, "messagesOut", &number(stats.messages_out));
        set(&object, "bytesIn", &number(stats.bytes_in));
        set(&object, "bytesOut", &number(stats.bytes_out));
        set(&object, "reconnects", &number(stats.reconnects));
        set(&object, "fallbacks", &number(stats.fallbacks));
        set(&object, "upgrades", &number(stats.upgrades));
        set(&object, "rttMs", &stats.rtt_ms.map_or(JsValue::NULL, number));
        set(&object, "transport", &transport.map_or(JsValue::NULL, |kind| JsValue::from_str(kind.as_str())));
        set(&object, "outbox", &number(outbox as u64));
        object.into()
    }
}

impl RealtimeClient {
    fn send_message(&self, event: Option<String>, data: &JsValue) -> Promise {
        let payload = match payload_from(data) {
            Ok(payload) => payload,
            Err(message) => return rejected(ErrorCode::InvalidArgument, &message),
        };
        // The promise's entry is registered before the pump runs: the pump may carry out a
        // transmit that fails at once and settles this very message.
        let mut promise = None;
        let result = self.driver.command_then(
            |session, now| session.send(now, event, payload),
            |result| {
                if let Ok(id) = result {
                    promise = Some(Promise::new(&mut |resolve, reject| {
                        {
                let mut hooks = self.facade.hooks();
                            hooks.pending_sends.push(Some(PendingSend { id: *id, resolve, reject }));
                        }
                    }));
                }
            },
        );
        match (result, promise) {
            (Ok(_), Some(promise)) => promise,
            (Err(error), _) => rejected(error.code(), error.as_str()),
            (Ok(_), None) => rejected(ErrorCode::Closed, "client is closed"),
        }
    }
}

impl Drop for RealtimeClient {
    fn drop(&mut self) {
        // Tear down transports and the timer even if JS still holds listeners.
        self.driver.command(|session, now| session.close(now));
        // Freed inside one of its own listeners, the close events are still queued in the outer
        // pump, which will find no facade to give them to: settle the promises here.
        let (sends, waiters) = {
            let mut hooks = self.facade.hooks();
            (core::mem::take(&mut hooks.pending_sends), core::mem::take(&mut hooks.connect_waiters))
        };
        let error = error_value(ErrorCode::Closed, "client was freed");
        for pending in sends.into_iter().flatten() {
            call(&pending.reject, &error);
        }
        for (_, reject) in waiters {
            call(&reject, &error);
        }
    }
}

impl EventHandler for Facade {
    fn handle_events(&self, events: Vec<Event>) {
        for event in events {
            self.dispatch(event);
        }
    }
}

impl Facade {
    /// The hooks. No borrow of them is ever held across a call out, so this finds none; should
    /// it (only after an earlier trap left one behind) it throws rather than carry on quietly.
    /// `throw_str`, not a panic: a panic site would keep the formatter in the wasm.
    fn hooks(&self) -> core::cell::RefMut<'_, Hooks> {
        self.hooks.try_borrow_mut().unwrap_or_else(|_| wasm_bindgen::throw_str(BROKEN))
    }

    fn dispatch(&self, event: Event) {
        match event {
            Event::State(state) => self.emit("state", &[JsValue::from_str(state.as_str())]),
            Event::Open { session_id, transport, resumed } => {
                let waiters = core::mem::take(&mut self.hooks().connect_waiters);
                for (resolve, _) in waiters {
                    call(&resolve, &JsValue::UNDEFINED);
                }
                if let Some(rung) = self.current_rung.get() {
                    self.remember(rung);
                }
                let info = Object::new();
                set(&info, "sessionId", &JsValue::from_str(&session_id));
                set(&info, "transport", &JsValue::from_str(transport.as_str()));
                set(&info, "resumed", &JsValue::from_bool(resumed));
                self.emit("open", &[info.into()]);
            }
            Event::Message { seq, event, payload } => {
                let (kind, data) = match payload {
                    Payload::Text(text) => ("text", JsValue::from_str(&text)),
                    Payload::Binary(bytes) => ("binary", Uint8Array::from(bytes.as_slice()).into()),
                    Payload::Json(text) => match JSON::parse(&text) {
                        Ok(value) => ("json", value),
                        Err(_) => {
                            self.emit("error", &[error_value(ErrorCode::Protocol, "server sent a json message that does not parse")]);
                            return;
                        }
                    },
                };
                // The keys and kind names are JS strings made once: converting them per message
                // was most of the per-message glue (profiled).
                let keys = &self.keys;
                let kind = match kind {
                    "text" => &keys.text,
                    "json" => &keys.json,
                    _ => &keys.binary,
                };
                let info = Object::new();
                let _ = Reflect::set(&info, &keys.event, &event.as_deref().map_or(JsValue::NULL, JsValue::from_str));
                let _ = Reflect::set(&info, &keys.seq, &number(seq));
                let _ = Reflect::set(&info, &keys.kind, kind);
                self.emit(event.as_deref().unwrap_or("message"), &[data, info.into()]);
            }
            Event::Delivered { up_to_id } => {
                let mut settled = Vec::new();
                {
                    let mut hooks = self.hooks();
                    let mut head = hooks.settled_head;
                    while let Some(slot) = hooks.pending_sends.get_mut(head) {
                        match slot {
                            Some(pending) if pending.id > up_to_id => break,
                            _ => settled.extend(slot.take()),
                        }
                        head += 1;
                    }
                    hooks.settled_head = head;
                    if head * 2 >= hooks.pending_sends.len() {
                        hooks.pending_sends.retain(Option::is_some);
                        hooks.settled_head = 0;
                    }
                }
                for pending in settled {
                    call(&pending.resolve, &JsValue::UNDEFINED);
                }
            }
            Event::SendFailed { id, code, reason } => {
                let pending = {
                    let mut hooks = self.hooks();
                    let slot = hooks.pending_sends.iter_mut().find(|slot| slot.as_ref().is_some_and(|pending| pending.id == id));
                    slot.and_then(Option::take)
                };
                if let Some(pending) = pending {
                    call(&pending.reject, &error_value(code, reason));
                }
            }
            Event::Transport { from, to, cause, reason } => {
                // Only a rung the network forced is remembered (falling back, or the remembered
                // one working again); reaching the top rung forgets it.
                let forced = matches!(cause, TransportCause::Fallback | TransportCause::Remembered);
                self.current_rung.set(if forced && Some(to) != self.top_rung { Some(to) } else { None });
                match self.current_rung.get() {
                    Some(rung) => self.remember(rung),
                    None => self.forget_rung(),
                }
                let info = Object::new();
                set(&info, "from", &from.map_or(JsValue::NULL, |kind| JsValue::from_str(kind.as_str())));
                set(&info, "to", &JsValue::from_str(to.as_str()));
                set(&info, "reason", &JsValue::from_str(&reason));
                self.emit("transport", &[info.into()]);
            }
            Event::Reconnecting { attempt, delay_ms, reason } => {
                if let Some(rung) = self.current_rung.get() {
                    // Also what `pagehide` ends in: a reload starts on the rung in use now.
                    self.remember(rung);
                }
                let info = Object::new();
                set(&info, "attempt", &number(u64::from(attempt)));
                set(&info, "delayMs", &number(delay_ms));
                set(&info, "reason", &JsValue::from_str(&reason));
                self.emit("reconnecting", &[info.into()]);
            }
            Event::Reset { reason } => {
                let info = Object::new();
                set(&info, "reason", &JsValue::from_str(reason));
                self.emit("reset", &[info.into()]);
            }
            Event::Error { code, message } => self.emit("error", &[error_value(code, &message)]),
            Event::Closed { code, reason, cause } => {
                if let Some(rung) = self.current_rung.get() {
                    // Still in use until now: its memory counts from here.
                    self.remember(rung);
                }
                let waiters = core::mem::take(&mut self.hooks().connect_waiters);
                let mut message = String::from("closed before the session opened: ");
                message.push_str(&reason);
                for (_, reject) in waiters {
                    call(&reject, &error_value(cause, &message));
                }
                let info = Object::new();
                set(&info, "code", &number(u64::from(code)));
                set(&info, "reason", &JsValue::from_str(&reason));
                self.emit("close", &[info.into()]);
                let mut hooks = self.hooks();
                if core::mem::replace(&mut hooks.drop_listeners_at_close, false) {
                    hooks.subscriptions.clear();
                    hooks.listeners.clear();
                }
            }
        }
    }

    /// Calls every listener of `event`. The list is copied first: a listener may unsubscribe.
    fn emit(&self, event: &str, args: &[JsValue]) {
        let (ids, listeners): (Vec<JsValue>, js_sys::Map) = {
            let hooks = self.hooks();
            let ids = hooks
                .subscriptions
                .iter()
                .filter(|subscription| subscription.event == event)
                .map(|subscription| JsValue::from(subscription.id))
                .collect();
            (ids, hooks.listeners.clone())
        };
        for id in ids {
            // Unsubscribed meanwhile (perhaps by an earlier listener of this very event).
            let listener = listeners.get(&id);
            if !listener.is_function() {
                continue;
            }
            let listener = listener.unchecked_into::<Function>();
            let result = match args {
                [first, second] => listener.call2(&JsValue::UNDEFINED, first, second),
                [first, ..] => listener.call2(&JsValue::UNDEFINED, first, &JsValue::UNDEFINED),
                [] => listener.call2(&JsValue::UNDEFINED, &JsValue::UNDEFINED, &JsValue::UNDEFINED),
            };
            if let Err(thrown) = result {
                if event == "error" {
                    console_error(&thrown);
                } else {
                    let mut message = String::from("a listener of '");
                    message.push_str(event);
                    message.push_str("' threw: ");
                    message.push_str(&crate::transport::js_error_message(&thrown));
                    let error = error_value(ErrorCode::ListenerThrew, &message);
                    let _ = Reflect::set(&error, &JsValue::from_str("cause"), &thrown);
                    self.emit("error", &[error]);
                }
            }
        }
    }
}

/// Calls `function(value)`, ignoring what it returns or throws (a promise's resolve or reject).
/// Every call from the facade goes through `call2`: one import instead of three.
fn call(function: &Function, value: &JsValue) {
    let _ = function.call2(&JsValue::UNDEFINED, value, &JsValue::UNDEFINED);
}

fn rejected(code: ErrorCode, message: &str) -> Promise {
    // Through the constructor, like every other promise: `Promise.reject` would be one more import.
    let error = error_value(code, message);
    Promise::new(&mut |_, reject| call(&reject, &error))
}

/// An `Error` with its stable `code` (the README's error table; `ErrorCode` in index.d.ts).
fn error_value(code: ErrorCode, message: &str) -> JsValue {
    let error: JsValue = JsError::new(message).into();
    let _ = Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code.as_str()));
    error
}

fn invalid_argument(message: &str) -> JsValue {
    error_value(ErrorCode::InvalidArgument, message)
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
}

fn number(value: u64) -> JsValue {
    JsValue::from_f64(value as f64)
}
