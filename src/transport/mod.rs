//! Browser adapters (wasm32 only): they turn browser events into core [`Input`]s and carry out
//! core effects. No policy lives here: what to open, when to give up and what to send next is
//! the core's business.
//!
//! Invariant: every JS callback is owned by a [`listener::Listener`] guard or a gloo `Timeout`,
//! which unregister on drop; callbacks capture only an [`InputSink`] (a `Weak` handle), never
//! the thing that owns them.

pub mod listener;
pub mod websocket;

use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};

use crate::core::session::Input;

/// Where adapters report what happened. It holds only a weak handle on the client.
pub type InputSink = Rc<dyn Fn(Input)>;

/// A live transport connection; dropping it tears it down without firing further inputs.
pub trait Transport {
    /// Sends encoded frames. Failures are reported through the sink, not returned.
    fn transmit(&self, data: &[u8], binary: bool);
}

/// The message of a JS exception, for events and errors (gloo's `js_to_js_error` in spirit).
pub fn js_error_message(error: &JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    error.as_string().unwrap_or_else(|| String::from("unknown error"))
}

/// Appends `value` in decimal to `text` (no `core::fmt` in the shipped path).
pub fn push_number(text: &mut String, value: u64) {
    let mut digits = Vec::with_capacity(20);
    crate::core::wire::push_decimal(&mut digits, value);
    for digit in digits {
        text.push(char::from(digit));
    }
}
