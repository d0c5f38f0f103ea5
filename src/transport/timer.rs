//! A `setTimeout` that is cancelled when dropped (gloo-timers' `Timeout` in spirit, with the
//! crate's one closure type, so it adds no closure shims of its own).

use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen]
extern "C" {
    // The globals, present in windows and workers alike. The handle is kept as a JsValue: a
    // number in browsers, an object in some other hosts.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Closure<dyn FnMut(JsValue)>, delay_ms: u32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue);
}

/// A scheduled callback; dropping it cancels the timeout, then frees the closure (dropped from
/// inside its own call, the closure is freed once that call returns).
pub struct Timeout {
    handle: JsValue,
    _callback: Closure<dyn FnMut(JsValue)>,
}

impl Timeout {
    /// Calls `callback` once after `delay_ms` (callers keep it at most 2^31 - 1).
    pub fn new(delay_ms: u32, mut callback: impl FnMut() + 'static) -> Timeout {
        let callback = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| callback());
        let handle = set_timeout(&callback, delay_ms);
        Timeout { handle, _callback: callback }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        clear_timeout(&self.handle);
    }
}
