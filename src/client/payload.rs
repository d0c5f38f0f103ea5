//! What `send()` accepts, turned into a payload: a string is text, bytes are binary, any other
//! JSON-serialisable value is JSON (stringified once by the browser's own `JSON.stringify`).

use crate::prelude::*;
use js_sys::{ArrayBuffer, Reflect, Uint8Array, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::core::wire::Payload;

pub(super) fn payload_from(data: &JsValue) -> Result<Payload, String> {
    if let Some(text) = data.as_string() {
        return Ok(Payload::Text(text));
    }
    if let Some(bytes) = data.dyn_ref::<Uint8Array>() {
        return Ok(Payload::Binary(crate::transport::bytes_of_view(bytes)));
    }
    if let Some(buffer) = data.dyn_ref::<ArrayBuffer>() {
        return Ok(Payload::Binary(crate::transport::bytes_of(buffer)));
    }
    if ArrayBuffer::is_view(data) {
        // Another typed array or a DataView: send the bytes it views.
        let buffer = Reflect::get(data, &JsValue::from_str("buffer")).unwrap_or(JsValue::UNDEFINED);
        let offset = Reflect::get(data, &JsValue::from_str("byteOffset")).ok().and_then(|value| value.as_f64());
        let length = Reflect::get(data, &JsValue::from_str("byteLength")).ok().and_then(|value| value.as_f64());
        if let (Some(buffer), Some(offset), Some(length)) = (buffer.dyn_ref::<ArrayBuffer>(), offset, length) {
            return Ok(Payload::Binary(crate::transport::bytes_in(buffer, offset, length)));
        }
    }
    if data.is_undefined() || data.is_function() || data.is_symbol() {
        return Err(String::from("cannot send undefined, a function or a symbol: pass a string, bytes or a JSON value"));
    }
    match JSON::stringify(data) {
        Ok(text) => match text.as_string() {
            Some(text) => Ok(Payload::Json(text)),
            None => Err(String::from("value does not serialise to JSON")),
        },
        Err(error) => {
            let mut message = String::from("value does not serialise to JSON: ");
            message.push_str(&crate::transport::js_error_message(&error));
            Err(message)
        }
    }
}
