//! A `setTimeout` that is cancelled when dropped (gloo-timers' `Timeout` in spirit), and a
//! one-shot `queueMicrotask`; both with the crate's one closure type, so they add no closure
//! shims of their own.

use alloc::rc::Rc;
use core::cell::Cell;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::transport::Callback;

#[wasm_bindgen]
extern "C" {
    // The globals, present in windows and workers alike. The handle is kept as a JsValue: a
    // number in browsers, an object in some other hosts.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Callback, delay_ms: u32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue);
}

/// A scheduled callback; dropping it cancels the timeout, then frees the closure (dropped from
/// inside its own call, the closure is freed once that call returns).
pub struct Timeout {
    handle: JsValue,
    _callback: Callback,
}

impl Timeout {
    /// Calls `callback` once after `delay_ms` (callers keep it at most 2^31 - 1).
    pub fn new(delay_ms: u32, callback: impl Fn() + 'static) -> Timeout {
        let callback = crate::transport::callback(move |_| callback());
        let handle = set_timeout(&callback, delay_ms);
        Timeout { handle, _callback: callback }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        clear_timeout(&self.handle);
    }
}

#[wasm_bindgen]
extern "C" {
    // The global, present in windows and workers alike.
    #[wasm_bindgen(js_name = queueMicrotask)]
    fn queue_microtask_js(callback: &Callback);
}

/// Calls `callback` once, at the end of the current task (a microtask).
///
/// Ownership of the closure: it is kept alive by a slot that the closure itself holds (a cycle),
/// so that nothing can free it while the microtask is queued. A queued microtask always runs,
/// and when it does the closure takes itself out of the slot and drops itself: wasm-bindgen's
/// glue frees a closure dropped during its own call once that call returns, and the cycle is
/// gone. What `callback` captures must not keep its owner alive (callers pass a `Weak`).
pub fn queue_microtask(callback: impl FnOnce() + 'static) {
    let slot: Rc<Cell<Option<Callback>>> = Rc::new(Cell::new(None));
    let held = slot.clone();
    let callback = Cell::new(Some(callback));
    let closure = crate::transport::callback(move |_| {
        let this = held.take();
        if let Some(callback) = callback.take() {
            callback();
        }
        drop(this);
    });
    queue_microtask_js(&closure);
    slot.set(Some(closure));
}
