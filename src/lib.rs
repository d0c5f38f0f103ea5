//! realtime-client: one realtime API for web frontends over WebSocket, Server-Sent Events and
//! fetch long polling, compiled to WebAssembly.
//!
//! Layers, one direction of dependency: [`core`] is sans-IO and host-testable; `transport`
//! (wasm32 only) adapts browser APIs to core inputs; `client` (wasm32 only) is the
//! `#[wasm_bindgen]` facade. The reference server depends on [`core::wire`] for the codec.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod transport;

#[cfg(target_arch = "wasm32")]
mod client;

#[cfg(target_arch = "wasm32")]
pub use client::RealtimeClient;

// Talc instead of the default dlmalloc: 1.8 KB smaller gzipped (measured with `make size`) and
// fast under churn. Safety: `new_global` requires a single global instance on wasm32, which
// this is.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: talc::TalckWasm = unsafe { talc::TalckWasm::new_global() };
