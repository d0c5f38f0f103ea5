//! Probes (`rt_probe=1`): a client on a lower transport checks in the background whether a better
//! one gets through. A probe is answered with a hello whose `sid` and `key` are fresh random
//! tokens of no session (`ack=0 resumed=0`); no session is created and no room joined.
//!
//! Streaming probes (WebSocket, SSE) are then held open, sending only keep-alives, until the
//! client closes them or `probe_hold` passes: a proxy that buffers a stream until it ends would
//! let a probe that closed at once through while real streams stay stuck. A poll probe is one
//! response holding the hello.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use realtime_client::core::wire::{close_code, Frame, Hello, Retry, PROTOCOL_VERSION};
use tokio::time::{sleep_until, Instant};

use crate::session::{close, random_token, unix_millis};
use crate::writer::{going_away, FrameSink};
use crate::{AppState, Config, ProbeGuard};

/// The hello of a probe: valid tokens that name no session.
pub fn hello(config: &Config) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        session_id: random_token(),
        secret: random_token(),
        heartbeat_ms: config.heartbeat_ms,
        max_body_bytes: config.max_message_bytes as u64,
        ack: 0,
        resumed: false,
    }
}

/// How a held probe ends when `probe_hold` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDeadline {
    /// Send `close code=1000 retry=no` (WebSocket).
    Close,
    /// End the carrier without a frame (SSE).
    End,
}

/// Sends the probe hello, then holds: pings after `hb` of silence, carrier keep-alives after
/// `keep_alive`, until `gone` resolves (the client closed), the deadline or shutdown.
pub async fn hold<S: FrameSink>(
    state: Arc<AppState>,
    guard: ProbeGuard,
    mut sink: S,
    gone: impl Future<Output = ()>,
    keep_alive: Option<Duration>,
    at_deadline: AtDeadline,
) {
    // Tuple fields drop in order: the probe is uncounted before the transport stops being live,
    // so whoever sees zero live transports also sees the probe gone.
    let _held = (guard, state.live_guard());
    let mut shutdown = state.shutdown_receiver();
    let heartbeat = state.config.heartbeat();
    let deadline = Instant::now() + state.config.probe_hold;
    if !sink.send_frames(&[Frame::Hello(hello(&state.config))]).await {
        return;
    }
    tokio::pin!(gone);
    let mut last_sent = Instant::now();
    let mut last_written = last_sent;
    loop {
        let keep_alive_at = keep_alive.map(|interval| last_written + interval);
        tokio::select! {
            _ = &mut gone => return sink.finish(None).await,
            _ = sleep_until(deadline) => {
                return match at_deadline {
                    AtDeadline::End => sink.finish(None).await,
                    AtDeadline::Close => {
                        let close = close(close_code::NORMAL, "probe done", Retry::Never);
                        sink.send_frames(&[Frame::Close(close.clone())]).await;
                        sink.finish(Some(&close)).await
                    }
                };
            }
            _ = AppState::shutting_down(&mut shutdown) => {
                let close = going_away();
                sink.send_frames(&[Frame::Close(close.clone())]).await;
                return sink.finish(Some(&close)).await;
            }
            _ = sleep_until(last_sent + heartbeat) => {
                if !sink.send_frames(&[Frame::Ping { time: unix_millis() }]).await {
                    return;
                }
                last_sent = Instant::now();
                last_written = last_sent;
            }
            _ = sleep_until(keep_alive_at.unwrap_or(deadline)), if keep_alive_at.is_some() => {
                if !sink.keep_alive().await {
                    return;
                }
                last_written = Instant::now();
            }
        }
    }
}
