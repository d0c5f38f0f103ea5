//! The driver: owns the core session, the live transports and the one timer, and pumps inputs,
//! effects and events between them.
//!
//! Invariants:
//! - The session is only borrowed inside [`Driver::pump`]'s critical section, which calls no user
//!   code. Inputs that arrive while it runs (a transport failing synchronously, a user callback
//!   calling `send`) are queued and picked up by the same pump before it returns.
//! - Events are drained into a local list and dispatched with no borrow held, so a listener may
//!   call any client method.
//! - At most one timer is armed, at the session's `poll_timeout`.
//! - At most one flush of deferred sends is pending (the session asks once per batch), and it
//!   holds only a weak handle on the driver.

use crate::prelude::*;
use core::cell::{Cell, RefCell};
use alloc::rc::{Rc, Weak};

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;
use web_sys::PageTransitionEvent;

use crate::core::endpoint::TransportKind;
use crate::core::session::{ConnId, Effect, Event, Input, Session, State, Wake};
use crate::core::Millis;
use crate::transport::event_source::EventSourceTransport;
use crate::transport::long_poll::LongPollTransport;
use crate::transport::listener::Listener;
use crate::transport::timer::{queue_microtask, Timeout};
use crate::transport::websocket::WebSocketTransport;
use crate::transport::{InputSink, Transport};

#[wasm_bindgen]
extern "C" {
    // `performance.now()` is monotonic and exists in windows and workers alike.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds on the monotonic clock.
pub fn now_ms() -> Millis {
    performance_now() as Millis
}

struct Core {
    session: Session,
    transports: Vec<(ConnId, Box<dyn Transport>)>,
    timer: Option<(Millis, Timeout)>,
    /// The timer that fired last, kept until the next one fires so that it is never dropped
    /// while its own callback runs.
    fired_timer: Option<Timeout>,
}

impl Core {
    fn transport(&self, conn: ConnId) -> Option<&dyn Transport> {
        self.transports.iter().find(|(id, _)| *id == conn).map(|(_, transport)| transport.as_ref())
    }
}

/// Receives the events the pump drained; implemented by the facade.
pub trait EventHandler {
    /// Called with no borrow of the session held.
    fn handle_events(&self, events: Vec<Event>);
    /// Calls the token source; its answer comes back through [`Driver::token`].
    fn need_token(&self);
}

/// See the module docs.
pub struct Driver {
    core: RefCell<Core>,
    /// Inputs that arrived while the pump ran; a `Cell` taken and set back, never borrowed, so
    /// no input can be refused for a borrow in progress.
    inbox: Cell<Vec<Input>>,
    running: Cell<bool>,
    myself: Weak<Driver>,
    // Cells replaced whole rather than RefCells: no borrow, so no borrow panic site (each
    // keeps the formatter in the wasm).
    handler: Cell<Option<Weak<dyn EventHandler>>>,
    /// Window and document listeners for the page lifecycle (none in a worker), held only
    /// while the session is not closed.
    lifecycle: Cell<Vec<Listener>>,
    /// `(Date.now(), performance.now())` when the last timer fired, to spot a clock jump.
    clocks: Cell<(f64, f64)>,
    /// The session asked for a credential ([`Effect::NeedToken`]); the pump asks the facade.
    token_wanted: Cell<bool>,
    /// fetch's `credentials` mode (the `credentials` option; None: the default), for the HTTP
    /// transports.
    credentials: Option<&'static str>,
}

/// The longest delay `setTimeout` honours (2^31 - 1 ms, about 24.8 days).
const MAX_TIMEOUT_MS: u32 = i32::MAX as u32;

/// A wall clock that ran this much further than the monotonic one means the machine slept.
const CLOCK_JUMP_MS: f64 = 5_000.0;

impl Driver {
    /// A driver around an idle session.
    pub fn new(session: Session, credentials: Option<&'static str>) -> Rc<Driver> {
        Rc::new_cyclic(|myself| Driver {
            core: RefCell::new(Core { session, transports: Vec::new(), timer: None, fired_timer: None }),
            inbox: Cell::new(Vec::new()),
            running: Cell::new(false),
            myself: myself.clone(),
            handler: Cell::new(None),
            lifecycle: Cell::new(Vec::new()),
            clocks: Cell::new((js_sys::Date::now(), performance_now())),
            token_wanted: Cell::new(false),
            credentials,
        })
    }

    /// Connects (or reconnects a closed client), listening to the page lifecycle meanwhile.
    pub fn connect(&self) {
        let mut listeners = self.lifecycle.take();
        if listeners.is_empty() {
            listeners = lifecycle_listeners(&self.myself);
        }
        self.lifecycle.set(listeners);
        self.command(|session, now| session.connect(now));
    }

    /// Forwards a page or network lifecycle signal.
    fn wake(&self, wake: Wake) {
        self.command(|session, now| session.handle_wake(now, wake));
    }

    /// Compares the two clocks since the last check; a jump is a wake of its own.
    fn check_clock_jump(&self) {
        let (wall, mono) = (js_sys::Date::now(), performance_now());
        let (last_wall, last_mono) = self.clocks.replace((wall, mono));
        if (wall - last_wall) - (mono - last_mono) > CLOCK_JUMP_MS {
            self.wake(Wake::ClockJump);
        }
    }

    /// Sets who receives events (held weakly: the facade owns the driver, not the reverse).
    pub fn set_handler(&self, handler: Weak<dyn EventHandler>) {
        self.handler.set(Some(handler));
    }

    /// Reads the session. The session is never borrowed while JS runs (module docs); should it
    /// be (only after an earlier trap inside the pump) this throws: `throw_str`, not a panic,
    /// whose site would keep the formatter in the wasm.
    pub fn with_session<T>(&self, read: impl FnOnce(&Session) -> T) -> T {
        match self.core.try_borrow() {
            Ok(core) => read(&core.session),
            Err(_) => wasm_bindgen::throw_str(crate::client::BROKEN),
        }
    }

    /// Runs a user command against the session, then pumps.
    pub fn command<T>(&self, command: impl FnOnce(&mut Session, Millis) -> T) -> T {
        self.command_then(command, |_| {})
    }

    /// Runs a user command, lets the caller record its result (with no borrow held), then
    /// pumps: whatever the pump settles (a send failing at once) finds the record in place.
    /// Throws, as `with_session` does, if the session is still borrowed after an earlier trap.
    pub fn command_then<T>(&self, command: impl FnOnce(&mut Session, Millis) -> T, record: impl FnOnce(&T)) -> T {
        let result = match self.core.try_borrow_mut() {
            Ok(mut core) => command(&mut core.session, now_ms()),
            Err(_) => wasm_bindgen::throw_str(crate::client::BROKEN),
        };
        record(&result);
        self.pump();
        result
    }

    /// The token source's answer (a credential, or why it failed).
    pub fn token(&self, input: Input) {
        let mut inbox = self.inbox.take();
        inbox.push(input);
        self.inbox.set(inbox);
        self.pump();
    }

    fn sink(&self) -> InputSink {
        let driver = self.myself.clone();
        Rc::new(move |input| {
            if let Some(driver) = driver.upgrade() {
                let mut inbox = driver.inbox.take();
                inbox.push(input);
                driver.inbox.set(inbox);
                driver.pump();
            }
        })
    }

    /// Feeds queued inputs, carries out effects, re-arms the timer and dispatches events, until
    /// nothing is left. Re-entrant calls return at once; the outer call does their work.
    pub fn pump(&self) {
        if self.running.replace(true) {
            return;
        }
        loop {
            let (events, flush) = {
                let Ok(mut core) = self.core.try_borrow_mut() else { break };
                let now = now_ms();
                let inputs = self.inbox.take();
                for input in inputs {
                    core.session.handle_input(now, input);
                }
                while let Some(effect) = core.session.poll_effect() {
                    self.apply(&mut core, effect);
                }
                let events: Vec<Event> = core::iter::from_fn(|| core.session.poll_event()).collect();
                self.arm_timer(&mut core, now);
                (events, core.session.poll_flush())
            };
            if flush {
                self.schedule_flush();
            }
            if self.token_wanted.replace(false) {
                let weak = self.handler.take();
                let handler = weak.as_ref().and_then(Weak::upgrade);
                self.handler.set(weak);
                if let Some(handler) = handler {
                    handler.need_token();
                }
            }
            if events.is_empty() {
                let inbox = self.inbox.take();
                let idle = inbox.is_empty();
                self.inbox.set(inbox);
                if idle {
                    break;
                }
                continue;
            }
            let weak = self.handler.take();
            let handler = weak.as_ref().and_then(Weak::upgrade);
            self.handler.set(weak);
            if let Some(handler) = handler {
                handler.handle_events(events);
            }
        }
        self.running.set(false);
        if self.with_session(|session| session.state() == State::Closed) {
            // A closed client holds nothing of the page: no window listeners, no timer (the
            // session has no deadline, so `arm_timer` dropped it), no transports.
            let released = self.lifecycle.take();
            drop(released);
        }
    }

    fn apply(&self, core: &mut Core, effect: Effect) {
        match effect {
            Effect::Open { conn, kind, url, body } => {
                let sink = self.sink();
                let transport: Option<Box<dyn Transport>> = match kind {
                    TransportKind::WebSocket => WebSocketTransport::open(conn, &url, body, sink).map(|t| Box::new(t) as Box<dyn Transport>),
                    TransportKind::Sse => EventSourceTransport::open(conn, &url, self.credentials, sink).map(|t| Box::new(t) as Box<dyn Transport>),
                    TransportKind::LongPolling => Some(Box::new(LongPollTransport::open(conn, &url, &body, self.credentials, sink))),
                };
                if let Some(transport) = transport {
                    core.transports.push((conn, transport));
                }
            }
            Effect::Transmit { conn, data, binary } => {
                if let Some(transport) = core.transport(conn) {
                    transport.transmit(&data, binary);
                }
            }
            Effect::Post { conn, url, body } => {
                if let Some(transport) = core.transport(conn) {
                    transport.post(&url, &body);
                }
            }
            Effect::Poll { conn, url, body } => {
                if let Some(transport) = core.transport(conn) {
                    transport.poll(&url, &body);
                }
            }
            // Asked of the facade once the session is released (it may call user code).
            Effect::NeedToken => self.token_wanted.set(true),
            Effect::Close { conn } => {
                // Dropping the transport detaches its listeners, closes it, then frees closures.
                core.transports.retain(|(id, _)| *id != conn);
            }
        }
    }

    fn arm_timer(&self, core: &mut Core, now: Millis) {
        let deadline = core.session.poll_timeout();
        let armed = core.timer.as_ref().map(|(at, _)| *at);
        // Keep a timer that fires no later than needed: an early wake is a no-op for the session
        // and re-arms at the real deadline. Re-arming on every later deadline would create and
        // cancel a timer around every message (the ack deadline comes and goes with each one).
        if armed.is_some_and(|armed| deadline.is_some_and(|deadline| armed <= deadline)) {
            return;
        }
        core.timer = deadline.map(|at| {
            let driver = self.myself.clone();
            // Browsers clamp and may fire early by a rounding error; a spurious wake is a no-op
            // for the session and re-arms here.
            // setTimeout takes a signed 32-bit delay: anything longer fires at once. The session
            // asks again when an early wake finds nothing due.
            let delay = u32::try_from(at.saturating_sub(now)).unwrap_or(u32::MAX).min(MAX_TIMEOUT_MS);
            let timeout = Timeout::new(delay, move || {
                if let Some(driver) = driver.upgrade() {
                    driver.on_timer();
                }
            });
            (at, timeout)
        });
    }

    /// Runs the session's flush of deferred sends at the end of the current task, so that every
    /// `send()` of the task shares one WebSocket message or POST.
    ///
    /// The microtask (`transport::timer::queue_microtask`, whose docs prove its closure is
    /// freed exactly once, after it ran) owns only a weak handle: a client freed before it runs
    /// is not kept alive; the microtask finds nothing, does nothing and frees itself, so nothing
    /// leaks and nothing throws.
    fn schedule_flush(&self) {
        let driver = self.myself.clone();
        queue_microtask(move || {
            if let Some(driver) = driver.upgrade() {
                driver.on_flush();
            }
        });
    }

    fn on_flush(&self) {
        if let Ok(mut core) = self.core.try_borrow_mut() {
            core.session.handle_flush(now_ms());
        }
        self.pump();
    }

    fn on_timer(&self) {
        if let Ok(mut core) = self.core.try_borrow_mut() {
            core.fired_timer = core.timer.take().map(|(_, timeout)| timeout);
            core.session.handle_timeout(now_ms());
        }
        self.pump();
        self.check_clock_jump();
    }
}

/// Listens to the page lifecycle: `online`/`offline`, `visibilitychange`, `pageshow` from the
/// back/forward cache and `pagehide` (MDN: Page Lifecycle API). Each listener holds only a weak
/// handle on the driver.
fn lifecycle_listeners(driver: &Weak<Driver>) -> Vec<Listener> {
    let Some(window) = crate::transport::window() else { return Vec::new() };
    let mut listeners = Vec::with_capacity(5);
    for (name, wake) in [("online", Wake::Online), ("offline", Wake::Offline)] {
        let driver = driver.clone();
        listeners.push(Listener::new(&window, name, move |_| {
            if let Some(driver) = driver.upgrade() {
                driver.wake(wake);
            }
        }));
    }
    let on_show = driver.clone();
    listeners.push(Listener::new(&window, "pageshow", move |event| {
        // The event name fixes the type: no `instanceof` check.
        let restored = event.unchecked_ref::<PageTransitionEvent>().persisted();
        if let (true, Some(driver)) = (restored, on_show.upgrade()) {
            driver.wake(Wake::PageShow);
        }
    }));
    let on_hide = driver.clone();
    listeners.push(Listener::new(&window, "pagehide", move |_| {
        if let Some(driver) = on_hide.upgrade() {
            driver.command(|session, now| session.suspend(now));
        }
    }));
    if let Some(document) = window.document() {
        let on_visible = driver.clone();
        let watched = document.clone();
        listeners.push(Listener::new(&document, "visibilitychange", move |_| {
            // `hidden` rather than `visibilityState`: a bool, where the enum conversion ships a panic path.
            if let (false, Some(driver)) = (watched.hidden(), on_visible.upgrade()) {
                driver.wake(Wake::Visible);
            }
        }));
    }
    listeners
}
