//! Options: validated by `options()` in hub.js (one pass over the JS object, with an error that
//! names what is wrong), which hands the wasm a flat list of numbers; here they become the
//! session configuration. Validation in JS rather than through `Reflect` here: the same checks
//! and messages, and a smaller package (the README's size section).

use crate::prelude::*;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::core::backoff::BackoffConfig;
use crate::core::endpoint::TransportKind;
use crate::core::session::SessionConfig;

#[wasm_bindgen(module = "/src/client/hub.js")]
extern "C" {
    /// The validated options, flattened (hub.js says the layout), or the `Error` to throw.
    #[wasm_bindgen(catch, js_name = options)]
    fn flat_options(options: &JsValue, default_initial_delay_ms: f64, default_max_delay_ms: f64) -> Result<Vec<f64>, JsValue>;
}

/// Builds the session configuration from the constructor's `options` argument, or returns the
/// `Error` (code `invalid-argument`) to throw.
/// Also returns fetch's `credentials` mode (None: the default).
pub fn parse(options: &JsValue) -> Result<(SessionConfig, Option<&'static str>), JsValue> {
    let mut config = SessionConfig::default();
    let defaults = BackoffConfig::default();
    let flat = flat_options(options, defaults.initial_delay_ms as f64, defaults.max_delay_ms as f64)?;
    // A slot holds NaN for an option that was not given (and is absent if the list is short).
    let slot = |index: usize| flat.get(index).copied().filter(|value| !value.is_nan());
    let transports: Vec<TransportKind> =
        (0..3).filter_map(|index| slot(index).and_then(|kind| TransportKind::ALL.get(kind as usize).copied())).collect();
    if !transports.is_empty() {
        config.transports = transports;
    }
    if let Some(timeout) = slot(3) {
        config.connect_timeout_ms = timeout as u64;
    }
    match slot(4) {
        Some(on) if on == 0.0 => config.reconnect = None,
        Some(_) => {
            config.reconnect = Some(BackoffConfig {
                initial_delay_ms: slot(5).map_or(defaults.initial_delay_ms, |delay| delay as u64),
                max_delay_ms: slot(6).map_or(defaults.max_delay_ms, |delay| delay as u64),
                multiplier: slot(7).unwrap_or(defaults.multiplier),
                // Infinity (null or Infinity given) is unlimited.
                max_attempts: slot(8).filter(|attempts| attempts.is_finite()).map(|attempts| attempts as u32),
            })
        }
        None => {}
    }
    if let Some(messages) = slot(9) {
        config.outbox_max_messages = messages as usize;
    }
    if let Some(bytes) = slot(10) {
        config.outbox_max_bytes = bytes as usize;
    }
    config.token_source = slot(11).is_some();
    let credentials = slot(12).and_then(|mode| ["include", "same-origin", "omit"].get(mode as usize).copied());
    Ok((config, credentials))
}
