//! The sans-IO core: wire codec, session state machine, backoff and transport policy.
//!
//! Architecture Invariant: nothing here imports wasm_bindgen, js_sys, web_sys or tokio, reads a
//! clock or draws a random number. Time and jitter are inputs, so every behaviour is a
//! deterministic function of its inputs and is tested on the host with simulated time.

pub mod backoff;
pub mod base64;
pub mod endpoint;
pub mod session;
pub mod wire;

/// Milliseconds on the adapter's monotonic clock (`performance.now()` in the browser).
pub type Millis = u64;
