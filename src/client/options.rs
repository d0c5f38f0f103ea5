//! Options validation: one pass over the JS object, with an error that names what is wrong.
//!
//! Hand-written against `Reflect` rather than serde: the messages can say exactly which option
//! and what was expected, and it keeps serde's formatting machinery out of the wasm.

use crate::prelude::*;
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use crate::core::backoff::BackoffConfig;
use crate::core::endpoint::TransportKind;
use crate::core::session::SessionConfig;

/// Builds the session configuration from the constructor's `options` argument.
pub fn parse(options: &JsValue) -> Result<SessionConfig, String> {
    let mut config = SessionConfig::default();
    if options.is_undefined() || options.is_null() {
        return Ok(config);
    }
    let object = plain_object(options, "options")?;
    for key in Object::keys(object).iter() {
        let name = key.as_string().unwrap_or_default();
        let value = Reflect::get(object, &key).unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() {
            continue; // `{ reconnect: undefined }` means the default, as in most JS APIs.
        }
        match name.as_str() {
            "transports" => config.transports = transports(&value)?,
            "connectTimeoutMs" => config.connect_timeout_ms = integer(&value, "connectTimeoutMs", 1, 600_000)?,
            "reconnect" => config.reconnect = reconnect(&value)?,
            "outbox" => outbox(&value, &mut config)?,
            _ => return Err(unknown("option", &name, "transports, connectTimeoutMs, reconnect, outbox")),
        }
    }
    Ok(config)
}

fn transports(value: &JsValue) -> Result<Vec<TransportKind>, String> {
    if !Array::is_array(value) {
        return Err(String::from("option 'transports' must be an array of 'websocket', 'sse', 'long-polling'"));
    }
    let array = value.unchecked_ref::<Array>();
    if array.length() == 0 {
        return Err(String::from("option 'transports' must name at least one transport"));
    }
    let mut kinds = Vec::with_capacity(3);
    for entry in array.iter() {
        let name = entry.as_string().unwrap_or_default();
        let Some(kind) = TransportKind::from_name(&name) else {
            return Err(unknown("transport", &name, "'websocket', 'sse', 'long-polling'"));
        };
        if kinds.contains(&kind) {
            let mut message = String::from("option 'transports' names '");
            message.push_str(kind.as_str());
            message.push_str("' twice");
            return Err(message);
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

fn reconnect(value: &JsValue) -> Result<Option<BackoffConfig>, String> {
    if value.as_bool() == Some(false) {
        return Ok(None);
    }
    if value.as_bool() == Some(true) {
        return Ok(Some(BackoffConfig::default()));
    }
    let object = plain_object(value, "reconnect")?;
    let mut config = BackoffConfig::default();
    for key in Object::keys(object).iter() {
        let name = key.as_string().unwrap_or_default();
        let value = Reflect::get(object, &key).unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() {
            continue;
        }
        match name.as_str() {
            "initialDelayMs" => config.initial_delay_ms = integer(&value, "reconnect.initialDelayMs", 0, 3_600_000)?,
            "maxDelayMs" => config.max_delay_ms = integer(&value, "reconnect.maxDelayMs", 0, 3_600_000)?,
            "multiplier" => {
                config.multiplier = match value.as_f64() {
                    Some(number) if number.is_finite() && (1.0..=100.0).contains(&number) => number,
                    _ => return Err(String::from("option 'reconnect.multiplier' must be a number from 1 to 100")),
                }
            }
            "maxAttempts" => {
                config.max_attempts = if value.is_null() || value.as_f64() == Some(f64::INFINITY) {
                    None
                } else {
                    Some(integer(&value, "reconnect.maxAttempts", 0, u64::from(u32::MAX))? as u32)
                }
            }
            _ => {
                return Err(unknown("option", &(String::from("reconnect.") + &name), "initialDelayMs, maxDelayMs, multiplier, maxAttempts"))
            }
        }
    }
    if config.max_delay_ms < config.initial_delay_ms {
        return Err(String::from("option 'reconnect.maxDelayMs' must not be below 'reconnect.initialDelayMs'"));
    }
    Ok(Some(config))
}

fn outbox(value: &JsValue, config: &mut SessionConfig) -> Result<(), String> {
    let object = plain_object(value, "outbox")?;
    for key in Object::keys(object).iter() {
        let name = key.as_string().unwrap_or_default();
        let value = Reflect::get(object, &key).unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() {
            continue;
        }
        match name.as_str() {
            "maxMessages" => config.outbox_max_messages = integer(&value, "outbox.maxMessages", 1, 1_000_000)? as usize,
            "maxBytes" => config.outbox_max_bytes = integer(&value, "outbox.maxBytes", 1, 1 << 30)? as usize,
            _ => return Err(unknown("option", &(String::from("outbox.") + &name), "maxMessages, maxBytes")),
        }
    }
    Ok(())
}

fn plain_object<'a>(value: &'a JsValue, name: &str) -> Result<&'a Object, String> {
    if value.is_object() && !Array::is_array(value) && !value.is_function() {
        return Ok(value.unchecked_ref::<Object>());
    }
    let mut message = String::from("option '");
    message.push_str(name);
    message.push_str("' must be an object");
    if name == "options" {
        message = String::from("options must be an object");
    }
    Err(message)
}

fn integer(value: &JsValue, name: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.as_f64() {
        // A whole number in range: the range check comes first, so the round trip through u64
        // is exact (and `f64::fract` is not in `core`). NaN fails both.
        Some(number) if number >= min as f64 && number <= max as f64 && (number as u64) as f64 == number => Ok(number as u64),
        _ => {
            let mut message = String::from("option '");
            message.push_str(name);
            message.push_str("' must be a whole number from ");
            crate::transport::push_number(&mut message, min);
            message.push_str(" to ");
            crate::transport::push_number(&mut message, max);
            Err(message)
        }
    }
}

fn unknown(what: &str, name: &str, known: &str) -> String {
    let mut message = String::from("unknown ");
    message.push_str(what);
    message.push_str(" '");
    message.push_str(name);
    message.push_str("' (expected one of ");
    message.push_str(known);
    message.push(')');
    message
}
