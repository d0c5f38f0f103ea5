//! realtime-client: one realtime API for web frontends over WebSocket, Server-Sent Events and
//! fetch long polling, compiled to WebAssembly.
//!
//! Layers, one direction of dependency: [`core`] is sans-IO and host-testable; `transport`
//! (wasm32 only) adapts browser APIs to core inputs; `client` (wasm32 only) is the
//! `#[wasm_bindgen]` facade. The reference server depends on [`core::wire`] for the codec.
//!
//! The npm package's wasm is built without the default `std` feature: `no_std` (`core` and
//! `alloc` only), with a panic handler that traps. std's panic machinery keeps the whole
//! formatting library in the wasm, and a panic here is a bug that must not happen anyway (the
//! wasm instance is dead after one, with std or without). With `std` (the default: a Rust app
//! depending on this crate, the browser tests) std is linked and owns the panic handler; the
//! code is the same, written against `core` and `alloc`. The host build is always std.

#![cfg_attr(all(target_arch = "wasm32", not(feature = "std")), no_std)]

extern crate alloc;

/// What the std prelude would give: the wasm build is `no_std` (see the crate docs), so every
/// module that needs these imports them from here.
#[allow(unused_imports)]
pub(crate) mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

pub mod core;

// Host-compiled too, so that its tests run with `cargo test`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod heap;

#[cfg(target_arch = "wasm32")]
mod transport;

#[cfg(target_arch = "wasm32")]
mod client;

#[cfg(target_arch = "wasm32")]
pub use client::RealtimeClient;

#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[panic_handler]
fn panic(_: &::core::panic::PanicInfo) -> ! {
    ::core::arch::wasm32::unreachable()
}

// Size classes instead of dlmalloc or talc: smaller, and enough for a client whose heap holds a
// few message buffers (see the module for what it trades).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: heap::Global = heap::Global::new();
