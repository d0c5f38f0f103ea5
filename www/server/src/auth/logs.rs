//! The server's log subscriber, and the rule that keeps secrets out of it at every level.
//!
//! The server's own lines never print a query string, a header or a token (session ids appear as
//! a short hash tag). Some dependencies do, at debug and trace: tungstenite's frame dumps carry
//! WebSocket payloads (a first-frame token, an `rt_key`), h2 and hyper can print header blocks and
//! request lines. [`keeps`] drops every event below INFO from those crates whatever `RUST_LOG`
//! asks, so "the most verbose level" still holds no secret. `tests/auth.rs` runs the binary at
//! `RUST_LOG=trace`, sends tokens and keys every way it can, and greps the log.

use tracing::{Level, Metadata};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Crates whose debug and trace events can carry request bytes (headers, URIs, frame payloads).
/// (axum's trace of a rejected extractor quotes the rejection's text, which can quote input.)
pub const RAW_BYTES_TARGETS: &[&str] =
    &["tungstenite", "tokio_tungstenite", "h2", "hyper", "hyper_util", "rustls", "tokio_rustls", "reqwest", "axum", "tower_http"];

/// Whether an event of `metadata` may be logged: not below INFO from a [`RAW_BYTES_TARGETS`] crate.
pub fn keeps(metadata: &Metadata<'_>) -> bool {
    if *metadata.level() <= Level::INFO {
        return true;
    }
    let target = metadata.target();
    let crate_name = target.split("::").next().unwrap_or(target);
    !RAW_BYTES_TARGETS.contains(&crate_name)
}

/// Installs the subscriber: stderr, `RUST_LOG` (default `info`), then [`keeps`].
pub fn init() {
    let env = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(env)
        .with_filter(tracing_subscriber::filter::filter_fn(keeps));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
