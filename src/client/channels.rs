//! The facade's channels: `subscribe()`, `subscriptions()`, and the one callback through which
//! the Subscription objects of hub.js reach the wasm (publish, emit, unsubscribe).
//!
//! Invariants:
//! - The callback is one `Closure` per client, owned by its `Facade` and dropped with it; hub.js
//!   stops calling it at 'freed' (notified before the facade goes). It holds the driver and the
//!   facade weakly, so it keeps neither alive, and it is a `Fn`, so a listener that publishes from
//!   inside a publish's own events is not a recursive `FnMut` call (which would throw).
//! - A channel name and a `since` position are validated by hub.js (`since()`) before the core
//!   sees them; the core checks the name again (never trusts its caller).

use super::*;
use crate::core::wire::{parse_epoch, push_epoch, Position};
use crate::core::session::Input;

/// The callback hub.js calls: (op, channel, event, data) -> a publish's promise, or undefined.
pub(super) type Call = Closure<dyn Fn(u32, String, Option<String>, JsValue) -> JsValue>;

/// Op numbers of the callback, as hub.js's `invoke()` passes them.
const PUBLISH: u32 = 0;
const EMIT: u32 = 1;
/// The token source's answer (hub.js `token()`): the credential in `channel`, or (`TOKEN_FAILED`)
/// why it failed.
const TOKEN: u32 = 3;
const TOKEN_FAILED: u32 = 4;

pub(super) fn callback(driver: Weak<Driver>, facade: Weak<Facade>) -> Call {
    Closure::new(move |op: u32, channel: String, event: Option<String>, data: JsValue| -> JsValue {
        let (Some(driver), Some(facade)) = (driver.upgrade(), facade.upgrade()) else {
            return rejected(ErrorCode::Closed, "client was freed").into();
        };
        match op {
            PUBLISH => publish(&driver, &facade, Some(&channel), None, &data).into(),
            EMIT => publish(&driver, &facade, Some(&channel), event, &data).into(),
            TOKEN => {
                driver.token(Input::TokenReady(Some(channel)));
                JsValue::UNDEFINED
            }
            TOKEN_FAILED => {
                driver.token(Input::TokenFailed { reason: channel });
                JsValue::UNDEFINED
            }
            _ => {
                driver.command(|session, now| {
                    session.unsubscribe(now, &channel);
                });
                JsValue::UNDEFINED
            }
        }
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
        let since = since(&channel, &options)?;
        let name = channel.as_string().unwrap_or_default();
        let position = since.get(0).as_string().and_then(|epoch| parse_epoch(epoch.as_bytes()).ok()).map(|epoch| Position {
            epoch,
            offset: since.get(1).as_f64().unwrap_or(0.0) as u64,
        });
        let subscription = self.facade.hub.subscription(&name);
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
