//! The facade's channels: `subscribe()`, `subscriptions()`, and the one callback through which
//! the Subscription objects of hub.js reach the wasm (publish, emit, unsubscribe).
//!
//! Invariants:
//! - The callback is one `Closure` per client, owned by its `Facade` and dropped with it; hub.js
//!   stops calling it at 'freed' (notified before the facade goes). It holds the driver and the
//!   facade weakly, so it keeps neither alive, and it is the crate's `Fn` closure type, so a
//!   listener that publishes from inside a publish's own events is not a recursive `FnMut` call
//!   (which would throw).
//! - A channel name and a `since` position are validated by hub.js (`since()`, through the hub's `subscribe()`) before the core
//!   sees them; the core checks the name again (never trusts its caller).

use super::*;
use crate::core::wire::{parse_epoch, push_epoch, Position};
use crate::core::session::Input;

/// The callback hub.js calls with `[op, channel, event, data]`: a publish's promise, or
/// undefined. The crate's one closure type (`transport::Callback`), so it ships no glue shims of
/// its own.
pub(super) type Call = crate::transport::Callback;

/// Op numbers of the callback, as hub.js's `invoke()` passes them.
const PUBLISH: f64 = 0.0;
const EMIT: f64 = 1.0;
/// The token source's answer (hub.js `token()`): the credential in `channel`, or (`TOKEN_FAILED`)
/// why it failed.
const TOKEN: f64 = 3.0;
const TOKEN_FAILED: f64 = 4.0;

pub(super) fn callback(driver: Weak<Driver>, facade: Weak<Facade>) -> Call {
    Call::new(move |args: JsValue| -> JsValue {
        let (Some(driver), Some(facade)) = (driver.upgrade(), facade.upgrade()) else {
            return rejected(ErrorCode::Closed, "client was freed").into();
        };
        let args: &js_sys::Array = args.unchecked_ref();
        let channel = args.get(1).as_string().unwrap_or_default();
        let op = args.get(0).as_f64();
        if op == Some(PUBLISH) || op == Some(EMIT) {
            let event = if op == Some(EMIT) { args.get(2).as_string() } else { None };
            return publish(&driver, &facade, Some(&channel), event, &args.get(3)).into();
        }
        if op == Some(TOKEN) || op == Some(TOKEN_FAILED) {
            driver.token(if op == Some(TOKEN) { Input::TokenReady(Some(crate::core::wire::Credential(channel))) } else { Input::TokenFailed { reason: channel } });
            return JsValue::UNDEFINED;
        }
        driver.command(|session, now| {
            session.unsubscribe(now, &channel);
        });
        JsValue::UNDEFINED
    })
}

/// Sends `data` (as `send()` and `emit()` do) to `channel`, or to the room without one.
pub(super) fn publish(driver: &Driver, facade: &Facade, channel: Option<&str>, event: Option<String>, data: &JsValue) -> Promise {
    let payload = match payload_from(data) {
        Ok(payload) => payload,
        Err(error) => return reject(&error),
    };
    // The promise's entry is registered before the pump runs: the pump may carry out a
    // transmit that fails at once and settles this very message.
    let mut promise = None;
    let result = driver.command_then(
        // Without a channel: `send()`, to the room; a URL without `room=` has none, and the
        // message is refused here (a v2 server would end the connection for it).
        |session, now| session.publish(now, channel, event, payload),
        |result| {
            if let Ok(id) = result {
                promise = Some(facade.hub.track_send(*id as f64));
            }
        },
    );
    match (result, promise) {
        (Ok(_), Some(promise)) => promise,
        (Err(error), _) => rejected(error.code(), error.as_str()),
        (Ok(_), None) => rejected(ErrorCode::Closed, "client is closed"),
    }
}

/// The epoch as the 16 hex digits the app sees.
pub(super) fn epoch_hex(epoch: u64) -> String {
    let mut digits = Vec::with_capacity(16);
    push_epoch(&mut digits, epoch);
    String::from_utf8(digits).unwrap_or_default()
}

#[wasm_bindgen]
impl RealtimeClient {
    /// Subscribes to `channel`; the same Subscription for one already subscribed. (Typed in the
    /// TypeScript section.)
    #[wasm_bindgen(skip_typescript)]
    pub fn subscribe(&self, channel: JsValue, options: JsValue) -> Result<JsValue, JsValue> {
        let made = self.facade.hub.subscribe(&channel, &options)?;
        let name = channel.as_string().unwrap_or_default();
        let position = made.get(1).as_string().and_then(|epoch| parse_epoch(epoch.as_bytes()).ok()).map(|epoch| Position {
            epoch,
            offset: made.get(2).as_f64().unwrap_or(0.0) as u64,
        });
        let subscription = made.get(0);
        if let Err(error) = self.driver.command(|session, now| session.subscribe(now, &name, position)) {
            // Ends the Subscription just made (or the live one: nothing changed for it then).
            self.facade.hub.event(Js::Unsubscribed as u32, Some(&name), Some(error.code().as_str()), Some(error.as_str()), 0.0, 0.0);
            return Err(new_error(error.code().as_str(), error.as_str()));
        }
        Ok(subscription)
    }

    /// The live Subscription objects.
    #[wasm_bindgen(skip_typescript)]
    pub fn subscriptions(&self) -> js_sys::Array {
        self.facade.hub.subscriptions()
    }
}
