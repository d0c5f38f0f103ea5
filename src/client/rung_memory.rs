//! The rung memory: the transport a tab fell back to, kept in `sessionStorage` per endpoint so
//! that the next page of the visit starts there instead of waiting for the same failures again.
//!
//! Only a client with the default ladder reads or writes it, only a rung the network forced
//! (a fallback) is stored, reaching the top rung erases it, and its ten minutes count from the
//! last time the rung was in use (every open, reconnect and close on it refreshes the entry).

use crate::prelude::*;
use crate::client::Facade;
use crate::core::endpoint::TransportKind;

/// How long a remembered rung is trusted: long enough for the reloads of one visit, short
/// enough that a changed network is re-tested soon (background upgrades re-test it anyway).
const RUNG_MEMORY_TTL_MS: f64 = 10.0 * 60.0 * 1000.0;

/// One key per endpoint: the URL without its query, so rooms and tokens share the memory.
pub(super) fn rung_memory_key(url: &str) -> String {
    let mut key = String::from("realtime-client:rung:");
    let (before_fragment, _) = crate::core::endpoint::split_at_byte(url, b'#');
    key.push_str(crate::core::endpoint::split_at_byte(before_fragment, b'?').0);
    key
}

fn session_storage() -> Option<web_sys::Storage> {
    // Absent in workers, and access throws when storage is disabled: then there is no memory.
    crate::transport::window()?.session_storage().ok().flatten()
}

/// The rung stored by an earlier page of this tab, if fresh: `"<name>|<expiry ms>"`.
pub(super) fn recall_rung(key: &str) -> Option<TransportKind> {
    let value = session_storage()?.get_item(key).ok().flatten()?;
    let (name, expiry) = crate::core::endpoint::split_at_byte(&value, b'|');
    let expiry = crate::core::wire::parse_number(expiry.as_bytes()).ok()? as f64;
    if expiry < js_sys::Date::now() {
        return None;
    }
    TransportKind::from_name(name)
}

impl Facade {
    /// Stores `rung` as in use now, for the next page of this tab (restricted clients: never).
    pub(super) fn remember(&self, rung: TransportKind) {
        if let Some(key) = &self.memory_key {
            remember_rung(key, rung);
        }
    }

    pub(super) fn forget_rung(&self) {
        if let (Some(key), Some(storage)) = (&self.memory_key, session_storage()) {
            let _ = storage.remove_item(key);
        }
    }
}

fn remember_rung(key: &str, kind: TransportKind) {
    let Some(storage) = session_storage() else { return };
    let mut value = String::from(kind.as_str());
    value.push('|');
    crate::transport::push_number(&mut value, (js_sys::Date::now() + RUNG_MEMORY_TTL_MS) as u64);
    let _ = storage.set_item(key, &value);
}

