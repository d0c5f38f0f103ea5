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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::core::endpoint::TransportKind;
use crate::core::session::{ConnId, Effect, Event, Input, Session};
use crate::core::Millis;
use crate::transport::event_source::EventSourceTransport;
use crate::transport::long_poll::LongPollTransport;
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
}

/// See the module docs.
pub struct Driver {
    core: RefCell<Core>,
    inbox: RefCell<VecDeque<Input>>,
    running: Cell<bool>,
    myself: Weak<Driver>,
    handler: RefCell<Option<Weak<dyn EventHandler>>>,
}

impl Driver {
    /// A driver around an idle session.
    pub fn new(session: Session) -> Rc<Driver> {
        Rc::new_cyclic(|myself| Driver {
            core: RefCell::new(Core { session, transports: Vec::new(), timer: None, fired_timer: None }),
            inbox: RefCell::new(VecDeque::new()),
            running: Cell::new(false),
            myself: myself.clone(),
            handler: RefCell::new(None),
        })
    }

    /// Sets who receives events (held weakly: the facade owns the driver, not the reverse).
    pub fn set_handler(&self, handler: Weak<dyn EventHandler>) {
        *self.handler.borrow_mut() = Some(handler);
    }

    /// Reads the session.
    pub fn with_session<T>(&self, read: impl FnOnce(&Session) -> T) -> T {
        read(&self.core.borrow().session)
    }

    /// Runs a user command against the session, then pumps.
    pub fn command<T>(&self, command: impl FnOnce(&mut Session, Millis) -> T) -> T {
        let result = {
            let mut core = self.core.borrow_mut();
            command(&mut core.session, now_ms())
        };
        self.pump();
        result
    }

    fn sink(&self) -> InputSink {
        let driver = self.myself.clone();
        Rc::new(move |input| {
            if let Some(driver) = driver.upgrade() {
                driver.inbox.borrow_mut().push_back(input);
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
            let events = {
                let Ok(mut core) = self.core.try_borrow_mut() else { break };
                let now = now_ms();
                loop {
                    let input = self.inbox.borrow_mut().pop_front();
                    match input {
                        Some(input) => core.session.handle_input(now, input),
                        None => break,
                    }
                }
                while let Some(effect) = core.session.poll_effect() {
                    self.apply(&mut core, effect);
                }
                let events: Vec<Event> = std::iter::from_fn(|| core.session.poll_event()).collect();
                self.arm_timer(&mut core, now);
                events
            };
            if events.is_empty() {
                if self.inbox.borrow().is_empty() {
                    break;
                }
                continue;
            }
            let handler = self.handler.borrow().as_ref().and_then(Weak::upgrade);
            if let Some(handler) = handler {
                handler.handle_events(events);
            }
        }
        self.running.set(false);
    }

    fn apply(&self, core: &mut Core, effect: Effect) {
        match effect {
            Effect::Open { conn, kind, url } => {
                let sink = self.sink();
                let transport: Option<Box<dyn Transport>> = match kind {
                    TransportKind::WebSocket => WebSocketTransport::open(conn, &url, sink).map(|t| Box::new(t) as Box<dyn Transport>),
                    TransportKind::Sse => EventSourceTransport::open(conn, &url, sink).map(|t| Box::new(t) as Box<dyn Transport>),
                    TransportKind::LongPolling => Some(Box::new(LongPollTransport::open(conn, &url, sink))),
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
            Effect::Poll { conn, url } => {
                if let Some(transport) = core.transport(conn) {
                    transport.poll(&url);
                }
            }
            Effect::Close { conn } => {
                // Dropping the transport detaches its listeners, closes it, then frees closures.
                core.transports.retain(|(id, _)| *id != conn);
            }
        }
    }

    fn arm_timer(&self, core: &mut Core, now: Millis) {
        let deadline = core.session.poll_timeout();
        if core.timer.as_ref().map(|(at, _)| *at) == deadline {
            return;
        }
        core.timer = deadline.map(|at| {
            let driver = self.myself.clone();
            // Browsers clamp and may fire early by a rounding error; a spurious wake is a no-op
            // for the session and re-arms here.
            let delay = u32::try_from(at.saturating_sub(now)).unwrap_or(u32::MAX);
            let timeout = Timeout::new(delay, move || {
                if let Some(driver) = driver.upgrade() {
                    driver.on_timer();
                }
            });
            (at, timeout)
        });
    }

    fn on_timer(&self) {
        {
            let Ok(mut core) = self.core.try_borrow_mut() else { return };
            core.fired_timer = core.timer.take().map(|(_, timeout)| timeout);
            core.session.handle_timeout(now_ms());
        }
        self.pump();
    }
}
