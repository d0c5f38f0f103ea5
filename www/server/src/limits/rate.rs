//! Per-session rates (messages and bytes upstream, governor direct limiters) and the frame cap of
//! one batch. A session over its rate is first slowed down: the reading of its next request or
//! WebSocket message waits for the limiter. Only a session still over after `rate_slowdown` of
//! continuous overage is refused, and only that request or transport is.
//!
//! A run of overage ends when a batch passes without waiting, when a batch is refused, or when
//! the last wait ended more than `rate_slowdown` ago, so a refused client is not refused for
//! ever. A batch larger than the burst is charged in burst-sized parts as tokens come, and gets
//! the time its own excess needs at the rate on top of the slowdown: a big batch is paced, never
//! refused outright, while a client that keeps sending over the rate is refused as before.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use realtime_client::core::wire::{self, Frame, WireError};

use super::{LimitConfig, ReplayBudget};
use crate::metrics::LimitKind;
use crate::session::lock;

/// How often a client send over the replay budget looks again.
const BUDGET_RECHECK: Duration = Duration::from_millis(20);

/// What [`SessionRates::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Go on (possibly after a wait).
    Admitted,
    /// Refuse this batch: the limit stayed exceeded for the whole slowdown.
    Refused(LimitKind),
}

/// The upstream rate limiters of one session.
pub struct SessionRates {
    messages: DefaultDirectRateLimiter,
    bytes: DefaultDirectRateLimiter,
    messages_burst: NonZeroU32,
    bytes_burst: NonZeroU32,
    messages_per_sec: NonZeroU32,
    bytes_per_sec: NonZeroU32,
    over: Mutex<Over>,
}

/// The current run of batches that each had to wait.
#[derive(Debug, Default)]
struct Over {
    /// When the run began.
    since: Option<Instant>,
    /// When the last wait of the run ended.
    last_wait_end: Option<Instant>,
    /// What the run's batches above the burst need at the rate, added to the slowdown.
    extra: Duration,
}

impl std::fmt::Debug for SessionRates {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SessionRates").finish_non_exhaustive()
    }
}

fn non_zero(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap_or(NonZeroU32::MIN)
}

impl SessionRates {
    pub fn new(config: &LimitConfig) -> Self {
        let messages_burst = non_zero(config.messages_burst);
        let bytes_burst = non_zero(config.bytes_burst);
        let messages_per_sec = non_zero(config.messages_per_sec);
        let bytes_per_sec = non_zero(config.bytes_per_sec);
        SessionRates {
            messages: RateLimiter::direct(Quota::per_second(messages_per_sec).allow_burst(messages_burst)),
            bytes: RateLimiter::direct(Quota::per_second(bytes_per_sec).allow_burst(bytes_burst)),
            messages_burst,
            bytes_burst,
            messages_per_sec,
            bytes_per_sec,
            over: Mutex::new(Over::default()),
        }
    }

    /// Waits until a batch counting `messages` against the message rate and `bytes` against the
    /// byte rate fits this session's rates and, if it `stores` messages, the replay budget has
    /// room; or refuses it once the session has been over for `slowdown`.
    pub async fn admit(
        &self,
        messages: usize,
        stores: bool,
        bytes: usize,
        slowdown: Duration,
        budget: &ReplayBudget,
        budget_limit: usize,
    ) -> Throttle {
        let throttle = self.admit_inner(messages, stores, bytes, slowdown, budget, budget_limit).await;
        let mut over = lock(&self.over);
        match throttle {
            // A refusal ends the run: the client backs off, and its next batch starts afresh.
            Throttle::Refused(_) => *over = Over::default(),
            Throttle::Admitted if over.since.is_some() => over.last_wait_end = Some(Instant::now()),
            Throttle::Admitted => {}
        }
        throttle
    }

    async fn admit_inner(
        &self,
        messages: usize,
        stores: bool,
        bytes: usize,
        slowdown: Duration,
        budget: &ReplayBudget,
        budget_limit: usize,
    ) -> Throttle {
        self.end_stale_run(slowdown);
        // The time this batch's own excess over the burst needs at the rate extends the run's
        // slowdown: never refused for being large, only for staying over the rate.
        let excess = |amount: usize, burst: NonZeroU32, rate: NonZeroU32| {
            let excess = amount.saturating_sub(burst.get() as usize) as f64;
            Duration::try_from_secs_f64(excess / f64::from(rate.get())).unwrap_or(Duration::MAX)
        };
        let extra = excess(messages, self.messages_burst, self.messages_per_sec).max(excess(bytes, self.bytes_burst, self.bytes_per_sec));
        {
            let mut over = lock(&self.over);
            over.extra = over.extra.saturating_add(extra);
        }
        let mut waited = false;
        let checks = [
            (&self.messages, self.messages_burst, messages, LimitKind::message_rate),
            (&self.bytes, self.bytes_burst, bytes, LimitKind::byte_rate),
        ];
        for (limiter, burst, amount, kind) in checks {
            let mut left = u32::try_from(amount).unwrap_or(u32::MAX);
            while let Some(wanted) = NonZeroU32::new(left) {
                // A batch above the burst is charged in burst-sized parts, as tokens come.
                let part = wanted.min(burst);
                if !matches!(limiter.check_n(part), Ok(Ok(_))) {
                    let Some(allowance) = self.allowance(slowdown) else { return Throttle::Refused(kind) };
                    waited = true;
                    match tokio::time::timeout(allowance, limiter.until_n_ready(part)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) | Err(_) => return Throttle::Refused(kind),
                    }
                }
                left -= part.get();
            }
        }
        // Client messages go into replay buffers: over the global budget they wait too.
        while stores && budget.used() > budget_limit {
            let Some(allowance) = self.allowance(slowdown) else { return Throttle::Refused(LimitKind::replay_budget) };
            waited = true;
            tokio::time::sleep(allowance.min(BUDGET_RECHECK)).await;
        }
        if !waited {
            *lock(&self.over) = Over::default();
        }
        Throttle::Admitted
    }

    /// A run whose last wait ended more than `slowdown` ago is over: the client slowed down.
    fn end_stale_run(&self, slowdown: Duration) {
        let mut over = lock(&self.over);
        if over.last_wait_end.is_some_and(|end| end.elapsed() > slowdown) {
            *over = Over::default();
        }
    }

    /// How much longer this session may be slowed down; None once the slowdown is used up.
    fn allowance(&self, slowdown: Duration) -> Option<Duration> {
        let now = Instant::now();
        let mut over = lock(&self.over);
        let since = *over.since.get_or_insert(now);
        slowdown.saturating_add(over.extra).checked_sub(now.duration_since(since)).filter(|left| !left.is_zero())
    }
}

/// Why a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    Wire(WireError),
    TooManyFrames,
}

impl BatchError {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchError::Wire(error) => error.as_str(),
            BatchError::TooManyFrames => "too many frames in one batch",
        }
    }
}

/// Decodes a batch of at most `max_frames` frames (stopping at the first one beyond it).
pub fn decode_batch(mut input: &[u8], max_body_bytes: usize, max_frames: usize) -> Result<Vec<Frame>, BatchError> {
    let mut frames = Vec::new();
    while !input.is_empty() {
        if frames.len() >= max_frames {
            return Err(BatchError::TooManyFrames);
        }
        let (frame, used) = wire::decode(input, max_body_bytes).map_err(BatchError::Wire)?;
        // The server builds `f` itself (PROTOCOL §9.2): one a client sent is ignored.
        let frame = match frame {
            Frame::Attributed { message, .. } => Frame::ChannelMessage(message),
            frame => frame,
        };
        frames.push(frame);
        input = input.get(used..).ok_or(BatchError::Wire(WireError::Truncated))?;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_over_the_frame_cap_are_refused() {
        let mut bytes = Vec::new();
        for time in 0..5 {
            wire::encode(&Frame::Ping { time }, wire::Carrier::Text, &mut bytes);
        }
        assert_eq!(decode_batch(&bytes, 1024, 5).unwrap().len(), 5);
        assert_eq!(decode_batch(&bytes, 1024, 4).unwrap_err(), BatchError::TooManyFrames);
        assert!(matches!(decode_batch(b"nonsense", 1024, 4), Err(BatchError::Wire(_))));
    }

    #[tokio::test]
    async fn a_session_over_its_rate_is_slowed_then_refused() {
        let config = LimitConfig { messages_per_sec: 10, messages_burst: 5, ..LimitConfig::default() };
        let rates = SessionRates::new(&config);
        let budget = ReplayBudget::default();
        let slowdown = Duration::from_millis(300);
        // The burst passes at once; a batch above the burst is charged in parts (and waits).
        assert_eq!(rates.admit(5, true, 10, slowdown, &budget, usize::MAX).await, Throttle::Admitted);
        let started = Instant::now();
        assert_eq!(rates.admit(1, true, 10, slowdown, &budget, usize::MAX).await, Throttle::Admitted);
        assert!(started.elapsed() >= Duration::from_millis(50), "slowed down, not refused");
        // Still over, on and on: refused once the slowdown is used up.
        let mut outcome = Throttle::Admitted;
        let deadline = Instant::now() + Duration::from_secs(5);
        while outcome == Throttle::Admitted {
            assert!(Instant::now() < deadline, "never refused");
            outcome = rates.admit(5, true, 10, slowdown, &budget, usize::MAX).await;
        }
        assert_eq!(outcome, Throttle::Refused(LimitKind::message_rate));
    }

    #[tokio::test]
    async fn a_refused_session_is_served_again_at_a_sane_rate() {
        let config = LimitConfig { messages_per_sec: 10, messages_burst: 5, ..LimitConfig::default() };
        let rates = SessionRates::new(&config);
        let budget = ReplayBudget::default();
        // The slowdown is far above the ~100 ms waits asserted below, so a loaded machine that
        // schedules this task late does not use it up (the limiter's clock is real time).
        let slowdown = Duration::from_millis(1_500);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rates.admit(5, true, 10, slowdown, &budget, usize::MAX).await == Throttle::Admitted {
            assert!(Instant::now() < deadline, "never refused");
        }
        // With the bucket empty after the refusal, one message waits (~100 ms), and passes.
        while rates.messages.check().is_ok() {}
        assert_eq!(rates.admit(1, true, 10, slowdown, &budget, usize::MAX).await, Throttle::Admitted);
        assert_eq!(rates.admit(1, true, 10, slowdown, &budget, usize::MAX).await, Throttle::Admitted);
    }

    #[tokio::test]
    async fn a_batch_larger_than_burst_plus_slowdown_is_paced_not_refused() {
        // Default rates (200/s, burst 1,000) and a 1 s slowdown: at most 1,200 messages could
        // pass within the slowdown, so 1,500 in one batch used to be refused on every try.
        let config = LimitConfig::default();
        let rates = SessionRates::new(&config);
        let budget = ReplayBudget::default();
        let slowdown = Duration::from_millis(1_000);
        let started = Instant::now();
        assert_eq!(rates.admit(1_500, true, 15_000, slowdown, &budget, usize::MAX).await, Throttle::Admitted);
        assert!(started.elapsed() >= Duration::from_millis(2_000), "paced at the rate: {:?}", started.elapsed());
        // A client that keeps sending over the rate is still refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut outcome = Throttle::Admitted;
        while outcome == Throttle::Admitted {
            assert!(Instant::now() < deadline, "never refused");
            outcome = rates.admit(1_000, true, 10, slowdown, &budget, usize::MAX).await;
        }
        assert_eq!(outcome, Throttle::Refused(LimitKind::message_rate));
    }

    #[tokio::test]
    async fn messages_wait_for_the_replay_budget_then_are_refused() {
        let rates = SessionRates::new(&LimitConfig::default());
        let budget = std::sync::Arc::new(ReplayBudget::default());
        let held = budget.share(None, realtime_client::core::wire::Payload::Text("x".repeat(100)));
        let slowdown = Duration::from_millis(100);
        // Acks and pings carry no message: never held back by the budget.
        assert_eq!(rates.admit(1, false, 10, slowdown, &budget, 10).await, Throttle::Admitted);
        assert_eq!(rates.admit(1, true, 10, slowdown, &budget, 10).await, Throttle::Refused(LimitKind::replay_budget));
        drop(held);
        assert_eq!(budget.used(), 0);
    }
}
