//! The rung memory: the transport a tab fell back to, kept in `sessionStorage` per endpoint so
//! that the next page of the visit starts there instead of waiting for the same failures again.
//!
//! Only a client with the default ladder reads or writes it, only a rung the network forced
//! (a fallback) is stored, reaching the top rung erases it, and its ten minutes count from the
//! last time the rung was in use (every open, reconnect and close on it refreshes the entry).

use crate::prelude::*;
use crate::client::Facade;
use crate::core::endpoint::TransportKind;
use wasm_bindgen::prelude::wasm_bindgen;

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

#[wasm_bindgen(module = "/src/client/hub.js")]
extern "C" {
    /// The storage of the memory (`rungMemory` in hub.js, which says the format): `rung` 0-2
    /// stores that transport (its index in `TransportKind::ALL`) as in use now, trusted for
    /// `ttl_ms`; `RECALL` returns the stored index if fresh, else -1; `FORGET` removes it.
    /// Without sessionStorage (a worker, storage disabled) there is no memory and nothing throws.
    #[wasm_bindgen(js_name = rungMemory)]
    fn rung_memory(key: &str, rung: i32, ttl_ms: f64) -> i32;
}

const RECALL: i32 = -1;
const FORGET: i32 = -2;

/// The rung stored by an earlier page of this tab, if fresh.
pub(super) fn recall_rung(key: &str) -> Option<TransportKind> {
    let index = usize::try_from(rung_memory(key, RECALL, RUNG_MEMORY_TTL_MS)).ok()?;
    TransportKind::ALL.get(index).copied()
}

impl Facade {
    /// Stores `rung` as in use now, for the next page of this tab (restricted clients: never).
    pub(super) fn remember(&self, rung: TransportKind) {
        if let Some(key) = &self.memory_key {
            remember_rung(key, rung);
        }
    }

    pub(super) fn forget_rung(&self) {
        if let Some(key) = &self.memory_key {
            rung_memory(key, FORGET, RUNG_MEMORY_TTL_MS);
        }
    }
}

fn remember_rung(key: &str, kind: TransportKind) {
    // The enum's order is ALL's (its discriminants are the indexes hub.js knows).
    rung_memory(key, kind as i32, RUNG_MEMORY_TTL_MS);
}
