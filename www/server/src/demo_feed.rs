//! `--demo-feed CHANNEL` (DEMO ONLY, off by default): the server itself publishes a small clock
//! tick to CHANNEL once per second, so the demo page has a live feed beside its chat rooms.
//!
//! Each tick is the named event `tick` with the JSON payload `{"tick":N,"unixMs":T,"sessions":S}`
//! (N counts from 1 since the server started, T is the server's wall clock, S the sessions it
//! holds). It goes through the same path as a backend's `POST /realtime/publish?channel=`: the
//! replay budget reservation, then the fan-out, which creates the channel and keeps its history
//! (so a subscriber that comes back recovers the ticks it missed, and offsets count up by one).
//!
//! Invariants:
//! - Bounded: one message of under 100 bytes per period, never a backlog (a late tick is skipped,
//!   not caught up); a tick refused by the replay budget or a busy fan-out is dropped and counted
//!   by the metrics as any publish's refusal would be, and logged once.
//! - It stops with the server: at shutdown (`begin_shutdown`), or when the state is dropped (the
//!   task holds it weakly between ticks).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use realtime_client::core::wire::Payload;
use tokio::task::JoinHandle;

use crate::metrics::LimitKind;
use crate::AppState;

/// The feed's period with `--demo-feed`.
pub const PERIOD: Duration = Duration::from_secs(1);

/// The event name of every tick.
pub const EVENT: &str = "tick";

/// Starts publishing a tick to `channel` every `period` (the first one after one period). The
/// caller has checked the name (`is_valid_channel_name`). Needs a tokio runtime.
pub fn spawn(state: &Arc<AppState>, channel: String, period: Duration) -> JoinHandle<()> {
    let weak: Weak<AppState> = Arc::downgrade(state);
    let mut shutdown = state.shutdown_receiver();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut tick: u64 = 0;
        let mut refusal_logged = false;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = AppState::shutting_down(&mut shutdown) => return,
            }
            let Some(state) = weak.upgrade() else { return };
            tick += 1;
            let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
            let payload = format!(r#"{{"tick":{tick},"unixMs":{unix_ms},"sessions":{}}}"#, state.registry.len());
            let messages = vec![(Some(EVENT.to_owned()), Payload::Json(payload))];
            let published = match state.reserve_publish(&channel, &messages) {
                Some(_reserved) => {
                    let messages = messages.into_iter().map(|(event, payload)| (0, event, payload)).collect();
                    state.publish_fan_out(vec![channel.clone()], messages, true).await.is_ok_and(|delivery| delivery.refusal.is_none())
                }
                None => {
                    state.metrics.trip(LimitKind::replay_budget);
                    false
                }
            };
            if !published && !refusal_logged {
                refusal_logged = true;
                tracing::warn!(channel = %channel, tick, "demo feed: a tick was refused (replay budget or busy fan-out); refused ticks are dropped");
            }
        }
    })
}
