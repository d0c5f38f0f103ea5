//! What `send()` accepts, turned into a payload: a string is text, bytes are binary, any other
//! JSON-serialisable value is JSON (stringified once by the browser's own `JSON.stringify`). The
//! bytes and the JSON text come from `bytes()` and `json()` in hub.js.

use crate::prelude::*;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::core::wire::Payload;

#[wasm_bindgen(module = "/src/client/hub.js")]
extern "C" {
    /// The bytes of a Uint8Array, an ArrayBuffer or another view of one, copied into the wasm.
    #[wasm_bindgen(js_name = bytes)]
    fn bytes_of_data(data: &JsValue) -> Option<Vec<u8>>;
    /// The JSON text of any other value, or the `Error` to reject with.
    #[wasm_bindgen(catch, js_name = json)]
    fn json_of_data(data: &JsValue) -> Result<String, JsValue>;
}

/// The payload of `data`, or the `Error` (code `invalid-argument`) to reject the send with.
pub(super) fn payload_from(data: &JsValue) -> Result<Payload, JsValue> {
    if let Some(text) = data.as_string() {
        return Ok(Payload::Text(text));
    }
    if let Some(bytes) = bytes_of_data(data) {
        return Ok(Payload::Binary(bytes));
    }
    json_of_data(data).map(Payload::Json)
}
