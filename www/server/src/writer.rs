//! The downstream loop shared by the streaming transports (WebSocket, SSE): send the hello,
//! then whatever the session has for this attachment, a ping after `hb` of silence, keep-alives
//! where the carrier wants them, and a going-away close at shutdown.
//!
//! Every write has a deadline (`stream_write_timeout`): a stream whose write stalls past it is a
//! slow consumer and is cut (counted as `slow_consumer`); the session stays resumable, and the
//! messages its transport held are dropped with it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use realtime_client::core::wire::{close_code, Close, Frame, Retry};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::metrics::LimitKind;
use crate::session::{close, unix_millis, Attachment, Outgoing, Pull, Session, Stop};
use crate::AppState;

/// Where a streaming transport writes frames.
pub trait FrameSink: Send {
    /// Sends frames (messages as shared by their publish); false when the peer is gone.
    fn send_outgoing(&mut self, frames: &[Outgoing]) -> impl Future<Output = bool> + Send;
    /// Sends owned frames; false when the peer is gone.
    fn send_frames(&mut self, frames: &[Frame]) -> impl Future<Output = bool> + Send {
        let frames: Vec<Outgoing> = frames.iter().cloned().map(Outgoing::Frame).collect();
        async move { self.send_outgoing(&frames).await }
    }
    /// Sends a carrier-level keep-alive (SSE comment); false when the peer is gone.
    fn keep_alive(&mut self) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// Resolves when the peer is known to be gone without a write (the default: never).
    fn gone(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
    /// Ends the carrier after `close` (if any) was sent.
    fn finish(&mut self, close: Option<&Close>) -> impl Future<Output = ()> + Send;
}

/// The close sent to every transport at shutdown: going away, come back in a second.
pub fn going_away() -> Close {
    close(close_code::GOING_AWAY, "server shutting down", Retry::AfterMs(1000))
}

/// Why the writer loop woke up.
enum Wake {
    Changed,
    Ping,
    KeepAlive,
    Shutdown,
}

/// What a stalled write watches besides its deadline.
struct Watch<'a> {
    attachment: &'a Attachment,
    changed: &'a mut watch::Receiver<u64>,
}

/// Sends within the write deadline; a stalled write is a slow-consumer cut (false). A stop
/// requested while the write is stalled cuts it at once only when the session overflowed its
/// replay bounds or a newer transport replaced this one (`Attachment::stop_cuts_writes`); a
/// refusal with retry advice waits for the write, so its close frame is sent after it.
async fn send<S: FrameSink>(state: &AppState, sink: &mut S, frames: &[Outgoing], watching: &mut Watch<'_>) -> bool {
    let deadline = tokio::time::sleep(state.config.limits.stream_write_timeout);
    let write = sink.send_outgoing(frames);
    tokio::pin!(deadline, write);
    loop {
        tokio::select! {
            sent = &mut write => return sent,
            _ = &mut deadline => {
                state.metrics.trip(LimitKind::slow_consumer);
                state.metrics.slow_consumer_cuts.inc();
                return false;
            }
            changed = watching.changed.changed() => {
                if changed.is_err() || watching.attachment.stop_cuts_writes() || watching.attachment.is_aborted() {
                    return false;
                }
            }
        }
    }
}

/// Sends the close and ends the carrier, both within the write deadline.
async fn send_close<S: FrameSink>(state: &AppState, sink: &mut S, close: Close, watching: &mut Watch<'_>) {
    if send(state, sink, &[Outgoing::Frame(Frame::Close(close.clone()))], watching).await {
        let _ = tokio::time::timeout(state.config.limits.stream_write_timeout, sink.finish(Some(&close))).await;
    }
    // A stalled close is not finished: dropping the carrier is all a slow consumer gets.
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
    let first: Vec<Outgoing> = first.into_iter().map(Outgoing::Frame).collect();
    let mut watching = Watch { attachment: &attachment, changed: &mut changed };
    if !send(&state, &mut sink, &first, &mut watching).await {
        return;
    }
    // Pings follow protocol silence; keep-alive comments follow silence on the carrier.
    let mut last_sent = Instant::now();
    let mut last_written = last_sent;
    loop {
        watching.changed.mark_unchanged();
        if attachment.is_aborted() {
            return; // Kicked: drop the carrier without a word, as a broken network would.
        }
        match session.pull_shared(&attachment, None) {
            Pull::Frames(frames) if !frames.is_empty() => {
                if !send(&state, &mut sink, &frames, &mut watching).await {
                    return;
                }
                last_sent = Instant::now();
                last_written = last_sent;
                continue;
            }
            Pull::Frames(_) => {}
            Pull::Stop(Stop::Silent) => {
                let _ = tokio::time::timeout(state.config.limits.stream_write_timeout, sink.finish(None)).await;
                return;
            }
            Pull::Stop(Stop::Close(close)) => return send_close(&state, &mut sink, close, &mut watching).await,
        }
        let keep_alive_at = keep_alive.map(|interval| last_written + interval);
        let wake = tokio::select! {
            result = watching.changed.changed() => if result.is_err() { return } else { Wake::Changed },
            _ = sleep_until(last_sent + heartbeat) => Wake::Ping,
            _ = sleep_until(keep_alive_at.unwrap_or(last_sent + heartbeat)), if keep_alive_at.is_some() => Wake::KeepAlive,
            _ = AppState::shutting_down(&mut shutdown) => Wake::Shutdown,
            // The peer went away while nothing was being written: free the stream at once.
            _ = sink.gone() => return,
        };
        match wake {
            Wake::Changed => {}
            Wake::Ping => {
                if !send(&state, &mut sink, &[Outgoing::Frame(Frame::Ping { time: unix_millis() })], &mut watching).await {
                    return;
                }
                last_sent = Instant::now();
                last_written = last_sent;
            }
            Wake::KeepAlive => {
                let deadline = state.config.limits.stream_write_timeout;
                if !tokio::time::timeout(deadline, sink.keep_alive()).await.unwrap_or(false) {
                    return;
                }
                last_written = Instant::now();
            }
            Wake::Shutdown => return send_close(&state, &mut sink, going_away(), &mut watching).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Connect, ConnectRequest, TransportKind};
    use crate::Config;
    use realtime_client::core::wire::Payload;
    use tokio::sync::{mpsc, Semaphore};

    /// A sink whose message writes stall until the gate lets them through.
    struct Stalling {
        gate: Arc<Semaphore>,
        pending: mpsc::UnboundedSender<()>,
        sent: mpsc::UnboundedSender<Frame>,
    }

    impl FrameSink for Stalling {
        async fn send_outgoing(&mut self, frames: &[Outgoing]) -> bool {
            if frames.iter().any(|frame| frame.message_seq().is_some()) {
                let _ = self.pending.send(());
                let Ok(permit) = self.gate.acquire().await else { return false };
                permit.forget();
            }
            for frame in frames {
                let _ = self.sent.send(frame.clone().into_frame());
            }
            true
        }

        async fn finish(&mut self, _close: Option<&Close>) {}
    }

    /// A writer whose first message write is stalled; returns what it has sent so far.
    async fn stalled_writer() -> (Arc<Session>, Arc<Attachment>, Arc<Semaphore>, mpsc::UnboundedReceiver<Frame>, tokio::task::JoinHandle<()>) {
        let state = AppState::new(Config::default());
        let request = ConnectRequest { ..ConnectRequest::default() };
        let Connect::Attached { session, attachment, hello } = state.registry.connect(&request, TransportKind::WebSocket, &state.config) else {
            panic!("not attached");
        };
        let gate = Arc::new(Semaphore::new(0));
        let (pending, mut pending_rx) = mpsc::unbounded_channel();
        let (sent, sent_rx) = mpsc::unbounded_channel();
        let sink = Stalling { gate: gate.clone(), pending, sent };
        let task = tokio::spawn(run(state.clone(), session.clone(), attachment.clone(), sink, vec![Frame::Hello(hello)], None));
        session.push_message(None, Payload::Text("m".into()), &state.config);
        pending_rx.recv().await.expect("the message write is pending");
        (session, attachment, gate, sent_rx, task)
    }

    #[tokio::test]
    async fn a_refusal_during_a_slow_write_waits_for_it_and_sends_its_close() {
        let (session, attachment, gate, mut sent, task) = stalled_writer().await;
        let refusal = close(close_code::LIMIT_EXCEEDED, "rate limit exceeded", Retry::AfterMs(5_000));
        session.stop_transport(&attachment, Stop::Close(refusal.clone()));
        gate.add_permits(1);
        task.await.unwrap();
        let mut frames = Vec::new();
        while let Ok(frame) = sent.try_recv() {
            frames.push(frame);
        }
        assert!(frames.iter().any(|frame| matches!(frame, Frame::Message(_))), "the write finished: {frames:?}");
        assert_eq!(frames.last(), Some(&Frame::Close(refusal)), "then the close with its retry advice");
    }

    #[tokio::test]
    async fn a_replacement_during_a_slow_write_cuts_it_at_once() {
        let (session, attachment, _gate, mut sent, task) = stalled_writer().await;
        session.stop_transport(&attachment, Stop::Close(close(close_code::REPLACED, "replaced", Retry::Never)));
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("cut without the write").unwrap();
        let mut frames = Vec::new();
        while let Ok(frame) = sent.try_recv() {
            frames.push(frame);
        }
        assert!(frames.iter().all(|frame| matches!(frame, Frame::Hello(_))), "nothing after the hello: {frames:?}");
    }
}
