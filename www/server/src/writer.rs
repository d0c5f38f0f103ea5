//! The downstream loop shared by the streaming transports (WebSocket, SSE): send the hello,
//! then whatever the session has for this attachment, a ping after `hb` of silence, keep-alives
//! where the carrier wants them, and a going-away close at shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use realtime_client::core::wire::{close_code, Close, Frame, Retry};
use tokio::time::{sleep_until, Instant};

use crate::session::{close, unix_millis, Attachment, Pull, Session, Stop};
use crate::AppState;

/// Where a streaming transport writes frames.
pub trait FrameSink: Send {
    /// Sends frames; false when the peer is gone.
    fn send_frames(&mut self, frames: &[Frame]) -> impl Future<Output = bool> + Send;
    /// Sends a carrier-level keep-alive (SSE comment); false when the peer is gone.
    fn keep_alive(&mut self) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// Ends the carrier after `close` (if any) was sent.
    fn finish(&mut self, close: Option<&Close>) -> impl Future<Output = ()> + Send;
}

/// The close sent to every transport at shutdown: going away, come back in a second.
pub fn going_away() -> Close {
    close(close_code::GOING_AWAY, "server shutting down", Retry::AfterMs(1000))
}

/// Runs until the attachment stops, the peer goes away or the server shuts down.
pub async fn run<S: FrameSink>(
    state: Arc<AppState>,
    session: Arc<Session>,
    attachment: Arc<Attachment>,
    mut sink: S,
    first: Vec<Frame>,
    keep_alive: Option<Duration>,
) {
    let heartbeat = state.config.heartbeat();
    let mut changed = session.subscribe();
    let mut shutdown = state.shutdown_receiver();
    if !sink.send_frames(&first).await {
        return;
    }
    // Pings follow protocol silence; keep-alive comments follow silence on the carrier.
    let mut last_sent = Instant::now();
    let mut last_written = last_sent;
    loop {
        changed.mark_unchanged();
        if attachment.is_aborted() {
            return; // Kicked: drop the carrier without a word, as a broken network would.
        }
        match session.pull(&attachment, None) {
            Pull::Frames(frames) if !frames.is_empty() => {
                if !sink.send_frames(&frames).await {
                    return;
                }
                last_sent = Instant::now();
                last_written = last_sent;
                continue;
            }
            Pull::Frames(_) => {}
            Pull::Stop(Stop::Silent) => return sink.finish(None).await,
            Pull::Stop(Stop::Close(close)) => {
                sink.send_frames(&[Frame::Close(close.clone())]).await;
                return sink.finish(Some(&close)).await;
            }
        }
        let keep_alive_at = keep_alive.map(|interval| last_written + interval);
        tokio::select! {
            result = changed.changed() => if result.is_err() { return },
            _ = sleep_until(last_sent + heartbeat) => {
                if !sink.send_frames(&[Frame::Ping { time: unix_millis() }]).await {
                    return;
                }
                last_sent = Instant::now();
                last_written = last_sent;
            }
            _ = sleep_until(keep_alive_at.unwrap_or(last_sent + heartbeat)), if keep_alive_at.is_some() => {
                if !sink.keep_alive().await {
                    return;
                }
                last_written = Instant::now();
            }
            _ = AppState::shutting_down(&mut shutdown) => {
                let close = going_away();
                sink.send_frames(&[Frame::Close(close.clone())]).await;
                return sink.finish(Some(&close)).await;
            }
        }
    }
}
