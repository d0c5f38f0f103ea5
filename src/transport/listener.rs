//! An event listener that unregisters itself: the closure-ownership guard every adapter uses.
//!
//! Like gloo-events' `EventListener`, but with the teardown order split in two: [`Listener::detach`]
//! removes the listener (so JS can no longer call it) while the closure stays alive until the
//! guard is dropped. Adapters detach, then close the underlying object (which may queue events),
//! then drop: a closure that JS still calls after drop throws "closure invoked after being
//! dropped".

use wasm_bindgen::{JsCast, JsValue};
use web_sys::EventTarget;

/// An attached listener; removed on [`Listener::detach`] or drop.
pub struct Listener {
    target: EventTarget,
    kind: &'static str,
    // `JsValue`, not `Event`: every callback of the crate has this one closure type, which
    // saves a set of glue shims per type; each caller knows its event type from its name.
    callback: crate::transport::Callback,
    attached: bool,
}

impl Listener {
    /// Attaches `callback` to `target` for events of type `kind`.
    pub fn new(target: &EventTarget, kind: &'static str, callback: impl Fn(JsValue) + 'static) -> Listener {
        let callback = crate::transport::callback(callback);
        let attached = target.add_event_listener_with_callback(kind, callback.as_ref().unchecked_ref()).is_ok();
        Listener { target: target.clone(), kind, callback, attached }
    }

    /// Removes the listener now; the closure lives until the guard is dropped.
    pub fn detach(&mut self) {
        if self.attached {
            self.attached = false;
            let _ = self.target.remove_event_listener_with_callback(self.kind, self.callback.as_ref().unchecked_ref());
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.detach();
    }
}
